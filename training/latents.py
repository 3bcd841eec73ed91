"""A data build encoded into latents by an autoencoder (``backline train diffusion --precompute``), and the
record that says which autoencoder's latent space a latent directory is in.

Each pair's file holds the ``context`` and ``target`` latents and ``context_harmony``, the harmony read from
the context's audio per latent frame (``engine.harmony.context_harmony``: what a conditioned denoiser is told
when no chords are given). Each index entry carries the variant's ``timing`` when its source knows it (MMA
songs: tempo, meter and the chord chart in beats from the first downbeat at 0 s), the true beat grid and
chords a conditioned denoiser trains on.

Both the denoiser's and the note head's training read latents; neither encodes them, so this room sits below
both (``training.diffusion`` and ``training.notes`` import it, never each other).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from backline.data import scheduling
from backline.data.dataset import read_manifest
from backline.engine.audio import read_audio
from backline.engine.harmony import context_harmony
from backline.engine.runtime import latent_space_of
from backline.models.autoencoder import encode_audio, load_autoencoder
from backline.models.diffusion import INSTRUMENTS

AUTOENCODER_RECORD = "autoencoder.json"  # in a latent directory: which autoencoder encoded it


def encode_build(autoencoder_path: str | Path, build_dir: str | Path, out_dir: str | Path, *,
                 soundfonts: tuple[str, ...] | None = None, max_seconds: float | None = None,
                 progress=None, jobs: int = 1, cluster: str | None = None, only: set[str] | None = None) -> int:
    """Encode every pair of ``build_dir`` into ``out_dir``; returns the number of pairs encoded now.

    Each variant is one task (``data/scheduling.py``): ``jobs`` local processes, or a Dask cluster
    (``cluster``), each loading the autoencoder once; finished pairs are kept, so an interrupted encoding
    resumes. ``only``: these variant ids alone."""
    build_dir, out_dir = Path(build_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, metadata = load_autoencoder(autoencoder_path)
    records = [r for r in read_manifest(build_dir) if (soundfonts is None or r["soundfont"] in soundfonts)
               and (only is None or r["variant_id"] in only)]
    tasks = [(str(autoencoder_path), build_dir, out_dir, record, max_seconds) for record in records]
    entries, encoded, done, total = {}, 0, 0, sum(i in r["pairs"] for r in records for i in INSTRUMENTS)
    with scheduling.tasks(jobs, cluster) as run:
        for variant_id, variant_entries, count in run(_encode_variant, tasks):
            entries[variant_id], encoded, done = variant_entries, encoded + count, done + len(variant_entries)
            if progress:
                progress(done, total)
    index = [entry for record in records for entry in entries[record["variant_id"]]]
    (out_dir / "index.jsonl").write_text("".join(json.dumps(e) + "\n" for e in index))
    (out_dir / AUTOENCODER_RECORD).write_text(json.dumps(
        {"path": str(autoencoder_path), "version": metadata.get("backline_version"),
         "latent_space": latent_space_of(_autoencoder(str(autoencoder_path)).config.latent_space,
                                         metadata.get("backline_version")),
         "latent_scale": metadata.get("latent_scale"), "latent_channels": metadata.get("latent_channels")}, indent=1))
    return encoded


@functools.lru_cache(maxsize=2)
def _autoencoder(path: str):
    """One autoencoder per process (a Dask worker or a pool process keeps it between tasks)."""
    return load_autoencoder(path)[0]


def _encode_variant(task: tuple) -> tuple[str, list[dict], int]:
    """Encode one variant's pairs (kept if already there): (variant id, index entries, pairs encoded now)."""
    autoencoder_path, build_dir, out_dir, record, max_seconds = task
    entries, encoded = [], 0
    for instrument in (i for i in INSTRUMENTS if i in record["pairs"]):
        name = f"{record['variant_id']}__{instrument}.npz"
        path = out_dir / name
        if not path.is_file():
            latents = {}
            model = _autoencoder(autoencoder_path)
            for role in ("context", "target"):
                audio, rate = read_audio(build_dir / record["pairs"][instrument][role])
                if max_seconds is not None:
                    audio = audio[:, : int(max_seconds * rate)]
                latents[role] = encode_audio(model, audio, rate)[0].numpy().astype(np.float16)
                if role == "context":
                    latents["context_harmony"] = context_harmony(
                        audio, rate, latents[role].shape[-1], model.config.latent_rate_hz).astype(np.float16)
            partial = path.with_name(path.stem + ".partial.npz")  # a task killed mid-write leaves no half file
            np.savez(partial, **latents)
            partial.replace(path)
            encoded += 1
        frames = int(np.load(path)["target"].shape[-1])
        entries.append({"file": name, "variant_id": record["variant_id"],
                        "piece_id": record.get("piece_id", record["variant_id"]), "instrument": instrument,
                        "split": record["split"], "frames": frames, "timing": timing_of(record)})
    return record["variant_id"], entries, encoded


