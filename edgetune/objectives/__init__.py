"""Objectives: accuracy (COCO mAP, top-k), size, latency, memory, energy; constraints; Pareto math."""

from edgetune.objectives.accuracy import COCO_METRICS, coco_map, detections_to_coco, topk_accuracy

__all__ = ["COCO_METRICS", "coco_map", "detections_to_coco", "topk_accuracy"]
