"""The phase-vocoder phase of the pitch diagnostic rebuilds a low bass note's pitch from magnitude alone."""

import numpy as np

from backline.models.dsp import istft, stft
from backline.training.pitch_diagnostic import HOP, N_FFT, phase_vocoder_phase

RATE = 44_100


def peak_hz(audio):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * RATE / len(audio)


def test_a_41_hz_note_keeps_its_pitch_with_the_phase_vocoder_and_loses_it_with_random_phase():
    t = np.arange(RATE * 4 // HOP * HOP) / RATE
    note = (0.5 * np.sin(2 * np.pi * 41.2 * t)).astype(np.float32)  # E1, a bin is 21.5 Hz wide
    real, imag = stft(note[None], N_FFT, HOP)
    magnitude = np.hypot(real, imag)[0]
    coherent = phase_vocoder_phase(magnitude)
    rebuilt = istft((magnitude * np.cos(coherent))[None], (magnitude * np.sin(coherent))[None], N_FFT, HOP)[0]
    middle = slice(RATE // 2, len(note) - RATE // 2)
    assert abs(peak_hz(rebuilt[middle]) - 41.2) < 0.5
    random = np.random.default_rng(0).uniform(-np.pi, np.pi, magnitude.shape)
    smeared = istft((magnitude * np.cos(random))[None], (magnitude * np.sin(random))[None], N_FFT, HOP)[0]
    tone = lambda audio: np.abs(np.fft.rfft(audio[middle]))
    assert tone(rebuilt).max() / tone(rebuilt).sum() > 3 * tone(smeared).max() / tone(smeared).sum()


def test_note_head_scores_read_each_bass_against_its_songs_notes_and_its_transcription(synthetic_build, tmp_path,
                                                                                       monkeypatch):
    import json

    from backline.engine.transcribe import Note
    from backline.export.debug_models import write_debug_models
    from backline.training import eval_suite
    from backline.training.pitch_diagnostic import note_head_scores

    build = tmp_path / "build"
    build.mkdir()
    (build / "audio").symlink_to(synthetic_build / "audio")
    records = [json.loads(line) for line in (synthetic_build / "manifest.jsonl").read_text().splitlines()]
    (build / "manifest.jsonl").write_text("".join(json.dumps({**r, "source": "mma", "split": "unseen"}) + "\n"
                                                  for r in records))
    notes = [Note(start_seconds=0.25 * i, end_seconds=0.25 * i + 0.2, pitch=33 + i % 12, velocity=100) for i in range(12)]
    asked = []
    monkeypatch.setattr(eval_suite, "reference_notes",
                        lambda record, instrument, build_dir: asked.append(record["variant_id"]) or notes)
    ae_path, _ = write_debug_models(tmp_path, "tiny", autoencoder_config="tiny-notes")
    report = note_head_scores(build, split="unseen", count=3, seconds=2.0, autoencoder_path=ae_path)
    assert report["basses"] == 3 and len(set(asked)) == 3 and set(asked) <= {r["variant_id"] for r in records}
    for name in ("the songs' notes", "the transcription"):
        r = report[name]
        assert all(0.0 <= r[k] <= 1.0 for k in ("note_accuracy", "pitch_class_accuracy", "voicing_accuracy"))
        assert r["octave_errors"] == r["pitch_class_accuracy"] - r["note_accuracy"] >= 0.0
