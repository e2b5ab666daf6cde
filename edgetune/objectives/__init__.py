"""Objectives: accuracy (COCO mAP, top-k), size, latency, memory, energy; constraints; Pareto math."""

from edgetune.objectives.accuracy import (
    COCO_METRICS,
    SE_SUFFIX,
    coco_map,
    detections_to_coco,
    topk_accuracy,
    topk_se,
)

__all__ = ["COCO_METRICS", "SE_SUFFIX", "coco_map", "detections_to_coco", "topk_accuracy", "topk_se"]
from edgetune.objectives.constraints import Constraint, parse_constraint  # noqa: E402
from edgetune.objectives.metrics import METRICS, Metric, get_metric, metric_key  # noqa: E402
from edgetune.objectives.pareto import hypervolume, non_dominated, pareto_ranks, to_minimization  # noqa: E402
from edgetune.objectives.values import (  # noqa: E402
    E2E_STATS,
    LATENCY_STATS,
    artifact_values,
    measurement_values,
    objective_keys,
)

__all__ += ["Constraint", "parse_constraint", "METRICS", "Metric", "get_metric", "metric_key", "hypervolume",
            "non_dominated", "pareto_ranks", "to_minimization", "artifact_values", "measurement_values",
            "objective_keys", "LATENCY_STATS", "E2E_STATS"]
