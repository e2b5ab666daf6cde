"""What each device kind can run and accelerate: the ONE rule table of edgetune.

A search space only offers a choice when at least one target device benefits from it; the quantization
recipe (activation type, symmetry, op types that get QDQ) follows the device kinds too. Every line of
the table is a measurement or a documented runtime fact (see docs/compression.md):

===============  ==============  ================  ==================  =====================================
kind             runtime         precisions        sparsity kinds      int8 recipe
===============  ==============  ================  ==================  =====================================
``x86-cpu``      onnxruntime CPU fp32, int8        channel,            uint8 activations (asymmetric),
                                                   unstructured        per-channel int8 weights, QDQ on
                                                                       Conv + the ops ORT fuses with it
``local-cpu``    same as x86-cpu (the local agent on this machine)
``rpi4``         onnxruntime CPU fp32, int8 [1]    channel,            as x86-cpu
                 ARMv8.0                           unstructured
``rpi5``         onnxruntime CPU fp32, int8        channel,            as x86-cpu
                 ARMv8.2 dotprod                   unstructured
``jetson-orin``  TensorRT        fp32, fp16, int8  channel,            int8 activations, symmetric
                                                   unstructured, 2:4   (TensorRT needs zero-point 0)
``jetson-thor``  TensorRT        fp32, fp16, int8  as jetson-orin      as jetson-orin
``jetson-xavier`` TensorRT       fp32, fp16, int8  channel,            as jetson-orin
                                                   unstructured [2]
``jetson-nano``, TensorRT        fp32, fp16 [3]    channel,            (no int8)
``jetson-tx2``                                     unstructured
``rpi3``         onnxruntime CPU fp32, int8 [1]    as rpi4             as x86-cpu
``arm64-cpu``    onnxruntime CPU fp32, int8 [1]    channel,            as x86-cpu
                                                   unstructured
===============  ==============  ================  ==================  =====================================

[1] int8 on an ARMv8.0 core (no dot-product) is often slower than fp32; it stays offered because only
    measurement on the device tells, but the table records the warning.
[2] Xavier's Volta GPU (compute capability 7.2) has int8 tensor cores but no sparse ones: 2:4 needs
    Ampere (8.x, Orin) or later (Thor: Blackwell). By NVIDIA's documented compute capabilities; no
    Xavier, Thor, Nano or TX2 was run.
[3] The Nano's Maxwell (5.3) and the TX2's Pascal (6.2) GPUs have no fast int8 path in TensorRT
    (``platform_has_fast_int8`` is false there), so int8 is not offered.

A kind outside the table (what an agent reports on a board edgetune does not know: ``riscv64-cpu``, a bare
``jetson`` or ``rpi``) gets the generic rules of its family with a warning, never an error: the generic
Jetson rules (fp32, fp16) for ``jetson*``, the ARMv8.0 Pi rules for ``rpi*``, the generic CPU rules
otherwise. A kind written in a config must still be one of the table (a typo is an error there).

- fp16 is never offered for CPU-only fleets: the onnxruntime CPU EP casts back to fp32 (no speed-up,
  often a slow-down); only a GPU/TensorRT target benefits.
- 2:4 sparsity needs NVIDIA sparse tensor cores (Ampere / Orin) and TensorRT; nothing else exploits it.
- Unstructured sparsity speeds up no runtime; it is offered everywhere because it shrinks the
  compressed (zstd) artifact, which is a real gain for over-the-air updates.
- QDQ op types (measured on an x86 VM with AVX-512, det-s, 1 thread; on an AVX2-only AMD EPYC VM
  int8 was barely faster than fp32 at all, see the README): Conv alone left a Q/DQ pair around every
  ReLU, Add and Concat and was no faster than fp32 (4.7 vs 4.6 ms); Conv + Relu + Add + Concat +
  Resize with uint8 activations was 1.6x faster (2.9 ms); signed symmetric activations (the TensorRT
  recipe) were 1.5x SLOWER than fp32 on the CPU (6.9 ms: ORT has no s8s8 depthwise kernel). Element-wise
  math such as SiLU's Sigmoid*Mul stays float (quantizing every op with signed activations made YOLO11n
  slower than fp32), and the decode tail after the last layers is never quantized (one scale for
  pixel boxes and 0-1 scores destroys the scores).

When a sweep targets several kinds, one artifact is measured on all of them: the offered choices are the
union over the kinds, and the int8 recipe is the strictest (symmetric if any target needs it; the op
types every target accepts). A fleet that mixes TensorRT and CPU devices therefore pays the symmetric
recipe's CPU cost; compress once per recipe (``space.targets``) when that matters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from edgetune._logging import get_logger
from edgetune._strict import Strict
from edgetune.errors import ConfigError, closest_names

log = get_logger(__name__)

__all__ = ["QuantSettings", "KindRule", "RULES", "DEVICE_KINDS", "rule_for", "offered", "quant_for_kinds",
           "PRECISIONS", "SPARSITY_KINDS", "RUNTIMES"]

PRECISIONS = ("fp32", "fp16", "int8")
# The agent runtimes a space may search over (``space.runtime``); the same names as the agent's runtime
# registry (``edgetune.device_agents.runtimes``, checked by a test), kept here so spaces import no agent code.
# ncnn runs fp32 artifacts only (int8 / fp16 ones fail at load, saying so): a space does not yet drop the
# precisions a runtime cannot take from the trials on that runtime (#29 item 3)
RUNTIMES = ("ort", "openvino", "tensorrt", "ncnn")
SPARSITY_KINDS = ("channel", "unstructured", "2:4")


class QuantSettings(Strict):
    """How int8 layers are quantized (onnxruntime static QDQ). Part of the artifact hash."""

    activation_type: Literal["uint8", "int8"] = "uint8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("Conv", "Relu", "Clip", "Add", "Concat", "Resize", "MaxPool", "AveragePool",
                                 "GlobalAveragePool", "Gemm", "MatMul")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=50.0, le=100.0)
    placement: Literal["onnxruntime", "openvino"] = Field(
        default="onnxruntime", description="where the Q/DQ pairs go. 'onnxruntime': on the inputs AND outputs of "
        "every quantized op (onnxruntime fuses DQ -> Conv -> Q into one int8 kernel). 'openvino': on the inputs of "
        "convolutions only, Conv outputs and Concat left float (NNCF's placement: OpenVINO fuses Conv + SiLU and "
        "requantizes at the next conv; a Q/DQ on a Conv output splits that fusion). Set per trial from its runtime.")

    def for_runtime(self, runtime: str | None) -> QuantSettings:
        """The recipe as the runtime that will run it wants it placed (see ``placement``).

        Measured on the builtin yolo11n, OpenVINO 2026.4, 1 thread of an AVX-512 VNNI EPYC (docs/measurements.md):
        the 'onnxruntime' placement ran 7.36 ms on OpenVINO, the 'openvino' one 5.98 ms at 0.8711 mAP50-95
        (fp32 0.8715), while onnxruntime runs the 'openvino' placement slower than fp32 (16.9 vs 12.0 ms)."""
        placement = "openvino" if runtime == "openvino" else "onnxruntime"
        return self if placement == self.placement else self.model_copy(update={"placement": placement})

    def identity(self) -> dict:
        """The settings as hashed into an artifact key (the default placement is left out, so artifacts made
        before ``placement`` existed keep their hashes)."""
        d = self.model_dump(mode="json")
        if d["placement"] == "onnxruntime":
            d.pop("placement")
        return d


@dataclass(frozen=True)
class KindRule:
    """One device kind: what it runs, which choices pay off there, and its int8 recipe."""

    kind: str
    runtime: str
    precisions: tuple[str, ...]
    sparsity_kinds: tuple[str, ...]
    quant: QuantSettings
    note: str = ""


_CPU_QUANT = QuantSettings(activation_type="uint8", activation_symmetric=False)
_TRT_QUANT = QuantSettings(activation_type="int8", activation_symmetric=True)
_CPU_SPARSITY = ("channel", "unstructured")


def _cpu(kind: str, note: str) -> KindRule:
    """An onnxruntime CPU device: fp32 and int8 (uint8 activations), channel and unstructured sparsity."""
    return KindRule(kind, "onnxruntime-cpu", ("fp32", "int8"), _CPU_SPARSITY, _CPU_QUANT, note)


def _trt(kind: str, precisions: tuple[str, ...], sparsity: tuple[str, ...], note: str) -> KindRule:
    """A TensorRT (Jetson) device: symmetric int8 QDQ where it has int8."""
    return KindRule(kind, "tensorrt", precisions, sparsity, _TRT_QUANT, note)


_GPU_FULL = ("fp32", "fp16", "int8")
RULES: dict[str, KindRule] = {r.kind: r for r in (
    _cpu("x86-cpu", "int8 fast with VNNI; fp16 has no CPU kernels (casts back to fp32)"),
    _cpu("local-cpu", "the local agent on this machine: same rules as x86-cpu"),
    _cpu("rpi4", "Cortex-A72, ARMv8.0 without dot-product: int8 may be SLOWER than fp32; no fp16"),
    _cpu("rpi5", "Cortex-A76, ARMv8.2 dot-product: int8 fast; no fp16"),
    _trt("jetson-orin", _GPU_FULL, SPARSITY_KINDS,
         "TensorRT: fp16 and symmetric int8 QDQ; 2:4 sparse tensor cores (wide convs only)"),
    _trt("jetson-thor", _GPU_FULL, SPARSITY_KINDS, "TensorRT on Blackwell: fp16, symmetric int8 QDQ, 2:4 sparse tensor cores"),
    _trt("jetson-xavier", _GPU_FULL, _CPU_SPARSITY,
         "TensorRT on Volta (7.2): fp16 and int8 tensor cores, no sparse ones (no 2:4)"),
    _trt("jetson-nano", ("fp32", "fp16"), _CPU_SPARSITY, "TensorRT on Maxwell (5.3): fp16 only, no fast int8"),
    _trt("jetson-tx2", ("fp32", "fp16"), _CPU_SPARSITY, "TensorRT on Pascal (6.2): fp16 only, no fast int8"),
    _cpu("rpi3", "Cortex-A53, ARMv8.0 without dot-product: int8 may be SLOWER than fp32; no fp16"),
    _cpu("arm64-cpu", "generic ARMv8 CPU: int8 pays only with dot-product (ARMv8.2+); no fp16"),
)}
DEVICE_KINDS = tuple(RULES)
_WARNED: set[str] = set()


def _fallback(kind: str) -> KindRule:
    """The generic rules of an unknown kind's family (see the module docstring)."""
    low = kind.lower()
    if low.startswith("jetson"):
        base = RULES["jetson-nano"]
    elif low.startswith("rpi"):
        base = RULES["rpi4"]
    elif low.startswith(("arm", "aarch64")):
        base = RULES["arm64-cpu"]
    else:
        base = RULES["x86-cpu"]
    family = "Jetson (fp32, fp16)" if base.runtime == "tensorrt" else "CPU (fp32, int8)"
    if kind not in _WARNED:
        _WARNED.add(kind)
        log.warning("device kind %r is not in edgetune's rule table: using the generic %s rules of %r.%s Known "
                    "kinds: %s.", kind, family, base.kind, closest_names(kind, DEVICE_KINDS), ", ".join(DEVICE_KINDS))
    return dataclasses.replace(base, kind=kind, note=f"unknown kind: the generic rules of {base.kind}")


