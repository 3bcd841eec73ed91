"""The small numpy DSP the models need and both backends share: the autoencoder's STFT pair, and a decoded
bass stem's low band given a phase that follows its notes.

``stft`` / ``istft`` are ``models.autoencoder``'s transform in numpy (the ONNX backend runs them around
the exported graphs).

The pitch lock:

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

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

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
                 below_hz: float = BELOW_HZ, lobe_bins: float = LOBE_BINS,
                 phase: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum (batch, bins, frames) and f0 (batch, frames) -> the spectrum with its low band's phase locked
    to the notes' harmonics (module docstring). ``phase``: the frames' ``note_phase`` when the spectrum is a
    window of a longer one (else computed from ``f0_hz``). The inputs are not modified."""
    real, imag = np.asarray(real, np.float32), np.asarray(imag, np.float32)
    f0_hz = np.asarray(f0_hz, np.float64)
    if f0_hz.shape != (real.shape[0], real.shape[2]):
        raise ValueError(f"f0 shaped {f0_hz.shape} does not match a spectrum shaped {real.shape}")
    bin_hz = sample_rate / n_fft
    low = min(real.shape[1], int(np.ceil(below_hz / bin_hz)))
    k = np.arange(1, low, dtype=np.float64)[None, :, None]  # bin 0 (DC) stays real
    if phase is None:
        phase = note_phase(f0_hz, sample_rate=sample_rate, hop=hop)
    theta = np.mod(phase, 2 * np.pi)[:, None, :]
    f0 = f0_hz[:, None, :]
    voiced = f0 > 0
    harmonic = np.maximum(1.0, np.round(k * bin_hz / np.where(voiced, f0, 1.0)))
    near = voiced & (np.abs(k - harmonic * f0 / bin_hz) <= lobe_bins)
    magnitude = np.hypot(real[:, 1:low], imag[:, 1:low])
    locked = np.mod(harmonic * theta, 2 * np.pi) - np.pi * k
    real, imag = real.copy(), imag.copy()
    real[:, 1:low] = np.where(near, magnitude * np.cos(locked), real[:, 1:low])
    imag[:, 1:low] = np.where(near, magnitude * np.sin(locked), imag[:, 1:low])
    return real, imag


# -- the STFT pair of models.autoencoder, in numpy ----------------------------------------------------------
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _in_order(function: Callable, starts: Iterable[int], workers: int) -> Iterator:
    """``function`` over ``starts``, results in order; on ``workers`` threads when more than one (numpy's FFT
    releases the GIL, so two threads transform about twice as fast)."""
    starts = list(starts)
    if workers <= 1 or len(starts) < 2:
        yield from map(function, starts)
        return
    with ThreadPoolExecutor(min(workers, len(starts))) as pool:
        yield from pool.map(function, starts)


def stft(audio: np.ndarray, n_fft: int, hop: int, *, chunk_frames: int = 256,
         workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(batch, samples), samples a multiple of ``hop`` -> real, imag (batch, n_fft // 2 + 1, samples // hop).

    Frames are transformed ``chunk_frames`` at a time, on ``workers`` threads: the working set stays in
    cache, which is several times faster than one transform of a long region and needs no region-sized
    temporaries.
    """
    pad = (n_fft - hop) // 2
    padded = np.pad(np.asarray(audio, np.float32), ((0, 0), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    batch, frames = windows.shape[:2]
    window = hann_window(n_fft)
    real = np.empty((batch, n_fft // 2 + 1, frames), np.float32)
    imag = np.empty_like(real)

    def transform(start: int) -> None:  # each chunk writes its own frames
        spec = np.fft.rfft(windows[:, start:start + chunk_frames] * window, axis=-1).transpose(0, 2, 1)
        real[:, :, start:start + chunk_frames] = spec.real
        imag[:, :, start:start + chunk_frames] = spec.imag

    for _ in _in_order(transform, range(0, frames, chunk_frames), workers):
        pass
    return real, imag


def _overlap_add(segments: np.ndarray, hop: int) -> np.ndarray:
    """(batch, length, frames) windows -> (batch, (frames - 1) * hop + length), summed where they overlap."""
    batch, length, frames = segments.shape
    chunks = -(-length // hop)
    padded = np.zeros((batch, frames, chunks * hop), segments.dtype)
    padded[:, :, :length] = segments.transpose(0, 2, 1)
    padded = padded.reshape(batch, frames, chunks, hop)
    out = np.zeros((batch, frames + chunks - 1, hop), segments.dtype)
    for j in range(chunks):
        out[:, j:j + frames] += padded[:, :, j]
    return out.reshape(batch, -1)[:, :(frames - 1) * hop + length]


def _window_envelope(window: np.ndarray, hop: int, frames: int) -> np.ndarray:
    """Sum of the squared window placed every ``hop`` samples, ``frames`` times: ((frames - 1) * hop + n_fft,)."""
    n_fft = len(window)
    chunks = -(-n_fft // hop)
    squared = np.zeros(chunks * hop, np.float32)
    squared[:n_fft] = window**2
    envelope = np.zeros((frames + chunks - 1, hop), np.float32)
    for j, piece in enumerate(squared.reshape(chunks, hop)):
        envelope[j:j + frames] += piece
    return envelope.reshape(-1)[:(frames - 1) * hop + n_fft]


def istft(real: np.ndarray, imag: np.ndarray, n_fft: int, hop: int, *, chunk_frames: int = 256,
          workers: int = 1) -> np.ndarray:
    """real, imag (batch, bins, frames) -> audio (batch, frames * hop): the inverse of ``stft``.

    Overlap-add of the windowed inverse transforms, divided by the summed squared window (Vocos'
    "same" padding, as ``Autoencoder._istft``), ``chunk_frames`` frames at a time on ``workers`` threads
    (each chunk's overlap-add on its thread, the chunks summed in order).
    """
    batch, _, frames = real.shape
    window = hann_window(n_fft)
    out_size = (frames - 1) * hop + n_fft
    audio = np.zeros((batch, out_size), np.float32)

    def piece(start: int) -> np.ndarray:
        stop = min(start + chunk_frames, frames)
        spec = real[:, :, start:stop].astype(np.complex64)
        spec.imag = imag[:, :, start:stop]
        segments = np.fft.irfft(spec, n=n_fft, axis=1).astype(np.float32, copy=False) * window[None, :, None]
        return _overlap_add(segments, hop)

    starts = range(0, frames, chunk_frames)
    for start, summed in zip(starts, _in_order(piece, starts, workers)):
        audio[:, start * hop:start * hop + summed.shape[1]] += summed
    pad = (n_fft - hop) // 2
    envelope = _window_envelope(window, hop, frames)
    return audio[:, pad:out_size - pad] / np.maximum(envelope[pad:out_size - pad], 1e-8)
