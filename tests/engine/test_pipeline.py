import numpy as np
import pytest

from backline.engine.audio import AudioError
from backline.engine.pipeline import Cancelled, GenerateRequest, generate
from tiny_bundle import make_bundle, song


@pytest.fixture(scope="module")
def bundle():
    return make_bundle()


@pytest.mark.parametrize("sample_rate, frames, channels", [(48000, 33_601, 2), (44100, 1, 1), (22050, 12_345, 1), (96000, 50_001, 2)])
def test_output_has_the_contexts_rate_channels_and_exact_length(bundle, sample_rate, frames, channels):
    context = song(sample_rate, frames / sample_rate + 1, channels)[:, :frames]
    result = generate(bundle, GenerateRequest(context=context, sample_rate=sample_rate, steps=3))
    assert result.audio.shape == context.shape and result.sample_rate == sample_rate
    assert result.audio.dtype == np.float32 and np.isfinite(result.audio).all()
    assert np.abs(result.audio).max() <= 0.8913
    if channels == 2:
        np.testing.assert_array_equal(result.audio[0], result.audio[1])


def test_deterministic_per_seed_and_different_across_seeds(bundle):
    request = GenerateRequest(context=song(), sample_rate=48000, steps=4, instrument="drums")
    a = generate(bundle, request).audio
    b = generate(bundle, request).audio
    c = generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=4, instrument="drums", seed=1)).audio
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_style_reference_and_guidance_change_the_result(bundle):
    base = GenerateRequest(context=song(), sample_rate=48000, steps=3)
    plain = generate(bundle, base)
    styled = generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=3,
                                              style_audio=song(44100, 0.5, 1, seed=3), style_sample_rate=44100))
    assert styled.info["style"] == "audio" and plain.info["style"] == "none"
    assert np.abs(plain.audio - styled.audio).max() > 1e-5
    unguided = generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=3, cfg_context=1.0))
    assert np.abs(plain.audio - unguided.audio).max() > 1e-5


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_progress_reports_each_step(bundle, sampler):
    steps = []
    generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=4, sampler=sampler),
             progress=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_between_steps(bundle):
    def cancel_at_two(i, n):
        if i == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=6), progress=cancel_at_two)


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"context": np.full((2, 100), np.nan, np.float32)}, AudioError, "context: contains NaN"),
        ({"context": np.zeros((2, 0), np.float32)}, AudioError, "context: the audio is empty"),
        ({"sample_rate": 1_600_000_000}, AudioError, "sample rate 1600000000 Hz is not supported"),
        ({"context": np.zeros((5, 100), np.float32)}, AudioError, "5 channels"),
        ({"max_duration_seconds": 0.5}, AudioError, "longer than the limit of 0.5 s"),
        ({"instrument": "kazoo"}, ValueError, "instrument must be one of bass, drums"),
        ({"steps": 0}, ValueError, "steps must be a whole number from 1 to 500"),
        ({"cfg_style": float("nan")}, ValueError, "cfg style must be a number from 0 to 20"),
        ({"sampler": "ddim"}, ValueError, "sampler must be one of few_step, euler, heun, dpmpp_2m, got 'ddim'"),
        ({"style_audio": np.full(100, np.inf, np.float32)}, AudioError, "style reference: contains NaN"),
    ],
)
def test_bad_requests_are_refused_clearly(bundle, changes, error, message):
    request = GenerateRequest(**{"context": song(), "sample_rate": 48000, "steps": 2, **changes})
    with pytest.raises(error, match=message):
        generate(bundle, request)
