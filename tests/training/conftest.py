"""A tiny synthetic data build in the data engine's layout, for training tests.

Bass is a sawtooth line, drums are decaying sine kicks plus noise hats, the mix is their sum. The
manifest follows ``backline.data.dataset``: records with ``variant_id``, ``split``, ``mix``,
``stems`` and ``pairs`` holding paths relative to the build directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SAMPLE_RATE = 44_100


def _piece(rng: np.random.Generator, duration_seconds: float) -> dict[str, np.ndarray]:
    frames = int(duration_seconds * SAMPLE_RATE)
    t = np.arange(frames) / SAMPLE_RATE
    bass = np.zeros(frames)
    note_frames = SAMPLE_RATE // 4
    for start in range(0, frames, note_frames):
        frequency = 55.0 * 2 ** (int(rng.integers(0, 12)) / 12)
        segment = t[start : start + note_frames]
        bass[start : start + note_frames] = 0.3 * (2 * ((segment * frequency) % 1.0) - 1)
    drums = np.zeros(frames)
    for start in range(0, frames, SAMPLE_RATE // 2):
        n = min(4000, frames - start)
        tau = np.arange(n) / SAMPLE_RATE
        drums[start : start + n] += 0.5 * np.sin(2 * np.pi * 60 * tau) * np.exp(-tau * 30)
    hats = rng.standard_normal(frames) * 0.05 * (np.sin(2 * np.pi * 4 * t) > 0.9)
    drums += hats
    return {"bass": bass.astype(np.float32), "drums": drums.astype(np.float32)}


def make_synthetic_build(build_dir: Path, *, pieces: int = 4, duration_seconds: float = 3.0, seed: int = 0) -> Path:
    """Write ``pieces`` synthetic pieces (the last one in validation) plus a manifest; returns the dir."""
    rng = np.random.default_rng(seed)
    records = []
    for index in range(pieces):
        variant_id = f"synthetic-{index:03d}"
        folder = build_dir / "audio" / variant_id
        stems = _piece(rng, duration_seconds)
        mix = stems["bass"] + stems["drums"]
        (folder / "stems").mkdir(parents=True, exist_ok=True)
        record = {"variant_id": variant_id, "split": "validation" if index == pieces - 1 else "train",
                  "mix": f"audio/{variant_id}/mix.flac", "stems": {}, "pairs": {},
                  # GM programs and effects, as the data engine records them (the style encoder's descriptions)
                  "programs": {"bass": (33, 38)[index % 2], "drum_kit": (0, 25)[index % 2]},
                  "effects": {"reverb": index % 2 == 1, "chorus": False}}
        sf.write(folder / "mix.flac", mix, SAMPLE_RATE)
        for name, audio in stems.items():
            sf.write(folder / "stems" / f"{name}.flac", audio, SAMPLE_RATE)
            record["stems"][name] = f"audio/{variant_id}/stems/{name}.flac"
            other = stems["drums" if name == "bass" else "bass"]
            (folder / name).mkdir(exist_ok=True)
            sf.write(folder / name / "target.flac", audio, SAMPLE_RATE)
            sf.write(folder / name / "context.flac", other, SAMPLE_RATE)
            record["pairs"][name] = {"target": f"audio/{variant_id}/{name}/target.flac",
                                     "context": f"audio/{variant_id}/{name}/context.flac"}
        records.append(record)
    (build_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return build_dir


@pytest.fixture(scope="session")
def synthetic_build(tmp_path_factory) -> Path:
    return make_synthetic_build(tmp_path_factory.mktemp("build"))


@pytest.fixture
def tiny_latents(synthetic_build, tmp_path) -> tuple[Path, Path]:
    """A tiny autoencoder (latent space "tiny-space") saved in ``tmp_path``, and the synthetic build's latents by it."""
    import dataclasses

    import torch

    from backline.models.autoencoder import CONFIGS, Autoencoder, save_autoencoder
    from backline.training.latents import encode_build

    torch.manual_seed(0)
    init = Autoencoder(dataclasses.replace(CONFIGS["tiny"], latent_space="tiny-space")).eval()
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", init, version="tiny-test")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    return ae_path, latents
