"""The learned audio tower: NumPy equals torch, the file names its space, and a denoiser trained on that
space ships with it (the engine embeds references with the tower, refuses a different one)."""

import numpy as np
import pytest
import torch

from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.engine.style import (STATISTICS_SPACE, PromptEncoder, PromptPrior, StyleUnavailable, audio_style,
                                   tower_forward, tower_space)
from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder, save_autoencoder
from backline.models.diffusion import load_denoiser, resolve_config
from backline.training.diffusion import TrainOptions, ship, train
from backline.training.latents import encode_build
from backline.models.style import AudioTower, Prior
from backline.training.style_prior import save_prior, train as train_style


def test_numpy_tower_matches_torch_at_any_length_and_has_norm_sqrt_dim():
    torch.manual_seed(0)
    tower = AudioTower(8, dim=16, hidden=12).eval()
    weights = {f"tower.{k}": v.numpy() for k, v in tower.state_dict().items()}
    for frames in (1, 2, 7, 40):
        latents = np.random.default_rng(frames).standard_normal((3, 8, frames)).astype(np.float32)
        with torch.no_grad():
            expected = tower(torch.from_numpy(latents)).numpy()
        got = tower_forward(weights, latents)
        np.testing.assert_allclose(got, expected, atol=2e-5)
        np.testing.assert_allclose(tower_forward(weights, latents[1]), expected[1], atol=2e-5)  # one segment
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 4.0, rtol=1e-5)
    with pytest.raises(ValueError, match="frames > 0"):
        tower_forward(weights, np.zeros((8, 0), np.float32))


def test_the_space_is_named_by_the_tower_weights(tmp_path):
    torch.manual_seed(0)
    config = {"style_mean": [0.0] * 16, "style_std": [1.0] * 16, "text_dim": 384}
    tower = AudioTower(8, dim=16, hidden=12)
    first = PromptPrior.load(save_prior(tmp_path / "a.safetensors", Prior(384, 16, hidden=8), config, version="t",
                                        audio_tower=tower))
    again = PromptPrior.load(save_prior(tmp_path / "b.safetensors", Prior(384, 16, hidden=8), config, version="t",
                                        audio_tower=tower))
    with torch.no_grad():
        tower.head[1].bias += 0.01
    other = PromptPrior.load(save_prior(tmp_path / "c.safetensors", Prior(384, 16, hidden=8), config, version="t",
                                        audio_tower=tower))
    plain = PromptPrior.load(save_prior(tmp_path / "d.safetensors", Prior(384, 16, hidden=8), config, version="t"))
    assert first.audio_space == again.audio_space == tower_space(first.weights)
    assert first.audio_space.startswith("style-tower:") and other.audio_space != first.audio_space
    assert plain.audio_space == STATISTICS_SPACE
    latents = np.random.default_rng(0).standard_normal((8, 30)).astype(np.float32)
    assert first.audio_embedding(latents).shape == (16,) and plain.audio_embedding(latents).shape == (16,)
    np.testing.assert_array_equal(audio_style(first.audio_space, tmp_path / "b.safetensors")(latents),
                                  first.audio_embedding(latents))
    with pytest.raises(ValueError, match="not the one the denoiser was trained with"):
        audio_style(first.audio_space, tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="unknown style space"):
        audio_style("clap-512", tmp_path / "a.safetensors")
    with pytest.raises(StyleUnavailable, match="maps into"):
        PromptEncoder(tmp_path / "d.safetensors", cache_dir=tmp_path, style_space=first.audio_space)("slap bass")


