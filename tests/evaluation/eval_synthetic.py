"""Synthetic music with known key and tempo, for the evaluation tests (pure numpy, no soundfont)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22_050
MAJOR_TRIAD = (0, 4, 7)


def tone(frequency: float, seconds: float, sample_rate: int = SAMPLE_RATE, *, decay: float = 4.0,
         harmonics: int = 4) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(np.sin(2 * np.pi * h * frequency * t) / h for h in range(1, harmonics + 1))
    attack = np.minimum(1.0, t / 0.005)
    return (wave * attack * np.exp(-decay * t)).astype(np.float32)


def midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def context(key: int, bpm: float, seconds: float, *, phase_seconds: float = 0.0, seed: int = 0,
            sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A sustained major triad on ``key`` (pitch class) plus noise clicks on every eighth note."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * sample_rate)
    out = np.zeros(frames, np.float32)
    beat = 60.0 / bpm
    chord_start = phase_seconds
    while chord_start < seconds:  # restrike the chord every bar
        first = int(chord_start * sample_rate)
        for interval in MAJOR_TRIAD:
            note = tone(midi_hz(60 + key + interval), 4 * beat, sample_rate, decay=0.7)
            out[first:first + len(note)] += 0.15 * note[: frames - first]
        chord_start += 4 * beat
    click = (rng.standard_normal(int(0.03 * sample_rate)) * np.exp(-np.arange(int(0.03 * sample_rate)) / 60)).astype(np.float32)
    t = phase_seconds
    while t < seconds:
        first = int(t * sample_rate)
        out[first:first + len(click)] += 0.3 * click[: frames - first]
        t += beat / 2
    return out


def bass(key: int, bpm: float, seconds: float, *, phase_seconds: float = 0.0, shift_seconds: float = 0.0,
         transpose: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Root and fifth of ``key`` alternating on every beat, an octave-2 saw-like tone."""
    frames = int(seconds * sample_rate)
    out = np.zeros(frames, np.float32)
    beat = 60.0 / bpm
    t, index = phase_seconds + shift_seconds, 0
    while t < seconds:
        note = tone(midi_hz(36 + key + transpose + (0 if index % 2 == 0 else 7)), beat, sample_rate, decay=3.0)
        first = int(t * sample_rate)
        if first >= 0:
            out[first:first + len(note)] += 0.4 * note[: frames - first]
        t += beat
        index += 1
    return out


def pieces(count: int, seconds: float = 6.0, seed: int = 0) -> list[dict]:
    """``count`` pieces with different keys, tempi and phases: dicts with context, bass, key, bpm."""
    rng = np.random.default_rng(seed)
    keys = rng.permutation(12)
    out = []
    for i in range(count):
        key, bpm, phase = int(keys[i % 12]), float(rng.uniform(85, 150)), float(rng.uniform(0, 0.4))
        out.append({"key": key, "bpm": bpm, "context": context(key, bpm, seconds, phase_seconds=phase, seed=i),
                    "bass": bass(key, bpm, seconds, phase_seconds=phase)})
    return out


def write_build(build_dir: Path, count: int = 3, seconds: float = 4.0, seed: int = 0, split: str = "test") -> Path:
    """A data build in ``backline.data.dataset``'s layout holding ``count`` synthetic bass pairs."""
    records = []
    for index, piece in enumerate(pieces(count, seconds, seed)):
        variant_id = f"synthetic_{index}"
        folder = build_dir / "audio" / variant_id / "bass"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / "context.flac", piece["context"], SAMPLE_RATE)
        sf.write(folder / "target.flac", piece["bass"], SAMPLE_RATE)
        records.append({"variant_id": variant_id, "piece_id": f"synthetic/{index}", "split": split,
                        "pairs": {"bass": {"context": f"audio/{variant_id}/bass/context.flac",
                                           "target": f"audio/{variant_id}/bass/target.flac"}}})
    (build_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return build_dir
