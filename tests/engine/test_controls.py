"""The producer's controls (issue 7): each control's contract, on pure functions and through ``generate``
with a tiny random-weight model."""

import numpy as np
import pytest

from backline.engine import controls
from backline.engine.audio import AudioError, resample
from backline.engine.pipeline import (GenerateRequest, _match_level, arrange, generate, make_guided_denoiser,
                                      request_from_params)
from backline.engine.sampling import get_sampler, get_sigmas_karras
from tiny_bundle import make_bundle, song

RATE = 48_000


@pytest.fixture(scope="module")
def bundle():
    return make_bundle()


def stem_and_context(seconds=1.2):
    return song(RATE, seconds, 1, seed=5), song(RATE, seconds, 2, seed=6)


# -- tempo -------------------------------------------------------------------------------------------------
def test_bar_positions_become_seconds_in_the_region():
    tempo = controls.Tempo(120.0)  # 4/4: a beat is 0.5 s, a bar 2 s
    assert tempo.position_seconds("1") == 0.0
    assert tempo.position_seconds("2") == 2.0
    assert tempo.position_seconds("2.3") == 3.0
    assert tempo.bars_seconds(2) == 4.0
    assert controls.Tempo(120.0, region_start_beats=4.0).position_seconds("3") == 2.0
    assert controls.Tempo(90.0, beats_per_bar=3).position_seconds("2") == 2.0
    for bad in ("0", "2.5", "x", "1.0"):
        with pytest.raises(ValueError):
            tempo.position_seconds(bad)
    with pytest.raises(ValueError, match="before the region"):
        controls.Tempo(120.0, region_start_beats=8.0).position_seconds("2")
    with pytest.raises(ValueError, match="BPM"):
        controls.Tempo(0.0)


def test_params_in_bars_need_a_tempo_and_become_the_same_request_as_seconds():
    context = song(RATE, 1.0, 1)
    in_bars = request_from_params({"regenerate_bars": ["2", "3"], "loop_bars": 1, "tempo_bpm": 240.0}, context, RATE)
    in_seconds = request_from_params({"regenerate_seconds": [1.0, 2.0], "loop_seconds": 1.0}, context, RATE)
    assert in_bars.regenerate_seconds == in_seconds.regenerate_seconds == (1.0, 2.0)
    assert in_bars.loop_seconds == in_seconds.loop_seconds == 1.0
    with pytest.raises(ValueError, match="tempo"):
        request_from_params({"loop_bars": 1}, context, RATE)
    with pytest.raises(ValueError, match="unknown generation parameter .volume."):
        request_from_params({"volume": 11}, context, RATE)
    with pytest.raises(ValueError, match="not both"):
        request_from_params({"loop_bars": 1, "loop_seconds": 2.0, "tempo_bpm": 120}, context, RATE)


# -- inpainting --------------------------------------------------------------------------------------------
def test_keep_mask_leaves_everything_outside_the_range_at_one():
    mask = controls.keep_mask(100, 10.0, 3.0, 6.0, crossfade_seconds=0.2)
    assert (mask[:30] == 1).all() and (mask[60:] == 1).all()
    assert (mask[32:58] == 0).all() and 0 < mask[30] < 1 and mask[30] > mask[31] > 0
    assert np.all(np.diff(mask[:45]) <= 0) and np.all(np.diff(mask[45:]) >= 0)
    assert (controls.keep_mask(100, 10.0, 5.0, 99.0, 0.2)[52:] == 0).all()  # no ramp at the end it reaches
    for start, end in ((5.0, 5.0), (-1.0, 2.0), (11.0, 12.0), (np.nan, 2.0)):
        with pytest.raises(ValueError):
            controls.keep_mask(100, 10.0, start, end, 0.2)


