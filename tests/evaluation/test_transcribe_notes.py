"""Transcription of rendered MIDI whose notes are known, MIDI output, and refusal of bad audio."""

from pathlib import Path

import mido
import numpy as np
import pytest

from backline.engine import transcribe as tr
from backline.engine.audio import AudioError
from backline.training.eval_suite import drum_f1, note_f1

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44_100


def _has_basic_pitch() -> bool:
    try:
        tr.model_path()
    except RuntimeError:
        return False
    return True


needs_soundfont = pytest.mark.skipif(not SOUNDFONT.is_file(), reason="FluidR3_GM soundfont not installed")
needs_model = pytest.mark.skipif(not _has_basic_pitch(), reason="basic-pitch's ONNX model not installed")


def render(notes, instrument, bpm, program=33):
    from backline.data.midi import to_bytes
    from backline.data.synth import Synth

    midi = tr.to_midi(notes, instrument, bpm=bpm, bass_program=program)
    with Synth(SOUNDFONT, SAMPLE_RATE) as synth:
        return synth.render(to_bytes(midi), max(n.end_seconds for n in notes))


def bass_line(seed=0, count=24, bpm=110.0):
    rng = np.random.default_rng(seed)
    notes, t, beat = [], 0.0, 60.0 / bpm
    for _ in range(count):
        length = beat * float(rng.choice([0.5, 1.0, 1.0]))
        notes.append(tr.Note(t, t + 0.9 * length, int(rng.integers(28, 52)), 100))
        t += length
    return notes


def groove(bars=4, bpm=120.0):
    beat, notes = 60.0 / bpm, []
    for index in range(4 * bars):
        t = index * beat
        notes.append(tr.Note(t, t + 0.05, 36 if index % 2 == 0 else 38, 110))
        notes += [tr.Note(t + h, t + h + 0.05, 42, 90) for h in (0.0, beat / 2)]
    return notes


# Measured when written: F1 0.84 (24/24 found, 9 extra) with program 33 (finger bass), 0.81 with 39
# (synth bass 2, which the note model hears an octave high until the octave check moves it down).
@needs_soundfont
@needs_model
@pytest.mark.parametrize("program, seed", [(33, 0), (39, 1)])
def test_a_rendered_bass_line_is_recovered(program, seed):
    reference = bass_line(seed)
    scores = note_f1(reference, tr.transcribe(render(reference, "bass", 110.0, program), SAMPLE_RATE, "bass"))
    assert scores["recall"] >= 0.85
    assert scores["f1"] >= 0.75


# Measured when written: F1 kick 0.61, snare 0.76, hat 0.98 on this groove.
@needs_soundfont
def test_a_rendered_groove_is_recovered_per_class():
    reference = groove()
    scores = drum_f1(reference, tr.transcribe(render(reference, "drums", 120.0), SAMPLE_RATE, "drums"))
    assert scores["kick"]["recall"] >= 0.8 and scores["kick"]["f1"] >= 0.5
    assert scores["snare"]["recall"] >= 0.8 and scores["snare"]["f1"] >= 0.6
    assert scores["hat"]["f1"] >= 0.8


def test_midi_carries_the_tempo_and_round_trips_the_notes(tmp_path):
    notes = [tr.Note(0.0, 0.25, 40, 90), tr.Note(0.625, 1.25, 43, 100)]
    path = tmp_path / "bass.mid"
    tr.to_midi(notes, "bass", bpm=96.0).save(str(path))
    midi = mido.MidiFile(str(path))
    tempos = [m.tempo for m in midi if m.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(96.0)]
    back = tr.midi_notes(midi)
    assert [n.pitch for n in back] == [40, 43]
    np.testing.assert_allclose([(n.start_seconds, n.end_seconds) for n in back], [(0, 0.25), (0.625, 1.25)], atol=2e-3)
    drums = tr.to_midi([tr.Note(0.0, 0.05, 36)], "drums")
    assert {m.channel for m in drums if m.type == "note_on"} == {9}


def test_quantize_snaps_to_the_grid_at_the_tempo():
    notes = [tr.Note(0.13, 0.37, 40), tr.Note(0.51, 0.52, 41)]
    snapped = tr.quantize_notes(notes, bpm=120.0, quantize="1/16")  # grid step 0.125 s
    assert [(n.start_seconds, n.end_seconds) for n in snapped] == [(0.125, 0.375), (0.5, 0.625)]
    shifted = tr.quantize_notes([tr.Note(0.13, 0.37, 40)], bpm=120.0, quantize="1/8", start_seconds=0.05)
    assert shifted[0].start_seconds == pytest.approx(0.05)
    with pytest.raises(ValueError, match="quantize must be a note value"):
        tr.quantize_notes(notes, bpm=120.0, quantize="sixteenth")


