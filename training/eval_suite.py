"""Evaluation runs over a data build's held-out pieces: transcription accuracy and accompaniment fit.

Transcription: the ground truth of a test-split stem is regenerated from its source MIDI with the
variant's recorded augmentation (transposition, tempo scale, the source's duration cap), exactly as
``backline.data.build.render_variant`` drew and applied it, so no audio label is ever guessed.
Notes are matched one-to-one (closest onsets first, within 50 ms; bass pitch must be equal), the
way mir_eval's onset-only note F-measure counts them.

Accompaniment: generated stems are scored against the real stems of the same pairs and a shuffled
baseline with ``backline.training.fit_metrics``; numbers go to report.md and report.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backline.engine.transcribe import DRUM_CLASS_OF_NOTE, Note

ONSET_TOLERANCE_SECONDS = 0.05
DRUM_CLASSES = ("kick", "snare", "hat")


# ---- matching -------------------------------------------------------------------------------------

def match_onsets(reference: list[float], estimate: list[float], tolerance: float = ONSET_TOLERANCE_SECONDS) -> int:
    """Number of one-to-one matches between two onset lists (seconds), closest pairs first."""
    ref = np.sort(np.asarray(reference, float))
    est = np.sort(np.asarray(estimate, float))
    if len(ref) == 0 or len(est) == 0:
        return 0
    pairs = []
    for i, r in enumerate(ref):
        lo, hi = np.searchsorted(est, r - tolerance), np.searchsorted(est, r + tolerance, side="right")
        pairs.extend((abs(est[j] - r), i, j) for j in range(lo, hi))
    used_r, used_e, count = set(), set(), 0
    for _, i, j in sorted(pairs):
        if i not in used_r and j not in used_e:
            used_r.add(i)
            used_e.add(j)
            count += 1
    return count


def prf(matched: int, n_reference: int, n_estimate: int) -> dict:
    precision = matched / n_estimate if n_estimate else (1.0 if n_reference == 0 else 0.0)
    recall = matched / n_reference if n_reference else (1.0 if n_estimate == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched,
            "reference": n_reference, "estimate": n_estimate}


def note_f1(reference: list[Note], estimate: list[Note], tolerance: float = ONSET_TOLERANCE_SECONDS, *,
            octave_invariant: bool = False) -> dict:
    """Note precision/recall/F1: onset within ``tolerance`` and the exact MIDI pitch (offsets ignored).

    ``octave_invariant`` compares pitch classes instead (a diagnostic: octave errors then count as hits).
    """
    def key(note: Note) -> int:
        return note.pitch % 12 if octave_invariant else note.pitch

    matched = 0
    for pitch in {key(n) for n in reference} | {key(n) for n in estimate}:
        matched += match_onsets([n.start_seconds for n in reference if key(n) == pitch],
                                [n.start_seconds for n in estimate if key(n) == pitch], tolerance)
    return prf(matched, len(reference), len(estimate))


def drum_f1(reference: list[Note], estimate: list[Note], tolerance: float = ONSET_TOLERANCE_SECONDS) -> dict:
    """Per-class onset F1 for kick (35/36), snare (37-40) and hat (42/44/46); other drums ignored."""
    out = {}
    for name in DRUM_CLASSES:
        ref = _dedupe([n.start_seconds for n in reference if DRUM_CLASS_OF_NOTE.get(n.pitch) == name])
        est = _dedupe([n.start_seconds for n in estimate if DRUM_CLASS_OF_NOTE.get(n.pitch) == name])
        out[name] = prf(match_onsets(ref, est, tolerance), len(ref), len(est))
    return out


def _dedupe(onsets: list[float], within: float = 0.01) -> list[float]:
    """Merge simultaneous hits of one class (e.g. notes 35 and 36 together are one kick)."""
    out: list[float] = []
    for t in sorted(onsets):
        if not out or t - out[-1] > within:
            out.append(t)
    return out


# ---- ground truth from a build's record -----------------------------------------------------------

def _piece_midi(record: dict, build_dir: Path | None = None) -> tuple[bytes, float | None]:
    """The source MIDI bytes of a record and the source's duration cap (an MMA song's made again: its build's
    ``build_dir`` says how it was planned)."""
    from backline.data.sources import SOURCES

    if record.get("source") == "mma" and build_dir is not None:
        from backline.data.build import mma_midi

        return mma_midi(build_dir, record), None
    source = SOURCES.get(record["source"])
    if source is not None:
        for piece in source.pieces():
            if piece.piece_id == record["piece_id"]:
                return piece.midi_bytes, piece.max_duration_seconds
    origin = Path(record["origin"].split(":")[0])
    if origin.suffix.lower() in (".mid", ".midi") and origin.is_file():
        return origin.read_bytes(), None
    raise FileNotFoundError(f"{record['variant_id']}: source MIDI {record['origin']} not found")


def reference_notes(record: dict, instrument: str, *, max_duration_seconds: float | None = None,
                    build_dir: Path | None = None) -> list[Note]:
    """The notes a record's ``instrument`` stem was rendered from, in seconds of the rendered audio (an MMA
    variant's need its ``build_dir``)."""
    from backline.data import midi as midi_ops
    from backline.engine.transcribe import midi_notes

    midi_bytes, source_cap = _piece_midi(record, build_dir)
    midi = midi_ops.parse(midi_bytes)
    groups = midi_ops.channel_groups(midi)
    if record.get("channel_groups") and {k: list(v) for k, v in groups.items()} != record["channel_groups"]:
        raise ValueError(f"{record['variant_id']}: the source MIDI no longer matches the record's channel groups")
    caps = [c for c in (source_cap, max_duration_seconds) if c is not None]
    aug = midi_ops.Augmentation(
        transpose_semitones=int(record["transpose_semitones"]),
        tempo_scale=float(record["tempo_scale"]),
        bass_program=record["programs"].get("bass"),
        drum_kit=record["programs"].get("drum_kit"),
        max_duration_seconds=min(caps) if caps else None,
    )
    augmented = midi_ops.augment(midi, aug, groups)
    return midi_notes(augmented, set(groups[instrument]))