def test_regenerating_a_range_keeps_the_rest_and_joins_without_a_step(bundle):
    stem, context = stem_and_context()
    result = generate(bundle, GenerateRequest(context=context, sample_rate=RATE, stem=stem, steps=4,
                                              regenerate_seconds=(0.4, 0.8)))
    out = result.audio
    assert out.shape == (1, stem.shape[1])  # the stem's layout
    start, end = int(0.4 * RATE), int(0.8 * RATE)
    np.testing.assert_array_equal(out[:, :start], stem[:, :start])
    np.testing.assert_array_equal(out[:, end:], stem[:, end:])
    inside = out[0, start + 2000:end - 2000]
    assert np.abs(inside - stem[0, start + 2000:end - 2000]).max() > 1e-3  # the range was regenerated
    jumps = np.abs(np.diff(out[0]))
    typical = np.percentile(np.abs(np.diff(stem[0])), 99.9)
    for boundary in (start, end):
        assert jumps[boundary - 2:boundary + 2].max() <= 2 * typical + 1e-3
    assert result.info["controls"]["regenerate_seconds"] == [0.4, 0.8]


def test_inpainting_keeps_the_known_latents_exactly_for_every_sampler(bundle):
    contract = bundle.contract
    rng = np.random.default_rng(0)
    context = rng.standard_normal((contract.latent_channels, 30)).astype(np.float32)
    known = rng.standard_normal((1, contract.latent_channels, 30)).astype(np.float32)
    keep = controls.keep_mask(30, 1.0, 10.0, 20.0, crossfade_seconds=2.0)
    sigmas = get_sigmas_karras(5, contract.sigma_min, contract.sigma_max)
    denoise = controls.inpainting(make_guided_denoiser(bundle, context, None, "bass", 1.25, 1.0), known, keep)
    for name in ("euler", "heun", "dpmpp_2m"):
        x = known + rng.standard_normal(known.shape).astype(np.float32) * sigmas[0]
        out = get_sampler(name)(denoise, x, sigmas)
        np.testing.assert_allclose(out[..., keep == 1], known[..., keep == 1], atol=1e-4)
        assert np.abs(out[..., keep == 0] - known[..., keep == 0]).max() > 1e-2


# -- variations --------------------------------------------------------------------------------------------
def test_variation_start_spans_the_input_to_a_fresh_generation():
    latents = np.ones((4, 10), np.float32)
    sigmas = get_sigmas_karras(10, 0.002, 80.0)
    same, none = controls.variation_start(latents, 0.0, sigmas, np.random.default_rng(0))
    np.testing.assert_array_equal(same, latents)
    assert list(none) == [0.0]
    half_x, half = controls.variation_start(latents, 0.5, sigmas, np.random.default_rng(0))
    np.testing.assert_array_equal(half, sigmas[5:])
    fresh_x, fresh = controls.variation_start(latents, 1.0, sigmas, np.random.default_rng(0))
    np.testing.assert_array_equal(fresh, sigmas)
    assert np.abs(half_x - latents).std() < np.abs(fresh_x - latents).std()
    with pytest.raises(ValueError, match="within"):
        controls.variation_start(latents, 1.5, sigmas, np.random.default_rng(0))


def test_variation_strength_zero_is_the_input_and_more_strength_strays_further(bundle):
    stem, context = stem_and_context(0.8)
    request = dict(context=context, sample_rate=RATE, stem=stem, steps=8)
    np.testing.assert_array_equal(generate(bundle, GenerateRequest(**request, variation_strength=0.0)).audio, stem)
    low = generate(bundle, GenerateRequest(**request, variation_strength=0.2)).audio
    high = generate(bundle, GenerateRequest(**request, variation_strength=1.0)).audio
    assert low.shape == high.shape == stem.shape
    # a variation keeps the input's level, whatever level the (random) autoencoder gives back
    for variation in (low, high):
        np.testing.assert_allclose(np.sqrt(np.mean(variation**2)), np.sqrt(np.mean(stem**2)), rtol=1e-4)
    # measured against the stem's trip through the autoencoder at the stem's level, the variations' own path
    model_rate = bundle.sample_rate
    latents = bundle.backend.encode(resample(stem, RATE, model_rate))
    round_trip = resample(bundle.backend.decode(latents)[:, :int(stem.shape[1] * model_rate / RATE)], model_rate, RATE)
    round_trip = _match_level(round_trip[0], stem[0])[None]
    frames = min(round_trip.shape[1], stem.shape[1]) - 2000
    low_error, high_error = (np.abs(v[:, 2000:frames] - round_trip[:, 2000:frames]).mean() for v in (low, high))
    assert low_error < 0.5 * high_error


