"""Stems as MIDI: bass through basic-pitch's note model (ONNX, onnxruntime), drums through band onsets.

Bass: the ``nmp.onnx`` network that ships inside the ``basic-pitch`` 0.4.0 wheel (Bittner et al.,
ICASSP 2022) runs on 2-second windows of 22.05 kHz mono audio; its CQT front-end is inside the
graph, so only windowing is done here. Its frame and onset activations are decoded into notes as
basic-pitch's ``output_to_notes_polyphonic`` does (onset peaks above a threshold, held while the
frame activation stays above another), re-implemented in numpy so neither TensorFlow nor librosa is
imported. basic-pitch is never imported either: only the model file is read from its install path.
A bass line is kept to one note at a time (the strongest of onsets within 50 ms; a note ends where
the next begins), which removes most ghost notes on harmonics.

Drums: spectral flux in three bands (kick: low, snare: low-mid body plus mid noise, hi-hat: high),
peaks picked per band with an adaptive threshold; a hit in one band that is only the spill of a
stronger hit in another is dropped. Classes map to General MIDI notes 36 (kick), 38 (snare), 42 (hat).

Every function takes and returns seconds; ``to_midi`` writes the tempo into the file and
``quantize_notes`` snaps notes to a grid (``"1/16"``) when the tempo is known. Detection settings
were tuned on train-split renders of the data build, never on its test split.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from backline.engine.audio import AudioError, resample, to_mono, validate_audio

INSTRUMENTS = ("bass", "drums")
MODEL_ENV = "BACKLINE_BASIC_PITCH_MODEL"  # a path to nmp.onnx, overriding the installed package's

# basic-pitch's model contract (basic_pitch/constants.py, 0.4.0)
BP_SAMPLE_RATE = 22_050
BP_HOP = 256
BP_WINDOW = 2 * BP_SAMPLE_RATE - BP_HOP  # 43 844 samples in, 172 frames out
BP_FRAMES = 172
BP_OVERLAP_FRAMES = 30
BP_MIDI_OFFSET = 21  # the 88 outputs are piano keys A0..C8
# Onsets come out ~20 ms late against the MIDI on renders of the train split (tuned there, never on test).
BP_TIME_OFFSET_SECONDS = -0.02

GM_DRUMS = {"kick": 36, "snare": 38, "hat": 42}
DRUM_CLASS_OF_NOTE = {35: "kick", 36: "kick", 38: "snare", 40: "snare", 37: "snare", 39: "snare",
                      42: "hat", 44: "hat", 46: "hat"}


@dataclass(frozen=True)
class Note:
    start_seconds: float
    end_seconds: float
    pitch: int  # MIDI note number
    velocity: int = 100


@dataclass(frozen=True)
class BassSettings:
    onset_threshold: float = 0.5
    frame_threshold: float = 0.3
    min_note_seconds: float = 0.04
    min_pitch: int = 24  # C1
    max_pitch: int = 72  # C5: bass lines and their octave doublings
    monophonic: bool = True  # keep the strongest of notes starting together (harmonics, octave ghosts)
    # The note model hears some synth basses an octave high but still activates the true octave: move a
    # note down when the activation an octave below averages at least this share of its own (0: never).
    octave_ratio: float = 0.5


@dataclass(frozen=True)
class DrumSettings:
    # Peak flux relative to the band's 99.5th percentile, per class. Tuned on 60 s of 14 train-split
    # drum stems of the full build (never on test); see training/reports/transcription.md.
    thresholds: tuple[tuple[str, float], ...] = (("kick", 0.6), ("snare", 0.8), ("hat", 0.3))
    min_gap_seconds: float = 0.05
    spill_ratio: float = 0.5  # a band peak below this share of a simultaneous stronger band's is spill
    time_offset_seconds: float = 0.01  # centres the onset error on zero (median over train-split hits)


def model_path() -> Path:
    """The basic-pitch ONNX file: ``$BACKLINE_BASIC_PITCH_MODEL``, else a copy shipped under
    ``models/transcription/basic_pitch_nmp.onnx``, else the installed ``basic-pitch`` package's."""
    override = os.environ.get(MODEL_ENV)
    vendored = _vendored_model()
    if override:
        path = Path(override)
    elif vendored is not None:
        path = vendored
    else:
        spec = importlib.util.find_spec("basic_pitch")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("bass transcription needs basic-pitch's model: "
                               "pip install --no-deps basic-pitch==0.4.0 (TensorFlow is not needed)")
        path = Path(list(spec.submodule_search_locations)[0]) / "saved_models" / "icassp_2022" / "nmp.onnx"
    if not path.is_file():
        raise RuntimeError(f"{path}: basic-pitch's ONNX model is missing")
    return path


