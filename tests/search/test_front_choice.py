"""Choosing from the front: noise-aware ties, the three suggestions, labels in words, an 80-column table
and a plot whose labels do not overlap."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from edgetune.objectives.accuracy import coco_map, topk_se
from edgetune.search.front import knee_point, noise_ties, pareto_figure, smallest_member, suggestions
from edgetune.search.records import short_label

KEYS = ["map50_95@local", "latency_p50_ms@local", "size_bytes"]
GOALS = ["max", "min", "min"]


def row(trial, acc, lat, size, *, se=0.004, ci=0.02, baseline=None, pareto=True, feasible=True, label=""):
    return {"trial": trial, "state": "COMPLETE", "pareto": pareto, "feasible": feasible, "baseline": baseline,
            "label": label or f"t{trial}", "map50_95@local": acc, "map50_95_se@local": se,
            "latency_p50_ms@local": lat, "ci95_low_latency_p50_ms@local": lat * (1 - ci),
            "ci95_high_latency_p50_ms@local": lat * (1 + ci), "size_bytes": size}


def test_map_standard_error_over_images(shapes_val):
    gt = shapes_val.coco_gt()
    rng = np.random.default_rng(0)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
             "bbox": [v + float(rng.normal(0, 2)) for v in a["bbox"]]} for a in gt["annotations"]]
    plain, with_se = coco_map(gt, dets), coco_map(gt, dets, se=True)
    assert with_se["map50_95"] == plain["map50_95"] and "map50_95_se" not in plain  # the metric itself unchanged
    assert 0.0 < with_se["map50_95_se"] < 0.1 and 0.0 < with_se["map50_se"] < 0.1
    few = sorted(im["id"] for im in gt["images"])[:10]
    assert "map50_95_se" not in coco_map(gt, dets, image_ids=few, se=True)  # too few images to say
    assert topk_se({"top1": 0.9}, 100) == {"top1_se": pytest.approx(0.03)}


def test_ties_are_within_noise_on_every_measured_objective():
    df = pd.DataFrame([
        row(0, 0.7580, 2.00, 2_400_000, baseline="fp32"),
        row(1, 0.7585, 2.01, 1_200_000),  # +0.0005 mAP, same speed: the "noise" winner
        row(2, 0.7540, 1.50, 700_000),    # clearly faster
        row(3, 0.7200, 1.49, 600_000),    # as fast as 2, far less accurate
    ])
    ties = noise_ties(df, KEYS)
    assert ties == {0: [1], 1: [0]}  # size differs (exact), so it is what to choose by
    no_se = df.drop(columns=["map50_95_se@local"])
    assert noise_ties(no_se, KEYS) == {}  # noise unknown: never claimed
    assert noise_ties(df, ["size_bytes"]) == {}


def test_side_by_side_intervals_are_used_when_both_have_them():
    a, b = row(0, 0.75, 2.0, 1e6), row(1, 0.75, 2.0, 1e6)
    a.update({"sbs_ci95_low_latency_p50_ms@local": 1.0, "sbs_ci95_high_latency_p50_ms@local": 1.1})
    b.update({"sbs_ci95_low_latency_p50_ms@local": 1.2, "sbs_ci95_high_latency_p50_ms@local": 1.3})
    assert noise_ties(pd.DataFrame([a, b]), KEYS) == {}  # own CIs overlap, side-by-side ones do not


def test_knee_smallest_and_fastest():
    df = pd.DataFrame([
        row(0, 0.760, 2.60, 2_400_000, baseline="fp32"),
        row(1, 0.757, 1.40, 800_000),   # the knee: nearly all the accuracy, most of the speed
        row(2, 0.740, 1.20, 650_000),
        row(3, 0.700, 1.10, 500_000),
        row(4, 0.690, 1.00, 400_000, feasible=False, pareto=False),
    ])
    assert knee_point(df, KEYS, GOALS)["trial"] == 1
    assert smallest_member(df)["trial"] == 3  # 4 violates the constraints
    kinds = {p["kind"]: p["trial"] for p in suggestions(df, KEYS, GOALS)}
    assert kinds == {"fastest": 1, "knee": 1, "smallest": 3}
    assert knee_point(df.head(2), KEYS, GOALS) is None  # two points have no knee


def test_labels_say_what_was_done():
    s = {"n_int8_layers": 80, "n_fp16_layers": 0, "n_fp32_layers": 19, "channels_pruned": 0.25, "n_cut_groups": 6,
         "params_kept": 0.6, "weight_sparsity": 0.0}
    assert short_label(s, None) == "int8 80/99 layers, 25% channels pruned in 6 groups"
    assert short_label({**s, "channels_pruned": 0.0, "weight_sparsity": 0.4}, None) == \
        "int8 80/99 layers, 40% params pruned, 40% weights zero"
    assert short_label({"n_fp32_layers": 99}, None) == "fp32" and short_label(s, "int8-uniform") == "int8-uniform"


def test_front_table_fits_80_columns():
    from rich.console import Console

    from edgetune.search._cli import front_table

    long = "int8 80/99 layers, 25% channels pruned in 6 groups, 40% weights zero"
    df = pd.DataFrame([row(0, 0.7580, 2.60, 2_400_000, baseline="fp32", label="fp32"),
                       row(12, 0.7548, 1.29, 718_000, label=long), row(31, 0.7235, 1.20, 570_000, label=long)])
    df["sbs_latency_p50_ms@local"] = [2.4, 1.82, 1.68]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(front_table(df, KEYS, GOALS, title="front"))
    lines = out.getvalue().splitlines()
    assert max(len(x) for x in lines) <= 80
    text = out.getvalue()
    for number in ("0.7548", "1.29", "701", "1.32x=", "0.30x"):  # numbers are never cut or wrapped
        assert number in text, number
    assert "fastest" in text and "smallest" in text


def test_plot_marks_fp32_and_suggestions_without_overlap():
    rows = [row(0, 0.760, 2.60, 2_400_000, baseline="fp32")]
    rows += [row(i, 0.757 - 0.0004 * i, 1.40 - 0.001 * i, 800_000 - 100 * i) for i in range(1, 30)]  # a dense clump
    df = pd.DataFrame(rows)
    marks = {0: "#0 fp32", 1: "#1 fastest", 2: "#2 knee", 3: "#3 smallest"}
    fig = pareto_figure(df, KEYS, GOALS, title="t", marks=marks)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        texts = [t for t in ax.texts if t.get_text().startswith("#")]
        if not texts:
            continue
        assert sorted(t.get_text() for t in texts) == sorted(marks.values())
        boxes = [t.get_window_extent(renderer) for t in texts]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    ticks = " ".join(t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels())
    assert "MB" in ticks or "KB" in ticks
    assert any("speed-up" in c.get_xlabel() for ax in fig.axes for c in ax.child_axes)  # the second scale