def test_tower_style_encoder_then_a_denoiser_on_its_space_end_to_end(synthetic_build, tmp_path):
    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    style_path = tmp_path / "style.safetensors"
    # the tiny denoiser's style_dim is 16; the tower's default is 64, so the tiny config asks for 16 below
    report = train_style(latents, synthetic_build, style_path, steps=20, batch_size=8, audio_space="tower", tower_steps=20,
                         tower_dim=16, rate_hz=AE_CONFIGS["tiny"].latent_rate_hz, log=lambda message: None)
    style = PromptPrior.load(style_path)
    assert report["audio_space"] == style.audio_space and style.audio_space.startswith("style-tower:")
    assert style.style_dim == 16 and style.metadata["audio_tower"]["steps"] == 20

    run = tmp_path / "run"
    options = TrainOptions(steps=6, batch_size=4, warmup_steps=2, validate_every=3, checkpoint_every=3,
                           style_file=str(style_path))
    train(resolve_config("tiny"), latents, run, options, progress=False)
    denoiser_path = ship(run, tmp_path / "denoiser.safetensors", version="tiny-tower")
    assert load_denoiser(denoiser_path)[1]["config"]["style_space"] == style.audio_space
    # fine-tuning from that file keeps going in the same space; a statistics run cannot start from it
    train(resolve_config("tiny"), latents, tmp_path / "run2",
          TrainOptions(**{**options.__dict__, "init_from": str(denoiser_path)}), progress=False)

    bundle = load_bundle(ae_path, denoiser_path, prompt_prior_path=style_path)
    assert bundle.contract.style_space == style.audio_space
    rate = 44_100
    reference = np.random.default_rng(1).standard_normal((1, rate)).astype(np.float32) * 0.1
    context = np.random.default_rng(2).standard_normal((1, rate)).astype(np.float32) * 0.1
    common = dict(context=context, sample_rate=rate, steps=2, seed=1)
    styled = generate(bundle, GenerateRequest(**common, style_audio=reference)).audio
    plain = generate(bundle, GenerateRequest(**common)).audio
    assert np.isfinite(styled).all() and np.abs(styled - plain).max() > 0
    key = next(iter(bundle.references))
    np.testing.assert_allclose(bundle.references[key], style.audio_embedding(bundle.backend.encode(reference)[0]),
                               atol=1e-6)  # the tiny autoencoder runs at 44.1 kHz: no resampling

    # a style file with another tower is refused when the engine loads, with both names in the message
    other = tmp_path / "other.safetensors"
    save_prior(other, Prior(384, 16, hidden=8), {"style_mean": [0.0] * 16, "style_std": [1.0] * 16},
               version="x", audio_tower=AudioTower(8, dim=16))
    with pytest.raises(ValueError, match="not the one the denoiser was trained with"):
        load_bundle(ae_path, denoiser_path, prompt_prior_path=other)


def test_style_segments_take_the_asked_length_range(synthetic_build, tmp_path):
    from backline.training.diffusion import LatentPairs
    from backline.training.diffusion_cli import _style_frames

    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="t")
    encode_build(ae_path, synthetic_build, tmp_path / "latents")
    pairs = LatentPairs.load(tmp_path / "latents", "train", ("bass", "drums"), 16)
    lengths = []
    embed = lambda latents: lengths.append(latents.shape[1]) or np.zeros(16, np.float32)
    pairs.batch(np.random.default_rng(0), 64, 16, embed, (20, 30))
    assert min(lengths) >= 20 and max(lengths) <= 30 and len(set(lengths)) > 3
    lengths.clear()
    pairs.batch(np.random.default_rng(0), 8, 16, embed, (10_000, 20_000))  # longer than the stems: the whole stem
    assert set(lengths) == {pairs.target[0].shape[1]}
    assert _style_frames([2.0, 8.0], 21.5) == {"style_frames": (43, 172)} and _style_frames(None, 21.5) == {}
    with pytest.raises(SystemExit, match="shortest is longer"):
        _style_frames([8.0, 2.0], 21.5)


