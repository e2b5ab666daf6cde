"""What the agent must know about bytes from the network before storing them or handing them to a
runtime, read with the ``onnx`` library's ModelProto parser (no external data is ever loaded).

- Is it an ONNX model at all: not a pickle of any protocol, not an archive (torch checkpoints are
  zips), not empty or truncated, a ModelProto with an ``ir_version`` and a graph with nodes.
- Does any tensor reference external data: a ``data_location`` other than DEFAULT or ``external_data``
  entries, anywhere: every message of the file is visited by reflection, so graph and sparse
  initializers, tensor attributes of nodes, subgraphs of If / Loop / Scan, function bodies and their
  attribute defaults, training info and fields a later ONNX adds are all covered. Refused whatever the
  runtime: a path in a model can point anywhere on the device, and whether a runtime keeps it inside the
  model's folder depends on its version.
- Does it use operators of a domain no runtime here implements (a custom op library): refused too, as
  is a file of which more than 64 KiB are fields ONNX does not define (padding built to slow a parser,
  or a payload hidden in front of the model), counted field by field, packed or not.
- Which precisions the graph carries (QDQ int8, fp16): the TensorRT paths need to know.

:func:`check_upload` runs :func:`scan_onnx` in a separate, long-lived process: protobuf parsing holds
the GIL, so a file crafted to parse slowly would stall the agent's event loop (``/health`` included) in
a thread; in a process it stalls nothing, and a check past its time limit kills the process (a new one
serves the next upload). The process reads paths from its stdin, so it exits with the agent.
``python -m edgetune.device_agents._onnx_check FILE`` prints the summary of one file.
"""

from __future__ import annotations

import atexit
import io
import json
import pickletools
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["OnnxSummary", "scan_onnx", "not_onnx_reason", "check_upload", "KNOWN_DOMAINS"]

_FLOAT16 = 10
_DEFAULT = 0  # TensorProto.data_location DEFAULT: the data is in the file (anything else is refused)
_MAX_DEPTH = 64
# operator domains onnxruntime (and TensorRT's ONNX parser, for the standard ones) implements
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training",
                           "com.microsoft.nchwc", "com.ms.internal.nhwc"})
CHECK_TIMEOUT_S = 120.0
MAX_UNKNOWN_BYTES = 64 * 1024  # fields a newer ONNX adds are a few bytes; megabytes of them are not a model


@dataclass
class OnnxSummary:
    """What :func:`scan_onnx` found. ``parsed`` is False when the bytes are not an ONNX model
    (``error`` says why, in one line); the other fields are then partial."""

    parsed: bool = False
    error: str | None = None
    ir_version: int | None = None
    has_graph: bool = False
    opsets: dict[str, int] = field(default_factory=dict)
    op_types: set[str] = field(default_factory=set)
    external_tensors: list[str] = field(default_factory=list)
    custom_domains: list[str] = field(default_factory=list)
    has_fp16: bool = False

    @property
    def has_qdq(self) -> bool:
        return bool({"QuantizeLinear", "DequantizeLinear"} & self.op_types)

    def refusal(self) -> str | None:
        """Why the agent refuses these bytes (None: accept)."""
        if not self.parsed:
            return self.error
        if self.external_tensors:
            return (f"the ONNX references external data for {len(self.external_tensors)} tensor(s) "
                    f"({', '.join(self.external_tensors[:3])}); only self-contained ONNX files are accepted "
                    "(export with external_data=False)")
        if self.custom_domains:
            return (f"the ONNX uses operators of the domain(s) {', '.join(self.custom_domains)}, which no runtime "
                    "of this agent implements (custom operator libraries are not loaded)")
        return None

    def to_json(self) -> str:
        d = asdict(self)
        d["op_types"] = sorted(self.op_types)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> OnnxSummary:
        d = json.loads(text)
        d["op_types"] = set(d.get("op_types") or [])
        return cls(**d)


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


def _is_text_pickle(data: bytes) -> bool:
    """A protocol 0 / 1 pickle (no magic byte): the opcodes read through to STOP."""
    try:
        ops = list(pickletools.genops(io.BytesIO(data[: 1 << 20])))
    except Exception:
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


def _tensor(t, out: OnnxSummary) -> None:
    if t.data_location != _DEFAULT or len(t.external_data):
        out.external_tensors.append(t.name or "<unnamed>")
    if t.data_type == _FLOAT16:
        out.has_fp16 = True


def _node(n, out: OnnxSummary, local_domains: set[str]) -> None:
    out.op_types.add(n.op_type)
    if n.domain not in KNOWN_DOMAINS and n.domain not in local_domains and n.domain not in out.custom_domains:
        out.custom_domains.append(n.domain)


