"""Style from a reference or a prompt: the text tower, the prompt prior's file and maths, retrieval
measures, and prompts through ``generate``."""

import numpy as np
import pytest
import torch

from backline.engine.pipeline import GenerateRequest, generate, request_from_params
from backline.engine.style import (PromptEncoder, PromptPrior, StyleUnavailable, TextTower, check_prompt,
                                   latent_statistics, match_latent_statistics, prior_forward)
from backline.models.style import Prior
from backline.training.style_prior import recall_at, save_prior
from tiny_bundle import make_bundle, song

RATE = 44_100


@pytest.fixture(scope="module")
def bundle():
    return make_bundle()


def tiny_prior(tmp_path, style_dim, text_dim=384, autoencoder=None):
    torch.manual_seed(0)
    model = Prior(text_dim, style_dim, hidden=16)
    config = {"style_mean": [0.5] * style_dim, "style_std": [2.0] * style_dim, "text_dim": text_dim,
              "autoencoder": autoencoder}
    return save_prior(tmp_path / "prior.safetensors", model, config, version="test"), model


def test_numpy_prior_matches_torch_and_file_carries_its_standardisation(tmp_path):
    path, model = tiny_prior(tmp_path, 6)
    prior = PromptPrior.load(path)
    x = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    with torch.no_grad():
        expected = model.half().float()(torch.from_numpy(x)).numpy()  # the file holds fp16 weights
    np.testing.assert_allclose(prior_forward(prior.weights, x), expected, atol=1e-3)
    np.testing.assert_allclose(prior.embed(x), expected * 2.0 + 0.5, atol=2e-3)
    assert prior.style_dim == 6 and prior.metadata["version"] == "test"


def test_prior_file_errors_are_clear(tmp_path):
    with pytest.raises(StyleUnavailable, match="no prompt prior"):
        PromptPrior.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        PromptPrior.load(tmp_path / "junk.safetensors")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"), metadata={"kind": "something"})
    with pytest.raises(ValueError, match="not a Backline prompt prior"):
        PromptPrior.load(tmp_path / "other.safetensors")


def test_a_prior_of_another_autoencoders_latents_is_refused(tmp_path):
    path, _ = tiny_prior(tmp_path, 6, autoencoder={"version": "ae-1", "latent_scale": 0.4})
    text = np.ones((1, 384), np.float32) / np.sqrt(384)

    class Tower:  # the text tower's output, without loading it
        def embed(self, prompts):
            return text

    for version, works in (("ae-1", True), (None, True), ("ae-2", False)):
        encoder = PromptEncoder(path, cache_dir=tmp_path, latent_space=version)
        encoder.text = Tower()
        if works:
            assert encoder("slap bass").shape == (6,)
        else:
            with pytest.raises(StyleUnavailable, match="latents of autoencoder ae-1, but the autoencoder loaded beside it makes those of ae-2"):
                encoder("slap bass")


def test_prompts_are_checked():
    assert check_prompt("  slap   bass ") == "slap bass"
    for bad in ("", "   ", "x" * 501):
        with pytest.raises(ValueError):
            check_prompt(bad)


def test_text_tower_embeds_unit_vectors_and_caches_by_content(tmp_path):
    tower = TextTower(cache_dir=tmp_path)
    vectors = tower.embed(["slap bass, funky", "brushed jazz drum kit", "Slap bass, funky"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(vectors[0], vectors[2])  # the cache key ignores case and spacing
    assert vectors[0] @ vectors[1] < 0.9
    assert len(list(tmp_path.glob("*.npy"))) == 2
    again = TextTower(cache_dir=tmp_path)
    np.testing.assert_array_equal(again.embed(["slap bass, funky"])[0], vectors[0])
    assert again._model is None  # served from the disk cache, the model never loaded


def test_recall_at_k():
    similarity = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.3], [0.1, 0.2, 0.3]])
    assert recall_at(similarity, np.array([0, 1, 2]), 1) == pytest.approx(2 / 3)
    assert recall_at(similarity, np.array([0, 1, 2]), 2) == 1.0


class FixedPrompts:
    def __init__(self, dim):
        self.dim, self.seen = dim, []

    def __call__(self, prompt):
        self.seen.append(prompt)
        return np.random.default_rng(len(prompt)).standard_normal(self.dim).astype(np.float32)


