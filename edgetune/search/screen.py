"""Screening a compressed candidate before the device measures it: a per-device latency predictor and a
cheap accuracy rung (``search.screen``).

Two pieces of evidence are gathered on the controller once the artifact exists (:func:`graph_features`,
and the rung: the artifact's accuracy through onnxruntime on the first ``search.rung_images`` validation
images, in :class:`~edgetune.search.hooks.LocalHooks`). :class:`Screen` turns them into an *optimistic*
point: the latency the predictor gives, lowered by its own held-out error (the 90th percentile of its
leave-one-out errors (20-fold beyond 20 trials) on the trials that device measured, at least ``LAT_MARGIN_MIN``), the rung's accuracy
raised by the largest amount a measured trial's full accuracy ever exceeded its rung (plus
``ACC_MARGIN_MIN``), the exact sizes of the artifact. A candidate is skipped when even that point is
dominated by a measured feasible trial, or misses a constraint; not before ``min_trials`` measured trials
calibrate both margins on the same device and runtime. Baselines, start points and refined trials are
never screened.

The predictor fits each latency objective per (device key, runtime) by non-negative least squares on
graph features, re-fitted from the measured trials at every decision (self-calibrating): the MACs of
the convolutions and matmuls run in fp32, in int8 (weights through a DequantizeLinear) and in fp16, and
the input pixels (the work outside them that scales with the image). Predictions steer the search only:
they are stored in the trial's record under ``screen`` (and as MLflow params ``predicted.*``), never as
a measured value. ``mode: shadow`` screens every trial without skipping any: the sweep's end reports
the predictor's held-out error per device and how many of the trials that the rule would have skipped
reached the final front (false skips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune._logging import get_logger

log = get_logger(__name__)

__all__ = ["graph_features", "LatencyModel", "Screen", "FEATURES", "screen_report", "summary_lines"]

#: the features of :func:`graph_features`, in the order the predictor uses them (plus a constant)
FEATURES = ("gmacs_fp32", "gmacs_int8", "gmacs_fp16", "mpixels")
LAT_MARGIN_MIN = 0.10  # the predicted latency is lowered by at least 10% before it is compared
ACC_MARGIN_MIN = 0.005  # the rung's accuracy is raised by at least half a point


def graph_features(onnx_path: Path | str) -> dict[str, float]:
    """MACs of the artifact's Conv / ConvTranspose / Gemm / MatMul nodes by the precision their weight
    comes in (int8: through DequantizeLinear; fp16: an fp16 initializer or a Cast from one; else fp32), in
    GMACs, and the input's pixels in millions. Shapes come from ONNX shape inference."""
    import onnx
    from onnx import TensorProto, shape_inference

    model = onnx.load(str(onnx_path), load_external_data=False)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception as exc:  # a graph shape inference cannot follow: the MACs of what it could not type are 0
        log.debug("shape inference failed on %s: %s", onnx_path, exc)
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    inits = {t.name: t for t in g.initializer}
    for t in inits.values():
        shapes.setdefault(t.name, list(t.dims))
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:  # Constant nodes: their shapes and dtypes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].t.dims:
            shapes.setdefault(n.output[0], list(n.attribute[0].t.dims))

    def precision(name: str) -> str:
        seen = 0
        while name in producer and seen < 8:  # walk back through Transpose / Reshape / Cast / Identity
            node = producer[name]
            if node.op_type == "DequantizeLinear":
                return "int8"
            if node.op_type == "Cast":
                src = node.input[0]
                t = inits.get(src)
                if t is not None and t.data_type == TensorProto.FLOAT16:
                    return "fp16"
            if node.op_type == "Constant":
                return "fp16" if node.attribute[0].t.data_type == TensorProto.FLOAT16 else "fp32"
            name, seen = node.input[0] if node.input else "", seen + 1
        t = inits.get(name)
        return "fp16" if t is not None and t.data_type == TensorProto.FLOAT16 else "fp32"

    macs = {"fp32": 0.0, "int8": 0.0, "fp16": 0.0}
    for n in g.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        w, out = shapes.get(n.input[1]), shapes.get(n.output[0])
        if not w or not out or not all(out) or not all(w):
            continue
        if n.op_type == "Conv":  # out (N, Cout, *spatial) x Cin/groups x kernel
            m = math.prod(out) * math.prod(w[1:])
        elif n.op_type == "ConvTranspose":
            x = shapes.get(n.input[0]) or []
            m = math.prod(x) * math.prod(w[1:]) if x and all(x) else 0
        else:  # Gemm / MatMul: every output element is a dot product over the shared dimension
            trans = any(a.name == "transB" and a.i for a in n.attribute)
            k = w[-1] if (n.op_type == "Gemm" and trans) else w[-2] if len(w) >= 2 else w[0]
            m = math.prod(out) * k
        macs[precision(n.input[1])] += float(m)
    x = shapes.get(g.input[0].name) if g.input else None
    pixels = float(math.prod(x[2:])) if x and len(x) >= 4 and all(x[2:]) else 0.0
    return {"gmacs_fp32": macs["fp32"] / 1e9, "gmacs_int8": macs["int8"] / 1e9, "gmacs_fp16": macs["fp16"] / 1e9,
            "mpixels": pixels / 1e6}


