"""int8 QDQ: size, accuracy against fp32 (onnxruntime, in process), exactly the chosen convs quantized."""

from __future__ import annotations

import onnx
import pytest


def quantized(path) -> dict[str, bool]:
    from edgetune.compress import quantized_nodes

    return {k: v for k, v in quantized_nodes(onnx.load(str(path))).items() if k}


def test_int8_uniform_is_small_and_quantizes_every_conv(compressed):
    fp32, int8 = compressed("fp32"), compressed("int8-uniform")
    assert int8.sizes["bytes"] <= 0.30 * fp32.sizes["bytes"]
    q = quantized(int8.onnx_path)
    assert len(q) == 99 and all(q.values())  # weighted nodes are named after their layers
    assert int8.manifest["calibration"]["images"] == 32 and len(int8.manifest["calibration"]["sha256"]) == 64
    assert int8.sizes["bitops"] * 16 == fp32.sizes["bitops"]  # 8x8 vs 32x32 bit products


@pytest.mark.slow
def test_int8_uniform_loses_at_most_one_map_point(compressed, ort_map):
    fp32, int8 = compressed("fp32"), compressed("int8-uniform")
    m32, m8 = ort_map(fp32.onnx_path), ort_map(int8.onnx_path)
    assert m8 >= m32 - 0.01, (m32, m8)


def test_mixed_leaves_exactly_first_and_last_float(compressed, cpu_space):
    mixed = compressed("mixed")
    q = quantized(mixed.onnx_path)
    pinned = {n for n, c in cpu_space.precision_choices.items() if c == ("fp32",)}
    assert pinned == {"stem.conv"} | {f"heads.{i}.{k}" for i in range(3) for k in ("box_out", "cls_out")}
    assert {n for n, v in q.items() if not v} == pinned
    assert {n for n, v in q.items() if v} == set(q) - pinned and len(q) == 99
    assert mixed.manifest["resolved"]["precision"]["stem.conv"] == "fp32"


def test_decode_tail_stays_float(compressed):
    """Walking back from the output, the only Q/DQ met are the head convs' own output pairs (Conv -> Q ->
    DQ); the box arithmetic and the concat of pixel boxes with 0-1 scores run in float."""
    g = onnx.load(str(compressed("int8-uniform").onnx_path)).graph
    producers = {o: n for n in g.node for o in n.output}
    seen, stack, boundaries = set(), [g.output[0].name], set()
    while stack:
        n = producers.get(stack.pop())
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        if n.op_type == "DequantizeLinear":
            q = producers[n.input[0]]
            assert q.op_type == "QuantizeLinear" and producers[q.input[0]].op_type == "Conv"
            boundaries.add(producers[q.input[0]].name)
            continue
        assert n.op_type != "QuantizeLinear"
        stack.extend(n.input)
    assert boundaries == {f"heads.{i}.{k}" for i in range(3) for k in ("box_out", "cls_out")}
    assert len(seen) > 20


def test_fresh_calibration_each_run_gives_identical_bytes(compressed, det_s, shapes_calib, cpu_space, workdir,
                                                          tmp_path):
    from edgetune.compress import compress

    compressed("int8-uniform")
    # a fresh artifact cache that reads the session's fp32 exports (``pruned/``): calibration and quantization
    # run again, the exporter does not (that a rebuild exports the same bytes: test_fp16_and_cache)
    (tmp_path / "pruned").symlink_to(workdir / "pruned", target_is_directory=True)
    again = compress(det_s, cpu_space.baseline("int8-uniform"), calib=shapes_calib, workdir=tmp_path)
    assert not again.from_cache
    assert again.hash == compressed("int8-uniform").hash
    assert again.manifest["onnx_sha256"] == compressed("int8-uniform").manifest["onnx_sha256"]


