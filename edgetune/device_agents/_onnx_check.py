"""A dependency-free scan of an ONNX file's protobuf wire format (the agent has no ``onnx`` package).

It answers what the agent must know before handing bytes from the network to a runtime: is this an
ONNX ModelProto at all (and not a pickle or an archive), does any tensor reference external data
(refused: a path in the model could point anywhere on the device), and which precisions the graph
carries (QDQ int8, fp16; the TensorRT paths need to know). Field numbers are those of ``onnx.proto3``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OnnxSummary", "scan_onnx", "not_onnx_reason"]

_MAX_DEPTH = 64
_FLOAT16 = 10
_EXTERNAL = 1

# message -> {field number: child message kind}; every other field is skipped by its wire type.
_CHILDREN = {
    "model": {7: "graph", 8: "opset", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
    "opset": {},
}


@dataclass
class OnnxSummary:
    """What :func:`scan_onnx` found. ``parsed`` is False when the bytes are not a valid ModelProto
    (``error`` says why); the other fields are then partial."""

    parsed: bool = False
    error: str | None = None
    ir_version: int | None = None
    has_graph: bool = False
    opsets: dict[str, int] = field(default_factory=dict)
    op_types: set[str] = field(default_factory=set)
    external_tensors: list[str] = field(default_factory=list)
    has_fp16: bool = False

    @property
    def has_qdq(self) -> bool:
        return bool({"QuantizeLinear", "DequantizeLinear"} & self.op_types)


class _WireError(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) where value is an int (varint) or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _WireError("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
            yield num, wt, val
        elif wt == 1 or wt == 5:
            size = 8 if wt == 1 else 4
            if pos + size > end:
                raise _WireError("truncated fixed-width field")
            pos += size
        elif wt == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _WireError(f"length-delimited field {num} runs past the end of its message")
            yield num, wt, buf[pos : pos + size]
            pos += size
        else:
            raise _WireError(f"unsupported wire type {wt} (field {num})")


def _walk(buf: memoryview, kind: str, out: OnnxSummary, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _WireError("messages nested too deeply")
    children = _CHILDREN[kind]
    tensor_name, tensor_external = "", False
    domain, version = "", None
    for num, wt, val in _fields(buf):
        if kind == "model":
            if num == 1 and wt == 0:
                out.ir_version = val
            elif num == 7 and wt == 2:
                out.has_graph = True
        elif kind == "node" and num == 4 and wt == 2:
            out.op_types.add(bytes(val).decode("utf-8", "replace"))
        elif kind == "tensor":
            if num == 2 and wt == 0 and val == _FLOAT16:
                out.has_fp16 = True
            elif num == 8 and wt == 2:
                tensor_name = bytes(val).decode("utf-8", "replace")
            elif (num == 13 and wt == 2) or (num == 14 and wt == 0 and val == _EXTERNAL):
                tensor_external = True
        elif kind == "opset":
            if num == 1 and wt == 2:
                domain = bytes(val).decode("utf-8", "replace")
            elif num == 2 and wt == 0:
                version = val
        child = children.get(num)
        if child is not None:
            if wt != 2:
                raise _WireError(f"field {num} of a {kind} should be a message")
            _walk(val, child, out, depth + 1)
    if tensor_external:
        out.external_tensors.append(tensor_name or "<unnamed>")
    if kind == "opset" and version is not None:
        out.opsets[domain or "ai.onnx"] = version


def scan_onnx(data: bytes | bytearray | memoryview) -> OnnxSummary:
    """Scan ONNX bytes (never raises on bad input: see ``parsed`` / ``error``)."""
    out = OnnxSummary()
    try:
        _walk(memoryview(data), "model", out, 0)
    except _WireError as exc:
        out.error = f"not a valid ONNX protobuf: {exc}"
        return out
    if out.ir_version is None or not out.has_graph:
        out.error = "not an ONNX model: it has no ir_version or no graph"
        return out
    out.parsed = True
    return out


_MAGIC = {
    b"\x80": "a Python pickle", b"PK\x03\x04": "a zip archive (a torch checkpoint?)",
    b"\x93NUMPY": "a numpy array", b"\x89HDF": "an HDF5 file", b"\x1f\x8b": "a gzip file",
}


def not_onnx_reason(head: bytes) -> str | None:
    """Why a file starting with ``head`` is certainly not ONNX (a pickle, an archive, ...), else None."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return f"it is {what}, not an ONNX model"
    return None
