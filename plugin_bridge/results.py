"""Finished results on disk, owned by the engine, so a plugin that reconnects can fetch them again.

One folder per job under the results directory, named by a hash of the job id (file paths never come
from the wire): ``audio.f32`` (interleaved little-endian float32, the wire layout, so chunks are read
by offset) and ``meta.json``. A retention limit (count and age) keeps the folder bounded. Results are
written and read a block at a time, so the store never holds a whole result in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from backline.engine.audio import AudioError

from .protocol import BYTES_PER_SAMPLE, interleave

SAVE_BLOCK_FRAMES = 65_536


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) and make it 0700 whatever the umask and whatever was there before;
    raises ``PermissionError`` naming the folder when it cannot be made private (another user owns it)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        try:
            os.chmod(path, 0o700)
        except PermissionError:
            raise PermissionError(f"{path} is open to other users (mode {path.stat().st_mode & 0o777:o}) and Backline "
                                  "cannot make it private; run `chmod 700` on it or choose another folder") from None
    return path


def _private_file(path: Path):
    """Open ``path`` for writing as a new 0600 file whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb", buffering=0)


class ResultStore:
    def __init__(self, root: Path, *, max_results: int = 100, max_age_seconds: float = 7 * 86400.0):
        self.root = private_dir(root)
        self.max_results, self.max_age_seconds = max_results, max_age_seconds

    def folder(self, job_id: str) -> Path:
        return self.root / hashlib.sha256(job_id.encode()).hexdigest()[:32]

    def save(self, job_id: str, digest: str, audio: np.ndarray, sample_rate: int, info: dict,
             *, models: list[str] | None = None, after_block: Callable[[], None] | None = None) -> dict:
        """Write a result atomically (temporary folder, then rename) and return its metadata (with ``models``, the
        models that made it).

        ``audio`` is (channels, frames) of any float type; it is interleaved and written ``SAVE_BLOCK_FRAMES``
        frames at a time, so only one block is ever copied. Raises ``AudioError`` (and keeps nothing) if a sample
        is NaN or infinite. ``after_block()`` runs after each block (the server drops the pages of a memory-mapped
        input there)."""
        final = self.folder(job_id)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(mode=0o700)
        os.chmod(partial, 0o700)
        channels, frames = audio.shape
        buffer = np.empty((min(frames, SAVE_BLOCK_FRAMES), channels), dtype="<f4")
        try:
            with _private_file(partial / "audio.f32") as file:
                for start in range(0, frames, SAVE_BLOCK_FRAMES):
                    piece = audio[:, start:start + SAVE_BLOCK_FRAMES]
                    block = interleave(piece, out=buffer[:piece.shape[1]])
                    if not np.isfinite(block).all():
                        raise AudioError("generated audio: contains NaN or infinite samples")
                    file.write(block)
                    if after_block is not None:
                        after_block()
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        meta = {
            "job_id": job_id, "digest": digest, "sample_rate": int(sample_rate),
            "channels": int(channels), "frames": int(frames),
            "info": json.loads(json.dumps(info, default=str)), "models": list(models or []),
            "finished_at": time.time(),
        }
        with _private_file(partial / "meta.json") as file:
            file.write(json.dumps(meta).encode())
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        return meta

    def load_all(self) -> list[dict]:
        """Metadata of every complete result on disk, oldest first; half-written folders are removed."""
        metas = []
        for folder in self.root.iterdir():
            if folder.name.endswith(".partial"):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                metas.append(json.loads((folder / "meta.json").read_text()))
            except (OSError, ValueError):
                continue
        return sorted(metas, key=lambda meta: meta["finished_at"])

    def read_chunk(self, meta: dict, start_frame: int, frames: int) -> bytes:
        """Bytes of ``frames`` frames from ``start_frame``; raises ``OSError`` if the result is gone."""
        frame_bytes = meta["channels"] * BYTES_PER_SAMPLE
        fd = os.open(self.folder(meta["job_id"]) / "audio.f32", os.O_RDONLY)
        try:
            data = os.pread(fd, frames * frame_bytes, start_frame * frame_bytes)
        finally:
            os.close(fd)
        if len(data) != frames * frame_bytes:
            raise OSError("result file is truncated")
        return data

    def prune(self) -> list[str]:
        """Delete results beyond the count limit or older than the age limit; returns their job ids."""
        metas = self.load_all()
        now = time.time()
        keep_from = max(0, len(metas) - self.max_results)
        removed = []
        for position, meta in enumerate(metas):
            if position < keep_from or now - meta["finished_at"] > self.max_age_seconds:
                shutil.rmtree(self.folder(meta["job_id"]), ignore_errors=True)
                removed.append(meta["job_id"])
        return removed
