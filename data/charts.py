"""Chord charts for the MMA source: a seeded progression generator, chords read out of licensed MIDI,
and the chord symbols both are written in.

A ``Chart`` is bars of chords (each chord with its length in beats) at a tempo and a meter. Symbols are
MMA's (``Am7``, ``Cmaj7``, ``G7/B``, ``Bm7b5``, ``Dsus4``): ``chord_pitch_classes`` says which pitch
classes each sounds, so the melody drawn over a chart and the builder's harmony labels agree with what
MMA plays (the symbols themselves are read in ``models/conditioning.py``, which the conditioned denoiser shares).
Pure functions of a ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Chord symbols are the conditioned denoiser's too: one definition, in models/conditioning.py.
from backline.models.conditioning import NOTE_NAMES, QUALITIES, chord_pitch_classes, chord_symbol, parse_root  # noqa: F401
from backline.models.conditioning import ChordError as ChartError  # noqa: F401  (symbols and charts alike)


@dataclass(frozen=True)
class Chart:
    """Chords per bar, each ``(symbol, beats)``; the beats of a bar add up to ``beats_per_bar``."""

    chart_id: str
    bars: tuple[tuple[tuple[str, int], ...], ...]
    tempo_bpm: float
    beats_per_bar: int
    form: str  # which generator form or which MIDI the chords came from
    key: str  # e.g. "A minor", "D dorian"

    @property
    def duration_seconds(self) -> float:
        return len(self.bars) * self.beats_per_bar * 60.0 / self.tempo_bpm

    def mma_lines(self) -> list[str]:
        """The chart as MMA bar lines: one chord per beat, ``/`` to hold the previous one."""
        lines = []
        for number, bar in enumerate(self.bars, 1):
            beats = []
            for symbol, length in bar:
                beats.extend([symbol] + ["/"] * (length - 1))
            lines.append(f"{number} " + " ".join(beats))
        return lines

    def chord_at_beats(self) -> list[tuple[float, str]]:
        """(start beat, symbol) of every chord change."""
        changes, beat = [], 0.0
        for bar in self.bars:
            for symbol, length in bar:
                changes.append((beat, symbol))
                beat += length
        return changes


# Roman-numeral forms: (scale degree in semitones above the tonic, quality). A form is one phrase, repeated.
MAJOR_FORMS = {
    "I-V-vi-IV": [(0, ""), (7, ""), (9, "m"), (5, "")],
    "I-vi-IV-V": [(0, ""), (9, "m"), (5, ""), (7, "")],
    "vi-IV-I-V": [(9, "m"), (5, ""), (0, ""), (7, "")],
    "ii-V-I-VI7": [(2, "m7"), (7, "7"), (0, "maj7"), (9, "7")],
    "I-IV-ii-V": [(0, "maj7"), (5, "maj7"), (2, "m7"), (7, "7")],
    "I-III7-IV-iv": [(0, ""), (4, "7"), (5, ""), (5, "m")],
    "I-V/VII-vi-I/V-IV-I/III-ii-V": [(0, ""), (7, "/11"), (9, "m"), (0, "/7"), (5, ""), (0, "/4"), (2, "m"), (7, "7")],
    "I-II7-IV-I": [(0, ""), (2, "7"), (5, ""), (0, "")],
    "I-vi-ii-V7": [(0, "6"), (9, "m7"), (2, "m7"), (7, "7")],
    "I-IV-I-V-sus": [(0, ""), (5, "add9"), (0, ""), (7, "7sus4")],
}
MINOR_FORMS = {
    "i-VI-III-VII": [(0, "m"), (8, ""), (3, ""), (10, "")],
    "i-iv-v-i": [(0, "m"), (5, "m"), (7, "m"), (0, "m")],
    "i-VII-VI-V7": [(0, "m"), (10, ""), (8, ""), (7, "7")],
    "ii7b5-V7-i": [(2, "m7b5"), (7, "7"), (0, "m7"), (0, "m7")],
    "i-iv-VII-III": [(0, "m7"), (5, "m7"), (10, "7"), (3, "maj7")],
    "i-i/VII-i/VI-V7": [(0, "m"), (0, "m/10"), (0, "m/8"), (7, "7")],
    "i-vidim-V7-i": [(0, "m"), (9, "dim7"), (7, "7"), (0, "m")],
}
MODAL_FORMS = {  # vamps: the mode's colour chord against the tonic
    "dorian vamp": ("dorian", [(0, "m7"), (5, "7")]),
    "mixolydian vamp": ("mixolydian", [(0, "7"), (10, "")]),
    "lydian vamp": ("lydian", [(0, "maj7"), (2, "")]),
    "phrygian vamp": ("phrygian", [(0, "m"), (1, "")]),
}
BLUES_12 = [(0, "7"), (5, "7"), (0, "7"), (0, "7"), (5, "7"), (5, "7"), (0, "7"), (0, "7"), (7, "7"), (5, "7"), (0, "7"), (7, "7")]
MINOR_BLUES_12 = [(0, "m7"), (5, "m7"), (0, "m7"), (0, "m7"), (5, "m7"), (5, "m7"), (0, "m7"), (0, "m7"),
                  (8, "7"), (7, "7"), (0, "m7"), (7, "7")]
FORMS = (list(MAJOR_FORMS) + list(MINOR_FORMS) + list(MODAL_FORMS)
         + ["12-bar blues", "12-bar minor blues", "descending bass", "secondary dominants"])


def _spell(tonic: int, degree: int, quality: str) -> str:
    quality, _, over = quality.partition("/")
    root = (tonic + degree) % 12
    return chord_symbol(root, quality, (tonic + int(over)) % 12 if over else None)


def _form_chords(form: str, tonic: int, rng: np.random.Generator) -> tuple[list[str], str]:
    """One phrase of ``form`` in the key of ``tonic``: chord symbols, one per slot, and the key's name."""
    if form in MAJOR_FORMS:
        return [_spell(tonic, d, q) for d, q in MAJOR_FORMS[form]], f"{NOTE_NAMES[tonic]} major"
    if form in MINOR_FORMS:
        return [_spell(tonic, d, q) for d, q in MINOR_FORMS[form]], f"{NOTE_NAMES[tonic]} minor"
    if form in MODAL_FORMS:
        mode, chords = MODAL_FORMS[form]
        return [_spell(tonic, d, q) for d, q in chords], f"{NOTE_NAMES[tonic]} {mode}"
    if form == "12-bar blues":
        return [_spell(tonic, d, q) for d, q in BLUES_12], f"{NOTE_NAMES[tonic]} blues"
    if form == "12-bar minor blues":
        return [_spell(tonic, d, q) for d, q in MINOR_BLUES_12], f"{NOTE_NAMES[tonic]} minor blues"
    if form == "descending bass":  # I - I/VII - vi - vi/V - IV - I/III - ii - V
        line = [(0, ""), (0, "/11"), (9, "m"), (9, "m/7"), (5, ""), (0, "/4"), (2, "m7"), (7, "7")]
        return [_spell(tonic, d, q) for d, q in line], f"{NOTE_NAMES[tonic]} major"
    if form == "secondary dominants":  # I - V/vi - vi - V/V - V - V/IV - IV - V7
        line = [(0, "maj7"), (4, "7"), (9, "m7"), (2, "7"), (7, ""), (0, "7"), (5, "maj7"), (7, "7")]
        return [_spell(tonic, d, q) for d, q in line], f"{NOTE_NAMES[tonic]} major"
    raise ChartError(f"unknown form {form!r}; known: {', '.join(FORMS)}")