def _walk(model, out: OnnxSummary) -> None:
    """Visit every message of ``model`` through protobuf reflection, not a list of the places ONNX keeps
    tensors today: a TensorProto anywhere (initializers, sparse tensors, node attributes and their
    subgraphs, function bodies and attribute defaults, training info, and any field a later ONNX adds)
    is seen, as is every NodeProto. Iterative: a deep file cannot exhaust the Python stack."""
    from google.protobuf.message import Message

    local = {f.domain for f in model.functions}
    stack = [(model, -1)]  # the main graph is at depth 0, its subgraphs at 1, ...
    while stack:
        msg, depth = stack.pop()
        kind = msg.DESCRIPTOR.full_name
        if kind == "onnx.TensorProto":
            _tensor(msg, out)
        elif kind == "onnx.NodeProto":
            _node(msg, out, local)
        elif kind == "onnx.GraphProto":
            depth += 1
            if depth > _MAX_DEPTH:
                raise ValueError(f"subgraphs nested deeper than {_MAX_DEPTH}")
        for fd, value in msg.ListFields():
            if fd.message_type is None:
                continue  # scalars, strings, bytes, packed numbers: no tensor in them
            if isinstance(value, Message):
                stack.append((value, depth))
            else:
                stack.extend((v, depth) for v in value)


def _unknown_bytes(model) -> int:
    """Bytes of fields ONNX does not define, anywhere in ``model`` (which loses them). Both sizes are of
    re-encoded messages, so they differ by exactly the unknown fields, which are kept verbatim:
    ``len(data) - ByteSize()`` would not be, as a repeated number sent packed where ONNX declares it
    unpacked (``AttributeProto.ints``, ``TensorProto.dims``) re-encodes larger than it arrived, and
    hides as many unknown bytes as it saves."""
    with_unknown = model.ByteSize()
    model.DiscardUnknownFields()
    return with_unknown - model.ByteSize()


def scan_onnx(data: bytes | bytearray | memoryview) -> OnnxSummary:
    """Read ONNX bytes with onnx's ModelProto parser (never raises on bad input: see ``parsed`` /
    ``error``). External data is never loaded: the references are only listed."""
    import onnx
    from google.protobuf.message import DecodeError

    out = OnnxSummary()
    data = bytes(data)
    if not data:
        out.error = "the file is empty"
        return out
    if (reason := not_onnx_reason(data[:8])) or _is_text_pickle(data):
        out.error = (reason or "it is a Python pickle (protocol 0/1), not an ONNX model") + \
            " (agents accept ONNX only; never pickles)"
        return out
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        out.error = f"not a valid ONNX protobuf (truncated or not ONNX): {str(exc).splitlines()[0][:200]}"
        return out
    out.ir_version = int(model.ir_version) or None
    out.has_graph = model.HasField("graph") and len(model.graph.node) > 0
    if out.ir_version is None or not out.has_graph:
        out.error = "not an ONNX model: it has no ir_version or no graph with nodes"
        return out
    out.opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    try:
        _walk(model, out)
    except ValueError as exc:
        out.error = f"not a usable ONNX model: {exc}"
        return out
    unknown = _unknown_bytes(model)  # padding, or a hiding place
    if unknown > MAX_UNKNOWN_BYTES:
        out.error = (f"{unknown:,} bytes of the file are fields ONNX does not define (padding, or something hidden "
                     "in front of the model); export it again with onnx / torch.onnx")
        return out
    out.parsed = True
    return out


def _scan_file(path: str) -> str:
    return scan_onnx(Path(path).read_bytes()).to_json()


class _Checker:
    """One long-lived checking process (``python -m edgetune.device_agents._onnx_check --serve``: a path
    per line in, a JSON summary per line out; importing onnx costs a second, once). It exits when its
    stdin closes, so it never outlives the agent, and it is replaced when a check overruns its time limit
    or the process dies."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "edgetune.device_agents._onnx_check", "--serve"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, bufsize=1)
        return self._proc

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def check(self, path: Path, timeout_s: float) -> str | None:
        import select

        with self._lock:  # one check at a time, in order
            proc = self._start()
            try:
                proc.stdin.write(str(path) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
                line = proc.stdout.readline() if ready else None
            except (BrokenPipeError, OSError):
                line = ""
            if line is None:
                self._kill()
                return f"checking it took longer than {timeout_s:.0f} s (a file built to stall a parser?)"
            if not line:
                self._kill()
                return "the process checking it died (out of memory on a hostile file?)"
        return OnnxSummary.from_json(line).refusal()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.stdin.close()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None


_CHECKER = _Checker()
atexit.register(_CHECKER.close)


def check_upload(path: Path, *, timeout_s: float = CHECK_TIMEOUT_S) -> str | None:
    """Why the agent refuses the uploaded file at ``path`` (None: accept), from :func:`scan_onnx` run in
    the checking process (see the module docstring); a check that overruns ``timeout_s`` refuses the file."""
    return _CHECKER.check(Path(path), timeout_s)


def _serve() -> None:
    """The checking process: one path per line on stdin, one JSON summary per line on stdout, until EOF."""
    for line in sys.stdin:
        try:
            out = _scan_file(line.rstrip("\n"))
        except OSError as exc:
            out = OnnxSummary(error=f"it could not be read ({exc.strerror or exc})").to_json()
        sys.stdout.write(out + "\n")
        sys.stdout.flush()


if __name__ == "__main__":  # python -m edgetune.device_agents._onnx_check FILE | --serve
    if sys.argv[1:] == ["--serve"]:
        _serve()
    else:
        sys.stdout.write(_scan_file(sys.argv[1]) + "\n")
