"""The conditioned denoiser's inputs: the beat grid and the harmony per latent frame, the chord charts a producer
types, and the denoiser that takes them (and refuses them when it was not trained with them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backline.engine.harmony import context_harmony
from backline.models.conditioning import (
    ChordError,
    beat_grid,
    chord_frames,
    chord_pitch_classes,
    parse_chords,
)
from backline.models.diffusion import EDMPrecond, resolve_config

RATE_HZ = 44_100 / 2048


def test_the_beat_grid_is_at_phase_zero_on_each_beat_and_on_each_downbeat():
    frames = 400
    grid = beat_grid(frames, RATE_HZ, tempo_bpm=96.0, beats_per_bar=3, start_beats=1.0)
    beats = 1.0 + (np.arange(frames) + 0.5) / RATE_HZ * 96.0 / 60.0
    on_beat = np.abs(beats - np.round(beats)) < 0.02
    on_downbeat = on_beat & (np.round(beats) % 3 == 0)
    assert on_beat.sum() > 10 and on_downbeat.sum() > 3
    np.testing.assert_allclose(grid[1, on_beat], 1.0, atol=0.01)  # cos of the beat phase
    np.testing.assert_allclose(grid[3, on_downbeat], 1.0, atol=0.01)  # cos of the bar phase
    assert grid[3, on_beat & ~on_downbeat].max() < -0.4  # beats 2 and 3 of a 3/4 bar: a third of a turn on
    np.testing.assert_allclose(grid[0] ** 2 + grid[1] ** 2, 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="outside 20-400 BPM"):
        beat_grid(10, RATE_HZ, tempo_bpm=0.0, beats_per_bar=4)


def test_chord_charts_read_as_a_producer_types_them():
    assert parse_chords("Am F C G7", 4) == [(0.0, "Am"), (4.0, "F"), (8.0, "C"), (12.0, "G7")]
    assert parse_chords("| Am:2 F:2 | C % |", 4) == [(0.0, "Am"), (2.0, "F"), (4.0, "C"), (8.0, "C")]
    assert chord_pitch_classes("A-7")[1] == chord_pitch_classes("Am7")[1] == (0, 4, 7, 9)
    assert chord_pitch_classes("CM7")[1] == (0, 4, 7, 11) and chord_pitch_classes("Bø")[1] == (2, 5, 9, 11)
    for text, reason in (("", "no chords"), ("H7", "starts with its root"), ("Cblah", "unknown chord quality"),
                         ("Am:x", "length in beats"), ("% Am", "nothing to repeat"), ("Am:0", "more than 0")):
        with pytest.raises(ChordError, match=reason):
            parse_chords(text, 4)


def test_chord_frames_hold_each_chords_pitch_classes_for_its_beats():
    chart = parse_chords("C:4 G7/B:4", 4)
    harmony = chord_frames(chart, 200, RATE_HZ, tempo_bpm=120.0)  # a bar is 2 s, 43 frames
    assert harmony.shape == (12, 200) and set(np.unique(harmony)) == {0.0, 1.0}
    assert list(np.flatnonzero(harmony[:, 10])) == [0, 4, 7]
    assert list(np.flatnonzero(harmony[:, 60])) == [2, 5, 7, 11]
    assert list(np.flatnonzero(harmony[:, 199])) == [2, 5, 7, 11]  # the last chord holds
    assert chord_frames(chart, 200, RATE_HZ, tempo_bpm=120.0, start_beats=-4.0)[:, 10].sum() == 0  # before it


def test_the_context_harmony_names_the_chord_that_sounds():
    sample_rate = 22_050
    t = np.arange(3 * sample_rate) / sample_rate
    triad = sum(np.sin(2 * np.pi * f * t) for f in (130.81, 164.81, 196.0))  # C E G
    harmony = context_harmony(0.2 * triad[None].astype(np.float32), sample_rate, 60, RATE_HZ)
    assert harmony.shape == (12, 60)
    strongest = set(np.argsort(harmony[:, 30])[-3:])
    assert strongest == {0, 4, 7} and harmony[:, 30].max() == pytest.approx(1.0)


def _inputs(frames=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 8, frames, generator=g)
    return dict(x=x, sigma=torch.ones(2), context=torch.randn(2, 8, frames, generator=g), context_mask=torch.ones(2),
                style=torch.randn(2, 16, generator=g), style_mask=torch.ones(2), instrument=torch.tensor([0, 1]))


def test_a_conditioned_denoiser_hears_the_grid_and_the_harmony_and_a_mask_of_zero_is_not_given():
    torch.manual_seed(0)
    model = EDMPrecond(resolve_config("tiny-conditioned")).eval()
    for p in model.parameters():  # the zero-initialised output layer would hide every input
        torch.nn.init.normal_(p, std=0.1)
    inputs = _inputs(frames=21)  # not a multiple of the U-Net's downsampling: padded and cropped
    grid = torch.from_numpy(beat_grid(21, RATE_HZ, 120.0, 4))[None].repeat(2, 1, 1)
    harmony = torch.from_numpy(chord_frames([(0.0, "Am")], 21, RATE_HZ, 120.0))[None].repeat(2, 1, 1)
    with torch.no_grad():
        plain = model(**inputs)
        told = model(**inputs, grid=grid, harmony=harmony)
        masked = model(**inputs, grid=grid, grid_mask=torch.zeros(2), harmony=harmony, harmony_mask=torch.zeros(2))
        only_grid = model(**inputs, grid=grid)
    assert told.shape == plain.shape == (2, 8, 21)
    assert not torch.allclose(told, plain) and not torch.allclose(only_grid, told) and not torch.allclose(only_grid, plain)
    torch.testing.assert_close(masked, plain)
    with pytest.raises(ValueError, match="not trained with a grid"):
        EDMPrecond(resolve_config("tiny"))(**inputs, grid=grid)


def test_the_loss_drops_each_condition_at_its_own_rate_and_keeps_unconditioned_draws_unchanged():
    model = EDMPrecond(resolve_config("tiny-conditioned", drop_grid=1.0, drop_harmony=1.0))
    draws = model.loss_draws((2, 8, 16), torch.Generator().manual_seed(0))
    plain_draws = EDMPrecond(resolve_config("tiny")).loss_draws((2, 8, 16), torch.Generator().manual_seed(0))
    for name, value in plain_draws.items():  # a conditioned run draws the same numbers, then its own
        torch.testing.assert_close(draws[name], value)
    assert {"grid_uniform", "harmony_uniform"} <= set(draws)
    inputs = _inputs(frames=16)
    batch = dict(target=inputs["x"], context=inputs["context"], style=inputs["style"], instrument=inputs["instrument"])
    grid, harmony = torch.randn(2, 4, 16), torch.rand(2, 12, 16)
    dropped = model.loss(**batch, draws=draws, grid=grid, harmony=harmony)
    torch.testing.assert_close(dropped, model.loss(**batch, draws=draws))  # always dropped: as if not given
