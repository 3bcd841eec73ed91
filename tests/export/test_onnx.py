import json
import shutil

import numpy as np
import onnx
import pytest

from backline.engine.runtime import (GRAPH_NAMES, NOTES_FILE, ONNX_FILES, STEP_INPUTS, OnnxBackend, RuntimeModelError,
                                     TorchBackend, read_metadata)
from backline.export import onnx as onnx_export
from backline.export.debug_models import write_debug_models
from backline.export.onnx import ExportError, export_models, raw_metadata
from backline.models.diffusion import INSTRUMENTS


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    ae_path, dn_path = write_debug_models(directory, "tiny", seed=0)
    report = export_models(ae_path, dn_path, directory / "onnx", seed=1, threads=1)
    return ae_path, dn_path, directory / "onnx", report


@pytest.fixture(scope="module")
def backends(exported):
    ae_path, dn_path, onnx_dir, _ = exported
    return TorchBackend.from_files(ae_path, dn_path), OnnxBackend(onnx_dir, intra_op_threads=1)


def assert_close(got, want, rel=2e-5):
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-6)
    assert float(np.abs(got - want).max()) <= rel * scale, float(np.abs(got - want).max()) / scale


def test_export_writes_four_checked_graphs(exported):
    _, _, onnx_dir, report = exported
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(ONNX_FILES.values())
    assert set(report.checks) == {"encoder", "decoder", "denoiser", "step"}
    assert {(c["output"], c["passes"], c["controls"]) for c in report.checks["step"]["cases"]} >= {
        ("x_next", 1, False), ("denoised", 3, True)}
    for check in report.checks.values():
        assert check["passed"] and check["max_rel_error"] < 1e-4
        assert all(c["rel_difference_to_torch_float32"] < 1e-4 for c in check["cases"])
        assert {1} <= {c.get("samples", c.get("latent_frames")) for c in check["cases"]}  # a one-frame case
        assert len(check["cases"]) >= 3
    for path in onnx_dir.iterdir():
        onnx.checker.check_model(str(path))


