"""``backline eval tempo``: the tempo and beat estimators (``engine/tempo.py``) against the known tempi and
beats of a data build.

Each MMA song of the split knows its chart's tempo, and its beats fall every 60 / tempo seconds from 0. The
tempo estimated from the pair's context counts as right within 4 %, as an octave error at half or double,
else as wrong; the beats are scored by F-measure within 70 ms (MIREX, ``mir_eval``), first 5 s left out,
with the tempo estimated and with the true tempo given (as a DAW gives it). Reported overall, per style
family and per tempo band.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from backline.data.dataset import read_manifest
from backline.data.stats import tempo_band
from backline.engine.audio import read_audio
from backline.engine.tempo import estimate_beats, estimate_tempo


def verdict(estimate_bpm: float, true_bpm: float, tolerance: float = 0.04) -> str:
    if abs(estimate_bpm - true_bpm) <= tolerance * true_bpm:
        return "right"
    if any(abs(estimate_bpm * k - true_bpm) <= tolerance * true_bpm for k in (0.5, 2.0)):
        return "octave"
    return "wrong"


def evaluate_tempo(build_dir: str | Path, *, split: str, count: int, seed: int = 0, max_seconds: float = 30.0) -> dict:
    import mir_eval

    build_dir = Path(build_dir)
    records = [r for r in read_manifest(build_dir, split=split) if "mma" in r]
    if not records:
        raise ValueError(f"{build_dir}: no MMA songs in the {split} split (their charts know the tempo)")
    rng = np.random.default_rng(seed)
    chosen = [records[i] for i in sorted(rng.choice(len(records), min(count, len(records)), replace=False))]
    rows = []
    for record in chosen:
        pair = record["pairs"].get("bass") or record["pairs"]["drums"]
        audio, sample_rate = read_audio(build_dir / pair["context"])
        audio = audio[:, : int(max_seconds * sample_rate)]
        bpm, confidence = estimate_tempo(audio, sample_rate)
        true = record["mma"]["tempo_bpm"]
        reference = mir_eval.beat.trim_beats(np.arange(0.0, audio.shape[1] / sample_rate, 60.0 / true))
        beat_f = [float(mir_eval.beat.f_measure(reference, mir_eval.beat.trim_beats(
            estimate_beats(audio, sample_rate, bpm=given)))) for given in (None, true)]
        rows.append({"variant_id": record["variant_id"], "family": record["mma"]["family"], "true_bpm": true,
                     "estimate_bpm": bpm, "confidence": confidence, "verdict": verdict(bpm, true),
                     "beat_f_measure": round(beat_f[0], 4), "beat_f_measure_tempo_given": round(beat_f[1], 4)})

    def summary(subset: list[dict]) -> dict:
        return {"count": len(subset), **{v: round(sum(r["verdict"] == v for r in subset) / len(subset), 3)
                                         for v in ("right", "octave", "wrong")},
                "beat_f_measure": round(float(np.mean([r["beat_f_measure"] for r in subset])), 3),
                "beat_f_measure_tempo_given": round(float(np.mean([r["beat_f_measure_tempo_given"] for r in subset])), 3)}

    by: dict[str, dict[str, list]] = {"family": defaultdict(list), "tempo_band": defaultdict(list)}
    for row in rows:
        by["family"][row["family"]].append(row)
        by["tempo_band"][tempo_band(row["true_bpm"])].append(row)
    return {"split": split, "overall": summary(rows),
            "per_family": {k: summary(v) for k, v in sorted(by["family"].items())},
            "per_tempo_band": {k: summary(v) for k, v in sorted(by["tempo_band"].items())}, "rows": rows}


def write_report(report: dict, out_dir: Path, command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps({**report, "command": command}, indent=1) + "\n")
    lines = [f"# Tempo and beat estimation on the {report['split']} split", "", f"Made by `{command}`.", "",
             "| subset | songs | tempo right (4 %) | half or double | wrong | beat F (70 ms) | beat F, tempo given |",
             "|---|---|---|---|---|---|---|"]
    rows = [("all", report["overall"])] + list(report["per_family"].items()) + list(report["per_tempo_band"].items())
    for name, row in rows:
        lines.append(f"| {name} | {row['count']} | {row['right']:.2f} | {row['octave']:.2f} | {row['wrong']:.2f} | "
                     f"{row['beat_f_measure']:.2f} | {row['beat_f_measure_tempo_given']:.2f} |")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "report.md"
