"""Harmony of a stem against its context: the context's pitch classes over time, and the share of a stem's
pitched energy (or of its notes) that falls in them.

``chroma``, ``context_chroma_weights`` and ``harmonic_fit_from`` are the harmonic fit of
``backline eval accompaniment`` (``training/fit_metrics.py`` imports them from here): pitch-class energy
of spectral peaks between 30 Hz and 2 kHz every 100 ms, the context's smoothed over +-0.5 s and divided by
each frame's strongest. ``note_chroma`` and ``in_key_share`` apply the same measure to the notes the
autoencoder's note head reads from a stem's latents, which is how ``generate`` picks the most in-key of
several bass takes (``GenerateRequest.candidates``) before decoding any of them. Pure numpy.
"""

from __future__ import annotations

import numpy as np
import soxr

CHROMA_RATE = 11_025
CHROMA_FFT = 8192  # 1.35 Hz bins: bass semitones are 2-3 Hz apart around 40 Hz
CHROMA_HOP_SECONDS = 0.1


def _resample(audio: np.ndarray, sample_rate: int, rate_out: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    if sample_rate == rate_out:
        return audio
    return soxr.resample(audio, sample_rate, rate_out, quality="HQ").astype(np.float32)


def stft_power(mono: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|² with a Hann window, frames centred on ``k * hop``: (frames, n_fft // 2 + 1)."""
    padded = np.pad(np.asarray(mono, np.float32), (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # a view: nothing copied
    out = np.empty((len(frames), n_fft // 2 + 1), np.float32)
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    step = max(1, 250_000 // n_fft)  # bounded memory for long files; small blocks stay in cache
    for first in range(0, len(frames), step):
        spectrum = np.fft.rfft(frames[first:first + step] * window, axis=1)
        out[first:first + len(spectrum)] = spectrum.real ** 2 + spectrum.imag ** 2
    return out


def chroma(audio: np.ndarray, sample_rate: int, *, peaks_only: bool = True) -> np.ndarray:
    """(frames, 12) pitch-class energy every 100 ms (C = 0), from spectral peaks between 30 Hz and 2 kHz."""
    mono = _resample(audio, sample_rate, CHROMA_RATE)
    hop = int(round(CHROMA_HOP_SECONDS * CHROMA_RATE))
    power = stft_power(mono, CHROMA_FFT, hop)
    freqs = np.fft.rfftfreq(CHROMA_FFT, 1 / CHROMA_RATE)
    band = (freqs >= 30.0) & (freqs <= 2000.0)
    power, freqs = power[:, band], freqs[band]
    if peaks_only:  # keep spectral peaks within 40 dB of the frame's strongest: pitched partials, not noise
        peak = np.zeros(power.shape, bool)
        peak[:, 1:-1] = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
        peak &= power >= 1e-4 * power.max(axis=1, keepdims=True)
        power = np.where(peak, power, 0.0)
    pitch_class = np.round(12 * np.log2(freqs / 440.0) + 69).astype(int) % 12
    out = np.zeros((len(power), 12), np.float64)
    for pc in range(12):
        out[:, pc] = power[:, pitch_class == pc].sum(axis=1)
    return out


def _smooth_time(x: np.ndarray, frames: int) -> np.ndarray:
    if frames <= 0:
        return x
    kernel = np.ones(2 * frames + 1) / (2 * frames + 1)
    return np.stack([np.convolve(x[:, i], kernel, mode="same") for i in range(x.shape[1])], axis=1)


def context_chroma_weights(context: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 12) weight of each pitch class in the context: smoothed chroma over its frame maximum."""
    c = _smooth_time(chroma(context, sample_rate), int(round(0.5 / CHROMA_HOP_SECONDS)))
    strongest = c.max(axis=1, keepdims=True)
    floor = 1e-12 * max(float(c.max()), 1e-30)
    return np.divide(c, strongest, out=np.zeros_like(c), where=strongest > floor)


def context_harmony(context: np.ndarray, sample_rate: int, frames: int, frame_rate_hz: float) -> np.ndarray:
    """(12, frames) float32: ``context_chroma_weights`` at each latent frame's centre, the harmony a conditioned
    denoiser is told when no chords are given (``models/conditioning.py``: 1 is a chord tone's weight)."""
    weights = context_chroma_weights(context, sample_rate)
    if not len(weights):
        return np.zeros((12, frames), np.float32)
    index = np.floor((np.arange(frames) + 0.5) / frame_rate_hz / CHROMA_HOP_SECONDS + 0.5).astype(int)
    return weights[np.minimum(index, len(weights) - 1)].T.astype(np.float32)


def harmonic_fit_from(stem_chroma: np.ndarray, context_weights: np.ndarray) -> float:
    n = min(len(stem_chroma), len(context_weights))
    s, w = stem_chroma[:n], context_weights[:n]
    active = w.max(axis=1) > 0
    total = s[active].sum()
    if total <= 0:
        return float("nan")
    return float((s[active] * w[active]).sum() / total)


def note_chroma(note_logits: np.ndarray, *, lowest_midi: int, frame_seconds: float) -> np.ndarray:
    """Note logits (classes, frames), class 0 "no note", one frame every ``frame_seconds`` -> (chroma frames, 12):
    each frame's probability of each pitch class (the note head's softmax, "no note" left out), summed
    into ``CHROMA_HOP_SECONDS`` frames as ``chroma``'s are."""
    logits = np.asarray(note_logits, np.float64)
    probability = np.exp(logits - logits.max(axis=0, keepdims=True))
    probability /= probability.sum(axis=0, keepdims=True)
    pitch_class = (lowest_midi + np.arange(logits.shape[0] - 1)) % 12
    per_frame = np.stack([probability[1:][pitch_class == pc].sum(axis=0) for pc in range(12)], axis=1)
    index = np.floor((np.arange(logits.shape[1]) + 0.5) * frame_seconds / CHROMA_HOP_SECONDS + 0.5).astype(int)  # nearest
    out = np.zeros((int(index.max(initial=-1)) + 1, 12))
    np.add.at(out, index, per_frame)
    return out


def in_key_share(note_logits: np.ndarray, context_weights: np.ndarray, *, lowest_midi: int,
                 frame_seconds: float) -> float:
    """The harmonic fit of a stem's notes (``note_chroma``) against ``context_chroma_weights``; NaN where the
    context is silent or the notes add up to less than half a frame."""
    notes = note_chroma(note_logits, lowest_midi=lowest_midi, frame_seconds=frame_seconds)
    if notes.sum() < 0.5:  # not even half a frame's worth of notes: a silent take, nothing to judge
        return float("nan")
    return harmonic_fit_from(notes, context_weights)
