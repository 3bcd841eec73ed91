"""Audio in and out of the engine: reading, validating, converting rates and channel layouts.

Every path into Backline (command line, Python API, bridge) goes through ``validate_audio`` so bad
input is refused with a message a producer understands. Arrays are float32, shaped
``(channels, frames)``; sample rates are always passed explicitly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The checks live with the models (models/audio.py); every entry point imports them from here too.
from backline.models.audio import (MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError,  # noqa: F401
                                   sample_rate_message, validate_audio)


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
