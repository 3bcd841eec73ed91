"""The style pad: named sounds placed on a plane, a point's style their inverse-distance blend; through the engine
and the bridge's welcome; the shipped prior carries a pad for each instrument."""

from dataclasses import replace

import numpy as np
import pytest

from backline.engine.params import ParamError, check_param
from backline.engine.pipeline import GenerateRequest, _style, generate, make_generator, style_pads
from backline.engine.style import PAD_EXTENT, PAD_SOUNDS, PromptPrior, StylePad
from tiny_bundle import Pads, make_bundle, pad


def test_the_sounds_lie_on_the_pad_and_a_point_on_one_is_its_style():
    p = pad()
    assert np.abs(p.positions).max() == pytest.approx(PAD_EXTENT)
    for position, embedding in zip(p.positions, p.embeddings):
        np.testing.assert_allclose(p.embedding(tuple(position)), embedding, atol=1e-6)
    layout = p.layout()
    assert [s["name"] for s in layout] == list(p.names) and all(-1 <= s["x"] <= 1 and -1 <= s["y"] <= 1 for s in layout)


def test_a_point_between_two_sounds_blends_them_by_distance():
    p = StylePad(("a", "b"), np.array([[-0.5, 0.0], [0.5, 0.0]]), np.array([[0.0, 0.0], [1.0, 2.0]], np.float32))
    np.testing.assert_allclose(p.embedding((0.0, 0.0)), [0.5, 1.0], atol=1e-6)
    near_b = p.embedding((0.4, 0.0))  # 0.1 from b, 0.9 from a: weights 1/0.01 and 1/0.81
    np.testing.assert_allclose(near_b, np.array([1.0, 2.0]) * 100 / (100 + 1 / 0.81), atol=1e-5)


def test_the_pad_is_placed_by_its_embeddings_not_their_order():
    p, shuffled = pad(seed=1), None
    order = [2, 0, 4, 1, 3]
    shuffled = StylePad.of(tuple(p.names[i] for i in order), p.embeddings[order])
    for name, position in zip(shuffled.names, shuffled.positions):
        mine = p.positions[p.names.index(name)]
        assert np.allclose(np.abs(position), np.abs(mine), atol=1e-6)  # the same plane, up to the axes' signs


@pytest.mark.parametrize("value", [(0.2,), (1.5, 0.0), ("a", 0.1), (float("nan"), 0.0)])
def test_a_point_off_the_pad_is_refused_in_words(value):
    with pytest.raises(ParamError, match="style pad must be two numbers"):
        check_param("style_pad", list(value))


def test_a_point_on_the_pad_steers_the_stem_as_that_style_does():
    tiny = make_bundle()
    pads = Pads(tiny.contract.style_dim)
    bundle = replace(tiny, prompts=pads)
    context = (0.3 * np.sin(np.arange(30_000) * 0.02))[None].astype(np.float32)
    point = tuple(pads.pads["drums"].positions[1])
    request = GenerateRequest(context=context, sample_rate=44_100, instrument="drums", steps=3, style_pad=point)
    np.testing.assert_allclose(_style(bundle, request), pads.pads["drums"].embeddings[1], atol=1e-6)
    steered = generate(bundle, request)
    assert steered.info["style"] == "pad"
    assert np.abs(steered.audio - generate(bundle, replace(request, style_pad=None)).audio).max() > 1e-4
    with pytest.raises(ValueError, match="in words or as a point on the style pad, not both"):
        generate(bundle, replace(request, style_prompt="rock"))
    assert style_pads(bundle) == {name: p.layout() for name, p in pads.pads.items()}
    assert make_generator(bundle).style_pads == style_pads(bundle)
    assert style_pads(tiny) == {}  # no prompt prior: no pad


def test_the_shipped_prior_carries_a_pad_for_each_instrument():
    prior = PromptPrior.load()
    for instrument, names in PAD_SOUNDS.items():
        p = prior.pad(instrument)
        assert p.names == names and p.embeddings.shape == (len(names), prior.style_dim)
        assert np.isfinite(p.embeddings).all() and len({tuple(np.round(x, 3)) for x in p.positions}) == len(names)