def timing_of(record: dict) -> dict | None:
    """A build record's tempo, meter and chords ([start beat, symbol], the first downbeat at 0 s), where its
    source wrote them (MMA songs); None elsewhere."""
    song = record.get("mma")
    if not song:
        return None
    return {"tempo_bpm": float(song["tempo_bpm"]), "beats_per_bar": int(song["beats_per_bar"]),
            "chords": [[float(beat), str(symbol)] for beat, symbol in song["chords"]]}


def latent_autoencoder(latent_dir: str | Path) -> dict | None:
    """What ``encode_build`` recorded about the autoencoder that encoded ``latent_dir`` (None if nothing)."""
    record = Path(latent_dir) / AUTOENCODER_RECORD
    return json.loads(record.read_text()) if record.is_file() else None


def require_latent_space(latent_dir: str | Path, space: str, autoencoder_path: str | Path) -> None:
    """Refuse ``latent_dir`` unless it was encoded in latent space ``space`` (``autoencoder_path``'s);
    older records name only the autoencoder's version."""
    recorded = latent_autoencoder(latent_dir) or {}
    made_by = recorded.get("latent_space") or recorded.get("version")
    if made_by != space:
        raise ValueError(f"{latent_dir} holds latents of {made_by}, not of latent space {space} "
                         f"({autoencoder_path}): precompute them with this autoencoder")


def bench_encode(build_dir: str | Path, autoencoder_path: str | Path, *, variants: int, jobs: list[int],
                 cluster: str | None = None) -> dict:
    """Encode the first ``variants`` variants of ``build_dir`` into a temporary folder with each worker count:
    seconds of pairs (a context and its stem) encoded per second of wall time (``backline bench latents``)."""
    import os
    import platform
    import tempfile
    import time

    only = {r["variant_id"] for r in read_manifest(build_dir)[:variants]}
    model, metadata = load_autoencoder(autoencoder_path)
    results = []
    with tempfile.TemporaryDirectory(prefix="backline-encode-bench-") as folder:
        for count in jobs:
            start = time.perf_counter()
            pairs = encode_build(autoencoder_path, build_dir, Path(folder) / f"jobs{count}", jobs=count, cluster=cluster,
                                 only=only)
            wall = time.perf_counter() - start
            index = (Path(folder) / f"jobs{count}" / "index.jsonl").read_text().splitlines()
            pair_seconds = sum(json.loads(line)["frames"] for line in index) / model.config.latent_rate_hz
            results.append({"jobs": count, "scheduler": cluster or "process pool", "pairs": pairs,
                            "pair_seconds": round(pair_seconds, 1), "wall_seconds": round(wall, 2),
                            "x_realtime_wall": round(pair_seconds / wall, 1)})
    return {"build": str(build_dir), "autoencoder": metadata.get("backline_version"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "results": results, "command": f"backline bench latents --data {build_dir} --variants {variants} --jobs "
                                           + " ".join(map(str, jobs)) + (f" --cluster {cluster}" if cluster else "")}
