"""Real multitracks a user owns (MUSDB18-HQ-style or Slakh2100-style folders) as a build directory.

The output has the same layout and manifest as ``backline data build``, so every trainer reads
real and rendered data alike. Audio is converted to mono at 44.1 kHz; stems are resampled, never
time-stretched. The context of a target is the sum of all other stems (the real mix minus the
target), which is what a producer's session gives the engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from backline.data.build import SAMPLE_RATE, split_of
from backline.engine.audio import read_audio, resample, to_mono, write_audio

MUSDB_STEMS = ("bass", "drums", "other", "vocals")
SLAKH_CLASSES = {"Bass": "bass", "Drums": "drums"}


def _load_mono(path: Path) -> np.ndarray:
    audio, sample_rate = read_audio(path)
    return resample(to_mono(audio), sample_rate, SAMPLE_RATE)[0]


def _write_track(out_dir: Path, track_id: str, source: str, licence: str, origin: str, split: str,
                 stems: dict[str, np.ndarray]) -> dict:
    frames = min(len(s) for s in stems.values())
    stems = {name: audio[:frames] for name, audio in stems.items()}
    rel = Path("audio") / track_id
    folder = out_dir / rel
    shutil.rmtree(folder, ignore_errors=True)
    record_stems = {}
    for name, audio in stems.items():
        write_audio(folder / "stems" / f"{name}.flac", audio, SAMPLE_RATE, subtype="PCM_24")
        record_stems[name] = str(rel / "stems" / f"{name}.flac")
    write_audio(folder / "mix.flac", np.sum(list(stems.values()), axis=0), SAMPLE_RATE, subtype="PCM_24")
    pairs = {}
    for target in ("bass", "drums"):
        if target not in stems or np.abs(stems[target]).max() < 1e-4:
            continue
        others = [n for n in stems if n != target]
        write_audio(folder / target / "context.flac", np.sum([stems[n] for n in others], axis=0), SAMPLE_RATE, subtype="PCM_24")
        pairs[target] = {"target": record_stems[target], "context": str(rel / target / "context.flac"),
                         "context_stems": others}
    return {
        "variant_id": track_id, "piece_id": f"{source}/{track_id}", "source": source, "licence": licence,
        "origin": origin, "soundfont": None, "programs": {}, "transpose_semitones": 0, "tempo_scale": 1.0,
        "duration_seconds": round(frames / SAMPLE_RATE, 4), "frames": frames, "sample_rate": SAMPLE_RATE, "split": split,
        "stems": record_stems, "mix": str(rel / "mix.flac"), "pairs": pairs,
    }


def _finish(out_dir: Path, records: list[dict], skipped: list[dict]) -> dict:
    records.sort(key=lambda r: r["variant_id"])
    with open(out_dir / "manifest.jsonl", "w") as manifest:
        for record in records:
            manifest.write(json.dumps(record, sort_keys=True) + "\n")
    report = {"imported": len(records), "skipped": skipped}
    (out_dir / "report.json").write_text(json.dumps(
        {**report, "built": len(records), "reused": 0, "audio_seconds_rendered": 0.0, "render_seconds": 0.0,
         "wall_seconds": 0.0, "jobs": 1}, indent=1))
    return report


def _split_from_path(track_dir: Path, root: Path) -> str:
    parts = {p.lower() for p in track_dir.relative_to(root).parts[:-1]}
    for split, names in (("train", {"train"}), ("validation", {"validation", "valid", "val"}), ("test", {"test"})):
        if parts & names:
            return split
    return split_of(track_dir.name)


def import_musdb(root: str | Path, out_dir: str | Path, *, licence: str = "MUSDB18 (non-commercial research licence, user-supplied)") -> dict:
    """Import every folder under ``root`` holding bass/drums/other/vocals WAV files."""
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, skipped = [], []
    for track_dir in sorted({p.parent for p in root.rglob("bass.wav")}):
        try:
            stems = {name: _load_mono(track_dir / f"{name}.wav") for name in MUSDB_STEMS if (track_dir / f"{name}.wav").is_file()}
            if "bass" not in stems and "drums" not in stems:
                raise ValueError("no bass or drums stem")
            track_id = "musdb_" + track_dir.name.replace(" ", "_")
            records.append(_write_track(out_dir, track_id, "musdb", licence, str(track_dir),
                                        _split_from_path(track_dir, root), stems))
        except Exception as error:
            skipped.append({"track": str(track_dir), "reason": f"{type(error).__name__}: {error}"})
    return _finish(out_dir, records, skipped)


def _slakh_metadata(path: Path) -> dict:
    try:
        import yaml  # PyYAML: in the `train` extra
    except ImportError:
        raise RuntimeError("reading Slakh metadata needs PyYAML: pip install 'backline[train]'") from None

    return yaml.safe_load(path.read_text())


def import_slakh(root: str | Path, out_dir: str | Path, *, licence: str = "Slakh2100 (CC BY 4.0, user-supplied)") -> dict:
    """Import every ``TrackXXXXX`` folder (metadata.yaml + stems/Sxx.flac or .wav) under ``root``.

    Stems are grouped as Slakh's metadata classes them: Bass, Drums, and every other class summed
    under its lower-cased class name.
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, skipped = [], []
    for meta_path in sorted(root.rglob("metadata.yaml")):
        track_dir = meta_path.parent
        try:
            meta = _slakh_metadata(meta_path)
            groups: dict[str, np.ndarray] = {}
            for stem_id, info in (meta.get("stems") or {}).items():
                files = [track_dir / "stems" / f"{stem_id}{ext}" for ext in (".flac", ".wav")]
                existing = [f for f in files if f.is_file()]
                if not existing or info.get("audio_rendered") is False:
                    continue
                group = "drums" if info.get("is_drum") else SLAKH_CLASSES.get(info.get("inst_class"), str(info.get("inst_class", "other")).lower().replace(" ", "_"))
                audio = _load_mono(existing[0])
                if group in groups:
                    frames = min(len(groups[group]), len(audio))
                    groups[group] = groups[group][:frames] + audio[:frames]
                else:
                    groups[group] = audio
            if "bass" not in groups and "drums" not in groups:
                raise ValueError("no bass or drums stem")
            records.append(_write_track(out_dir, "slakh_" + track_dir.name, "slakh", licence, str(track_dir),
                                        _split_from_path(track_dir, root), groups))
        except Exception as error:
            skipped.append({"track": str(track_dir), "reason": f"{type(error).__name__}: {error}"})
    return _finish(out_dir, records, skipped)
