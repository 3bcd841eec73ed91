"""A decoded bass stem's low band, given a phase that follows its notes.

The decoder predicts each STFT frame's magnitude well but not a phase that carries a bass note's
pitch: at a 2048-point STFT the low semitones are a fraction of a bin apart, so the pitch lives in how
the phase advances from frame to frame, and a phase that does not advance coherently smears it.
``training.pitch_diagnostic`` measured it: the decoder's own magnitude with a phase built from the true
notes scores as the real stem does on harmonic fit.

Here the notes come from the autoencoder's note head (``Autoencoder.decode_notes``, per STFT frame),
and every bin below ``below_hz`` within ``lobe_bins`` of a harmonic ``h * f0`` takes the phase of that
harmonic's oscillator at the frame's centre, ``h * theta_t`` (``theta`` the sum of ``2 pi f0 hop /
sample_rate`` since the note began: ``note_phase``), less ``pi * k``: the phase a Hann-windowed sinusoid
shows in bin ``k`` of a frame centred on it. Magnitudes are untouched; so is every bin of a frame with no note. Pure
functions on numpy arrays, shared by both backends.
"""

from __future__ import annotations

import numpy as np

BELOW_HZ = 400.0  # bass fundamentals and the harmonics that carry their pitch class
LOBE_BINS = 2.0  # a Hann window's main lobe is 2 bins each side of a partial


def note_frequencies(logits: np.ndarray, lowest_midi: int) -> np.ndarray:
    """Note logits (batch, classes, frames), class 0 "no note" -> each frame's f0 in Hz, 0 where no note."""
    best = np.argmax(np.asarray(logits), axis=1)
    midi = lowest_midi + best - 1
    return np.where(best > 0, 440.0 * 2.0 ** ((midi - 69) / 12.0), 0.0)


def note_phase(f0_hz: np.ndarray, *, sample_rate: int, hop: int) -> np.ndarray:
    """Each frame's oscillator phase (radians, batch x frames): ``2 pi f0 hop / sample_rate`` summed over the
    frames since its note began (0 at a note's first frame). Restarting with every note, as a plucked
    string does, keeps the phase a function of the note alone: latents that repeat (a loop) decode to
    audio that repeats."""
    f0_hz = np.asarray(f0_hz, np.float64)
    increment = 2 * np.pi * f0_hz * hop / sample_rate
    before = np.cumsum(increment, axis=1) - increment  # summed over every earlier frame
    frames = increment.shape[1]
    starts = np.ones(increment.shape, bool)
    starts[:, 1:] = f0_hz[:, 1:] != f0_hz[:, :-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(frames), 0), axis=1)  # each frame's note's first frame
    return before - np.take_along_axis(before, first, axis=1)


def pitch_locked(real: np.ndarray, imag: np.ndarray, f0_hz: np.ndarray, *, sample_rate: int, n_fft: int, hop: int,
                 below_hz: float = BELOW_HZ, lobe_bins: float = LOBE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum (batch, bins, frames) and f0 (batch, frames) -> the spectrum with its low band's phase locked
    to the notes' harmonics (module docstring). The inputs are not modified."""
    real, imag = np.asarray(real, np.float32), np.asarray(imag, np.float32)
    f0_hz = np.asarray(f0_hz, np.float64)
    if f0_hz.shape != (real.shape[0], real.shape[2]):
        raise ValueError(f"f0 shaped {f0_hz.shape} does not match a spectrum shaped {real.shape}")
    bin_hz = sample_rate / n_fft
    low = min(real.shape[1], int(np.ceil(below_hz / bin_hz)))
    k = np.arange(1, low, dtype=np.float64)[None, :, None]  # bin 0 (DC) stays real
    theta = np.mod(note_phase(f0_hz, sample_rate=sample_rate, hop=hop), 2 * np.pi)[:, None, :]
    f0 = f0_hz[:, None, :]
    voiced = f0 > 0
    harmonic = np.maximum(1.0, np.round(k * bin_hz / np.where(voiced, f0, 1.0)))
    near = voiced & (np.abs(k - harmonic * f0 / bin_hz) <= lobe_bins)
    magnitude = np.hypot(real[:, 1:low], imag[:, 1:low])
    phase = np.mod(harmonic * theta, 2 * np.pi) - np.pi * k
    real, imag = real.copy(), imag.copy()
    real[:, 1:low] = np.where(near, magnitude * np.cos(phase), real[:, 1:low])
    imag[:, 1:low] = np.where(near, magnitude * np.sin(phase), imag[:, 1:low])
    return real, imag