def rule_for(kind: str, *, strict: bool = False) -> KindRule:
    """The rule of one device kind. An unknown kind (one an agent reported) gets its family's generic rules
    with a warning; ``strict`` (a kind the user wrote) makes it an error listing the close and valid ones."""
    if kind in RULES:
        return RULES[kind]
    if strict:
        raise ConfigError(f"unknown device kind {kind!r}.{closest_names(kind, DEVICE_KINDS)} Valid kinds: "
                          f"{', '.join(DEVICE_KINDS)}.")
    return _fallback(kind)


def offered(kinds: list[str] | tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(precisions, sparsity kinds) that at least one of ``kinds`` benefits from (fp32/dense always)."""
    if not kinds:
        raise ConfigError("a search space needs at least one target device kind "
                          f"(one of {', '.join(DEVICE_KINDS)}); set `space.targets`.")
    precisions, sparsity = {"fp32"}, set()
    for k in kinds:
        rule = rule_for(k)
        precisions.update(rule.precisions)
        sparsity.update(rule.sparsity_kinds)
    return precisions, sparsity


def quant_for_kinds(kinds: list[str] | tuple[str, ...], *, calibration: str = "minmax") -> QuantSettings:
    """The one int8 recipe that suits all ``kinds``: symmetric int8 activations if any target needs them,
    otherwise the CPU recipe; op types are those every target quantizes."""
    rules = [rule_for(k) for k in kinds] or [RULES["x86-cpu"]]
    symmetric = any(r.quant.activation_symmetric for r in rules)
    op_types = [t for t in rules[0].quant.op_types if all(t in r.quant.op_types for r in rules)]
    return QuantSettings(activation_type="int8" if symmetric else "uint8", activation_symmetric=symmetric,
                         op_types=tuple(op_types) or ("Conv",), calibration=calibration)
