"""Reading a built dataset: the manifest, its splits, and (context, target) pairs.

A build directory (made by ``backline data build``) holds:

    manifest.jsonl            one JSON record per rendered variant (piece x soundfont x augmentation)
    report.json               what was built, what was skipped and why, timings
    audio/<variant_id>/stems/<stem>.flac     each instrument group, rendered alone (mono, 44.1 kHz)
    audio/<variant_id>/mix.flac              sum of all stems
    audio/<variant_id>/<instrument>/context.flac   the sum of a seeded subset of the other stems

A pair's ``target`` (the stem to generate, "bass" or "drums") is its file under ``stems/``; builds made before
2026-12-07's second session also hold a copy as ``<instrument>/target.flac``: read the record's paths, not these.

Records carry paths relative to the build directory, so a build can be moved as a whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from backline.engine.audio import read_audio

INSTRUMENTS = ("bass", "drums")
SPLITS = ("train", "validation", "test", "unseen")  # unseen: held-out sounds and style families, never trained on


@dataclass(frozen=True)
class Pair:
    """A sample-aligned (context, target) pair at ``sample_rate``; arrays are mono ``(frames,)``."""

    variant_id: str
    instrument: str
    context: np.ndarray
    target: np.ndarray
    sample_rate: int


def read_manifest(build_dir: str | Path, *, split: str | None = None) -> list[dict]:
    """Return the manifest records of ``build_dir`` (optionally those of one split)."""
    path = Path(build_dir) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{build_dir}: no manifest.jsonl (build one with `backline data build`)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        records = [r for r in records if r["split"] == split]
    return records


def stem_program(record: dict, instrument: str) -> int | None:
    """The GM program the record's ``instrument`` stem sounds with (the drum kit's for drums), or None.

    A bass arranged by MMA keeps its arrangement's program (``record["mma"]``), so the record's augmentation
    programs leave it None; a bass split over channels with different programs has no single one."""
    programs = record.get("programs", {})
    if instrument == "drums" or programs.get("bass") is not None:
        return programs.get("drum_kit" if instrument == "drums" else "bass")
    arranged = record.get("mma", {})
    bass = {arranged["programs"][c] for c, role in arranged.get("roles", {}).items() if role == "bass"}
    return bass.pop() if len(bass) == 1 else None


def iter_pairs(
    build_dir: str | Path, instrument: str, *, split: str | None = None
) -> Iterator[Pair]:
    """Yield the (context, target) pairs for ``instrument`` in ``build_dir``."""
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")
    build_dir = Path(build_dir)
    for record in read_manifest(build_dir, split=split):
        pair = record["pairs"].get(instrument)
        if pair is None:
            continue
        context, sample_rate = read_audio(build_dir / pair["context"])
        target, _ = read_audio(build_dir / pair["target"])
        yield Pair(record["variant_id"], instrument, context[0], target[0], sample_rate)


def audio_files(build_dir: str | Path, *, split: str | None = None) -> list[Path]:
    """Every mono audio file of a split worth learning to compress: stems, contexts and mixes."""
    build_dir = Path(build_dir)
    files: list[Path] = []
    for record in read_manifest(build_dir, split=split):
        files.append(build_dir / record["mix"])
        files.extend(build_dir / p for p in record["stems"].values())
        files.extend(build_dir / pair["context"] for pair in record["pairs"].values())
    return files