def test_openvino_placement_quantizes_conv_inputs_only(compressed, ort_map):
    """Placed for OpenVINO: every conv still reads int8 weights and an int8 input, but no Conv output passes
    through a Q/DQ (OpenVINO fuses Conv + activation, then requantizes at the next conv), and Concat is not
    quantized as an op (fewer Q nodes than the default placement); accuracy as the default placement's."""
    from edgetune.compress import quantized_nodes

    ov8, int8, fp32 = compressed("int8-openvino"), compressed("int8-uniform"), compressed("fp32")
    assert ov8.hash != int8.hash and ov8.manifest["config"]["quant"]["placement"] == "openvino"
    g = onnx.load(str(ov8.onnx_path)).graph
    producers = {o: n for n in g.node for o in n.output}
    q = {k: v for k, v in quantized_nodes(onnx.load(str(ov8.onnx_path))).items() if k}
    assert len(q) == 99 and all(q.values())
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            assert producers.get(n.input[0]) is None or producers[n.input[0]].op_type != "Conv", n.name
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert all(producers[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    n_q = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8.onnx_path)).graph.node)
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) < n_q
    assert ort_map(ov8.onnx_path) >= ort_map(fp32.onnx_path) - 0.01


def test_configs_of_one_graph_share_its_preprocessing_and_calibrated_ranges(compressed, shapes_calib, tmp_path):
    """A sweep quantizes each fp32 graph once per precision config: the second config takes the pre-processed
    graph and the calibrated ranges from the cache and builds the same bytes as a run without the cache; other
    calibration images are calibrated again."""
    from edgetune.compress._quantize import QuantCache, calibration_arrays, quantize_qdq
    from edgetune.spaces import QuantSettings

    src = compressed("fp32").onnx_path
    arr = calibration_arrays(shapes_calib, size=256)
    cache = QuantCache(tmp_path / "quant", src)
    pre = cache.preprocess(src, tmp_path / "a" / "pre.onnx", first := {})
    assert not first and (cache.dir / "pre.onnx").is_file()
    name = onnx.load(str(pre)).graph.input[0].name
    convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]

    def build(out, exclude, *, use, calib=arr):
        timings: dict = {}
        path = quantize_qdq(pre, tmp_path / out, calib=calib, settings=QuantSettings(), exclude=exclude,
                            input_name=name, cache=cache if use else None, timings=timings)
        return path.read_bytes(), timings

    build("all.onnx", [], use=True)
    assert len(list(cache.dir.glob("ranges-*.json"))) == 1
    mixed, timings = build("mixed.onnx", convs[:10], use=True)
    assert timings.get("calibration_from_cache") is True
    assert mixed == build("fresh.onnx", convs[:10], use=False)[0]
    assert cache.preprocess(src, tmp_path / "b" / "pre.onnx", again := {}).read_bytes() == pre.read_bytes()
    assert again.get("preprocess_from_cache") is True
    _, other = build("other.onnx", [], use=True, calib=arr[:8])
    assert "calibration_from_cache" not in other and len(list(cache.dir.glob("ranges-*.json"))) == 2
    for f in cache.dir.glob("ranges-*.json"):  # an entry onnxruntime cannot read: calibrated again, replaced
        f.write_text("{not json")
    again_bytes, again_timings = build("again.onnx", convs[:10], use=True)
    assert again_bytes == mixed and "calibration_from_cache" not in again_timings
    assert build("third.onnx", convs[:10], use=True)[1].get("calibration_from_cache") is True


def test_calibration_sessions_keep_to_the_cpus_this_process_may_use():
    """onnxruntime pins a session without a thread count to every physical core; while quantize_static runs,
    sessions get this process's CPU count (a controller pinned off a local agent's core stays off it)."""
    import os

    import onnxruntime

    from edgetune.compress._quantize import _pool_within_affinity

    base = onnxruntime.SessionOptions
    with _pool_within_affinity():
        assert onnxruntime.SessionOptions().intra_op_num_threads == len(os.sched_getaffinity(0))
    assert onnxruntime.SessionOptions is base and base().intra_op_num_threads == 0
