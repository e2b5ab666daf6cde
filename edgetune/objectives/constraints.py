"""Constraints like ``map50_95 >= 0.95 * baseline.map50_95`` or ``latency_p50_ms@pi <= 50``.

Parsed once with Python's ``ast`` (a whitelist: numbers, metric names, ``metric@device``,
``baseline.metric[@device]``, + - * /, one comparison ``<=`` / ``>=`` / ``<`` / ``>``). Evaluated to a
float that is <= 0 when the constraint holds, as ``optuna.trial.Trial.set_constraint`` expects.
"""

from __future__ import annotations

import ast
import contextvars
import operator
import re
from dataclasses import dataclass, field

from edgetune.errors import ConfigError
from edgetune.objectives.metrics import canonical_names, get_metric, metric_key

__all__ = ["Constraint", "parse_constraint"]

_ALIASES: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("device_aliases", default=None)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass(frozen=True)
class Constraint:
    text: str
    op: str  # "<=" or ">="
    lhs: ast.expr = field(repr=False, compare=False)
    rhs: ast.expr = field(repr=False, compare=False)
    keys: frozenset[str] = frozenset()  # value keys it reads (metric or metric@device)
    baseline_keys: frozenset[str] = frozenset()

    def violation(self, values: dict[str, float], baseline: dict[str, float] | None = None) -> float:
        """<= 0 when satisfied; the amount by which it is violated otherwise."""
        lhs, rhs = _eval(self.lhs, values, baseline or {}), _eval(self.rhs, values, baseline or {})
        return lhs - rhs if self.op == "<=" else rhs - lhs


def _ref(node: ast.expr, default_device: str | None, devices: set[str], where: str) -> tuple[str, bool]:
    """(value key, is_baseline) of a metric reference node."""
    is_base = False
    device = None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        if not isinstance(node.right, ast.Name):
            raise ConfigError(f"{where}: the device after '@' must be a device name.")
        device, node = (_ALIASES.get() or {}).get(node.right.id, node.right.id), node.left
        if device not in devices:
            raise ConfigError(f"{where}: device {device!r} is not in `devices:` ({', '.join(sorted(devices)) or 'none'}).")
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "baseline":
        is_base, name = True, node.attr
    elif isinstance(node, ast.Name):
        name = node.id
    else:
        raise ConfigError(f"{where}: expected a metric name, got {ast.unparse(node)!r}.")
    metric = get_metric(name)
    if metric.on_device and device is None:
        if default_device is None:
            raise ConfigError(f"{where}: '{name}' is measured per device; write {name}@DEVICE.")
        device = default_device
    return metric_key(name, device), is_base


def _compile(node: ast.expr, default_device, devices, where, keys: set, base_keys: set) -> ast.expr:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return ast.UnaryOp(ast.USub(), _compile(node.operand, default_device, devices, where, keys, base_keys))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return ast.BinOp(_compile(node.left, default_device, devices, where, keys, base_keys), node.op,
                         _compile(node.right, default_device, devices, where, keys, base_keys))
    if isinstance(node, (ast.Name, ast.Attribute)) or (isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)):
        key, is_base = _ref(node, default_device, devices, where)
        (base_keys if is_base else keys).add(key)
        return ast.Name(("baseline:" if is_base else "") + key)
    raise ConfigError(f"{where}: {ast.unparse(node)!r} is not allowed (numbers, metrics, baseline.metric, + - * /).")


def _eval(node: ast.expr, values: dict[str, float], baseline: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        return -_eval(node.operand, values, baseline)
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, values, baseline), _eval(node.right, values, baseline))
    name = node.id
    src, key = (baseline, name.removeprefix("baseline:")) if name.startswith("baseline:") else (values, name)
    if key not in src:
        raise KeyError(f"{'baseline ' if src is baseline else ''}value '{key}' was not measured")
    return float(src[key])


def parse_constraint(text: str, *, devices: list[str], where: str = "constraint") -> Constraint:
    """Parse one constraint; ``devices`` are the sweep's device names (the first is the default)."""
    where = f"{where} {text!r}"
    text = canonical_names(text)  # mAP50-95, p50, ... -> map50_95, latency_p50_ms
    # device names may hold '-' or '.', which Python would parse as operators: alias them first
    aliases: dict[str, str] = {}

    def _alias(m: re.Match) -> str:  # "baseline.x@dev-1" -> "(baseline.x @ __device_0)": '@' binds locally
        alias = f"__device_{len(aliases)}"
        aliases[alias] = m.group(2)
        return f"({m.group(1)} @ {alias})"

    src = re.sub(r"((?:baseline\.)?[A-Za-z_][A-Za-z0-9_]*)\s*@\s*([A-Za-z0-9][A-Za-z0-9_.-]*)", _alias, text)
    try:
        tree = ast.parse(src, mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"{where} does not parse ({exc.msg}). Example: 'map50_95 >= 0.95 * baseline.map50_95'.") from exc
    if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1):
        raise ConfigError(f"{where} must be one comparison, e.g. 'latency_p50_ms@pi <= 40'.")
    op = tree.ops[0]
    if isinstance(op, (ast.LtE, ast.Lt)):
        sym = "<="
    elif isinstance(op, (ast.GtE, ast.Gt)):
        sym = ">="
    else:
        raise ConfigError(f"{where}: use <=, <, >= or >.")
    keys: set[str] = set()
    base: set[str] = set()
    default = devices[0] if devices else None
    token = _ALIASES.set(aliases)
    try:
        lhs = _compile(tree.left, default, set(devices), where, keys, base)
        rhs = _compile(tree.comparators[0], default, set(devices), where, keys, base)
    finally:
        _ALIASES.reset(token)
    return Constraint(text, sym, lhs, rhs, frozenset(keys), frozenset(base))
