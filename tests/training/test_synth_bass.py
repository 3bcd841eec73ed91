"""Synthesized basses for the note head: audible pitch in every voice, exact labels, linked latents."""

import json

import numpy as np
import pytest

from backline.engine.transcribe import Note
from backline.export.debug_models import write_debug_models
from backline.training import eval_suite
from backline.training.notes import read_label_cache
from backline.training.synth_bass import WAVEFORMS, random_voice, render_bass, synth_basses

RATE = 44_100


def test_every_voice_sounds_the_note_at_its_fundamental_or_octave_and_rests_between():
    rng = np.random.default_rng(0)
    voices = [random_voice(rng) for _ in range(40)]
    assert {v.waveform for v in voices} == set(WAVEFORMS)
    note = Note(start_seconds=0.25, end_seconds=1.25, pitch=33, velocity=100)  # A1, 55 Hz
    for voice in voices[:12]:
        audio = render_bass([note], 2 * RATE, RATE, voice)
        assert audio.dtype == np.float32 and audio.shape == (2 * RATE,) and np.isfinite(audio).all()
        assert abs(np.abs(audio).max() - 0.5) < 1e-6
        assert np.abs(audio[: int(0.24 * RATE)]).max() == 0  # nothing before the note
        assert np.abs(audio[int(1.5 * RATE):]).max() < 1e-3  # released
        held = audio[int(0.35 * RATE):int(1.15 * RATE)]
        spectrum = np.abs(np.fft.rfft(held * np.hanning(len(held))))
        bins = np.fft.rfftfreq(len(held), 1 / RATE)
        harmonic = lambda hz: spectrum[np.abs(bins - hz) < 3].max()
        assert max(harmonic(55.0), harmonic(110.0)) > 0.2 * spectrum[bins < 2000].max(), voice
    assert render_bass([], RATE, RATE, voices[0]).max() == 0  # a silent line stays silent


def test_synth_basses_link_the_latents_and_label_each_frame_with_its_note(tiny_latents, synthetic_build, tmp_path,
                                                                           monkeypatch):
    ae_path, latents = tiny_latents
    notes = [Note(start_seconds=0.5 * i, end_seconds=0.5 * i + 0.4, pitch=36 + i, velocity=100) for i in range(5)]
    monkeypatch.setattr(eval_suite, "reference_notes", lambda record, instrument, build_dir: notes)  # no MMA song in this build
    other_space, _ = write_debug_models(tmp_path / "other", "tiny")  # an autoencoder of another latent space
    with pytest.raises(ValueError, match="latent space"):
        synth_basses(synthetic_build, latents, other_space, tmp_path / "refused", lowest_midi=24, count=49)
    labels_path = synth_basses(synthetic_build, latents, ae_path, tmp_path / "aug", voices=2, lowest_midi=24, count=49)
    for source in latents.iterdir():  # the real basses' files and record, read unchanged through the links
        assert (tmp_path / "aug" / source.name).read_bytes() == source.read_bytes()
    _, entries = read_label_cache(labels_path)
    index = [e for e in map(json.loads, (latents / "index.jsonl").read_text().splitlines())
             if e["instrument"] == "bass" and e["split"] == "train"]
    assert sorted(entries) == sorted(f"{e['variant_id']}__synth{k}" for e in index for k in range(2))
    frames = {e["variant_id"]: e["frames"] for e in index}
    from backline.models.autoencoder import load_autoencoder

    config = load_autoencoder(ae_path)[0].config
    for key, entry in entries.items():
        target = np.load(tmp_path / "aug" / entry["file"])["target"]
        assert entry["split"] == "train" and target.shape == (config.latent_channels, frames[key.rsplit("__", 1)[0]])
        labels = entry["labels"]
        assert len(labels) == target.shape[-1] * config.frames_per_latent
        at = lambda seconds: labels[int(seconds * RATE / config.stft_hop_length)]
        assert at(0.2) == 36 - 24 + 1 and at(1.2) == 38 - 24 + 1 and at(0.45) == 0  # the note sounding, or none
    again = synth_basses(synthetic_build, latents, ae_path, tmp_path / "again", voices=2, lowest_midi=24, count=49)
    first = next(iter(entries.values()))["file"]
    np.testing.assert_array_equal(np.load(tmp_path / "aug" / first)["target"], np.load(again.parent / first)["target"])