@pytest.mark.parametrize("batch, samples", [(1, 1), (2, 777), (1, 20_001)])
def test_encoder_matches_torch(backends, batch, samples):
    torch_backend, onnx_backend = backends
    audio = (0.3 * np.random.default_rng(samples).standard_normal((batch, samples))).astype(np.float32)
    want = torch_backend.encode(audio)
    assert want.shape == (batch, 8, -(-samples // 256))
    assert_close(onnx_backend.encode(audio), want)


@pytest.mark.parametrize("batch, frames", [(1, 1), (2, 7), (1, 61)])
def test_decoder_matches_torch(backends, batch, frames):
    torch_backend, onnx_backend = backends
    latents = np.random.default_rng(frames).standard_normal((batch, 8, frames)).astype(np.float32)
    want = torch_backend.decode(latents)
    assert want.shape == (batch, frames * 256)
    assert_close(onnx_backend.decode(latents), want)


@pytest.mark.parametrize("batch, frames", [(1, 1), (3, 7), (2, 61)])
def test_denoiser_matches_torch_with_any_batch_and_length(backends, batch, frames):
    torch_backend, onnx_backend = backends
    feeds = onnx_export.denoiser_inputs(torch_backend.denoiser.config, batch, frames, np.random.default_rng(frames))
    want = torch_backend.denoise(**feeds)
    assert want.shape == (batch, 8, frames)
    assert_close(onnx_backend.denoise(**feeds), want)


def test_metadata_carries_the_safetensors_contract(exported, backends):
    ae_path, dn_path, onnx_dir, _ = exported
    torch_backend, onnx_backend = backends
    for part, source in (("encoder", ae_path), ("decoder", ae_path), ("denoiser", dn_path), ("step", dn_path)):
        metadata = read_metadata(onnx_dir / ONNX_FILES[part])
        stored = raw_metadata(source)
        assert {key: metadata[key] for key in stored} == stored
        assert metadata["backline_graph"] == GRAPH_NAMES[part] and metadata["backline_onnx_contract"] == "1"
    step = read_metadata(onnx_dir / ONNX_FILES["step"])
    assert json.loads(step["inputs"]) == list(STEP_INPUTS) and json.loads(step["outputs"]) == ["x_next", "denoised"]
    assert "a * x + b * denoised" in json.loads(step["step"])["update"]
    denoiser = read_metadata(onnx_dir / ONNX_FILES["denoiser"])
    config = torch_backend.denoiser.config
    assert (json.loads(denoiser["sigma_min"]), json.loads(denoiser["sigma_max"])) == (config.sigma_min, config.sigma_max)
    assert json.loads(denoiser["instruments"]) == list(INSTRUMENTS)
    encoder = read_metadata(onnx_dir / ONNX_FILES["encoder"])
    for key in ("sample_rate", "latent_rate_hz", "latent_channels", "latent_scale"):
        assert key in encoder
    assert json.loads(encoder["spectral_frontend"])["n_fft"] == 256
    assert onnx_backend.contract == torch_backend.contract


def test_an_export_that_differs_from_torch_is_refused_and_nothing_is_written(exported, tmp_path, monkeypatch):
    ae_path, dn_path, _, _ = exported
    graphs = onnx_export._graphs

    def tampered():
        encoder_graph, *others = graphs()

        class OffEncoder(encoder_graph):
            def forward(self, spec_real, spec_imag):
                return super().forward(spec_real, spec_imag) + 1e-2

        return OffEncoder, *others

    monkeypatch.setattr(onnx_export, "_graphs", tampered)
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "denoiser.onnx").write_bytes(b"an older export")
    with pytest.raises(ExportError, match=r"ONNX export refused, the graphs differ from torch beyond 0.0001 \(encoder: max relative error") as caught:
        export_models(ae_path, dn_path, out, seed=2, threads=1)
    checks = caught.value.report["checks"]
    assert {part: check["passed"] for part, check in checks.items()} == {"encoder": False, "decoder": True, "denoiser": True,
                                                                         "step": True}
    assert checks["encoder"]["max_rel_error"] > 1e-3 > checks["encoder"]["torch_float32_rel_error"]
    assert sorted(p.name for p in out.iterdir()) == ["denoiser.onnx"]
    assert (out / "denoiser.onnx").read_bytes() == b"an older export"


def test_a_step_graph_that_differs_from_torch_is_refused(exported, tmp_path, monkeypatch):
    ae_path, dn_path, _, _ = exported
    step_graph = onnx_export._step_graph

    def tampered():
        graph, named_inputs = step_graph()

        class OffStep(graph):
            def forward(self, *inputs):
                x_next, denoised = super().forward(*inputs)
                return x_next, denoised * 1.01

        return OffStep, named_inputs

    monkeypatch.setattr(onnx_export, "_step_graph", tampered)
    with pytest.raises(ExportError, match=r"\(step: max relative error") as caught:
        export_models(ae_path, dn_path, tmp_path / "onnx", seed=3, threads=1)
    assert not caught.value.report["checks"]["step"]["passed"]
    assert list((tmp_path / "onnx").iterdir()) == []


def test_runtime_refuses_a_step_graph_of_another_denoiser(exported, tmp_path):
    _, _, onnx_dir, _ = exported
    other_ae, other_dn = write_debug_models(tmp_path, "tiny", seed=9)
    export_models(other_ae, other_dn, tmp_path / "other", seed=0, threads=1)
    for name in ONNX_FILES.values():
        shutil.copy(onnx_dir / name, tmp_path / name)
    shutil.copy(tmp_path / "other" / ONNX_FILES["step"], tmp_path / ONNX_FILES["step"])
    with pytest.raises(RuntimeModelError, match="guided_step.onnx and .*denoiser.onnx come from different denoisers"):
        OnnxBackend(tmp_path)


def test_runtime_refuses_mismatched_or_missing_files(exported, tmp_path):
    _, _, onnx_dir, _ = exported
    for name in ONNX_FILES.values():
        shutil.copy(onnx_dir / name, tmp_path / name)
    model = onnx.load(str(tmp_path / ONNX_FILES["decoder"]))
    for entry in model.metadata_props:
        if entry.key == "config":
            entry.value = json.dumps({**json.loads(entry.value), "n_fft": 512}, sort_keys=True)
    onnx.save(model, str(tmp_path / ONNX_FILES["decoder"]))
    with pytest.raises(RuntimeModelError, match="come from different autoencoders"):
        OnnxBackend(tmp_path)
    (tmp_path / ONNX_FILES["denoiser"]).unlink()
    with pytest.raises(RuntimeModelError, match="missing ONNX model files: .*denoiser.onnx"):
        OnnxBackend(tmp_path)


def test_fp16_storage_keeps_exact_weights_only_and_computes_the_same():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from backline.export.onnx import store_weights_fp16

    exact = np.arange(2048, dtype=np.float32).reshape(2, 1024) / 8  # fp16 represents these exactly
    inexact = np.full((2, 1024), 0.1, np.float32)  # 0.1 is not an fp16 value: must stay float32
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w1"], ["y"]), helper.make_node("Add", ["y", "w2"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1024])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 1024])],
        [numpy_helper.from_array(exact, "w1"), numpy_helper.from_array(inexact, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((2, 1024)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert store_weights_fp16(model) == 1
    onnx.checker.check_model(model)
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert kinds == {"w1__fp16": TensorProto.FLOAT16, "w2": TensorProto.FLOAT}
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)


def test_note_head_exports_and_both_backends_lock_the_bass_alike(tmp_path, backends):
    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=0, autoencoder_config="tiny-notes")
    report = export_models(ae_path, dn_path, tmp_path / "onnx", seed=1, threads=1)
    assert report.checks["notes"]["passed"] and (tmp_path / "onnx" / NOTES_FILE).is_file()
    torch_backend, onnx_backend = TorchBackend.from_files(ae_path, dn_path), OnnxBackend(tmp_path / "onnx", intra_op_threads=1)
    assert torch_backend.contract.note_lowest_midi == onnx_backend.contract.note_lowest_midi == 24
    latents = np.random.default_rng(3).standard_normal((1, 8, 40)).astype(np.float32)
    for instrument in ("bass", "drums"):
        assert_close(onnx_backend.decode(latents, instrument), torch_backend.decode(latents, instrument), rel=1e-4)
    assert not np.allclose(onnx_backend.decode(latents, "bass"), onnx_backend.decode(latents, "drums"))
    assert_close(onnx_backend.notes(latents), torch_backend.notes(latents), rel=1e-4)
    assert onnx_backend.notes(latents).shape == (1, 13, 40 * 4)  # no note + 12 notes, per STFT frame
    for backend in backends:  # the module's tiny models have no note head
        with pytest.raises(RuntimeModelError, match="no note head"):
            backend.notes(latents)
    # graphs whose config denies the note head the decoder graph has are refused
    lying = tmp_path / "lying"
    shutil.copytree(tmp_path / "onnx", lying)
    for name in (ONNX_FILES["encoder"], ONNX_FILES["decoder"], NOTES_FILE):
        model = onnx.load(str(lying / name))
        for prop in model.metadata_props:
            if prop.key == "config":
                prop.value = json.dumps({**json.loads(prop.value), "note_count": 0})
        onnx.save(model, str(lying / name))
    with pytest.raises(RuntimeModelError, match="do not match its config's note head"):
        OnnxBackend(lying, intra_op_threads=1)

