"""Pick rules: ``max map50_95 where latency_p50_ms@pi <= 40 and size_bytes <= 2e6``.

``max|min METRIC[@DEVICE] [where CONDITION [and CONDITION ...]]``. A condition is a sweep constraint
(:func:`edgetune.objectives.constraints.parse_constraint`: metrics, ``metric@device``,
``baseline.metric``, numbers, + - * /, one of ``<= < >= >``), parsed with ``ast``, never evaluated as
Python. A metric without ``@DEVICE`` means the sweep's first device, as in constraints. When nothing
matches, the error lists the nearest trials with the values the rule reads.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

from edgetune.errors import ConfigError, DeployError
from edgetune.objectives.constraints import Constraint, parse_constraint
from edgetune.objectives.metrics import canonical_names, get_metric, metric_key

__all__ = ["noise_ties", "PickRule", "Condition", "parse_rule", "pick"]

_RULE = re.compile(r"^\s*(max|min)\s+([A-Za-z_][A-Za-z0-9_]*(?:\s*@\s*[A-Za-z0-9_.-]+)?)\s*(?:\bwhere\b\s*(.*))?$",
                   re.DOTALL)
_EXAMPLE = "max map50_95 where latency_p50_ms@pi <= 40 and size_bytes <= 2e6"


@dataclass(frozen=True)
class Condition:
    constraint: Constraint
    strict: bool  # ``<`` / ``>``: equality does not satisfy it

    @property
    def text(self) -> str:
        return self.constraint.text

    def slack(self, values: dict[str, float], baseline: dict[str, float] | None) -> float | None:
        """How far the condition is violated (<= 0: holds; None: a value it reads was not measured)."""
        try:
            return self.constraint.violation(values, baseline)
        except KeyError:
            return None

    def holds(self, values: dict[str, float], baseline: dict[str, float] | None) -> bool:
        v = self.slack(values, baseline)
        return v is not None and (v < 0 if self.strict else v <= 0)


@dataclass(frozen=True)
class PickRule:
    text: str
    goal: str  # "max" | "min"
    key: str  # the value key ranked (``metric`` or ``metric@device``)
    conditions: tuple[Condition, ...] = ()

    @property
    def keys(self) -> list[str]:
        out = [self.key]
        for c in self.conditions:
            out += sorted(k for k in c.constraint.keys if k not in out)
        return out


def parse_rule(text: str, *, devices: Sequence[str]) -> PickRule:
    """Parse a pick rule against the sweep's device names; ConfigError says what is wrong and shows an example."""
    m = _RULE.match(canonical_names(text or ""))  # mAP50-95, p50, ... -> map50_95, latency_p50_ms
    if not m:
        raise ConfigError(f"--pick {text!r} is not a rule; write `max|min METRIC[@DEVICE] [where CONDITION and ...]`, "
                          f"e.g. '{_EXAMPLE}'.")
    goal, target, where = m.group(1), re.sub(r"\s+", "", m.group(2)), (m.group(3) or "").strip()
    name, _, device = target.partition("@")
    metric = get_metric(name)  # unknown metric: lists the valid ones
    if device and device not in devices:
        raise ConfigError(f"--pick {text!r}: device {device!r} is not in the sweep's `devices:` ({', '.join(devices)}).")
    if device and not metric.on_device:
        raise ConfigError(f"--pick {text!r}: {name} does not depend on the device; drop '@{device}'.")
    key = metric_key(name, device or (devices[0] if devices else None)) if metric.on_device else name
    if m.group(3) is not None and not where:
        raise ConfigError(f"--pick {text!r}: nothing after `where`; e.g. '{_EXAMPLE}'.")
    return PickRule(text=text.strip(), goal=goal, key=key, conditions=_conditions(where, text, devices) if where else ())