def _vendored_model() -> Path | None:
    spec = importlib.util.find_spec("backline.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "transcription" / "basic_pitch_nmp.onnx"
    return path if path.is_file() else None


_SESSION = None


def _session():
    global _SESSION
    if _SESSION is None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        _SESSION = ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
    return _SESSION


def _mono(audio: np.ndarray, sample_rate: int, rate_out: int) -> np.ndarray:
    audio = validate_audio(audio, sample_rate, what="stem")
    return resample(to_mono(audio), sample_rate, rate_out)[0]


def bass_activations(audio: np.ndarray, sample_rate: int, *, batch: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run basic-pitch on ``audio``: ``(frame_times_seconds, note (T, 88), onset (T, 88))``."""
    mono = _mono(audio, sample_rate, BP_SAMPLE_RATE)
    overlap = BP_OVERLAP_FRAMES * BP_HOP
    hop = BP_WINDOW - overlap
    padded = np.concatenate([np.zeros(overlap // 2, np.float32), mono])
    starts = list(range(0, len(padded), hop))
    windows = np.zeros((len(starts), BP_WINDOW, 1), np.float32)
    for i, start in enumerate(starts):
        chunk = padded[start:start + BP_WINDOW]
        windows[i, :len(chunk), 0] = chunk
    session = _session()
    notes, onsets = [], []
    for i in range(0, len(windows), batch):
        note, onset = session.run(["StatefulPartitionedCall:1", "StatefulPartitionedCall:2"],
                                  {"serving_default_input_2:0": windows[i:i + batch]})
        notes.append(note)
        onsets.append(onset)
    keep = slice(BP_OVERLAP_FRAMES // 2, BP_FRAMES - BP_OVERLAP_FRAMES // 2)
    note = np.concatenate(notes)[:, keep]
    onset = np.concatenate(onsets)[:, keep]
    # the exact time of every kept frame: window start + frame hop, less the leading pad
    frame_index = np.arange(keep.start, keep.stop)
    times = (np.array(starts)[:, None] + frame_index[None] * BP_HOP - overlap // 2) / BP_SAMPLE_RATE
    times = times.reshape(-1) + BP_TIME_OFFSET_SECONDS
    note, onset = note.reshape(-1, 88), onset.reshape(-1, 88)
    valid = times < len(mono) / BP_SAMPLE_RATE
    return times[valid], note[valid], onset[valid]


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """Boolean mask of strict local maxima along axis 0 (scipy's argrelmax, order 1)."""
    mask = np.zeros(x.shape, bool)
    mask[1:-1] = (x[1:-1] > x[:-2]) & (x[1:-1] > x[2:])
    return mask


def decode_notes(times: np.ndarray, note: np.ndarray, onset: np.ndarray, settings: BassSettings = BassSettings()) -> list[Note]:
    """Note events from basic-pitch activations (onset peaks held while the frame activation lasts)."""
    note = note.copy()
    onset = onset.copy()
    low, high = settings.min_pitch - BP_MIDI_OFFSET, settings.max_pitch - BP_MIDI_OFFSET + 1
    for activation in (note, onset):
        activation[:, :max(low, 0)] = 0
        activation[:, high:] = 0
    # onsets inferred from rises of the frame activation, as basic-pitch's infer_onsets does
    rise1, rise2 = np.zeros_like(note), np.zeros_like(note)
    rise1[1:] = note[1:] - note[:-1]
    rise2[2:] = note[2:] - note[:-2]
    inferred = np.clip(np.minimum(rise1, rise2), 0, None)
    inferred[:2] = 0
    if inferred.max() > 0:
        inferred *= onset.max() / inferred.max()
    onset = np.maximum(onset, inferred)
    peaks = _local_maxima(onset) & (onset >= settings.onset_threshold)
    frames_per_second = 1.0 / max(np.median(np.diff(times)) if len(times) > 1 else BP_HOP / BP_SAMPLE_RATE, 1e-6)
    min_frames = max(1, int(round(settings.min_note_seconds * frames_per_second)))
    energy = note.copy()
    tolerance = 11
    events: list[tuple[int, int, int, float]] = []
    n_frames = len(times)
    for t, f in sorted(zip(*np.nonzero(peaks)), key=lambda tf: -tf[0]):  # backwards in time, as basic-pitch
        if t >= n_frames - 1:
            continue
        i, k = t + 1, 0
        while i < n_frames - 1 and k < tolerance:
            k = k + 1 if energy[i, f] < settings.frame_threshold else 0
            i += 1
        i -= k
        if i - t <= min_frames:
            continue
        energy[t:i, max(f - 1, 0):f + 2] = 0
        events.append((t, i, f, float(note[t:i, f].mean())))
    if settings.monophonic:
        events = _monophonic(events, frames_per_second)
    notes = []
    for t, i, f, amplitude in sorted(events):
        if settings.octave_ratio > 0 and f - 12 >= max(low, 0):
            if note[t:i, f - 12].mean() >= settings.octave_ratio * note[t:i, f].mean():
                f -= 12
        end = times[min(i, n_frames - 1)]
        notes.append(Note(max(float(times[t]), 0.0), max(float(end), 0.0), int(f + BP_MIDI_OFFSET),
                          int(np.clip(round(127 * amplitude), 1, 127))))
    return notes


def _monophonic(events: list[tuple[int, int, int, float]], frames_per_second: float) -> list[tuple[int, int, int, float]]:
    """Among notes starting within 50 ms of each other keep the strongest; cut a note where the next begins."""
    window = max(1, int(round(0.05 * frames_per_second)))
    events = sorted(events)
    kept: list[tuple[int, int, int, float]] = []
    for event in events:
        if kept and event[0] - kept[-1][0] <= window:
            if event[3] > kept[-1][3]:
                kept[-1] = event
            continue
        kept.append(event)
    out = []
    for current, following in zip(kept, kept[1:] + [None]):
        end = current[1] if following is None else min(current[1], following[0])
        if end > current[0]:
            out.append((current[0], end, current[2], current[3]))
    return out


def transcribe_bass(audio: np.ndarray, sample_rate: int, settings: BassSettings = BassSettings()) -> list[Note]:
    """Notes of a bass stem (seconds, MIDI pitch), sorted by start."""
    times, note, onset = bass_activations(audio, sample_rate)
    if len(times) == 0:
        return []
    return decode_notes(times, note, onset, settings)


# ---- drums ----------------------------------------------------------------------------------------

DRUM_SAMPLE_RATE = 22_050
DRUM_FFT = 1024
DRUM_HOP = 128  # 5.8 ms
# (low Hz, high Hz, weight) per class; the snare's band mixes its body and its wires.
DRUM_BANDS = {
    "kick": ((30.0, 120.0, 1.0),),
    "snare": ((180.0, 350.0, 0.5), (1500.0, 5000.0, 1.0)),
    "hat": ((7000.0, 11_000.0, 1.0),),
}


def stft_magnitude(mono: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with a Hann window, frames centred on ``k * hop``: shape (frames, n_fft // 2 + 1)."""
    padded = np.pad(mono.astype(np.float32), (n_fft // 2, n_fft // 2))
    count = 1 + max(0, (len(padded) - n_fft) // hop)
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    return np.abs(np.fft.rfft(padded[index] * window, axis=1)).astype(np.float32)


def drum_band_flux(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(frame_times_seconds, {class: onset strength (frames,)})``: half-wave rectified log-flux per band."""
    mono = _mono(audio, sample_rate, DRUM_SAMPLE_RATE)
    spectrum = stft_magnitude(mono, DRUM_FFT, DRUM_HOP)
    freqs = np.fft.rfftfreq(DRUM_FFT, 1 / DRUM_SAMPLE_RATE)
    log_spec = np.log1p(1000.0 * spectrum)
    flux = np.diff(log_spec, axis=0, prepend=log_spec[:1])
    flux = np.clip(flux, 0, None)
    times = np.arange(len(spectrum)) * DRUM_HOP / DRUM_SAMPLE_RATE
    bands = {}
    for name, parts in DRUM_BANDS.items():
        total = np.zeros(len(spectrum), np.float32)
        for low, high, weight in parts:
            select = (freqs >= low) & (freqs < high)
            total += weight * flux[:, select].mean(axis=1)
        bands[name] = total
    return times, bands


def _pick(strength: np.ndarray, threshold: float, min_gap: int) -> np.ndarray:
    """Frames of local maxima above ``threshold`` and above a moving mean, at least ``min_gap`` apart."""
    if len(strength) < 3:
        return np.zeros(0, int)
    kernel = np.ones(2 * min_gap + 1) / (2 * min_gap + 1)
    local_mean = np.convolve(strength, kernel, mode="same")
    candidates = np.nonzero(_local_maxima(strength) & (strength >= threshold) & (strength > 1.5 * local_mean))[0]
    picked: list[int] = []
    for frame in candidates[np.argsort(-strength[candidates])]:  # strongest first
        if all(abs(frame - other) >= min_gap for other in picked):
            picked.append(int(frame))
    return np.array(sorted(picked), int)


def transcribe_drums(audio: np.ndarray, sample_rate: int, settings: DrumSettings = DrumSettings()) -> list[Note]:
    """Kick (36), snare (38) and hi-hat (42) hits of a drum stem, 50 ms long each, sorted by start."""
    times, bands = drum_band_flux(audio, sample_rate)
    return drums_from_flux(times, bands, settings)


def drums_from_flux(times: np.ndarray, bands: dict[str, np.ndarray], settings: DrumSettings = DrumSettings()) -> list[Note]:
    """Pick hits from ``drum_band_flux``'s output (split out so settings can be tuned without recomputing)."""
    min_gap = max(1, int(round(settings.min_gap_seconds * DRUM_SAMPLE_RATE / DRUM_HOP)))
    scale = {name: float(np.percentile(s, 99.5)) if s.size else 0.0 for name, s in bands.items()}
    normalised = {name: bands[name] / scale[name] if scale[name] > 1e-6 else np.zeros_like(bands[name])
                  for name in bands}
    notes = []
    near = 2  # frames: hits in different bands this close are one event
    for name, strength in normalised.items():
        for frame in _pick(strength, dict(settings.thresholds)[name], min_gap):
            lo, hi = max(frame - near, 0), frame + near + 1
            own = strength[lo:hi].max()
            # spill: e.g. a snare's low body seen by the kick band, much weaker than the snare itself
            others = [normalised[o][lo:hi].max() for o in normalised if o != name]
            if others and own < settings.spill_ratio * max(others):
                continue
            velocity = int(np.clip(round(40 + 60 * min(own, 1.5)), 1, 127))
            start = max(float(times[frame]) + settings.time_offset_seconds, 0.0)
            notes.append(Note(start, start + 0.05, GM_DRUMS[name], velocity))
    return sorted(notes, key=lambda n: (n.start_seconds, n.pitch))


def transcribe(audio: np.ndarray, sample_rate: int, instrument: str) -> list[Note]:
    """Notes of a bass or drum stem; raises ``AudioError`` for unusable audio."""
    if instrument not in INSTRUMENTS:
        raise ValueError(f"instrument must be one of {', '.join(INSTRUMENTS)}, got {instrument!r}")
    audio = validate_audio(audio, sample_rate, what="stem")
    if instrument == "bass":
        return transcribe_bass(audio, sample_rate)
    return transcribe_drums(audio, sample_rate)


# ---- MIDI -----------------------------------------------------------------------------------------

def parse_grid(quantize: str) -> Fraction:
    """``"1/16"`` -> the grid step as a fraction of a whole note; raises ``ValueError`` otherwise."""
    try:
        step = Fraction(quantize)
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f"quantize must be a note value such as 1/8 or 1/16, got {quantize!r}") from error
    if not 0 < step <= 1:
        raise ValueError(f"quantize must be a note value such as 1/8 or 1/16, got {quantize!r}")
    return step


def quantize_notes(notes: list[Note], bpm: float, quantize: str, *, start_seconds: float = 0.0) -> list[Note]:
    """Snap starts and ends to a grid of ``quantize`` (a whole note = 4 beats) at ``bpm``, from ``start_seconds``."""
    step_seconds = float(parse_grid(quantize)) * 4 * 60.0 / bpm
    out = []
    for note in notes:
        start = start_seconds + round((note.start_seconds - start_seconds) / step_seconds) * step_seconds
        end = start_seconds + round((note.end_seconds - start_seconds) / step_seconds) * step_seconds
        out.append(Note(max(start, 0.0), max(end, start + step_seconds), note.pitch, note.velocity))
    return out


def to_midi(notes: list[Note], instrument: str, *, bpm: float = 120.0, ticks_per_beat: int = 480,
            bass_program: int = 33):
    """A one-track ``mido.MidiFile`` carrying ``bpm`` as its tempo; drums on channel 10."""
    import mido

    if not (np.isfinite(bpm) and 20 <= bpm <= 400):
        raise ValueError(f"bpm must be within 20..400, got {bpm}")
    channel = 9 if instrument == "drums" else 0
    ticks_per_second = ticks_per_beat * bpm / 60.0
    events: list[tuple[int, int, mido.Message]] = []  # (tick, order: offs before ons, message)
    for note in notes:  # a note that sounds from the very start may be estimated a frame early: it starts at 0
        on = max(0, int(round(note.start_seconds * ticks_per_second)))
        off = max(on + 1, int(round(note.end_seconds * ticks_per_second)))
        events.append((on, 1, mido.Message("note_on", channel=channel, note=note.pitch, velocity=note.velocity)))
        events.append((off, 0, mido.Message("note_off", channel=channel, note=note.pitch, velocity=0)))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    if instrument == "bass":
        track.append(mido.Message("program_change", channel=0, program=bass_program, time=0))
    previous = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(message.copy(time=tick - previous))
        previous = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    return midi


def midi_notes(midi, channels: set[int] | None = None) -> list[Note]:
    """Notes of a ``mido.MidiFile`` in seconds (following its tempo map), optionally of some channels."""
    notes, sounding = [], {}
    now = 0.0
    for message in midi:  # mido converts delta ticks to seconds through the tempo map
        now += message.time
        if message.type not in ("note_on", "note_off"):
            continue
        if channels is not None and message.channel not in channels:
            continue
        key = (message.channel, message.note)
        if message.type == "note_on" and message.velocity > 0:
            if key in sounding:  # retrigger: end the previous one here
                start, velocity = sounding.pop(key)
                notes.append(Note(start, now, message.note, velocity))
            sounding[key] = (now, message.velocity)
        elif key in sounding:
            start, velocity = sounding.pop(key)
            notes.append(Note(start, now, message.note, velocity))
    for (channel, pitch), (start, velocity) in sounding.items():
        notes.append(Note(start, now, pitch, velocity))
    return sorted(notes, key=lambda n: (n.start_seconds, n.pitch))


@dataclass(frozen=True)
class StemMidi:
    """A stem transcribed as a Standard MIDI File, and the tempo written into it."""

    data: bytes
    bpm: float
    tempo_source: str  # "given", or "estimated" (engine/tempo.py, from ``tempo_audio`` or the stem)


def stem_to_midi(audio: np.ndarray, sample_rate: int, instrument: str, *, bpm: float | None = None,
                 tempo_audio: np.ndarray | None = None, quantize: str | None = None,
                 start_seconds: float = 0.0) -> StemMidi:
    """A stem as MIDI (what ``backline generate --midi``, ``transcribe`` and the bridge hand out), at ``bpm``
    when given, else at the tempo estimated from ``tempo_audio`` (the context, at ``sample_rate``) or the stem,
    so its bars line up in a DAW set to the song's tempo."""
    import io

    from backline.engine.tempo import estimate_tempo

    source = "given"
    if bpm is None:
        bpm, _ = estimate_tempo(audio if tempo_audio is None else tempo_audio, sample_rate)
        source = "estimated"
    notes = transcribe(audio, sample_rate, instrument)
    if quantize is not None:
        notes = quantize_notes(notes, bpm, quantize, start_seconds=start_seconds)
    buffer = io.BytesIO()
    to_midi(notes, instrument, bpm=bpm).save(file=buffer)
    return StemMidi(buffer.getvalue(), float(bpm), source)


def transcribe_file(path: str | Path, instrument: str, out: str | Path, *, bpm: float | None = None,
                    quantize: str | None = None, start_seconds: float = 0.0) -> dict:
    """Transcribe an audio file into a MIDI file; returns a summary (notes, tempo and where it came from, grid)."""
    from backline.engine.audio import read_audio

    import mido

    audio, sample_rate = read_audio(path)
    midi = stem_to_midi(audio, sample_rate, instrument, bpm=bpm, quantize=quantize, start_seconds=start_seconds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(midi.data)
    notes = sum(m.type == "note_on" for m in mido.MidiFile(str(out)))
    return {"notes": notes, "bpm": midi.bpm, "tempo_source": midi.tempo_source, "quantize": quantize, "out": str(out)}


__all__ = ["AudioError", "BassSettings", "DrumSettings", "Note", "midi_notes", "quantize_notes", "stem_to_midi", "StemMidi",
           "to_midi", "transcribe", "transcribe_bass", "transcribe_drums", "transcribe_file"]
