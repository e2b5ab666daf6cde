"""Hostile input from the network, against a real agent process: a corpus of files that are not
self-contained ONNX models (each refused at upload with a one-line reason, nothing stored), external
data from every field of the ONNX schema that can hold a tensor, unknown fields hidden behind packed
numbers, dataset bundles that would expand past the memory cap, and unauthenticated requests of every
route and method (401 before any body is read, chunked included). Connection-level attacks (half-open
sockets, stalled and oversize bodies): ``test_agent_network.py``."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import re
import threading
import time
import zipfile

import httpx
import numpy as np
import onnx
import psutil
import pytest
from agent_helpers import send_chunked, start_agent
from onnx import TensorProto, helper, numpy_helper


def _relu_graph(name="g", initializers=()):
    return helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], name,
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], list(initializers))


def _w(name="w"):
    return numpy_helper.from_array(np.ones(4, np.float32), name)


def _external(t, location: str):
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _model(graph, **kw) -> bytes:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kw).SerializeToString()


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def corpus(det_s_onnx) -> dict[str, bytes]:
    good = _model(_relu_graph(initializers=[_w()]))
    files: dict[str, bytes] = {}
    files["external: relative"] = _model(_relu_graph(initializers=[_external(_w(), "w.bin")]))
    files["external: ../../etc/passwd"] = _model(_relu_graph(initializers=[_external(_w(), "../../etc/passwd")]))
    files["external: absolute"] = _model(_relu_graph(initializers=[_external(_w(), "/etc/passwd")]))
    files["external: another artifact"] = _model(_relu_graph(initializers=[_external(_w(), "../artifacts/x.onnx")]))
    bare = _w()
    bare.ClearField("raw_data")
    bare.data_location = TensorProto.EXTERNAL  # EXTERNAL with no entries
    files["external: location flag only"] = _model(_relu_graph(initializers=[bare]))
    const = helper.make_node("Constant", [], ["w"], value=_external(_w("c"), "/etc/shadow"))
    g = helper.make_graph([const, helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["external: Constant attribute"] = _model(g)
    then = _relu_graph("then", [_external(_w(), "/etc/hosts")])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=_relu_graph("else", [_w()]))
    g = helper.make_graph([cond], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                        helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["external: If subgraph"] = _model(g)
    fn = helper.make_function("local.fn", "F", ["x"], ["y"],
                              [helper.make_node("Constant", [], ["y"], value=_external(_w("f"), "/etc/passwd"))],
                              [helper.make_opsetid("", 17)])
    g = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local.fn")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["external: inside a function"] = _model(g, functions=[fn])
    sparse = helper.make_sparse_tensor(_external(_w("sv"), "/etc/passwd"),
                                       numpy_helper.from_array(np.arange(4, dtype=np.int64), "si"), [4])
    g = _relu_graph(initializers=[_w()])
    g.sparse_initializer.append(sparse)
    files["external: sparse initializer"] = _model(g)
    # an unknown group field (wire type 3 ... 4) in front of a model with external data
    group = _varint((999 << 3) | 3) + _varint((1 << 3) | 0) + b"\x01" + _varint((999 << 3) | 4)
    files["external: behind an unknown group"] = group + files["external: absolute"]
    for proto in range(6):
        files[f"pickle protocol {proto}"] = pickle.dumps({"state_dict": [1.0, 2.0], "os": "system"}, protocol=proto)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the layout of torch.save
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/version", "3\n")
    files["torch checkpoint zip"] = buf.getvalue()
    real = det_s_onnx.read_bytes()
    files["truncated ONNX"] = real[: len(real) // 3]
    files["random bytes"] = random.Random(0).randbytes(200_000)
    files["empty"] = b""
    files["text"] = b"hello, this is not a model\n"
    files["no graph"] = helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()
    files["padded to stall a parser"] = (_varint(1000 << 3) + b"\x01") * 3_000_000 + good
    custom = helper.make_graph([helper.make_node("Evil", ["x"], ["y"], domain="com.evil.ops")], "g",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["custom-domain op"] = _model(custom)
    onnx.checker.check_model(onnx.load_from_string(good))  # the control: a real model, accepted
    return files


@pytest.fixture(scope="module")
def hostile_agent(tmp_path_factory):
    a = start_agent(tmp_path_factory.mktemp("hostile") / "agent-hostile", args=("--max-artifact-mb", "64"))
    yield a
    a.stop()


def _stored(agent) -> list[str]:
    root = agent.workdir / "artifacts"
    return sorted(p.name for p in root.glob("*.onnx")) if root.is_dir() else []


def test_every_hostile_file_is_refused_at_upload_and_nothing_is_stored(hostile_agent, det_s_onnx):
    files = corpus(det_s_onnx)
    assert len(files) >= 20
    auth = {"Authorization": f"Bearer {hostile_agent.token}"}
    before = _stored(hostile_agent)
    worst = 0.0
    with httpx.Client(base_url=hostile_agent.url, timeout=120) as c:
        stop = threading.Event()

        def poll_health():  # /health keeps answering while uploads are checked (recorded, printed)
            nonlocal worst
            while not stop.is_set():
                t0 = time.perf_counter()
                assert httpx.get(hostile_agent.url + "/health", timeout=30).status_code == 200
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.01)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        try:
            reasons = {}
            for name, data in files.items():
                sha = hashlib.sha256(data).hexdigest()
                r = c.put(f"/artifacts/{sha}", content=data, headers=auth)
                assert r.status_code == 415, (name, r.status_code, r.text[:300])
                msg = r.json()["error"]["message"]
                assert "\n" not in msg and len(msg) < 600, (name, msg)
                reasons[name] = msg
                r = c.put("/deployments/hostile", headers=auth, files={"model": ("model.onnx", data)},
                          data={"sha256": sha, "manifest": json.dumps({"onnx_sha256": sha})})
                assert r.status_code == 415, (name, r.status_code, r.text[:300])  # nor as a deployment
            good = _model(_relu_graph(initializers=[_w()]))
            r = c.put(f"/artifacts/{hashlib.sha256(good).hexdigest()}", content=good, headers=auth)
            assert r.status_code == 200, r.text
        finally:
            stop.set()
            poller.join(30)
    assert _stored(hostile_agent) == sorted({*before, f"{hashlib.sha256(good).hexdigest()}.onnx"})
    assert not any((hostile_agent.workdir / "deployments").glob("hostile*/v*"))
    assert "external data" in reasons["external: behind an unknown group"] or "does not define" in \
        reasons["external: behind an unknown group"]
    assert "pickle" in reasons["pickle protocol 0"] and "pickle" in reasons["pickle protocol 5"]
    assert "com.evil.ops" in reasons["custom-domain op"] and "does not define" in reasons["padded to stall a parser"]
    print(f"\nworst /health answer during {len(files)} hostile uploads: {worst * 1000:.1f} ms")
    for name, msg in reasons.items():
        print(f"  {name}: {msg[:120]}")


def _io(graph_nodes, name="g", initializers=(), sparse=()):
    g = helper.make_graph(graph_nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], list(initializers))
    g.sparse_initializer.extend(sparse)
    return g


def _t(name: str, external: bool, *, where: str = "/etc/passwd", dtype=np.float32):
    t = numpy_helper.from_array(np.arange(4).astype(dtype), name)
    return _external(t, where) if external else t


def _sparse(name: str, *, values_external: bool = False, indices_external: bool = False):
    return helper.make_sparse_tensor(_t(name + "_v", values_external),
                                     _t(name + "_i", indices_external, dtype=np.int64), [4])


def _add(extra_attrs=None):
    node = helper.make_node("Add", ["x", "w"], ["y"])
    for k, v in (extra_attrs or {}).items():
        node.attribute.append(helper.make_attribute(k, v))
    return node


def _const(ext: bool, out="w", where="/etc/passwd"):
    return helper.make_node("Constant", [], [out], value=_t("c_" + out, ext, where=where))


def _function_model(ext: bool, *, in_default: bool):
    body = [helper.make_node("Identity", ["x"], ["y"])] if in_default else \
        [_const(ext, "k"), helper.make_node("Add", ["x", "k"], ["y"])]
    fn = helper.make_function("local.fn", "F", ["x"], ["y"], body, [helper.make_opsetid("", 17)])
    if in_default:  # FunctionProto.attribute_proto: the default of an attribute of the function
        fn.attribute_proto.append(helper.make_attribute("bias", _t("default", ext)))
    model = helper.make_model(_io([helper.make_node("F", ["x"], ["y"], domain="local.fn")]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fn", 1)],
                              functions=[fn])
    return model


def _training_model(ext: bool, *, part: str):
    model = helper.make_model(_io([_add()], initializers=[_t("w", False)]),
                              opset_imports=[helper.make_opsetid("", 17)])
    ti = model.training_info.add()
    init = _io([_add()], "init", initializers=[_t("w", ext)]) if part == "initialization" else _io([_add()], "init")
    algo = _io([_const(ext), _add()], "algo") if part == "algorithm" else _io([_add()], "algo")
    ti.initialization.CopyFrom(init)
    ti.algorithm.CopyFrom(algo)
    return model


def _loop_model(ext: bool):
    body = helper.make_graph([_const(ext, "k"), helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["v_in", "k"], ["v_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4])])
    loop = helper.make_node("Loop", ["n", "c", "x"], ["y"], body=body)
    g = helper.make_graph([loop], "g", [helper.make_tensor_value_info("n", TensorProto.INT64, []),
                                        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                        helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _opset17(graph):
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# every place an ONNX file can hold a tensor; each builder makes the same model with (True) and without
# (False) external data, so a refusal is about the external data and nothing else
PLACES = {
    "graph initializer": lambda e: _opset17(_io([_add()], initializers=[_t("w", e)])),
    "node attribute t (Constant)": lambda e: _opset17(_io([_const(e), _add()])),
    "node attribute tensors": lambda e: _opset17(_io([_add({"extra": [_t("a", False), _t("b", e)]})],
                                                     initializers=[_t("w", False)])),
    "node attribute sparse_tensor": lambda e: _opset17(_io([
        helper.make_node("Constant", [], ["w"], sparse_value=_sparse("s", values_external=e)), _add()])),
    "node attribute sparse_tensors": lambda e: _opset17(_io([_add({"extra": [_sparse("s", values_external=e)]})],
                                                            initializers=[_t("w", False)])),
    "sparse initializer values": lambda e: _opset17(_io([_add()], sparse=[_sparse("w", values_external=e)])),
    "sparse initializer indices": lambda e: _opset17(_io([_add()], sparse=[_sparse("w", indices_external=e)])),
    "If branch (attribute g)": lambda e: _opset17(_io([helper.make_node(
        "If", ["c"], ["y"], then_branch=_io([_add()], "then", [_t("w", e)]),
        else_branch=_io([_add()], "else", [_t("w", False)]))])),
    "Loop body, a Constant inside": _loop_model,
    "node attribute graphs": lambda e: _opset17(_io([_add({"bodies": [_io([_add()], "b0", [_t("w", False)]),
                                                                      _io([_add()], "b1", [_t("w", e)])]})],
                                                    initializers=[_t("w", False)])),
    "function body": lambda e: _function_model(e, in_default=False),
    "function attribute default": lambda e: _function_model(e, in_default=True),
    "training_info initialization": lambda e: _training_model(e, part="initialization"),
    "training_info algorithm": lambda e: _training_model(e, part="algorithm"),
    "entries without the EXTERNAL flag": lambda e: _opset17(_io([_add()], initializers=[
        _location_only(_t("w", False)) if e else _t("w", False)])),
    "onnxruntime in-memory address": lambda e: _opset17(_io([_add()], initializers=[
        _t("w", e, where="*/_ORT_MEM_ADDR_/*")])),
}


def _location_only(t):
    e = t.external_data.add()
    e.key, e.value = "location", "/etc/passwd"
    return t  # data_location stays DEFAULT, raw_data stays: only the entry says "external"


def _schema_fields() -> set[str]:
    """'Message.field' for every field of the ONNX schema (from ModelProto down) through which a
    TensorProto can be reached: the places external data can sit."""
    seen, todo = {}, [onnx.ModelProto.DESCRIPTOR]
    while todo:
        d = todo.pop()
        if d.full_name not in seen:
            seen[d.full_name] = d
            todo.extend(f.message_type for f in d.fields if f.message_type is not None)
    reach, grew = {"onnx.TensorProto"}, True
    while grew:
        grew = False
        for d in seen.values():
            if d.full_name not in reach and any(f.message_type is not None and f.message_type.full_name in reach
                                                for f in d.fields):
                reach.add(d.full_name)
                grew = True
    return {f"{d.name}.{f.name}" for d in seen.values() for f in d.fields
            if f.message_type is not None and f.message_type.full_name in reach}


def _external_paths(msg, path=()) -> set[str]:
    """The 'Message.field' steps from ``msg`` to each of its tensors with external data."""
    from google.protobuf.message import Message

    out = set()
    if msg.DESCRIPTOR.full_name == "onnx.TensorProto" and (msg.data_location or len(msg.external_data)):
        out |= set(path)
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        step = f"{msg.DESCRIPTOR.name}.{fd.name}"
        for v in [value] if isinstance(value, Message) else value:
            out |= _external_paths(v, (*path, step))
    return out


def test_external_data_from_every_place_a_tensor_can_sit_is_refused_at_upload(hostile_agent):
    covered = set().union(*(_external_paths(build(True)) for build in PLACES.values()))
    assert covered == _schema_fields(), f"places without a case: {_schema_fields() - covered}"
    auth = {"Authorization": f"Bearer {hostile_agent.token}"}
    with httpx.Client(base_url=hostile_agent.url, timeout=60, headers=auth) as c:
        for place, build in PLACES.items():
            for external in (False, True):
                data = build(external).SerializeToString()
                sha = hashlib.sha256(data).hexdigest()
                r = c.put(f"/artifacts/{sha}", content=data)
                if not external:  # the same model without external data is a model this agent takes
                    assert r.status_code == 200, (place, r.status_code, r.text[:300])
                    continue
                assert r.status_code == 415, (place, r.status_code, r.text[:300])
                assert "external data" in r.json()["error"]["message"], (place, r.text[:300])
                assert c.head(f"/artifacts/{sha}").status_code == 404, place
                r = c.put("/deployments/ext", files={"model": ("m.onnx", data)},
                          data={"sha256": sha, "manifest": json.dumps({"onnx_sha256": sha})})
                assert r.status_code == 415 and "external data" in r.text, (place, r.status_code, r.text[:300])


def _packed_ints_attribute(n: int) -> bytes:
    """An AttributeProto ``ints`` (field 8, declared unpacked) of ``n`` zeros, sent packed: a parser
    accepts it, and re-encoded unpacked it is ``n`` bytes larger than it arrived."""
    payload = b"\x00" * n
    return (b"\x0a\x03pad" + _varint(20 << 3) + _varint(onnx.AttributeProto.INTS)
            + _varint((8 << 3) | 2) + _varint(len(payload)) + payload)


def _with_node_attribute(model: onnx.ModelProto, attr: bytes) -> bytes:
    """``model`` with ``attr`` (raw bytes) appended to its first node, and nothing else changed."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[0].SerializeToString() + _varint((5 << 3) | 2) + _varint(len(attr)) + attr
    g = onnx.GraphProto()
    g.CopyFrom(m.graph)
    del g.node[:]
    graph = _varint((1 << 3) | 2) + _varint(len(node)) + node + g.SerializeToString()
    m.ClearField("graph")
    return m.SerializeToString() + _varint((7 << 3) | 2) + _varint(len(graph)) + graph