def _conditions(where: str, text: str, devices: Sequence[str]) -> tuple[Condition, ...]:
    try:
        tree = ast.parse(where, mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"--pick {text!r}: the `where` part does not parse ({exc.msg}); e.g. '{_EXAMPLE}'.") from None
    if isinstance(tree, ast.BoolOp) and not isinstance(tree.op, ast.And):
        raise ConfigError(f"--pick {text!r}: only `and` joins conditions (no `or`); deploy each case separately.")
    parts = tree.values if isinstance(tree, ast.BoolOp) else [tree]
    out = []
    for node in parts:
        src = ast.get_source_segment(where, node) or ast.unparse(node)
        constraint = parse_constraint(src, devices=list(devices), where="--pick condition")
        strict = isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.Lt, ast.Gt))
        out.append(Condition(constraint, strict))
    return tuple(out)


def _fmt(v: float | None) -> str:
    if v is None:
        return "not measured"
    return f"{v:.6g}" if abs(v) < 1e5 else f"{v:,.0f}"


def pick(rule: PickRule, points: Sequence, *, baseline: dict[str, float] | None = None, sweep: str = "the sweep"):
    """The completed trial that best satisfies ``rule`` (ties: the lower trial number). DeployError when
    none does, listing the nearest trials and the values the rule reads."""
    done = [p for p in points if p.complete]
    if not done:
        raise DeployError(f"{sweep} has no completed trial to pick from; run the sweep first.")
    ranked = [p for p in done if p.values.get(rule.key) is not None]
    if not ranked:
        measured = sorted({k for p in done for k in p.values})
        raise DeployError(f"--pick ranks by {rule.key}, which {sweep} never measured; measured values: "
                          f"{', '.join(measured)}.")
    matches = [p for p in ranked if all(c.holds(p.values, baseline) for c in rule.conditions)]
    if matches:
        sign = -1.0 if rule.goal == "max" else 1.0
        return min(matches, key=lambda p: (sign * p.values[rule.key], p.number))
    raise DeployError(f"no trial of {sweep} satisfies --pick '{rule.text}' ({len(ranked)} completed trial(s)). "
                      f"Nearest: {_nearest(rule, ranked, baseline)}. Relax the rule or run more trials.")


def _nearest(rule: PickRule, points: Sequence, baseline: dict[str, float] | None, n: int = 3) -> str:
    """The ``n`` trials with the smallest total violation (each condition scaled by its largest violation)."""
    slacks = {p.number: [c.slack(p.values, baseline) for c in rule.conditions] for p in points}
    scale = [max((abs(s[i]) for s in slacks.values() if s[i] is not None), default=1.0) or 1.0
             for i in range(len(rule.conditions))]

    def distance(p) -> float:
        return sum(float("inf") if s is None else max(s, 0.0) / scale[i] for i, s in enumerate(slacks[p.number]))

    lines = []
    for p in sorted(points, key=lambda p: (distance(p), p.number))[:n]:
        missed = [c.text for c in rule.conditions if not c.holds(p.values, baseline)]
        vals = ", ".join(f"{k}={_fmt(p.values.get(k))}" for k in rule.keys)
        lines.append(f"trial {p.number} ({p.label}): {vals}; fails {' and '.join(repr(t) for t in missed)}")
    return "; ".join(lines)


def noise_ties(rule: PickRule, chosen, points: Sequence, *, baseline: dict[str, float] | None = None) -> list:
    """The other trials that satisfy ``rule`` and are within measurement noise of ``chosen`` on the value
    the rule ranks by (see ``edgetune.search.front.within_noise``): the pick between them is luck."""
    from edgetune.search.front import within_noise
    from edgetune.search.records import latency_ci_columns

    def row(p) -> dict:
        return {**p.values, **latency_ci_columns(p.record)}

    mine = row(chosen)
    return [p for p in points if p.complete and p.number != chosen.number and p.values.get(rule.key) is not None
            and all(c.holds(p.values, baseline) for c in rule.conditions) and within_noise(mine, row(p), rule.key)]