def test_hybrid_space_is_the_tower_then_the_statistics_and_exports(tmp_path):
    from backline.engine.style import HYBRID_SPACE_PREFIX, latent_statistics
    from backline.export.debug_models import write_debug_models
    from backline.export.onnx import STYLE_FILES, export_models
    from backline.training.style_prior import load_tower

    torch.manual_seed(0)
    tower = AudioTower(8, dim=16, hidden=12)
    config = {"style_mean": [0.0] * 32, "style_std": [1.0] * 32, "text_dim": 384, "audio_space_kind": "tower+statistics"}
    path = save_prior(tmp_path / "hybrid.safetensors", Prior(384, 32, hidden=8), config, version="h", audio_tower=tower)
    hybrid = PromptPrior.load(path)
    assert hybrid.audio_space.startswith(HYBRID_SPACE_PREFIX)
    assert hybrid.audio_space[len(HYBRID_SPACE_PREFIX):] == tower_space(hybrid.weights)[len("style-tower:"):]
    latents = np.random.default_rng(0).standard_normal((8, 25)).astype(np.float32)
    embedding = hybrid.audio_embedding(latents)
    np.testing.assert_allclose(embedding[:16], tower_forward(hybrid.weights, latents), atol=1e-6)
    np.testing.assert_allclose(embedding[16:], latent_statistics(latents), atol=1e-6)
    np.testing.assert_array_equal(audio_style(hybrid.audio_space, path)(latents), embedding)
    reloaded = load_tower(path)  # --tower-from: the same tower, hence the same hash
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(torch.from_numpy(latents[None]))[0].numpy(), embedding[:16], atol=1e-3)

    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=0, style_space=hybrid.audio_space)
    import dataclasses

    from backline.models.diffusion import EDMPrecond, load_denoiser, save_denoiser

    model, _ = load_denoiser(dn_path)  # the tiny denoiser takes 16 numbers; the hybrid space has 32
    wide = EDMPrecond(dataclasses.replace(model.config, style_dim=32)).eval()
    dn_path = save_denoiser(tmp_path / "wide.safetensors", wide, version="wide", dtype=torch.float32)
    report = export_models(ae_path, dn_path, tmp_path / "onnx", seed=1, threads=1, style_path=path)
    assert report.checks["style_encoder"]["passed"] and report.checks["style_encoder"]["max_rel_error"] < 1e-4
    bundle = load_bundle(onnx_dir=tmp_path / "onnx", prompt_prior_path=path, intra_op_threads=1)
    np.testing.assert_allclose(bundle.audio_style(latents), embedding, rtol=1e-4, atol=1e-4)
    assert all((tmp_path / "onnx" / name).is_file() for name in STYLE_FILES.values())


def test_a_denoiser_moves_to_a_style_space_of_another_size_keeping_the_rest(synthetic_build, tmp_path):
    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="t")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    options = TrainOptions(steps=3, batch_size=4, warmup_steps=1, validate_every=3, checkpoint_every=3)
    train(resolve_config("tiny"), latents, tmp_path / "plain", options, progress=False)
    plain = ship(tmp_path / "plain", tmp_path / "plain.safetensors", version="plain")  # latent statistics, 16 numbers
    config = {"style_mean": [0.0] * 24, "style_std": [1.0] * 24, "text_dim": 384, "audio_space_kind": "tower+statistics"}
    hybrid = save_prior(tmp_path / "hybrid.safetensors", Prior(384, 24, hidden=8), config, version="h",
                        audio_tower=AudioTower(8, dim=8, hidden=12))
    run = tmp_path / "hybrid-run"
    train(resolve_config("tiny"), latents, run, TrainOptions(**{**options.__dict__, "steps": 0, "style_file": str(hybrid),
                                                               "init_from": str(plain)}), progress=False)
    moved = ship(run, tmp_path / "moved.safetensors", version="moved")
    before, after = load_denoiser(plain)[0], load_denoiser(moved)[0]
    assert after.config.style_dim == 24 and after.config.style_space == PromptPrior.load(hybrid).audio_space
    for name, value in before.state_dict().items():
        if value.shape == after.state_dict()[name].shape:
            torch.testing.assert_close(after.state_dict()[name], value)  # carried over as it was (no step taken)
        else:
            assert "style" in name, name  # only the style projection starts afresh