def test_variation_and_range_need_a_stem_of_the_same_length(bundle):
    stem, context = stem_and_context(0.5)
    with pytest.raises(ValueError, match="needs the stem"):
        generate(bundle, GenerateRequest(context=context, sample_rate=RATE, variation_strength=0.5))
    with pytest.raises(AudioError, match="same region"):
        generate(bundle, GenerateRequest(context=context, sample_rate=RATE, stem=stem[:, :-10], variation_strength=0.5))
    with pytest.raises(ValueError, match="not both"):
        generate(bundle, GenerateRequest(context=context, sample_rate=RATE, stem=stem, variation_strength=0.5,
                                         regenerate_seconds=(0.1, 0.2)))
    with pytest.raises(AudioError, match="NaN"):
        generate(bundle, GenerateRequest(context=context, sample_rate=RATE, stem=stem * np.nan, variation_strength=0.5))


# -- loops -------------------------------------------------------------------------------------------------
def test_tie_is_exactly_periodic_and_keeps_periodic_input():
    x = np.random.default_rng(0).standard_normal((1, 3, 23))
    tied = controls.tie(x, 5)
    np.testing.assert_array_equal(tied[..., :5], tied[..., 5:10])
    np.testing.assert_array_equal(tied[..., :3], tied[..., 20:23])
    periodic = np.tile(x[..., :5], 5)[..., :23]
    np.testing.assert_allclose(controls.tie(periodic, 5), periodic)
    with pytest.raises(ValueError):
        controls.tie(x, 24)


def _looped_latents(bundle, strength, steps=8):
    contract = bundle.contract
    rng = np.random.default_rng(1)
    context = rng.standard_normal((contract.latent_channels, 24)).astype(np.float32)
    sigmas = get_sigmas_karras(steps, contract.sigma_min, contract.sigma_max)
    noise = rng.standard_normal((1, contract.latent_channels, 24)).astype(np.float32)
    denoise = make_guided_denoiser(bundle, context, None, "drums", 1.25, 1.0)
    if strength > 0:
        noise = noise[..., np.arange(24) % 6]
        denoise = controls.looping(denoise, 6, controls.release_sigma(sigmas, strength))
    out = get_sampler("dpmpp_2m")(denoise, noise * sigmas[0], sigmas)
    return np.abs(out[..., 6:18] - out[..., 12:24]).max() / np.abs(out).max()


def test_loop_sampling_is_periodic_at_full_strength_and_nearly_so_below(bundle):
    exact, loose, free = (_looped_latents(bundle, s) for s in (1.0, 0.75, 0.0))
    assert exact < 1e-5
    assert exact < loose < free
    assert loose < 0.5 * free


def test_looped_stem_repeats_in_audio_and_its_cycle_loops_without_a_click(bundle):
    context = song(RATE, 2.0, 1)
    result = generate(bundle, GenerateRequest(context=context, sample_rate=RATE, steps=4, loop_seconds=0.5))
    period_seconds = result.info["controls"]["loop_seconds"]
    period = int(round(period_seconds * RATE))
    assert abs(period_seconds - 0.5) <= 0.5 / bundle.contract.latent_rate_hz
    audio = result.audio[0]
    middle, next_one = audio[period:2 * period], audio[2 * period:3 * period]
    assert np.abs(middle - next_one).max() < 0.05 * np.abs(audio).max()
    cycle = controls.loop_cycle(result.audio, period)[0]
    joint = abs(float(cycle[0] - cycle[-1]))
    assert joint <= 3 * np.percentile(np.abs(np.diff(cycle)), 99.5) + 1e-4
    with pytest.raises(ValueError, match="longer than the region"):
        generate(bundle, GenerateRequest(context=context, sample_rate=RATE, steps=2, loop_seconds=3.0))