def test_prompt_reference_and_their_blend_through_generate(bundle):
    from dataclasses import replace

    prompts = FixedPrompts(bundle.contract.style_dim)
    engine = replace(bundle, prompts=prompts)
    common = dict(context=song(RATE, 0.6, 1), sample_rate=RATE, steps=3)
    reference = song(RATE, 0.5, 1, seed=4) * 0.3
    plain = generate(engine, GenerateRequest(**common)).audio
    prompted = generate(engine, GenerateRequest(**common, style_prompt="fretless bass"))
    assert prompted.info["style"] == "prompt" and prompts.seen == ["fretless bass"]
    assert np.abs(prompted.audio - plain).max() > 1e-5
    only_audio = generate(engine, GenerateRequest(**common, style_audio=reference)).audio
    at_0 = generate(engine, GenerateRequest(**common, style_audio=reference, style_prompt="fretless bass", style_ratio=0.0))
    at_1 = generate(engine, GenerateRequest(**common, style_audio=reference, style_prompt="fretless bass", style_ratio=1.0))
    assert at_0.info["style"] == "audio+prompt"
    np.testing.assert_array_equal(at_0.audio, only_audio)
    np.testing.assert_array_equal(at_1.audio, prompted.audio)
    with pytest.raises(ValueError, match="not both"):
        generate(engine, GenerateRequest(**common, style_audio=reference, style_audio_b=reference, style_prompt="x"))
    wrong = replace(bundle, prompts=FixedPrompts(3))
    with pytest.raises(ValueError, match="the denoiser wants"):
        generate(wrong, GenerateRequest(**common, style_prompt="slap bass"))


def test_a_missing_prior_is_a_clear_error_through_generate(bundle, tmp_path):
    from dataclasses import replace

    engine = replace(bundle, prompts=PromptEncoder(tmp_path / "none.safetensors", cache_dir=tmp_path))
    with pytest.raises(StyleUnavailable, match="no prompt prior"):
        generate(engine, GenerateRequest(context=song(RATE, 0.3, 1), sample_rate=RATE, steps=2, style_prompt="slap bass"))


def test_reference_embeddings_are_computed_once_per_content(bundle):
    from dataclasses import replace

    engine = replace(bundle, references={})
    calls = []
    encode = engine.backend.encode
    engine.backend.encode = lambda audio: calls.append(audio.shape) or encode(audio)
    try:
        reference = song(RATE, 0.5, 1, seed=4) * 0.3
        common = dict(context=song(RATE, 0.4, 1), sample_rate=RATE, steps=2)
        first = generate(engine, GenerateRequest(**common, style_audio=reference)).audio
        second = generate(engine, GenerateRequest(**common, style_audio=reference.copy())).audio
        third = generate(engine, GenerateRequest(**common, style_audio=reference * 0.5)).audio
    finally:
        engine.backend.encode = encode
    np.testing.assert_array_equal(first, second)
    assert len(engine.references) == 2  # the same content once, the quieter copy apart
    assert len(calls) == 3 + 2  # one context encode per generation, two reference encodes
    assert np.abs(third - first).max() > 0


def test_matching_latent_statistics_moves_each_channels_mean_and_std():
    rng = np.random.default_rng(0)
    latents = (rng.standard_normal((1, 4, 50)) * 3 + 1).astype(np.float32)
    target = np.concatenate([rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)]).astype(np.float32)
    exact = match_latent_statistics(latents, target, 1.0)
    np.testing.assert_allclose(latent_statistics(exact[0]), target, atol=1e-5)
    np.testing.assert_array_equal(match_latent_statistics(latents, target, 0.0), latents)
    np.testing.assert_allclose(match_latent_statistics(latents, target, 0.5), 0.5 * latents + 0.5 * exact, atol=1e-6)
    looped = match_latent_statistics(np.tile(latents[..., :10], 5), target, 1.0)  # one map for every frame
    np.testing.assert_allclose(looped[..., :10], looped[..., 30:40], atol=1e-6)
    with pytest.raises(ValueError, match="expected 8 latent statistics"):
        match_latent_statistics(latents, target[:6], 1.0)