def _row(features: dict[str, float]) -> list[float]:
    return [float(features.get(f, 0.0)) for f in FEATURES] + [1.0]


class LatencyModel:
    """latency ~ sum of non-negative costs per GMAC in each precision, per input megapixel, and a constant
    (non-negative least squares: a cost can be 0, never negative, so the fit cannot credit a model for more
    work)."""

    def __init__(self, rows: Sequence[dict[str, float]], latencies: Sequence[float]):
        from scipy.optimize import nnls

        self.n = len(rows)
        x = np.asarray([_row(r) for r in rows], dtype=np.float64)
        y = np.asarray(latencies, dtype=np.float64)
        # relative error is what matters (a 2 ms model and a 20 ms one alike): weight each row by 1 / y
        w = 1.0 / np.maximum(y, 1e-9)
        self.coef, _ = nnls(x * w[:, None], y * w)

    def predict(self, features: dict[str, float]) -> float:
        return float(np.dot(self.coef, _row(features)))

    @staticmethod
    def held_out_errors(rows: Sequence[dict[str, float]], latencies: Sequence[float], *, folds: int = 20
                        ) -> list[float]:
        """Absolute relative errors of each trial predicted by a fit on the others: leave-one-out up to
        ``folds`` trials, else ``folds``-fold (trial i in fold i mod folds), so a long sweep stays cheap."""
        n = len(rows)
        k = n if n <= folds else folds
        errs = []
        for f in range(k):
            held = [i for i in range(n) if i % k == f]
            rest = [i for i in range(n) if i % k != f]
            if len(rest) < 2:
                continue
            m = LatencyModel([rows[j] for j in rest], [latencies[j] for j in rest])
            errs += [abs(m.predict(rows[i]) - latencies[i]) / max(latencies[i], 1e-9) for i in held]
        return errs


def _quantile(xs: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(xs, dtype=np.float64), q)) if xs else float("nan")


