"""Audio in and out of the engine: reading, validating, converting rates and channel layouts.

Every path into Backline (command line, Python API, bridge) goes through ``validate_audio`` so bad
input is refused with a message a producer understands. Arrays are float32, shaped
``(channels, frames)``; sample rates are always passed explicitly.
"""

from __future__ import annotations

from pathlib import Path

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


UNREADABLE = "not an audio file Backline can read: WAV, AIFF, FLAC or OGG"
_SIGNATURES = ((0, b"RIFF"), (0, b"RIFX"), (0, b"RF64"), (0, b"BW64"), (0, b"FORM"), (0, b"fLaC"), (0, b"OggS"))


def check_audio_file(path: Path) -> None:
    """Refuse, before any decoder sees it, a file that is not WAV, AIFF, FLAC or OGG (by its first bytes), and
    a WAV file whose audio ends before its header says (cut off while copying or recording); raises ``AudioError``."""
    with open(path, "rb") as file:
        head = file.read(12)
        if not any(head[offset:offset + len(magic)] == magic for offset, magic in _SIGNATURES):
            raise AudioError(f"{path.name}: {UNREADABLE}")
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size, block_align, sample_rate = path.stat().st_size, 0, 0
        position = 12
        while position + 8 <= size:  # RIFF chunks: 4-byte id, little-endian 32-bit length, data (even-padded)
            file.seek(position)
            chunk = file.read(8)
            kind, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if kind == b"fmt ":
                fmt = file.read(16)
                sample_rate, block_align = int.from_bytes(fmt[4:8], "little"), int.from_bytes(fmt[12:14], "little")
            elif kind == b"data":
                held = size - position - 8
                if length != 0xFFFFFFFF and block_align and sample_rate and length - held >= block_align:
                    raise AudioError(
                        f"{path.name}: the file ends early: its header promises {length / block_align / sample_rate:.1f} s "
                        f"of audio but it holds {held // block_align / sample_rate:.1f} s (it was probably cut off "
                        "while copying or recording); export it again")
                return
            position += 8 + length + (length & 1)


def read_audio(
    path: str | Path, *, max_duration_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Read an audio file (WAV, AIFF, FLAC, OGG) and return ``(audio (channels, frames), sample_rate)``."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    check_audio_file(path)
    try:
        info = sf.info(str(path))
        if max_duration_seconds is not None and info.samplerate > 0 and (
            info.frames > max_duration_seconds * info.samplerate
        ):
            raise AudioError(
                f"{path.name}: {info.frames / info.samplerate:.1f} s is longer than the limit of "
                f"{max_duration_seconds:.1f} s"
            )
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as error:  # libsndfile's messages are cryptic: the producer gets ours
        raise AudioError(f"{path.name}: {UNREADABLE}") from error
    return validate_audio(data.T, int(sample_rate), what=path.name), int(sample_rate)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, *, subtype: str | None = None) -> Path:
    """Write ``audio`` (channels, frames) to ``path``; the format follows the suffix. Returns the path."""
    import soundfile as sf

    audio = validate_audio(audio, sample_rate, what=str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, sample_rate, subtype=subtype)
    return path


def resample(audio: np.ndarray, sample_rate_in: int, sample_rate_out: int) -> np.ndarray:
    """Resample (channels, frames) audio with soxr's high-quality filter; identity if rates match."""
    if sample_rate_in == sample_rate_out:
        return audio
    import soxr

    out = soxr.resample(audio.T, sample_rate_in, sample_rate_out, quality="HQ")
    return np.ascontiguousarray(np.atleast_2d(out.T), dtype=np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels: (channels, frames) -> (1, frames)."""
    return audio.mean(axis=0, keepdims=True, dtype=np.float32)


def db_to_gain(gain_db: float) -> float:
    return float(10.0 ** (gain_db / 20.0))