def test_a_stem_steered_by_a_reference_takes_the_references_latent_statistics(bundle):
    from dataclasses import replace

    engine = replace(bundle, references={}, prompts=FixedPrompts(bundle.contract.style_dim))
    seen, decoded = [], []
    decode = engine.backend.decode

    def recording(latents, instrument=None):
        seen.append(latents[0].copy())
        decoded.append(decode(latents, instrument)[0])
        return decoded[-1][None]

    engine.backend.decode = recording
    common = dict(context=song(RATE, 0.6, 1), sample_rate=RATE, steps=3)
    frames = common["context"].shape[-1]
    rms = lambda audio: float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    reference = song(RATE, 0.5, 1, seed=4) * 0.3
    try:
        matched = generate(engine, GenerateRequest(**common, style_audio=reference))
        target = engine.reference_embedding(reference, RATE, "style reference", 600)
        np.testing.assert_allclose(latent_statistics(seen[-1]), target, atol=1e-4)
        assert matched.info["controls"]["style_match"] == 1.0
        raw = np.pad(decoded[-1], (0, max(0, frames - len(decoded[-1]))))[:frames]  # the model's rate is the request's
        cap = min(1.0, 0.891 / float(np.abs(raw).max()))  # the level the matched latents decode to, peak-capped
        np.testing.assert_allclose(matched.audio[0], raw * cap, rtol=1e-5, atol=1e-7)
        free = generate(engine, GenerateRequest(**common, style_audio=reference, style_match=0.0))
        assert "style_match" not in free.info["controls"] and np.abs(latent_statistics(seen[-1]) - target).max() > 1e-2
        assert np.abs(free.audio - matched.audio).max() > 1e-5
        levelled = np.abs(free.audio).max() > 0.89 or abs(rms(free.audio) / rms(common["context"]) - 0.5) < 1e-3
        assert levelled  # without the match: half the context's RMS (or -1 dBFS peak), as an unsteered stem
        generate(engine, GenerateRequest(**common, style_audio=reference, style_match=0.5))
        np.testing.assert_allclose(seen[-1], 0.5 * seen[-2] + 0.5 * seen[-3], atol=1e-5)  # the same sample, halfway
        prompted = generate(engine, GenerateRequest(**common, style_prompt="slap bass"))
        assert "style_match" not in prompted.info["controls"]  # a prompt is a family's average, not a sound
        blend = generate(engine, GenerateRequest(**common, style_audio=reference, style_prompt="slap bass", style_ratio=0.25))
        assert blend.info["controls"]["style_match"] == 0.75  # the reference's share of the blend
        variation = generate(engine, GenerateRequest(**common, style_audio=reference, stem=matched.audio,
                                                     variation_strength=0.5))
        assert "style_match" not in variation.info["controls"]  # the producer's stem keeps its own sound
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match="style match must be a number from 0 to 1"):
                generate(engine, GenerateRequest(**common, style_audio=reference, style_match=bad))
    finally:
        engine.backend.decode = decode
    assert request_from_params({"style_match": 0.25}, common["context"], RATE).style_match == 0.25


def test_level_sits_with_the_context_or_keeps_a_matched_stems_own_level():
    from backline.engine.pipeline import _level_gain

    rms = lambda audio: float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    context = song(RATE, 0.5, 1)[0]
    _level = lambda stem, context, context_share=1.0: stem * _level_gain(stem, context, context_share)  # as level()
    stem = 0.25 * song(RATE, 0.5, 1, seed=2)[0]
    assert abs(rms(_level(stem, context)) / rms(context) - 0.5) < 1e-4
    gain = 0.5 * rms(context) / rms(stem)  # about 6 dB
    assert 1.0 < 20 * np.log10(gain) < 12.0
    np.testing.assert_allclose(_level(stem, context, context_share=0.0), stem)  # within the window, below the cap: kept
    np.testing.assert_allclose(rms(_level(stem, context, context_share=0.5)), rms(stem) * gain ** 0.5, rtol=1e-4)
    # a take (or a reference) far quieter or louder than the mix: within 12 dB of the context's level (and the cap)
    quiet = rms(_level(stem * 1e-3, context, context_share=0.0))
    np.testing.assert_allclose(20 * np.log10(quiet / (0.5 * rms(context))), -12.0, rtol=1e-4)
    loud = _level(stem * 1e2, context, context_share=0.0)
    assert 0 < 20 * np.log10(rms(loud) / (0.5 * rms(context))) <= 12.0 + 1e-6 and np.abs(loud).max() <= 0.891 + 1e-6
    loud = 5.0 * stem / np.abs(stem).max()
    np.testing.assert_allclose(np.abs(_level(loud, context, context_share=0.0)).max(), 0.891, rtol=1e-5)  # -1 dBFS
