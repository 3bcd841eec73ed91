"""int8 graphs (``backline export --int8``, ``precision="int8"``): written only beside checked float graphs,
labelled in their metadata, refused where they do not belong, and generating what the float graphs do, nearly."""

import numpy as np
import pytest

from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.engine.runtime import INT8_FILES, OnnxBackend, RuntimeModelError, onnx_files, read_metadata
from backline.export.debug_models import write_debug_models
from backline.export.onnx import INT8_TOLERANCE, export_models, quantize_int8, restore_weights_fp32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("int8")
    ae_path, dn_path = write_debug_models(directory, "tiny", seed=5)
    report = export_models(ae_path, dn_path, directory / "onnx", seed=0, threads=1, int8=True)
    return ae_path, dn_path, directory / "onnx", report


def test_export_writes_int8_graphs_checked_against_the_float_ones(exported):
    _, _, onnx_dir, report = exported
    for part, name in INT8_FILES.items():
        check = report.checks[f"{part}_int8"]
        assert check["passed"] and 0 < check["max_rel_error"] <= INT8_TOLERANCE, part  # quantised: not exact
        meta = read_metadata(onnx_dir / name)
        assert meta["backline_precision"] == "int8"
        assert meta["config"] == read_metadata(onnx_dir / onnx_files()[part])["config"]  # the same contract
        assert (onnx_dir / name).stat().st_size < (onnx_dir / onnx_files()[part]).stat().st_size


def test_int8_generates_nearly_what_float_does(exported):
    _, _, onnx_dir, _ = exported
    rng = np.random.default_rng(0)
    context = (0.3 * rng.standard_normal((2, 24_000))).astype(np.float32)
    stems = {}
    for precision in ("fp32", "int8"):
        bundle = load_bundle(onnx_dir=onnx_dir, intra_op_threads=1, precision=precision)
        assert bundle.backend.providers == ["CPUExecutionProvider"] or precision == "fp32"
        stems[precision] = generate(bundle, GenerateRequest(context=context, sample_rate=24_000, steps=4, seed=3)).audio
    assert stems["int8"].shape == stems["fp32"].shape and np.isfinite(stems["int8"]).all()
    assert not np.array_equal(stems["int8"], stems["fp32"])  # the int8 graphs did run
    correlation = np.corrcoef(stems["int8"].ravel(), stems["fp32"].ravel())[0, 1]
    assert correlation > 0.9, correlation


def test_int8_is_refused_where_it_does_not_belong(exported, tmp_path):
    ae_path, dn_path, onnx_dir, _ = exported
    with pytest.raises(RuntimeModelError, match="CPU provider only"):
        OnnxBackend(onnx_dir, providers=["CUDAExecutionProvider"], precision="int8")
    with pytest.raises(ValueError, match="needs the onnx backend"):
        load_bundle(ae_path, dn_path, backend="torch", precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        OnnxBackend(onnx_dir, precision="fp16")
    plain = tmp_path / "plain"
    export_models(ae_path, dn_path, plain, seed=0, threads=1)
    with pytest.raises(RuntimeModelError, match=r"export --int8"):
        OnnxBackend(plain, precision="int8")
    # a float graph under the int8 name (or the reverse) is named for what it is
    for part, name in INT8_FILES.items():
        (plain / name).write_bytes((plain / onnx_files()[part]).read_bytes())
    with pytest.raises(RuntimeModelError, match="a fp32 graph where int8 was asked for"):
        OnnxBackend(plain, precision="int8")


def test_an_export_without_int8_removes_int8_graphs_of_an_earlier_denoiser(exported, tmp_path):
    ae_path, dn_path, _, _ = exported
    out = tmp_path / "onnx"
    export_models(ae_path, dn_path, out, seed=0, threads=1, int8=True)
    assert all((out / name).is_file() for name in INT8_FILES.values())
    export_models(ae_path, dn_path, out, seed=0, threads=1)
    assert not any((out / name).exists() for name in INT8_FILES.values())


def test_quantisation_starts_from_the_float_weights_the_fp16_storage_holds(tmp_path):
    import onnx

    from backline.engine.runtime import default_onnx_dir

    shipped = default_onnx_dir() / "denoiser.onnx"  # trained fp16 weights, stored as fp16 (random ones are not exact)
    model = onnx.load(str(shipped))
    halves = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert restore_weights_fp32(model) == halves > 0
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    quantize_int8(shipped, tmp_path / "q.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "ConvInteger" in ops and "Conv" not in ops  # every convolution is quantised
