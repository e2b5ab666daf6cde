"""The agent-side modules import where torch, optuna, ray and mlflow cannot be imported."""

from __future__ import annotations

from blocked_imports import run_blocked


def test_blocker_really_blocks():
    r = run_blocked("import torch")
    assert r.returncode != 0 and "blocked for this test: torch" in r.stderr


def test_agent_side_modules_import_without_heavy_deps():
    r = run_blocked(
        """
        import edgetune, edgetune.errors, edgetune.data, edgetune.data.coco, edgetune.data.shapes
        import edgetune.models, edgetune.models.heads, edgetune.models._evaluate
        import edgetune.objectives, edgetune.objectives.accuracy
        import edgetune.cli
        heavy = [m for m in ("torch", "optuna", "ray", "mlflow") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_agent_side_computes_map_without_heavy_deps(shapes_val):
    """decode + NMS + COCO mAP run in a process with no torch (perfect detections give mAP 1)."""
    r = run_blocked(
        """
        from edgetune.data.shapes import shapes_split
        from edgetune.objectives.accuracy import coco_map
        ds = shapes_split("val", 120)
        gt = ds.coco_gt()
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                for a in gt["annotations"]]
        m = coco_map(gt, dets)
        assert abs(m["map50_95"] - 1.0) < 1e-9, m
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