def generate_chart(chart_id: str, rng: np.random.Generator, *, beats_per_bar: int, tempo_bpm: float,
                   bars_range: tuple[int, int] = (8, 32)) -> Chart:
    """A chart in a random key and form: 8 to 32 bars, one or two chords per bar, phrases repeated.

    Blues forms keep one chord per bar; others sometimes take two per bar (4/4 and other even meters).
    """
    form = FORMS[int(rng.integers(len(FORMS)))]
    tonic = int(rng.integers(12))
    chords, key = _form_chords(form, tonic, rng)
    per_bar = 2 if beats_per_bar % 2 == 0 and beats_per_bar >= 4 and "blues" not in form and rng.random() < 0.3 else 1
    bars_wanted = int(rng.integers(bars_range[0], bars_range[1] + 1))
    slots = []
    while len(slots) < bars_wanted * per_bar:
        slots.extend(chords)
    slots = slots[: bars_wanted * per_bar]
    if "blues" in form:  # whole choruses only
        bars_wanted = max(12, (bars_wanted // 12) * 12)
        slots = (chords * (bars_wanted // 12))[:bars_wanted]
    bars = []
    for b in range(len(slots) // per_bar):
        if per_bar == 1:
            bars.append(((slots[b], beats_per_bar),))
        else:
            half = beats_per_bar // 2
            bars.append(((slots[2 * b], half), (slots[2 * b + 1], beats_per_bar - half)))
    return Chart(chart_id, tuple(bars), round(float(tempo_bpm), 1), beats_per_bar, form, key)


def chords_from_notes(notes: list[tuple[float, float, int, int]], beats_total: float, beats_per_bar: int
                      ) -> list[str]:
    """One chord per bar from ``(start_beat, end_beat, midi_note, velocity)`` notes (drums excluded).

    Each bar's pitch classes are weighted by duration and velocity, the lowest sounding note counts
    double as the bass, and the best-matching triad or seventh template wins (cosine). A silent bar
    repeats the previous chord.
    """
    templates = []
    for quality in ("", "m", "7", "maj7", "m7", "dim", "sus4"):
        for root in range(12):
            vector = np.zeros(12)
            for interval in QUALITIES[quality]:
                vector[(root + interval) % 12] = 1.0
            vector[root] += 0.5
            templates.append((chord_symbol(root, quality), vector / np.linalg.norm(vector)))
    bars = int(np.ceil(beats_total / beats_per_bar))
    chords, previous = [], None
    for bar in range(bars):
        lo, hi = bar * beats_per_bar, (bar + 1) * beats_per_bar
        weights, lowest = np.zeros(12), None
        for start, end, note, velocity in notes:
            overlap = min(end, hi) - max(start, lo)
            if overlap <= 0:
                continue
            weights[note % 12] += overlap * velocity
            lowest = note if lowest is None or note < lowest else lowest
        if lowest is None or weights.sum() == 0:
            chords.append(previous or "C")
            continue
        weights[lowest % 12] += weights.max()
        weights /= np.linalg.norm(weights)
        symbol = max(templates, key=lambda t: float(t[1] @ weights))[0]
        chords.append(symbol)
        previous = symbol
    return chords


# Krumhansl-Kessler key profiles (major, minor), tonic first.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(symbols: list[str]) -> str:
    """The major or minor key whose Krumhansl-Kessler profile best fits the chords' pitch classes."""
    weights = np.zeros(12)
    for symbol in symbols:
        root, pcs, bass = chord_pitch_classes(symbol)
        weights[list(pcs)] += 1.0
        weights[root] += 0.5
    best, name = -np.inf, "C major"
    for tonic in range(12):
        for profile, mode in ((_MAJOR_PROFILE, "major"), (_MINOR_PROFILE, "minor")):
            score = float(np.corrcoef(weights, np.roll(profile, tonic))[0, 1])
            if score > best:
                best, name = score, f"{NOTE_NAMES[tonic]} {mode}"
    return name
