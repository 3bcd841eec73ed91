"""The audio a model takes: one check (and one message for the producer) for every path into Backline.

``validate_audio`` returns contiguous float32 ``(channels, frames)`` or raises ``AudioError``; the command
line, the Python API, the bridge and the models' own entry points all call it, so a sample rate, a channel
count or a NaN is refused the same way everywhere. Pure NumPy.
"""

from __future__ import annotations

import numpy as np

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000  # one range for the command line, the Python API and the bridge
MAX_CHANNELS = 2


class AudioError(ValueError):
    """Audio that Backline refuses; the message is meant for the person who supplied it."""


def sample_rate_message(sample_rate: int, low: int, high: int, *, what: str) -> str:
    return f"{what}: sample rate {sample_rate} Hz is not supported (expected {low}..{high} Hz)"


def validate_audio(
    audio: np.ndarray,
    sample_rate: int,
    *,
    max_duration_seconds: float | None = None,
    what: str = "audio",
) -> np.ndarray:
    """Return ``audio`` as contiguous float32 ``(channels, frames)`` or raise ``AudioError``.

    A 1-D array is taken as mono. Refuses empty audio, NaN or infinite samples, sample rates outside
    8 kHz..192 kHz, more than two channels and (when given) audio longer than ``max_duration_seconds``.
    """
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool):
        raise AudioError(f"{what}: sample rate must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(sample_rate_message(sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, what=what))
    audio = np.asarray(audio)
    if audio.dtype.kind not in "fiu":
        raise AudioError(f"{what}: samples must be numbers, got dtype {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise AudioError(f"{what}: expected (channels, frames), got an array of shape {audio.shape}")
    channels, frames = audio.shape
    if channels == 0 or channels > MAX_CHANNELS:
        raise AudioError(f"{what}: {channels} channels; Backline takes mono or stereo")
    if frames == 0:
        raise AudioError(f"{what}: the audio is empty (0 frames)")
    if max_duration_seconds is not None and frames > max_duration_seconds * sample_rate:
        raise AudioError(
            f"{what}: {frames / sample_rate:.1f} s is longer than the limit of "
            f"{max_duration_seconds:.1f} s"
        )
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise AudioError(f"{what}: contains NaN or infinite samples")
    return audio