# ---- transcription evaluation ---------------------------------------------------------------------

@dataclass(frozen=True)
class TranscriptionItem:
    variant_id: str
    instrument: str
    scores: dict
    seconds: float
    compute_seconds: float


def evaluate_transcription(build_dir: str | Path, *, split: str = "test", max_seconds: float | None = None,
                           limit: int | None = None, log: Callable[[str], None] = lambda m: None) -> dict:
    """Transcribe every ``split`` bass and drum stem of a build and score it against its MIDI."""
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio
    from backline.engine.transcribe import transcribe

    build_dir = Path(build_dir)
    records = read_manifest(build_dir, split=split)
    items: list[TranscriptionItem] = []
    for instrument in ("bass", "drums"):
        chosen = [r for r in records if instrument in r["pairs"]][:limit]
        for record in chosen:
            audio, sample_rate = read_audio(build_dir / record["pairs"][instrument]["target"])
            if max_seconds is not None:
                audio = audio[:, : int(max_seconds * sample_rate)]
            seconds = audio.shape[1] / sample_rate
            reference = [n for n in reference_notes(record, instrument, build_dir=build_dir)
                         if n.start_seconds < seconds - 0.05]
            started = time.perf_counter()
            estimate = [n for n in transcribe(audio, sample_rate, instrument) if n.start_seconds < seconds - 0.05]
            compute = time.perf_counter() - started
            if instrument == "bass":
                scores = note_f1(reference, estimate)
                scores["pitch_class"] = note_f1(reference, estimate, octave_invariant=True)
                scores["onset_only"] = prf(match_onsets([n.start_seconds for n in reference],
                                                        [n.start_seconds for n in estimate]),
                                           len(reference), len(estimate))
            else:
                scores = drum_f1(reference, estimate)
            items.append(TranscriptionItem(record["variant_id"], instrument, scores, seconds, compute))
            log(f"{instrument} {record['variant_id']}: {_short(scores)} ({compute:.1f} s for {seconds:.0f} s)")
    return _summarise_transcription(items, build_dir, split, max_seconds)


def _short(scores: dict) -> str:
    if "f1" in scores:
        extra = f" (pitch class {scores['pitch_class']['f1']:.3f})" if "pitch_class" in scores else ""
        return f"F1 {scores['f1']:.3f}{extra}"
    return " ".join(f"{k} {v['f1']:.3f}" if v["reference"] else f"{k} n/a ({v['estimate']} false hits)"
                    for k, v in scores.items())


def _pooled(entries: list[dict]) -> dict:
    return prf(sum(e["matched"] for e in entries), sum(e["reference"] for e in entries),
               sum(e["estimate"] for e in entries))


def _summarise_transcription(items: list[TranscriptionItem], build_dir: Path, split: str,
                             max_seconds: float | None) -> dict:
    bass = [i for i in items if i.instrument == "bass"]
    drums = [i for i in items if i.instrument == "drums"]
    from backline.data.dataset import read_manifest

    summary = {
        "build": str(build_dir), "manifest_records": len(read_manifest(build_dir)), "split": split,
        "max_seconds_per_stem": max_seconds,
        "onset_tolerance_seconds": ONSET_TOLERANCE_SECONDS,
        "bass": {"stems": len(bass), "seconds": round(sum(i.seconds for i in bass), 1),
                 "pooled": _pooled([i.scores for i in bass]) if bass else None,
                 "pooled_pitch_class": _pooled([i.scores["pitch_class"] for i in bass]) if bass else None,
                 "pooled_onset_only": _pooled([i.scores["onset_only"] for i in bass]) if bass else None,
                 "mean_f1": float(np.mean([i.scores["f1"] for i in bass])) if bass else None,
                 "realtime_factor": (sum(i.seconds for i in bass) / max(sum(i.compute_seconds for i in bass), 1e-9))
                 if bass else None},
        "drums": {"stems": len(drums), "seconds": round(sum(i.seconds for i in drums), 1),
                  "pooled": {c: _pooled([i.scores[c] for i in drums]) for c in DRUM_CLASSES} if drums else None,
                  "mean_f1": {c: float(np.mean([i.scores[c]["f1"] for i in drums if i.scores[c]["reference"]]))
                              if any(i.scores[c]["reference"] for i in drums) else None for c in DRUM_CLASSES}
                  if drums else None,
                  "realtime_factor": (sum(i.seconds for i in drums) / max(sum(i.compute_seconds for i in drums), 1e-9))
                  if drums else None},
        "items": [{"variant_id": i.variant_id, "instrument": i.instrument, "seconds": round(i.seconds, 2),
                   "compute_seconds": round(i.compute_seconds, 2), "scores": i.scores} for i in items],
    }
    return summary


