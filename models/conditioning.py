"""What the denoiser is told about the song besides its audio: where each latent frame sits in the beat and
the bar, and which pitch classes the harmony holds there. Both are part of a conditioned denoiser's contract
(``DenoiserConfig.grid_channels`` and ``harmony_channels``), so they are defined once, here, for training,
the engine and the export alike. Pure NumPy.

* **Beat grid** (``beat_grid``): per latent frame, the sine and cosine of the beat's phase and of the bar's,
  at the frame's centre, from a tempo, a meter and the beat the region starts on (the host's, the request's,
  or a beat tracker's).
* **Harmony** (``chord_frames``): per latent frame, the pitch classes of the chord sounding then (1 for a
  chord tone, 0 else), from a chord chart in beats; an estimate read from audio gives weights in [0, 1]
  on the same scale.
* **Chord symbols** (``chord_pitch_classes``, ``parse_chords``): MMA's spelling (``Am7``, ``Cmaj7``,
  ``G7/B``, ``Bm7b5``, ``Dsus4``) and the usual aliases a producer types (``A-7``, ``CM7``, ``Bø``,
  ``C°``, ``C+``), one chord per bar or with its length in beats (``"Am:2 F:2 C G7"``).
"""

from __future__ import annotations

import numpy as np

GRID_CHANNELS = 4  # beat phase (sin, cos), bar phase (sin, cos)
HARMONY_CHANNELS = 12  # pitch classes C to B

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_NOTE_INDEX = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

# Quality suffix (MMA spelling) -> intervals above the root, in semitones.
QUALITIES = {
    "": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10),
    "9": (0, 4, 7, 10, 14), "m9": (0, 3, 7, 10, 14), "6": (0, 4, 7, 9), "m6": (0, 3, 7, 9),
    "sus4": (0, 5, 7), "sus2": (0, 2, 7), "7sus4": (0, 5, 7, 10), "dim": (0, 3, 6), "dim7": (0, 3, 6, 9),
    "m7b5": (0, 3, 6, 10), "aug": (0, 4, 8), "add9": (0, 4, 7, 14),
}
# Other spellings of the same qualities, as producers and lead sheets write them.
_ALIASES = {
    "min": "m", "mi": "m", "-": "m", "min7": "m7", "mi7": "m7", "-7": "m7", "M7": "maj7", "ma7": "maj7",
    "Δ": "maj7", "Δ7": "maj7", "maj": "", "M": "", "ø": "m7b5", "ø7": "m7b5", "-7b5": "m7b5", "°": "dim",
    "o": "dim", "°7": "dim7", "o7": "dim7", "+": "aug", "sus": "sus4", "min9": "m9", "-9": "m9", "min6": "m6",
    "-6": "m6",
}


class ChordError(ValueError):
    """A chord symbol or chord chart that cannot be read; the message says which and why."""


def parse_root(text: str) -> tuple[int, str]:
    """``"Bb7"`` -> (10, ``"7"``): the root's pitch class and the rest of the symbol."""
    if not text or text[0].upper() not in _NOTE_INDEX:
        raise ChordError(f"{text!r}: a chord starts with its root, A to G")
    root, rest = _NOTE_INDEX[text[0].upper()], text[1:]
    while rest[:1] in ("b", "#", "♭", "♯"):
        root += -1 if rest[0] in ("b", "♭") else 1
        rest = rest[1:]
    return root % 12, rest


def chord_pitch_classes(symbol: str) -> tuple[int, tuple[int, ...], int]:
    """(root, sorted pitch classes, bass pitch class) of a chord symbol such as ``"G7/B"``."""
    body, _, bass_text = symbol.partition("/")
    root, quality = parse_root(body)
    quality = _ALIASES.get(quality, quality)
    if quality not in QUALITIES:
        raise ChordError(f"{symbol!r}: unknown chord quality {quality!r}; known: "
                         f"{', '.join(q or 'major' for q in QUALITIES)}")
    pcs = tuple(sorted({(root + i) % 12 for i in QUALITIES[quality]}))
    bass = parse_root(bass_text)[0] if bass_text else root
    return root, pcs, bass


def chord_symbol(root: int, quality: str, bass: int | None = None) -> str:
    name = NOTE_NAMES[root % 12] + quality
    return f"{name}/{NOTE_NAMES[bass % 12]}" if bass is not None and bass % 12 != root % 12 else name