@pytest.mark.parametrize("instrument", ["bass", "drums"])
@pytest.mark.parametrize("audio, message", [
    (np.full(1000, np.nan, np.float32), "stem: contains NaN or infinite samples"),
    (np.zeros(0, np.float32), "stem: the audio is empty (0 frames)"),
])
def test_bad_audio_is_refused(instrument, audio, message):
    with pytest.raises(AudioError) as error:
        tr.transcribe(audio, SAMPLE_RATE, instrument)
    assert str(error.value) == message


def test_unknown_instrument_is_refused():
    with pytest.raises(ValueError, match="instrument must be one of bass, drums"):
        tr.transcribe(np.zeros(100, np.float32), SAMPLE_RATE, "kazoo")


def test_silence_gives_no_drum_hits():
    assert tr.transcribe(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, "drums") == []


def test_cli_writes_a_midi_file_with_the_tempo(tmp_path):
    import argparse

    import soundfile as sf

    from backline.engine import transcribe_cli

    rng = np.random.default_rng(0)
    audio = np.zeros(2 * SAMPLE_RATE, np.float32)
    for start in range(0, len(audio) - 2000, SAMPLE_RATE // 2):  # noise bursts every half second
        audio[start:start + 2000] += (rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)).astype(np.float32)
    sf.write(tmp_path / "drums.wav", audio, SAMPLE_RATE)
    parser = argparse.ArgumentParser()
    transcribe_cli.register(parser.add_subparsers())
    args = parser.parse_args(["transcribe", str(tmp_path / "drums.wav"), "--instrument", "drums",
                              "--out", str(tmp_path / "drums.mid"), "--bpm", "90", "--quantize", "1/16"])
    assert args.func(args) == 0
    midi = mido.MidiFile(str(tmp_path / "drums.mid"))
    assert [m.tempo for m in midi if m.type == "set_tempo"] == [mido.bpm2tempo(90)]
    assert sum(m.type == "note_on" for m in midi) >= 3
    args = parser.parse_args(["transcribe", str(tmp_path / "drums.wav"), "--instrument", "drums",
                              "--out", str(tmp_path / "x.mid"), "--quantize", "1/16"])
    assert args.func(args) == 2


def test_midi_is_written_for_notes_that_sound_from_the_very_start_and_to_the_last_sample(tmp_path):
    notes = [tr.Note(-0.012, 0.4, 40, 90), tr.Note(0.5, 1.0, 43, 90)]  # estimated a frame early
    path = tmp_path / "early.mid"
    tr.to_midi(notes, "bass", bpm=100.0).save(str(path))
    back = tr.midi_notes(mido.MidiFile(str(path)))
    assert back[0].start_seconds == 0.0 and [n.pitch for n in back] == [40, 43]


@needs_soundfont
@needs_model
def test_a_bass_that_sounds_at_zero_transcribes_to_midi(tmp_path):
    import soundfile as sf

    reference = bass_line(3, count=12)  # starts sounding at 0 s
    audio = render(reference, "bass", 110.0)
    sf.write(tmp_path / "bass.wav", audio, SAMPLE_RATE)
    summary = tr.transcribe_file(tmp_path / "bass.wav", "bass", tmp_path / "bass.mid", bpm=110.0)
    assert summary["notes"] >= 10 and summary["tempo_source"] == "given"
    assert min(n.start_seconds for n in tr.midi_notes(mido.MidiFile(str(tmp_path / "bass.mid")))) < 0.06


@needs_soundfont
def test_without_a_tempo_the_midi_carries_the_estimated_one(tmp_path):
    import soundfile as sf

    audio = render(groove(bars=8, bpm=84.0), "drums", 84.0)
    sf.write(tmp_path / "drums.wav", audio, SAMPLE_RATE)
    summary = tr.transcribe_file(tmp_path / "drums.wav", "drums", tmp_path / "drums.mid")
    assert summary["tempo_source"] == "estimated" and summary["bpm"] == pytest.approx(84.0, rel=0.04)
    tempos = [m.tempo for m in mido.MidiFile(str(tmp_path / "drums.mid")) if m.type == "set_tempo"]
    assert mido.tempo2bpm(tempos[0]) == pytest.approx(summary["bpm"], rel=1e-3)
