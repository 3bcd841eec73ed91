"""The tempo and the beats of a recording, estimated from its onsets: for MIDI that lines up in a DAW when no
tempo is given, and for a beat grid when the host gives none.

An onset-strength envelope (half-wave rectified log-spectral flux, 86 frames per second) is
autocorrelated; each tempo from 60 to 200 BPM scores the autocorrelation at its beat period and at 2, 4
and 8 beats (two bars' worth of evidence), weighted by a log-normal prior around 110 BPM (0.7 octaves)
that settles octave ambiguity the way producers count. The weights were chosen on 120 contexts of the
broad MMA build (``backline eval tempo`` measures it on any split). The beats are then placed by dynamic
programming (Ellis 2007): each beat on strong onsets, each gap close to the tempo's period. Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from backline.engine.audio import resample, to_mono, validate_audio

TEMPO_SAMPLE_RATE = 22_050
TEMPO_FFT = 1024
TEMPO_HOP = 256  # 11.6 ms: 86.1 frames per second
MIN_BPM, MAX_BPM = 60.0, 200.0
PRIOR_BPM, PRIOR_OCTAVES = 110.0, 0.7
BEAT_MULTIPLES = (1, 2, 4, 8)


def onset_envelope(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Onset strength per frame (``TEMPO_HOP`` samples at ``TEMPO_SAMPLE_RATE``), mean removed, >= 0."""
    mono = resample(to_mono(validate_audio(audio, sample_rate, what="tempo")), sample_rate, TEMPO_SAMPLE_RATE)[0]
    padded = np.pad(mono, (TEMPO_FFT // 2, TEMPO_FFT // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, TEMPO_FFT)[::TEMPO_HOP]  # a view: nothing copied
    count = len(frames)
    window = np.hanning(TEMPO_FFT + 1)[:-1].astype(np.float32)
    flux = np.zeros(count, np.float32)
    previous = None
    for first in range(0, count, 256):  # bounded memory for long regions; small blocks stay in cache
        spectrum = np.log1p(100.0 * np.abs(np.fft.rfft(frames[first:first + 256] * window, axis=1)))
        if previous is None:
            previous = spectrum[:1]
        stacked = np.concatenate([previous, spectrum])
        flux[first:first + len(spectrum)] = np.clip(np.diff(stacked, axis=0), 0, None).mean(axis=1)
        previous = spectrum[-1:]
    kernel = np.ones(43, np.float32) / 43  # half a second
    return np.clip(flux - np.convolve(flux, kernel, mode="same"), 0, None)


def estimate_tempo(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """``(bpm, confidence)``: the most likely tempo from 60 to 200 BPM and how clearly it stands out
    (0 none: silence or no pulse, towards 1 clear). Falls back to 120 BPM with confidence 0."""
    return _tempo_of(onset_envelope(audio, sample_rate))


def _tempo_of(envelope: np.ndarray) -> tuple[float, float]:
    """``estimate_tempo`` from an ``onset_envelope``."""
    frames_per_second = TEMPO_SAMPLE_RATE / TEMPO_HOP
    if len(envelope) < 4 * frames_per_second or not envelope.any():
        return 120.0, 0.0
    spectrum = np.fft.rfft(envelope - envelope.mean(), n=2 * len(envelope))
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2)[: len(envelope)]
    autocorrelation /= autocorrelation[0] + 1e-12
    bpms = np.arange(MIN_BPM, MAX_BPM + 0.25, 0.25)
    lags = 60.0 * frames_per_second / bpms

    def at(lag: np.ndarray) -> np.ndarray:
        return np.interp(lag, np.arange(len(autocorrelation)), autocorrelation, right=0.0)

    evidence = sum(at(multiple * lags) for multiple in BEAT_MULTIPLES)
    prior = np.exp(-0.5 * (np.log2(bpms / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    score = np.clip(evidence, 0, None) * prior
    best = int(np.argmax(score))
    confidence = float(np.clip((score[best] - np.median(score)) / (score[best] + 1e-9), 0.0, 1.0))
    return round(float(bpms[best]), 2), round(confidence, 3)


BEAT_TIGHTNESS = 100.0  # how strongly a gap between beats is held to the tempo's period (Ellis 2007's alpha)
# The onset envelope peaks after a note begins (the flux of a frame against the one before, attacks): the
# median lag on 50 songs of the broad build's train split, taken off every beat.
BEAT_LATENCY_SECONDS = 0.04


def estimate_beats(audio: np.ndarray, sample_rate: int, bpm: float | None = None) -> np.ndarray:
    """Beat times in seconds (ascending), at ``bpm`` (estimated when not given), by dynamic programming over
    the onset envelope: every frame's best score is its onset strength plus the best earlier beat's score less
    a penalty for a gap unlike the period."""
    envelope = onset_envelope(audio, sample_rate)
    frames_per_second = TEMPO_SAMPLE_RATE / TEMPO_HOP
    if bpm is None:
        bpm, confidence = _tempo_of(envelope)
        if confidence == 0.0:
            return np.zeros(0)
    if not envelope.any():
        return np.zeros(0)
    period = 60.0 * frames_per_second / bpm
    envelope = envelope / (envelope.std() + 1e-9)
    score = envelope.astype(np.float64).copy()
    previous = np.full(len(envelope), -1, np.int64)
    gaps = np.arange(int(round(period / 2)), int(round(2 * period)) + 1)
    penalty = -BEAT_TIGHTNESS * np.log(gaps / period) ** 2
    shortest = int(gaps[0])  # a beat's predecessor lies at least this far back: a block this long is scored at once
    for block in range(shortest, len(envelope), shortest):
        frames = np.arange(block, min(block + shortest, len(envelope)))
        candidates = frames[:, None] - gaps[None, :]
        options = np.where(candidates >= 0, score[np.maximum(candidates, 0)] + penalty, -np.inf)
        best = np.argmax(options, axis=1)
        gain = options[np.arange(len(frames)), best]
        better = gain > 0
        score[frames[better]] += gain[better]
        previous[frames[better]] = candidates[better, best[better]]
    last_window = score[max(0, len(score) - int(round(period))):]
    t = len(score) - len(last_window) + int(np.argmax(last_window))
    beats = [t]
    while previous[t] >= 0:
        t = int(previous[t])
        beats.append(t)
    return np.clip(np.array(beats[::-1], dtype=np.float64) / frames_per_second - BEAT_LATENCY_SECONDS, 0.0, None)