def parse_chords(text: str, beats_per_bar: int) -> list[tuple[float, str]]:
    """A chord chart as a producer types it -> [(start in beats, symbol)].

    Chords are separated by spaces (bar lines ``|`` are ignored); each lasts a bar unless written
    ``symbol:beats``; ``%`` or ``-`` repeats the previous chord for its length. ``"Am F C G7"`` is four bars.
    """
    if beats_per_bar < 1:
        raise ChordError(f"a bar needs at least one beat, got {beats_per_bar}")
    chart, position = [], 0.0
    for token in text.replace("|", " ").replace(",", " ").split():
        symbol, _, length_text = token.partition(":")
        try:
            length = float(length_text) if length_text else float(beats_per_bar)
        except ValueError:
            raise ChordError(f"{token!r}: write a chord's length in beats after a colon, as in Am:2") from None
        if not 0 < length <= 64:
            raise ChordError(f"{token!r}: a chord lasts more than 0 and at most 64 beats")
        if symbol in ("%", "-"):
            if not chart:
                raise ChordError(f"{token!r}: nothing to repeat before the first chord")
            symbol = chart[-1][1]
        else:
            chord_pitch_classes(symbol)  # refuse what cannot be read, with its reason
        chart.append((position, symbol))
        position += length
    if not chart:
        raise ChordError("no chords given: write them as in \"Am F C G7\" (one per bar) or \"Am:2 F:2\" (beats)")
    return chart


def frame_inputs(denoiser_config: dict) -> tuple[tuple[str, int], ...]:
    """(name, channels) of the per-frame conditions a denoiser config takes besides the context: ``grid`` and
    ``harmony`` where its ``grid_channels`` and ``harmony_channels`` are set (none for an unconditioned one)."""
    return tuple((name, int(denoiser_config.get(f"{name}_channels") or 0)) for name in ("grid", "harmony")
                 if denoiser_config.get(f"{name}_channels"))


def frame_beats(frames: int, frame_rate_hz: float, tempo_bpm: float, start_beats: float = 0.0) -> np.ndarray:
    """The beat position (from the song's first downbeat) at the centre of each latent frame."""
    if not 20.0 <= tempo_bpm <= 400.0:
        raise ValueError(f"a tempo of {tempo_bpm} BPM is outside 20-400 BPM")
    seconds = (np.arange(frames, dtype=np.float64) + 0.5) / frame_rate_hz
    return start_beats + seconds * tempo_bpm / 60.0


def beat_grid(frames: int, frame_rate_hz: float, tempo_bpm: float, beats_per_bar: int,
              start_beats: float = 0.0) -> np.ndarray:
    """(GRID_CHANNELS, frames) float32: sin and cos of the beat's phase, then of the bar's, per latent frame.
    ``start_beats``: the beat (from the first downbeat, so 0 is a downbeat) at the region's first sample."""
    return _grid(frame_beats(frames, frame_rate_hz, tempo_bpm, start_beats), beats_per_bar)


def tracked_grid(frames: int, frame_rate_hz: float, beat_seconds: np.ndarray, beats_per_bar: int) -> np.ndarray:
    """``beat_grid`` from tracked beat times (seconds, ascending, at least two): the beat position follows them,
    extended at their period before the first and after the last; the first tracked beat is taken as a downbeat."""
    beat_seconds = np.asarray(beat_seconds, np.float64)
    if len(beat_seconds) < 2 or np.any(np.diff(beat_seconds) <= 0):
        raise ValueError("a tracked grid needs at least two ascending beat times")
    seconds = (np.arange(frames, dtype=np.float64) + 0.5) / frame_rate_hz
    index = np.arange(len(beat_seconds), dtype=np.float64)
    beats = np.interp(seconds, beat_seconds, index)
    first_period, last_period = beat_seconds[1] - beat_seconds[0], beat_seconds[-1] - beat_seconds[-2]
    before, after = seconds < beat_seconds[0], seconds > beat_seconds[-1]
    beats[before] = (seconds[before] - beat_seconds[0]) / first_period
    beats[after] = index[-1] + (seconds[after] - beat_seconds[-1]) / last_period
    return _grid(beats, beats_per_bar)


def _grid(beats: np.ndarray, beats_per_bar: int) -> np.ndarray:
    if beats_per_bar < 1:
        raise ValueError(f"a bar needs at least one beat, got {beats_per_bar}")
    beat_phase = 2 * np.pi * np.mod(beats, 1.0)
    bar_phase = 2 * np.pi * np.mod(beats, beats_per_bar) / beats_per_bar
    return np.stack([np.sin(beat_phase), np.cos(beat_phase), np.sin(bar_phase), np.cos(bar_phase)]).astype(np.float32)


def chord_frames(chords: list[tuple[float, str]], frames: int, frame_rate_hz: float, tempo_bpm: float,
                 start_beats: float = 0.0) -> np.ndarray:
    """(HARMONY_CHANNELS, frames) float32: 1 for the pitch classes of the chord sounding at each latent frame's
    centre (the last chord holds to the end; frames before the first chord are silent)."""
    out = np.zeros((HARMONY_CHANNELS, frames), np.float32)
    if not chords:
        return out
    beats = frame_beats(frames, frame_rate_hz, tempo_bpm, start_beats)
    starts = np.array([start for start, _ in chords], np.float64)
    if np.any(np.diff(starts) < 0):
        raise ChordError("chords must be in time order")
    which = np.searchsorted(starts, beats, side="right") - 1
    for index, (_, symbol) in enumerate(chords):
        columns = which == index
        if columns.any():
            out[np.ix_(list(chord_pitch_classes(symbol)[1]), np.flatnonzero(columns))] = 1.0
    return out