def test_unknown_fields_cannot_hide_behind_packed_numbers(hostile_agent):
    n = 1 << 20  # 1 MiB of packed zeros offsets 1 MiB of unknown bytes in a size difference
    base = PLACES["graph initializer"](False)
    packed = _with_node_attribute(base, _packed_ints_attribute(n))
    junk = b"J" * (n - 64)
    hidden = _varint((999 << 3) | 2) + _varint(len(junk)) + junk + packed  # an unknown field, then the model
    parsed = onnx.ModelProto()
    parsed.ParseFromString(hidden)
    assert len(hidden) - parsed.ByteSize() < 64 * 1024 < len(junk)  # the old rule's count: it would pass
    auth = {"Authorization": f"Bearer {hostile_agent.token}"}
    with httpx.Client(base_url=hostile_agent.url, timeout=60, headers=auth) as c:
        r = c.put(f"/artifacts/{hashlib.sha256(packed).hexdigest()}", content=packed)
        assert r.status_code == 200, r.text[:300]  # packed numbers alone are fine
        r = c.put(f"/artifacts/{hashlib.sha256(hidden).hexdigest()}", content=hidden)
        message = r.json()["error"]["message"]
        assert r.status_code == 415 and "does not define" in message, r.text[:300]
        counted = int(re.search(r"([\d,]+) bytes", message)[1].replace(",", ""))
        assert len(junk) < counted < len(junk) + 16, message  # the unknown field, counted exactly


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _bundle_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _claiming(data: bytes, size: int) -> bytes:
    """The zip ``data`` with every member's uncompressed size in the central directory set to ``size``
    (what a zip bomb declares; nothing is inflated to find it out)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        out[at + 24 : at + 28] = size.to_bytes(4, "little")
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


def test_dataset_bundles_that_would_expand_past_the_memory_cap_are_refused(hostile_agent):
    spec = np.frombuffer(json.dumps({"version": 1}).encode(), np.uint8)
    ok = _bundle_zip({"spec.npy": _npy(spec), "images.npy": _npy(np.zeros((2, 3, 8, 8), np.uint8))})
    # an .npy header that claims 1.2 TB in a member of a few bytes: np.load would allocate the claim
    header = _npy(np.zeros((1, 3, 8, 8), np.uint8)).replace(b"(1, 3, 8, 8)", b"(1000000, 3, 640, 640)")
    claims = _bundle_zip({"spec.npy": _npy(spec), "images.npy": header})
    # three members that declare 4 GiB each: 12 GiB, over any default cap (half the memory, at most 8 GiB)
    bomb = _claiming(_bundle_zip({"spec.npy": _npy(spec), "images.npy": _npy(np.zeros(8, np.uint8)),
                                  "pad.npy": _npy(np.zeros(8, np.uint8))}), 0xFFFFFFF0)
    auth = {"Authorization": f"Bearer {hostile_agent.token}"}
    with httpx.Client(base_url=hostile_agent.url, timeout=60, headers=auth) as c:
        r = c.put(f"/datasets/{hashlib.sha256(ok).hexdigest()}", content=ok)
        assert r.status_code == 200, r.text[:300]
        r = c.put(f"/datasets/{hashlib.sha256(claims).hexdigest()}", content=claims)
        assert r.status_code == 415 and "(1000000, 3, 640, 640)" in r.json()["error"]["message"], r.text[:300]
        r = c.put(f"/datasets/{hashlib.sha256(bomb).hexdigest()}", content=bomb)
        assert r.status_code == 415 and "over the limit" in r.json()["error"]["message"], r.text[:300]
    stored = {p.name for p in (hostile_agent.workdir / "datasets").glob("*.npz")}
    assert stored == {f"{hashlib.sha256(ok).hexdigest()}.npz"}


def _routes(agent) -> list[tuple[str, str]]:
    from edgetune.device_agents.server import AgentConfig, create_app

    app = create_app(AgentConfig(token="x" * 16, workdir=str(agent.workdir / "probe")))
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method in ops:
            out.append((method.upper(), path.replace("{sha}", "0" * 64).replace("{name}", "det")))
    return out + [("GET", "/no/such/route"), ("DELETE", "/artifacts/" + "0" * 64)]


def test_unauthenticated_requests_of_every_route_get_401_without_the_body_read(hostile_agent):
    routes = _routes(hostile_agent)
    assert len(routes) >= 10
    with httpx.Client(base_url=hostile_agent.url, timeout=30) as c:
        for method, path in routes:
            if path == "/health":
                continue
            for headers in ({}, {"Authorization": "Bearer wrong-token-xyz"}):
                r = c.request(method, path, headers=headers, content=b"{not json" if method != "GET" else None)
                assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
    proc = psutil.Process(hostile_agent.proc.pid)
    rss0 = proc.memory_info().rss
    for method, path in [("POST", "/measure"), ("PUT", "/artifacts/" + "0" * 64), ("POST", "/deployments/det/predict")]:
        sent, status, _ = send_chunked(hostile_agent.url, method, path, total=100 * 2**20)
        assert status == 401, (method, path, status)
        assert sent < 100 * 2**20, f"{method} {path}: the agent read all {sent} bytes before answering"
    growth = proc.memory_info().rss - rss0
    assert growth < 20 * 2**20, f"agent RSS grew by {growth / 2**20:.0f} MiB on unauthenticated chunked bodies"


def test_the_checking_process_never_outlives_the_agent(tmp_path):
    """Killed the hard way (SIGKILL, as the OOM killer does), the agent leaves no checker behind."""
    agent = start_agent(tmp_path / "agent-killed")
    data = pickle.dumps([1], protocol=4)
    r = httpx.put(f"{agent.url}/artifacts/{hashlib.sha256(data).hexdigest()}", content=data,
                  headers={"Authorization": f"Bearer {agent.token}"}, timeout=60)
    assert r.status_code == 415
    checkers = [p for p in psutil.Process(agent.proc.pid).children()
                if "_onnx_check" in " ".join(p.cmdline())]
    assert len(checkers) == 1
    agent.proc.kill()
    agent.proc.wait()
    gone, alive = psutil.wait_procs(checkers, timeout=30)
    assert not alive, "the checker outlived the agent"