class Screen:
    """Decides, from a candidate's evidence and the measured trials, whether it can still reach the front
    or meet the constraints (see the module docstring). ``keys`` / ``goals``: the objectives;
    ``constraints``: parsed constraints; ``devices``: the devices the trials are measured on."""

    def __init__(self, *, mode: str, keys: Sequence[str], goals: Sequence[str], constraints: Sequence,
                 devices: Sequence[str], min_trials: int = 8):
        self.mode, self.keys, self.goals = mode, list(keys), list(goals)
        self.constraints, self.devices, self.min_trials = list(constraints), list(devices), int(min_trials)

    # -- the evidence of measured trials ---------------------------------------------------------------
    @staticmethod
    def _measured(records: Sequence[tuple[int, Any]]) -> list[tuple[int, Any]]:
        """Completed trials measured by the devices themselves (not reused) that carry screen evidence."""
        return [(n, r) for n, r in records
                if r.values and r.reused_from is None and isinstance(getattr(r, "screen", None), dict)
                and r.screen.get("features")]

    def latency_fit(self, key: str, runtime: str | None, records) -> tuple[LatencyModel | None, float, int]:
        """(model, margin, trials) for one latency objective on one runtime; model None below ``min_trials``."""
        pts = [(r.screen["features"], r.values[key]) for _, r in self._measured(records)
               if r.runtime == runtime and r.values.get(key) is not None]
        if len(pts) < self.min_trials:
            return None, float("nan"), len(pts)
        rows, ys = [p[0] for p in pts], [p[1] for p in pts]
        errs = LatencyModel.held_out_errors(rows, ys)
        return LatencyModel(rows, ys), max(LAT_MARGIN_MIN, _quantile(errs, 0.9)), len(pts)

    def accuracy_margin(self, key: str, runtime: str | None, records) -> tuple[float | None, int]:
        """How far a trial measured on ``runtime`` exceeded its rung in accuracy, at most (plus
        ``ACC_MARGIN_MIN``); None below ``min_trials``."""
        metric = key.split("@")[0]
        res = [r.values[key] - r.screen["rung"][metric] for _, r in self._measured(records)
               if r.runtime == runtime and r.values.get(key) is not None and metric in (r.screen.get("rung") or {})]
        if len(res) < self.min_trials:
            return None, len(res)
        return max(0.0, max(res)) + ACC_MARGIN_MIN, len(res)

    # -- one candidate ---------------------------------------------------------------------------------
    def judge(self, evidence: dict, *, runtime: str | None, known: dict[str, float], records,
              baseline: dict[str, float] | None) -> dict:
        """``evidence``: {features, rung}; ``known``: the artifact's exact values (sizes); ``records``:
        (number, TrialRecord) of the completed trials. Returns the ``screen`` entry of the trial's record:
        the evidence, ``predicted`` latencies, the ``optimistic`` point and ``skip`` (the reason, or None;
        in shadow mode the reason it would have been skipped, with ``applied: false``)."""
        from edgetune.objectives import METRICS

        out: dict[str, Any] = {"features": evidence.get("features"), "rung": evidence.get("rung") or {},
                               "predicted": {}, "optimistic": {}, "skip": None, "applied": self.mode == "on"}
        optimistic: dict[str, float] = dict(known)
        unknown = []
        for key in self.keys:
            metric, _, device = key.partition("@")
            if key in known:
                continue
            if metric.startswith("latency_") and out["features"]:
                model, margin, n = self.latency_fit(key, runtime, records)
                if model is None:
                    unknown.append(f"{key} (predictor: {n} of {self.min_trials} trials measured)")
                    continue
                pred = model.predict(out["features"])
                out["predicted"][key] = round(pred, 4)
                optimistic[key] = pred * (1 - margin)
            elif device and metric in out["rung"] and METRICS.get(metric) is not None and METRICS[metric].goal == "max":
                margin, n = self.accuracy_margin(key, runtime, records)
                if margin is None:
                    unknown.append(f"{key} (rung: {n} of {self.min_trials} trials measured)")
                    continue
                optimistic[key] = out["rung"][metric] + margin
            else:
                unknown.append(key)
        out["optimistic"] = {k: round(v, 6) for k, v in optimistic.items() if k in self.keys}
        for c in self.constraints:  # a constraint even the optimistic point misses
            if sum(k not in known for k in c.keys) > 1:
                continue  # two estimated values (latency@a <= 1.2 * latency@b): their bounds do not bound it
            try:
                v = float(c.violation(optimistic, baseline or {}))
            except KeyError:
                continue
            if v > 0:
                out["skip"] = f"cannot meet `{c.text}` (optimistic values: {_fmt(optimistic, c.keys)})"
                return out
        if unknown:
            out["unknown"] = unknown
            return out
        for number, rec in records:
            if not rec.feasible or not all(k in rec.values for k in self.keys):
                continue
            if _dominates([rec.values[k] for k in self.keys], [optimistic[k] for k in self.keys], self.goals):
                out["skip"] = (f"dominated by trial {number} even at its optimistic values "
                               f"({_fmt(optimistic, self.keys)})")
                out["dominated_by"] = number
                return out
        return out