def transcription_markdown(summary: dict, command: str) -> str:
    lines = ["# Transcription accuracy", "",
             f"Held-out ({summary['split']} split) stems of `{summary['build']}` ({summary['manifest_records']} variants "
             "in its manifest when measured), scored against the MIDI they were "
             "rendered from (regenerated with each variant's recorded augmentation). "
             f"A note counts when its onset is within {summary['onset_tolerance_seconds'] * 1000:.0f} ms of an unmatched "
             "reference onset (bass: and the MIDI pitch is equal). Pooled = counts summed over stems. "
             "Detection settings (thresholds, timing offsets, octave check) were tuned on train-split stems of the "
             "same build, never on these. Real-time factor: seconds of audio per second of compute, one thread.",
             "", f"Produced by: `{command}`", ""]
    if summary["max_seconds_per_stem"]:
        lines += [f"Each stem is cut to its first {summary['max_seconds_per_stem']:.0f} s.", ""]
    bass = summary["bass"]
    if bass["pooled"]:
        p = bass["pooled"]
        lines += ["## Bass (basic-pitch ONNX note model + our decoding)", "",
                  "| stems | seconds | precision | recall | F1 (pooled) | mean F1 per stem | real-time factor |",
                  "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {bass['stems']} | {bass['seconds']:.0f} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | "
                  f"{bass['mean_f1']:.3f} | {bass['realtime_factor']:.1f}x |", "",
                  "Diagnostics (pooled F1): octave errors forgiven (pitch class equal) "
                  f"{bass['pooled_pitch_class']['f1']:.3f}; onsets only (any pitch) {bass['pooled_onset_only']['f1']:.3f}. "
                  "The gap between the pitch-class and the exact-pitch figures is octave errors; it is largest on "
                  "some synth-bass presets (see the per-stem table).", ""]
    drums = summary["drums"]
    if drums["pooled"]:
        lines += ["## Drums (band onsets, kick / snare / hi-hat)", "",
                  "| class | precision | recall | F1 (pooled) | mean F1 per stem | reference hits |",
                  "|---|---:|---:|---:|---:|---:|"]
        for c in DRUM_CLASSES:
            p = drums["pooled"][c]
            mean = drums["mean_f1"][c]
            lines.append(f"| {c} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | "
                         f"{'n/a' if mean is None else f'{mean:.3f}'} | {p['reference']} |")
        lines += ["", f"{drums['stems']} stems, {drums['seconds']:.0f} s, real-time factor "
                      f"{drums['realtime_factor']:.0f}x.", ""]
    lines += ["## Per stem", "", "| variant | instrument | scores |", "|---|---|---|"]
    for item in summary["items"]:
        lines.append(f"| {item['variant_id']} | {item['instrument']} | {_short(item['scores'])} |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, name: str, summary: dict, markdown: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    return md, js


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---- rule-based baselines -------------------------------------------------------------------------

def _beats(context: np.ndarray, sample_rate: int) -> np.ndarray:
    """Beat times (seconds) of a context from its onset envelope's tempo and phase; 120 BPM if flat."""
    from backline.training import fit_metrics as fm

    grid = fm.estimate_grid(fm.onset_envelope(context, sample_rate))
    period, phase = (grid.period_seconds, grid.phase_seconds) if grid else (0.5, 0.0)
    return np.arange(phase, len(context) / sample_rate, period)


def rule_based_bass(context: np.ndarray, sample_rate: int) -> np.ndarray:
    """The root of the context's strongest pitch class on every beat, as a decaying saw-like tone in C2..B2."""
    from backline.training import fit_metrics as fm

    beats = _beats(context, sample_rate)
    chroma = fm.chroma(context, sample_rate)
    out = np.zeros(len(context), np.float32)
    period = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5
    for start in beats:
        lo = int(start / fm.CHROMA_HOP_SECONDS)
        frames = chroma[lo:lo + max(1, int(period / fm.CHROMA_HOP_SECONDS))]
        if len(frames) == 0 or frames.sum() <= 0:
            continue
        frequency = 440.0 * 2 ** ((36 + int(np.argmax(frames.sum(axis=0))) - 69) / 12)
        first, count = int(start * sample_rate), int(period * sample_rate)
        t = np.arange(min(count, len(out) - first)) / sample_rate
        tone = sum(np.sin(2 * np.pi * h * frequency * t) / h for h in range(1, 5))
        out[first:first + len(t)] += (0.3 * tone * np.exp(-3.0 * t)).astype(np.float32)
    return out


def rule_based_drums(context: np.ndarray, sample_rate: int, *, seed: int = 0) -> np.ndarray:
    """A fixed rock groove at the context's tempo: kick on beats 1 and 3, snare on 2 and 4, hats on eighths."""
    rng = np.random.default_rng(seed)
    beats = _beats(context, sample_rate)
    out = np.zeros(len(context), np.float32)
    period = float(np.median(np.diff(beats))) if len(beats) > 1 else 0.5

    def hit(time: float, sound: np.ndarray) -> None:
        first = int(time * sample_rate)
        if 0 <= first < len(out):
            out[first:first + len(sound)] += sound[: len(out) - first]

    t = np.arange(int(0.3 * sample_rate)) / sample_rate
    kick = 0.6 * np.sin(2 * np.pi * (50 * t + 60 / 20 * (1 - np.exp(-20 * t)))) * np.exp(-12 * t)
    snare = (0.3 * rng.standard_normal(len(t)) + 0.2 * np.sin(2 * np.pi * 190 * t)) * np.exp(-20 * t)
    noise = rng.standard_normal(len(t))
    hat = 0.15 * np.diff(noise, prepend=0) * np.exp(-60 * t)
    for index, beat in enumerate(beats):
        hit(beat, (kick if index % 2 == 0 else snare).astype(np.float32))
        hit(beat, hat.astype(np.float32))
        hit(beat + period / 2, hat.astype(np.float32))
    return out


RULE_BASED = {"bass": rule_based_bass, "drums": rule_based_drums}


# ---- accompaniment evaluation ---------------------------------------------------------------------

GENERATED_INDEX = "generated.json"  # written next to generated stems: where in each pair they start


def generated_name(variant_id: str, instrument: str) -> str:
    return f"{variant_id}__{instrument}.wav"


def _segment(audio: np.ndarray, sample_rate: int, offset_seconds: float, frames: int | None) -> np.ndarray:
    first = int(round(offset_seconds * sample_rate))
    return audio[first:] if frames is None else audio[first:first + frames]


def fit_table(rows: dict[str, list[dict]], instrument: str, *, resamples: int = 1000, seed: int = 0) -> dict:
    """Mean of each fit score per candidate set (pairs where it is undefined, e.g. a silent stem, left
    out), and the normalised version against real and shuffled. Drums have no harmonic fit: they are
    unpitched, and real and shuffled drum stems score the same, so normalising would divide by noise.

    Each normalised score also gets a 90 % bootstrap interval (``<key>_normalised_interval``): the pairs
    are drawn with replacement ``resamples`` times (the same draw for every set, since each set is
    normalised by the real and shuffled stems of the same pairs), so a reader sees how far a figure
    from a few pairs can be trusted.
    """
    from backline.training.fit_metrics import FIT_KEYS, normalise

    values = {name: {k: np.array([r[k] for r in scores], float) for k in FIT_KEYS} for name, scores in rows.items()}
    pairs = len(next(iter(rows.values())))
    draws = np.random.default_rng(seed).integers(0, pairs, size=(resamples, pairs))

    def means_of(name: str, k: str, index: np.ndarray) -> np.ndarray:
        v = values[name][k][index]
        counted = np.isfinite(v).sum(axis=-1)
        return np.where(counted > 0, np.nansum(v, axis=-1) / np.maximum(counted, 1), np.nan)

    means = {name: {k: float(means_of(name, k, np.arange(pairs))) for k in FIT_KEYS} for name in rows}
    drawn = {name: {k: means_of(name, k, draws) for k in FIT_KEYS} for name in rows}  # (resamples,) each
    for name, m in means.items():
        if instrument == "drums":
            m["harmonic_fit"] = float("nan")
        for k in FIT_KEYS:
            m[f"{k}_normalised"] = normalise(m[k], means["real"][k], means["shuffled"][k])
            if instrument == "drums" and k == "harmonic_fit":
                m[f"{k}_normalised_interval"] = [float("nan"), float("nan")]
                continue
            scores = normalise(drawn[name][k], drawn["real"][k], drawn["shuffled"][k])
            scores = scores[np.isfinite(scores)]
            m[f"{k}_normalised_interval"] = ([float(q) for q in np.percentile(scores, [5, 95])] if len(scores)
                                             else [float("nan"), float("nan")])
    return means


def paired_difference(candidate: dict, baseline: dict, instrument: str, *, resamples: int = 1000,
                      seed: int = 0) -> dict:
    """Each normalised fit of ``candidate``'s generated stems minus ``baseline``'s, from two accompaniment reports
    (``report.json``) of the same pairs (the same split, count, seconds and seed): the mean difference and a 90 %
    bootstrap interval over the pairs, both in normalised units (the baseline report's real minus shuffled).
    Paired, a difference is measured far more tightly than either report's own interval says."""
    from backline.training.fit_metrics import FIT_KEYS

    rows = [r["instruments"][instrument]["per_pair"] for r in (candidate, baseline)]
    if [p["variant_id"] for p in rows[0]] != [p["variant_id"] for p in rows[1]]:
        raise ValueError("the two reports measured different pairs: make both with the same split, count, "
                         "seconds and seed")
    draws = np.random.default_rng(seed).integers(0, len(rows[1]), size=(resamples, len(rows[1])))
    out = {}
    for key in FIT_KEYS:
        if instrument == "drums" and key == "harmonic_fit":
            continue
        a, b, real, shuffled = (np.array([p[name][key] for p in table], float) for table, name in
                                ((rows[0], "generated"), (rows[1], "generated"), (rows[1], "real"),
                                 (rows[1], "shuffled")))
        both = np.isfinite(a) & np.isfinite(b) & np.isfinite(real) & np.isfinite(shuffled)
        spread = lambda index: np.nanmean(np.where(both[index], real[index] - shuffled[index], np.nan), axis=-1)
        diff = lambda index: np.nanmean(np.where(both[index], a[index] - b[index], np.nan), axis=-1)
        drawn = diff(draws) / spread(draws)
        drawn = drawn[np.isfinite(drawn)]
        out[key] = {"difference": float(diff(np.arange(len(a))) / spread(np.arange(len(a)))),
                    "interval": [float(q) for q in np.percentile(drawn, [5, 95])] if len(drawn) else [np.nan] * 2,
                    "pairs": int(both.sum())}
    frechet = [r["instruments"][instrument]["realism"].get("generated", {}).get("frechet") for r in (candidate, baseline)]
    out["frechet"] = {"candidate": frechet[0], "baseline": frechet[1]}
    return out


def _family(record: dict) -> str:
    """A pair's style family (MMA songs) or its source."""
    return (record.get("mma") or {}).get("family") or record.get("source") or "unknown"


def _tempo_band(record: dict) -> str:
    from backline.data.stats import tempo_band

    song = record.get("mma")
    return tempo_band(float(song["tempo_bpm"])) if song else "unknown tempo"


def _grouped(fit_rows: dict[str, list[dict]], instrument: str, groups: list[str]) -> dict[str, dict]:
    """Each group's pairs (at least two) scored as ``fit_table`` scores them: the normalised harmonic and rhythmic
    fit of every set against the group's own real and shuffled stems, so a weak corner shows."""
    out = {}
    for group in sorted(set(groups)):
        index = [i for i, g in enumerate(groups) if g == group]
        if len(index) < 2:
            continue
        table = fit_table({name: [rows[i] for i in index] for name, rows in fit_rows.items()}, instrument, resamples=200)
        out[group] = {"pairs": len(index), **{name: {k: m[f"{k}_normalised"] for k in ("harmonic_fit", "rhythmic_fit")}
                                              for name, m in table.items()}}
    return out


def evaluate_accompaniment(build_dir: str | Path, *, generated_dir: str | Path | None = None, split: str = "test",
                           instruments: tuple[str, ...] = ("bass", "drums"), max_seconds: float | None = 60.0,
                           offset_seconds: float = 0.0, seed: int = 0, figure_dir: str | Path | None = None,
                           round_trip: Callable[[np.ndarray, int, str], np.ndarray] | None = None,
                           log: Callable[[str], None] = lambda m: None) -> dict:
    """Score real, shuffled, rule-based and (when given) generated stems of a build's ``split`` pairs.

    With ``generated_dir``, only pairs that have a ``<variant_id>__<instrument>.wav`` there are used and
    each pair is cut to the generated stem's segment (offset from ``generated.json``, else
    ``offset_seconds``). Realism compares every candidate set with the real stems of the same pairs;
    the real stems of the validation split give the floor a different set of real stems reaches.
    With ``figure_dir`` (and matplotlib installed), per-pair fit plots and log-mel spectrograms of the
    first pair of each instrument are written there as PNG files.
    """
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio
    from backline.training import fit_metrics as fm

    build_dir = Path(build_dir)
    index = {}
    if generated_dir is not None:
        generated_dir = Path(generated_dir)
        index_path = generated_dir / GENERATED_INDEX
        if index_path.is_file():
            index = json.loads(index_path.read_text())
    records = read_manifest(build_dir, split=split)
    rng = np.random.default_rng(seed)
    manifest_records = len(read_manifest(build_dir))
    summary: dict = {"build": str(build_dir), "manifest_records": manifest_records, "split": split,
                     "generated": str(generated_dir) if generated_dir else None,
                     "embedding": "mean+std over time of 64 log-mel bands (dB), 5 s segments, z-scored by the real set",
                     "instruments": {}}
    for instrument in instruments:
        chosen = [r for r in records if instrument in r["pairs"]]
        if generated_dir is not None:
            chosen = [r for r in chosen if (generated_dir / generated_name(r["variant_id"], instrument)).is_file()]
        if len(chosen) < 2:
            log(f"{instrument}: fewer than two pairs, skipped")
            continue
        contexts, targets, generated, sample_rates, offsets = [], [], [], [], []
        for record in chosen:
            pair = record["pairs"][instrument]
            context, sample_rate = read_audio(build_dir / pair["context"])
            target, _ = read_audio(build_dir / pair["target"])
            offset = offset_seconds
            frames = None if max_seconds is None else int(max_seconds * sample_rate)
            if generated_dir is not None:
                stem, rate = _read_any(generated_dir / generated_name(record["variant_id"], instrument))
                if rate != sample_rate:
                    from backline.engine.audio import resample

                    stem = resample(stem[None], rate, sample_rate)[0]
                offset = float(index.get("items", {}).get(generated_name(record["variant_id"], instrument),
                                                          {}).get("offset_seconds", offset_seconds))
                frames = len(stem)
                generated.append(stem)
            offsets.append(offset)
            contexts.append(_segment(context[0], sample_rate, offset, frames))
            targets.append(_segment(target[0], sample_rate, offset, frames))
            sample_rates.append(sample_rate)
        sample_rate = sample_rates[0]
        order = fm.derangement([r["piece_id"] for r in chosen], rng)
        shuffled = [_fit_length(targets[order[i]], len(contexts[i])) for i in range(len(chosen))]
        rule = [RULE_BASED[instrument](c, sample_rate) for c in contexts]
        candidates = {"real": targets, "shuffled": shuffled, "rule-based": rule}
        if round_trip is not None:  # the real stems through the autoencoder: the most a latent model can reach
            candidates["real, autoencoded"] = [_fit_length(round_trip(t, sample_rate, instrument), len(t)) for t in targets]
        if generated_dir is not None:
            candidates["generated"] = generated
        context_feats = [fm.context_features(c, sample_rate) for c in contexts]
        stem_feats = {"real": [fm.stem_features(t, sample_rate) for t in targets]}
        stem_feats["shuffled"] = [stem_feats["real"][order[i]] for i in range(len(chosen))]
        for name in candidates:
            if name not in stem_feats:
                stem_feats[name] = [fm.stem_features(s, sample_rate) for s in candidates[name]]
        fit_rows = {name: [fm.fit_scores(s, c) for s, c in zip(stem_feats[name], context_feats)] for name in candidates}
        sanity_rows = {name: [fm.sanity(s, c, sample_rate, expected_frames=len(c)) for s, c in zip(candidates[name], contexts)]
                       for name in candidates}
        reference = np.concatenate([fm.embed(t, sample_rate) for t in targets])
        realism = {name: fm.realism(reference, np.concatenate([fm.embed(s, sample_rate) for s in candidates[name]]))
                   for name in candidates if name not in ("real", "shuffled")}
        validation = _validation_stems(build_dir, instrument, len(contexts[0]) / sample_rate, limit=len(chosen))
        if validation:
            realism["real (validation split)"] = fm.realism(
                reference, np.concatenate([fm.embed(v, sample_rate) for v in validation]))
        summary["instruments"][instrument] = {
            "pairs": len(chosen), "seconds": round(sum(len(c) for c in contexts) / sample_rate, 1),
            "fit": fit_table(fit_rows, instrument),
            "sanity": {name: fm.sanity_shares(rows) for name, rows in sanity_rows.items()},
            # copy-likeness: how alike each set's spectrograms are to their contexts' (a copy scores near 1)
            "context_correlation": {name: float(np.mean([fm.context_correlation(s, c, sample_rate)
                                                         for s, c in zip(candidates[name], contexts)]))
                                    for name in candidates},
            "realism": realism,
            "per_pair": [{"variant_id": r["variant_id"], **{name: fit_rows[name][i] for name in candidates}}
                         for i, r in enumerate(chosen)],
            "by_family": _grouped(fit_rows, instrument, [_family(r) for r in chosen]),
            "by_tempo_band": _grouped(fit_rows, instrument, [_tempo_band(r) for r in chosen]),
        }
        if figure_dir is not None:
            audible = [i for i, row in enumerate(fit_rows["real"]) if np.isfinite(row["harmonic_fit"])] or [0]
            example = audible[0]
            examples = {"context": contexts[example], **{name: audio[example] for name, audio in candidates.items()}}
            figures = _figures(Path(figure_dir), instrument, summary["instruments"][instrument], examples,
                               sample_rate, chosen[example]["variant_id"],
                               beats=beat_grid_seconds(chosen[example], offsets[example], len(contexts[example]) / sample_rate))
            summary["instruments"][instrument]["figures"] = figures
        log(f"{instrument}: {len(chosen)} pairs scored")
    return summary


def beat_grid_seconds(record: dict, offset_seconds: float, seconds: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The song's beats and bar starts (seconds into a segment of ``seconds`` from ``offset_seconds``) where its
    record knows its timing (MMA songs: the first downbeat at 0 s), else None."""
    from backline.training.latents import timing_of

    timing = timing_of(record)
    if timing is None:
        return None
    period = 60.0 / timing["tempo_bpm"]
    first = int(np.ceil(offset_seconds / period - 1e-9))
    indices = np.arange(first, int(np.floor((offset_seconds + seconds) / period)) + 1)
    times = indices * period - offset_seconds
    return times, times[indices % timing["beats_per_bar"] == 0]


def _figures(figure_dir: Path, instrument: str, block: dict, examples: dict[str, np.ndarray], sample_rate: int,
             variant_id: str, beats: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    """Per-pair fit bars and example spectrograms (with the song's beat grid where ``beats``, from
    ``beat_grid_seconds``, gives it); returns the file names written (none without matplotlib)."""
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot, no process-wide backend switch
    except ImportError:
        return []
    from backline.training.fit_metrics import log_mel

    figure_dir.mkdir(parents=True, exist_ok=True)
    names = list(block["fit"])
    pairs = block["per_pair"]
    keys = ["rhythmic_fit"] if instrument == "drums" else ["harmonic_fit", "rhythmic_fit"]
    fig = Figure(figsize=(max(6, 0.3 * len(pairs) * len(names)), 3 * len(keys)))
    axes = fig.subplots(len(keys), 1, squeeze=False)
    width = 0.8 / len(names)
    for ax, key in zip(axes[:, 0], keys):
        for k, name in enumerate(names):
            values = [p[name][key] for p in pairs]
            ax.bar(np.arange(len(pairs)) + k * width, values, width, label=name)
        ax.set_ylabel(key.replace("_", " "))
        ax.set_xticks(np.arange(len(pairs)) + 0.4 - width / 2)
        ax.set_xticklabels([str(i) for i in range(len(pairs))])
        ax.legend(fontsize=7, ncol=len(names))
    axes[-1, 0].set_xlabel("pair (order of the per-pair table)")
    fig.tight_layout()
    fit_name = f"{instrument}_fit_per_pair.png"
    fig.savefig(figure_dir / fit_name, dpi=90)

    # show the 10 s where both the context and the real stem play, every panel on one dB scale
    window = int(10 * sample_rate)
    real, context = examples["real"], examples["context"]
    starts = list(range(0, max(len(real) - window, 0) + 1, window // 2))

    def level(audio: np.ndarray, k: int) -> float:
        return float(np.sqrt(np.mean(audio[k:k + window] ** 2))) if len(audio[k:k + window]) else 0.0

    start = max(starts, key=lambda k: min(level(real, k), level(context, k)))
    mels = {name: log_mel(audio[start:start + window], sample_rate) for name, audio in examples.items()}
    top = max(float(m.max()) for m in mels.values())
    fig = Figure(figsize=(8, 1.8 * len(examples)))
    axes = fig.subplots(len(examples), 1, sharex=True, squeeze=False)
    for ax, (name, mel) in zip(axes[:, 0], mels.items()):
        ax.imshow(mel.T, origin="lower", aspect="auto", vmin=top - 80, vmax=top,
                  extent=(start / sample_rate, start / sample_rate + len(mel) * 512 / 22_050, 0, mel.shape[1]))
        ax.set_ylabel(name, fontsize=8)
        if beats is not None:  # the song's beats (thin) and bar starts (thick), as the denoiser is told them
            shown = lambda t: t[(t >= start / sample_rate) & (t <= start / sample_rate + window / sample_rate)]
            for t in shown(beats[0]):
                ax.axvline(t, color="white", linewidth=0.4, alpha=0.5)
            for t in shown(beats[1]):
                ax.axvline(t, color="white", linewidth=1.2, alpha=0.9)
    grid = "; white: the song's beats, bars thicker" if beats is not None else ""
    axes[0, 0].set_title(f"{variant_id} ({instrument}): log-mel, 64 bands, 80 dB{grid}", fontsize=8)
    axes[-1, 0].set_xlabel("seconds into the evaluated segment")
    fig.tight_layout()
    spec_name = f"{instrument}_spectrograms.png"
    fig.savefig(figure_dir / spec_name, dpi=90)
    return [fit_name, spec_name]


def _fit_length(audio: np.ndarray, frames: int) -> np.ndarray:
    return np.pad(audio, (0, max(0, frames - len(audio))))[:frames]


def _read_any(path: Path) -> tuple[np.ndarray, int]:
    """Read a generated stem as mono WITHOUT refusing bad samples: sanity counts them instead."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def _validation_stems(build_dir: Path, instrument: str, seconds: float, *, limit: int) -> list[np.ndarray]:
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio

    try:
        records = [r for r in read_manifest(build_dir, split="validation") if instrument in r["pairs"]][:limit]
    except FileNotFoundError:
        return []
    out = []
    for record in records:
        audio, rate = read_audio(build_dir / record["pairs"][instrument]["target"])
        out.append(audio[0, : int(seconds * rate)])
    return out


def spread(records: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` records taken in turn from each style family (``_family``), each family's in a seeded order, so a
    few pairs cover the split's families instead of its first style file."""
    order = np.random.default_rng(seed).permutation(len(records))
    families: dict[str, list[dict]] = {}
    for index in order:
        families.setdefault(_family(records[index]), []).append(records[index])
    queues = [families[name] for name in sorted(families)]
    picked = []
    while len(picked) < min(count, len(records)):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def song_timing(record: dict, offset_seconds: float, given: tuple[str, ...]) -> dict:
    """``GenerateRequest`` fields for a segment from ``offset_seconds`` of ``record``'s song: its ``tempo`` (with the
    segment's start as the region's beat position) and its ``chords`` (the chart as a producer types it), those of
    ``given`` the record knows (MMA songs; nothing for other sources)."""
    from backline.engine.controls import Tempo
    from backline.training.latents import timing_of

    timing = timing_of(record)
    if not given or timing is None:
        return {}
    unknown = set(given) - {"tempo", "chords"}
    if unknown:
        raise ValueError(f"only the tempo and the chords can be given, not {', '.join(sorted(unknown))}")
    tempo = Tempo(timing["tempo_bpm"], timing["beats_per_bar"], offset_seconds * timing["tempo_bpm"] / 60.0)
    fields = {"tempo": tempo}
    if "chords" in given:
        starts = [beat for beat, _ in timing["chords"]] + [timing["chords"][-1][0] + timing["beats_per_bar"]]
        fields["chords"] = " ".join(f"{symbol}:{end - start:g}" for (start, symbol), end in zip(timing["chords"], starts[1:]))
        if timing["chords"][0][0] > 0:  # the chart starts later than the song: the region before it holds no chord
            raise ValueError(f"{record['variant_id']}: its chart starts at beat {timing['chords'][0][0]}, not 0")
    return fields


def generate_stems(build_dir: str | Path, out_dir: str | Path, bundle, *, count: int = 4, seconds: float = 10.0,
                   offset_seconds: float = 30.0, instruments: tuple[str, ...] = ("bass", "drums"), steps: int | None = None,
                   seed: int = 0, split: str = "test", cfg_context: float | None = None, cfg_style: float | None = None,
                   candidates: int | None = None, given: tuple[str, ...] = (),
                   log: Callable[[str], None] = lambda m: None, frame_guidance: dict | None = None,
                   sampler: str | None = None) -> Path:
    """Generate ``<variant_id>__<instrument>.wav`` for ``count`` ``split`` pairs per instrument, spread over the
    split's style families (``spread``).

    Each context is cut to ``seconds`` from ``offset_seconds`` (earlier if the piece is shorter) and
    sent through ``backline.engine.pipeline.generate``; ``generated.json`` records the segments.
    ``given``: ``tempo`` and/or ``chords`` from the song's record (MMA songs), sent as a host and a producer would
    (the segment's start as the region's beat position), for a denoiser told the beat and the chords.
    """
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio, write_audio
    from backline.engine.pipeline import GenerateRequest, generate

    build_dir, out_dir = Path(build_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_manifest(build_dir, split=split)
    items = {}
    for instrument in instruments:
        for record in spread([r for r in records if instrument in r["pairs"]], count, seed):
            context, sample_rate = read_audio(build_dir / record["pairs"][instrument]["context"])
            total = context.shape[1] / sample_rate
            offset = max(0.0, min(offset_seconds, total - seconds))
            first = int(round(offset * sample_rate))
            segment = context[:, first:first + int(seconds * sample_rate)]  # (channels, frames)
            started = time.perf_counter()
            result = generate(bundle, GenerateRequest(context=segment, sample_rate=sample_rate, instrument=instrument,
                                                      steps=steps, sampler=sampler, seed=seed, cfg_context=cfg_context,
                                                      cfg_style=cfg_style,
                                                      candidates=candidates if instrument == "bass" else None,
                                                      **(frame_guidance or {}), **song_timing(record, offset, given)))
            name = generated_name(record["variant_id"], instrument)
            write_audio(out_dir / name, result.audio, result.sample_rate)
            items[name] = {"offset_seconds": offset, "seconds": segment.shape[1] / sample_rate,
                           "compute_seconds": round(time.perf_counter() - started, 2), "info": result.info}
            log(f"generated {name} ({items[name]['compute_seconds']} s)")
    (out_dir / GENERATED_INDEX).write_text(json.dumps({"build": str(build_dir), "split": split, "steps": steps,
                                                       "sampler": sampler,
                                                       "seed": seed, "cfg_context": cfg_context, "cfg_style": cfg_style,
                                                       "candidates": candidates, "given": list(given),
                                                       "frame_guidance": frame_guidance or {},
                                                       "items": items}, indent=1, default=str))
    return out_dir


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _interval(bounds: list[float]) -> str:
    return "n/a" if not all(np.isfinite(bounds)) else f"{bounds[0]:.2f} to {bounds[1]:.2f}"


def accompaniment_markdown(summary: dict, command: str) -> str:
    lines = ["# Accompaniment evaluation", "",
             f"Pairs of the {summary['split']} split of `{summary['build']}` ({summary['manifest_records']} variants "
             "in its manifest when measured)"
             + (f", generated stems from `{summary['generated']}`" if summary["generated"] else "") + ".",
             "", f"Produced by: `{command}`", "",
             "Rows: **real** = the stem the piece was written with; **shuffled** = a real stem of another piece "
             "(the same stems, re-paired); **rule-based** = bass: root of the context's strongest pitch class on "
             "every detected beat; drums: kick/snare/hat groove at the detected tempo; **real, autoencoded** = the "
             "real stem encoded and decoded by the autoencoder (the ceiling for any model in its latent space); "
             "**generated** = the model's stems.", "",
             "Fit scores (see `backline/training/fit_metrics.py`): harmonic fit = share of the stem's pitched energy "
             "in pitch classes sounding in the context; onset / grid agreement = cosine of the stem's onset envelope "
             "with the context's onsets / eighth-note grid; rhythmic fit = their mean. *norm.* = "
             "(x - shuffled) / (real - shuffled): 1 as coherent as real pairs, 0 no better than random pairing; "
             "*90 % interval*: of the normalised score, over 1,000 bootstrap draws of the pairs (few pairs, wide "
             "intervals: read a difference between two models only where their intervals part). "
             "Harmonic fit is not given for drums (unpitched). n/a in a pair's row: the stem or its context is silent in that "
             "segment.", "",
             "Read fit and realism together: the rule-based bass plays the context's strongest pitch class on "
             "every beat, which is exactly what harmonic fit rewards, so it can score above the real stems; "
             "its realism figures show what it costs.", "",
             f"Realism embedding: {summary['embedding']}. This is NOT LAION-CLAP or VGGish: the figures are not "
             "comparable with published FAD/KID numbers, only across Backline models on these pieces.", ""]
    for instrument, block in summary["instruments"].items():
        lines += [f"## {instrument} ({block['pairs']} pairs, {block['seconds']:.0f} s of context)", "",
                  "| stems | harmonic fit | norm. | 90 % interval | onset agr. | grid agr. | rhythmic fit | norm. | 90 % interval |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, m in block["fit"].items():
            lines.append(f"| {name} | {_fmt(m['harmonic_fit'])} | {_fmt(m['harmonic_fit_normalised'], 2)} | "
                         f"{_interval(m['harmonic_fit_normalised_interval'])} | "
                         f"{_fmt(m['onset_agreement'])} | {_fmt(m['grid_agreement'])} | {_fmt(m['rhythmic_fit'])} | "
                         f"{_fmt(m['rhythmic_fit_normalised'], 2)} | {_interval(m['rhythmic_fit_normalised_interval'])} |")
        lines += ["", "| stems vs real stems | Fréchet distance | MMD² (poly) | density | coverage | balance, dB "
                  "(low / mid / high) | segments |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in block["realism"].items():
            balance = " / ".join(f"{v:+.1f}" for v in r["balance_db"].values()) if "balance_db" in r else "-"
            lines.append(f"| {name} | {_fmt(r['frechet'], 1)} | {_fmt(r['mmd2'], 2)} | {_fmt(r['density'], 2)} | "
                         f"{_fmt(r['coverage'], 2)} | {balance} | {r['candidate_segments']} |")
        lines += ["", "| stems | non-finite | silent | clipped | wrong length | copy of context | any |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, s in block["sanity"].items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * s[k]:.0f} %" for k in
                         ("non_finite", "silent", "clipped", "wrong_length", "copy_of_context", "any")) + " |")
        if "context_correlation" in block:
            lines += ["", "Copy-likeness (mean log-mel correlation with the context; a copy scores near 1): "
                      + ", ".join(f"{name} {_fmt(value, 2)}" for name, value in block["context_correlation"].items())
                      + "."]
        names = [n for n in block["fit"]]
        lines += ["", "Per pair (harmonic fit / rhythmic fit):", "",
                  "| variant | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for row in block["per_pair"]:
            lines.append(f"| {row['variant_id']} | " + " | ".join(
                f"{_fmt(row[n]['harmonic_fit'], 2)} / {_fmt(row[n]['rhythmic_fit'], 2)}" for n in names) + " |")
        for title, key in (("style family", "by_family"), ("tempo band", "by_tempo_band")):
            groups = block.get(key) or {}
            if not groups:
                continue
            lines += ["", f"Per {title} (normalised harmonic / rhythmic fit; groups of two pairs or more):", "",
                      f"| {title} | pairs | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
            for group, row in groups.items():
                lines.append(f"| {group} | {row['pairs']} | " + " | ".join(
                    f"{_fmt(row[n]['harmonic_fit'], 2)} / {_fmt(row[n]['rhythmic_fit'], 2)}" for n in names) + " |")
        for figure in block.get("figures", []):
            lines += ["", f"![{figure}]({figure})"]
        lines.append("")
    return "\n".join(lines) + "\n"
