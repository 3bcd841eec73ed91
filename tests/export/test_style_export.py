"""A denoiser on a style tower exports with its style file: two checked graphs, the engine embeds references
through them, and a tower that is not the denoiser's is refused."""

import numpy as np
import pytest
import torch

from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.engine.runtime import RuntimeModelError, onnx_audio_style, read_metadata
from backline.engine.style import PromptPrior
from backline.export.debug_models import write_debug_models
from backline.export.onnx import STYLE_FILES, export_models
from backline.models.style import AudioTower, Prior
from backline.training.style_prior import save_prior


def style_file(path, seed):
    torch.manual_seed(seed)
    config = {"style_mean": [0.1] * 16, "style_std": [2.0] * 16, "text_dim": 384}
    return PromptPrior.load(save_prior(path, Prior(384, 16, hidden=8), config, version=f"tower-{seed}",
                                       audio_tower=AudioTower(8, dim=16, hidden=12)))


def test_style_graphs_export_check_and_serve_the_engine(tmp_path):
    style = style_file(tmp_path / "style.safetensors", 0)
    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=0, style_space=style.audio_space)
    onnx_dir = tmp_path / "onnx"
    report = export_models(ae_path, dn_path, onnx_dir, seed=1, threads=1, style_path=tmp_path / "style.safetensors")
    for part in STYLE_FILES:
        assert report.checks[part]["passed"] and report.checks[part]["max_rel_error"] < 1e-4, part
        meta = read_metadata(onnx_dir / STYLE_FILES[part])
        assert meta["style_space"] == style.audio_space and meta["backline_version"] == "tower-0"
    assert {c["frames"] for c in report.checks["style_encoder"]["cases"]} == {1, 37, 400}

    # the prompt prior's graph is the NumPy prior with the standardisation folded in
    import onnxruntime as ort

    text = np.random.default_rng(3).standard_normal((2, 384)).astype(np.float32)
    prior_graph = ort.InferenceSession(str(onnx_dir / STYLE_FILES["prompt_prior"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(prior_graph.run(None, {"text": text})[0], style.embed(text), rtol=1e-4, atol=1e-4)

    bundle = load_bundle(onnx_dir=onnx_dir, prompt_prior_path=tmp_path / "style.safetensors", intra_op_threads=1)
    assert bundle.contract.style_space == style.audio_space
    latents = np.random.default_rng(4).standard_normal((8, 50)).astype(np.float32)
    np.testing.assert_allclose(bundle.audio_style(latents), style.audio_embedding(latents), rtol=1e-4, atol=1e-4)
    rate = 44_100
    reference = np.random.default_rng(5).standard_normal((1, rate)).astype(np.float32) * 0.1
    result = generate(bundle, GenerateRequest(context=reference[:, ::-1].copy(), sample_rate=rate, steps=2,
                                              style_audio=reference))
    assert np.isfinite(result.audio).all() and result.info["style"] == "audio"

    # a graph of another tower is refused, by the engine and by the exporter
    other = style_file(tmp_path / "other.safetensors", 1)
    assert other.audio_space != style.audio_space
    with pytest.raises(RuntimeModelError, match="export them together"):
        onnx_audio_style(onnx_dir / STYLE_FILES["style_encoder"], other.audio_space)
    with pytest.raises(ValueError, match="not the one the denoiser was trained with"):
        export_models(ae_path, dn_path, tmp_path / "refused", seed=1, style_path=tmp_path / "other.safetensors")
    assert not any((tmp_path / "refused").glob("*.onnx"))

    # a denoiser on latent statistics exports no style graph and clears stale ones
    plain_ae, plain_dn = write_debug_models(tmp_path / "plain", "tiny", seed=0)
    export_models(plain_ae, plain_dn, onnx_dir, seed=1, threads=1)
    assert not any((onnx_dir / name).exists() for name in STYLE_FILES.values())
