"""``muse-fast export --fused-post``: the ONNX graph carries the custom op muse_fast::NucleiDecode and passes
onnx.checker; its post-processing part, run by onnx's reference evaluator with the op implemented by the PyTorch
reference or the native CPU library, gives the nuclei of the Python decode on real tiles. Without TensorRT (or the
plugin library) the engine path stops in one line before writing anything. No engine can be built without TensorRT.
"""

import importlib.util

import numpy as np
import pytest
import torch

from muse_fast.cli import main
from muse_fast.export import fused
from muse_fast.kernels import native
from muse_fast.kernels.nuclei_decode import DOMAIN, OP_TYPE, DecodeParams
from muse_fast.kernels.nuclei_decode import native as decode_native
from muse_fast.kernels.nuclei_decode import reference as decode_reference

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="onnx, onnxscript and onnxruntime are needed (pip install -e .[cpu,dev])",
)


@pytest.fixture(scope="module")
def fused_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "nuclei.onnx"
    assert main(["export", "--format", "onnx", "--fused-post", "--out", str(out)]) == 0
    return out


def test_the_graph_carries_the_custom_op_and_passes_the_checker(fused_onnx):
    import onnx

    model = onnx.load(str(fused_onnx))
    onnx.checker.check_model(model, full_check=True)
    (node,) = [n for n in model.graph.node if n.op_type == OP_TYPE]
    assert node.domain == DOMAIN and {o.domain: o.version for o in model.opset_import}[DOMAIN] == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["max_points"] == 784 and attrs["stride"] == 4 and attrs["input_h"] == attrs["input_w"] == 224
    assert [i.name for i in model.graph.input] == ["tiles"]
    assert [o.name for o in model.graph.output] == list(fused.FUSED_OUTPUTS)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "muse_fast.weights_sha256" in meta and f"{DOMAIN}::{OP_TYPE}" in meta["muse_fast.fused_post"]


def _op(implementation):
    from onnx.reference.op_run import OpRun

    class NucleiDecode(OpRun):
        op_domain = DOMAIN

        def _run(self, heat, offsets, fmap, **a):
            p = DecodeParams(a["threshold"], a["min_distance"], a["max_points"], a["exclude_border"], a["stride"],
                             (a["input_h"], a["input_w"]))  # fmt: skip
            out = implementation(*(torch.from_numpy(np.ascontiguousarray(t)) for t in (heat, offsets, fmap)), p)
            return tuple(t.numpy() for t in out)

    return NucleiDecode


@pytest.mark.parametrize("implementation", ["reference", "native"])
def test_post_processing_part_gives_the_pipeline_nuclei(fused_onnx, brca_dir, tmp_path, implementation):
    import onnx
    from onnx.reference import ReferenceEvaluator

    from muse_fast.model.weights import load_weights
    from muse_fast.post.decode import DecodeConfig, decode_batch
    from muse_fast.runtime.engines import TorchEngine
    from muse_fast.train.data.brca import load_split

    if implementation == "native" and (reason := native.unavailable_reason("cpu")):
        pytest.skip(f"native CPU library not built: {reason}")
    tail = tmp_path / "tail.onnx"
    onnx.utils.extract_model(str(fused_onnx), str(tail), ["centre", "fmap"], list(fused.FUSED_OUTPUTS))
    op = _op(decode_native if implementation == "native" else decode_reference)
    images = load_split("test")[:2]
    tiles = np.stack([im.image[:224, :224] for im in images] + [im.image[-224:, -224:] for im in images])
    model, _ = load_weights()
    dense = TorchEngine(model, "cpu", precision="fp32").run(tiles)
    feeds = {"centre": dense.centre.float().numpy(), "fmap": dense.fmap.float().contiguous().numpy()}
    got = dict(zip(fused.FUSED_OUTPUTS, ReferenceEvaluator(str(tail), new_ops=[op]).run(None, feeds)))
    nuclei = decode_batch(dense.centre, dense.fmap, model.classifier, (224, 224), 4, DecodeConfig())
    for i, tile in enumerate(nuclei):
        n = len(tile.xy)
        assert int(got["counts"][i]) == n > 0 and int(got["overflow"][i]) == 0
        np.testing.assert_array_equal(got["xy"][i, :n], tile.xy.numpy())
        np.testing.assert_allclose(got["scores"][i, :n], tile.score.numpy(), atol=1e-6)  # numpy vs torch sigmoid
        np.testing.assert_array_equal(got["class_id"][i, :n], tile.class_id.numpy())
        np.testing.assert_allclose(got["class_prob"][i, :n], tile.class_prob.numpy(), atol=2e-3)
        assert not got["xy"][i, n:].any() and not got["scores"][i, n:].any()


def test_engine_without_tensorrt_is_one_line_and_writes_nothing(tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT is installed here: the engine path would run")
    assert main(["export", "--format", "trt", "--fused-post", "--out", str(tmp_path / "m.engine")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-fast: error: cannot build a --fused-post engine") and "\n" not in err
    assert "--format onnx --fused-post" in err and list(tmp_path.iterdir()) == []


def test_missing_plugin_library_says_how_to_build_it(monkeypatch):
    import muse_fast.export.tensorrt as trt_export

    monkeypatch.setattr(trt_export, "tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr(native, "library_path", lambda kind: None)
    reason = fused.fused_engine_unavailable_reason()
    assert "libmuse_trt_plugin.so" in reason and "-DTensorRT_ROOT" in reason and "\n" not in reason
