"""generate()'s stages, each alone, on a tiny model: validate, encode, plan the sampling, sample the takes,
decode, level."""

import numpy as np
import pytest

from backline.engine import pipeline as P
from tiny_bundle import make_bundle, song

RATE = 48_000


@pytest.fixture(scope="module")
def bundle():
    return make_bundle("tiny-notes")


def test_validate_fills_the_models_default_guidance_and_refuses_in_words(bundle):
    request = P.validate(bundle, P.GenerateRequest(context=song(RATE), sample_rate=RATE))
    assert request.cfg_context is not None and request.cfg_style is not None
    with pytest.raises(ValueError, match="steps must be a whole number from 1 to 500, got 0"):
        P.validate(bundle, P.GenerateRequest(context=song(RATE), sample_rate=RATE, steps=0))


def test_encode_checks_the_stem_covers_the_region_and_tells_a_silent_context(bundle):
    context = song(RATE)
    inputs = P.encode(bundle, P.GenerateRequest(context=context, sample_rate=RATE, stem=context[:1]))
    assert inputs.known.shape == (1, *inputs.context_latents.shape) and not inputs.silent_context
    with pytest.raises(P.AudioError, match="they must cover the same region"):
        P.encode(bundle, P.GenerateRequest(context=context, sample_rate=RATE, stem=context[:, :-10]))
    assert P.encode(bundle, P.GenerateRequest(context=np.zeros_like(context), sample_rate=RATE)).silent_context


def test_a_loop_starts_every_take_from_the_same_noise_in_every_repeat(bundle):
    request = P.validate(bundle, P.GenerateRequest(context=song(RATE, seconds=1.5), sample_rate=RATE, steps=3,
                                                   loop_seconds=0.3))
    inputs = P.encode(bundle, request)
    sampling = P.plan_sampling(bundle, request, inputs, None)
    x, sigmas = sampling.start(np.random.default_rng(0))
    period = sampling.period
    assert period and np.array_equal(x[..., :period], x[..., period:2 * period])
    assert sampling.controls["loop_seconds"] == pytest.approx(period / bundle.contract.latent_rate_hz)


def test_takes_are_ranked_by_key_and_the_choice_is_reported(bundle):
    request = P.validate(bundle, P.GenerateRequest(context=song(RATE), sample_rate=RATE, steps=2, candidates=3))
    inputs = P.encode(bundle, request)
    sampling = P.plan_sampling(bundle, request, inputs, None)
    latents, chosen = P.sample_takes(bundle, sampling, np.random.default_rng(request.seed), None)
    assert chosen["takes"] == 3 and 0 <= chosen["chosen"] < 3 and len(chosen["in_key_share"]) == 3
    assert latents.shape == (1, *inputs.context_latents.shape)


def test_a_variation_is_levelled_to_the_producers_stem(bundle):
    context = song(RATE)
    stem = 0.05 * song(RATE, seed=1)
    request = P.validate(bundle, P.GenerateRequest(context=context, sample_rate=RATE, stem=stem,
                                                   variation_strength=0.5))
    inputs = P.encode(bundle, request)
    raw = np.random.default_rng(0).standard_normal(context.shape[1]).astype(np.float32)
    out = P.level(bundle, request, inputs, raw, 0.0)
    assert out.shape == stem.shape
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(np.sqrt(np.mean(P.to_mono(stem) ** 2)), rel=1e-3)