# -- pseudo-stereo -----------------------------------------------------------------------------------------
def test_stereo_width_zero_is_identical_channels_and_wider_is_correlated_but_different(bundle):
    context = song(RATE, 0.8, 1)
    mono = generate(bundle, GenerateRequest(context=context, sample_rate=RATE, steps=4)).audio
    flat = generate(bundle, GenerateRequest(context=context, sample_rate=RATE, steps=4, stereo_width=0.0)).audio
    np.testing.assert_array_equal(flat, mono)
    wide = generate(bundle, GenerateRequest(context=context, sample_rate=RATE, steps=4, stereo_width=1.0)).audio
    assert wide.shape == (2, context.shape[1])
    np.testing.assert_allclose(wide.mean(axis=0), mono[0], atol=1e-5)  # mono compatible: the sum is the stem
    assert np.abs(wide[0] - wide[1]).max() > 1e-3
    assert np.corrcoef(wide[0], wide[1])[0, 1] > 0.3
    narrow = controls.pseudo_stereo(wide[0], wide[1], 0.0)
    np.testing.assert_array_equal(narrow[0], narrow[1])
    with pytest.raises(ValueError, match="width"):
        generate(bundle, GenerateRequest(context=context, sample_rate=RATE, stereo_width=2.0))


# -- interpolation -----------------------------------------------------------------------------------------
def test_style_blend_at_zero_and_one_equals_each_reference(bundle):
    context = song(RATE, 0.6, 1)
    a, b = song(44100, 0.5, 1, seed=8) * 0.2, song(44100, 0.5, 1, seed=9)
    common = dict(context=context, sample_rate=RATE, steps=3, style_sample_rate=44100)
    only_a = generate(bundle, GenerateRequest(**common, style_audio=a)).audio
    only_b = generate(bundle, GenerateRequest(**common, style_audio=b)).audio
    at_0 = generate(bundle, GenerateRequest(**common, style_audio=a, style_audio_b=b, style_ratio=0.0)).audio
    at_1 = generate(bundle, GenerateRequest(**common, style_audio=a, style_audio_b=b, style_ratio=1.0)).audio
    half = generate(bundle, GenerateRequest(**common, style_audio=a, style_audio_b=b, style_ratio=0.5)).audio
    np.testing.assert_array_equal(at_0, only_a)
    np.testing.assert_array_equal(at_1, only_b)
    assert np.abs(half - only_a).max() > 1e-5 and np.abs(half - only_b).max() > 1e-5


# -- arrangement -------------------------------------------------------------------------------------------
def test_arrangement_feeds_each_stem_into_the_next_ones_context(bundle):
    silence = np.zeros((2, int(0.6 * RATE)), np.float32)
    request = GenerateRequest(context=silence, sample_rate=RATE, steps=3, seed=4)
    stems, mix = arrange(bundle, request, ["drums", "bass"])
    assert list(stems) == ["drums", "bass"] and mix.shape == silence.shape
    np.testing.assert_allclose(mix, stems["drums"] + stems["bass"], atol=1e-6)
    alone = generate(bundle, GenerateRequest(context=silence, sample_rate=RATE, steps=3, seed=5, instrument="bass"))
    assert np.abs(alone.audio - stems["bass"]).max() > 1e-4  # the bass heard the drums
    with pytest.raises(ValueError, match="twice"):
        arrange(bundle, request, ["bass", "bass"])


def test_a_silent_region_is_generated_from_nothing_not_conditioned_on_silence(bundle):
    from backline.engine.pipeline import make_guided_denoiser

    silence = np.zeros((1, int(0.5 * RATE)), np.float32)
    result = generate(bundle, GenerateRequest(context=silence, sample_rate=RATE, steps=3, cfg_context=4.0))
    assert result.info["controls"]["context"] == "none (silent region)"
    # the same as the denoiser with its context condition dropped, whatever the context's latents hold
    contract = bundle.contract
    x = np.random.default_rng(0).standard_normal((1, contract.latent_channels, 12)).astype(np.float32)
    a = make_guided_denoiser(bundle, np.zeros((contract.latent_channels, 12), np.float32), None, "bass", 4.0, 1.25,
                             use_context=False)(x, 1.0)
    b = make_guided_denoiser(bundle, np.ones((contract.latent_channels, 12), np.float32), None, "bass", 1.0, 1.25,
                             use_context=False)(x, 1.0)
    np.testing.assert_array_equal(a, b)
    heard = generate(bundle, GenerateRequest(context=song(RATE, 0.5, 1), sample_rate=RATE, steps=3))
    assert "context" not in heard.info["controls"]