def _dominates(a: Sequence[float], b: Sequence[float], goals: Sequence[str]) -> bool:
    better = False
    for x, y, g in zip(a, b, goals, strict=True):
        if (x < y) if g == "max" else (x > y):
            return False
        better |= (x > y) if g == "max" else (x < y)
    return better


def _fmt(values: dict[str, float], keys) -> str:
    return ", ".join(f"{k} {values[k]:.4g}" for k in keys if k in values)


def screen_report(records: Sequence[tuple[int, Any]], *, keys: Sequence[str], ranks: dict[int, int]) -> dict:
    """The sweep's screening summary: per latency objective, the predictor's held-out (leave-one-out)
    absolute % error (median, p90, trials) on the trials measured with screen evidence, per runtime pooled;
    the trials skipped; in shadow mode, those the rule would have skipped and how many of them are on the
    final front (``false_skips``)."""
    measured = Screen._measured(records)
    report: dict[str, Any] = {"predictor": {}, "skipped": [], "would_skip": [], "false_skips": []}
    for key in keys:
        if not key.startswith("latency_"):
            continue
        errs: list[float] = []
        for runtime in {r.runtime for _, r in measured}:
            pts = [(r.screen["features"], r.values[key]) for _, r in measured
                   if r.runtime == runtime and r.values.get(key) is not None]
            if len(pts) >= 4:
                errs += LatencyModel.held_out_errors([p[0] for p in pts], [p[1] for p in pts])
        if errs:
            report["predictor"][key] = {"median_pct": round(100 * _quantile(errs, 0.5), 1),
                                        "p90_pct": round(100 * _quantile(errs, 0.9), 1), "trials": len(errs)}
    for number, rec in records:
        s = getattr(rec, "screen", None)
        if not isinstance(s, dict) or not s.get("skip"):
            continue
        if rec.values:  # measured anyway (shadow): would the rule have lost a front point?
            report["would_skip"].append(number)
            if ranks.get(number) == 0:
                report["false_skips"].append(number)
        else:
            report["skipped"].append(number)
    return report


def summary_lines(rep: dict, *, shadow: bool) -> tuple[list[str], dict[str, float]]:
    """(lines for the log and the sweep's note, parent-run metrics) of a :func:`screen_report`."""
    from edgetune.search.records import mlflow_key

    lines, metrics = [], {"screen_skipped": len(rep["skipped"]), "screen_would_skip": len(rep["would_skip"]),
                          "screen_false_skips": len(rep["false_skips"])}
    for key, e in rep["predictor"].items():
        lines.append(f"latency predictor {key}: held-out error median {e['median_pct']:.1f}%, p90 "
                     f"{e['p90_pct']:.1f}% ({e['trials']} trials, leave-one-out; predictions only steer the search)")
        metrics[f"predictor_err_p50_pct.{mlflow_key(key)}"] = e["median_pct"]
        metrics[f"predictor_err_p90_pct.{mlflow_key(key)}"] = e["p90_pct"]
    if rep["skipped"]:
        lines.append(f"screen: {len(rep['skipped'])} candidate(s) skipped, not measured (trials "
                     f"{', '.join(map(str, rep['skipped']))}: MLflow status skipped, skip_reason)")
    if shadow:
        lines.append(f"screen (shadow): would have skipped {len(rep['would_skip'])} measured trial(s); "
                     f"{len(rep['false_skips'])} of them on the front"
                     + (f" ({', '.join(map(str, rep['false_skips']))})" if rep["false_skips"] else ""))
    return lines, metrics
