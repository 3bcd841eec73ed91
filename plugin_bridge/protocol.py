"""The wire format between a plugin (ZeroMQ DEALER) and the engine server (ZeroMQ ROUTER).

Every message is a multi-part ZeroMQ message: one UTF-8 JSON header frame, then zero or more raw
audio blob frames. A blob is little-endian float32 samples, interleaved by frame
(``frame0ch0, frame0ch1, frame1ch0, ...``). Nothing is pickled. ``PROTOCOL.md`` next to this file
is the specification the C++ plugin is built from; this module is its Python reference.

This room only encodes, decodes and validates messages; it owns no sockets and no jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from backline.engine.audio import (MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError, sample_rate_message,
                                   validate_audio)

PROTOCOL_VERSION = 2  # 2: submit carries audio_sha256, the region's content address
BYTES_PER_SAMPLE = 4  # float32
MAX_HEADER_BYTES = 64 * 1024
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

# Job states. A job reaches exactly one of FINAL_STATES.
SUBMITTED, UPLOADING, QUEUED, RUNNING = "submitted", "uploading", "queued", "running"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED})


class Code:
    """Machine-readable error codes carried in ``error`` messages (see PROTOCOL.md)."""

    BAD_FRAME = "bad_frame"  # not a header frame, or not UTF-8 JSON object
    UNSUPPORTED_VERSION = "unsupported_version"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # a field missing or of the wrong type / range
    BAD_AUDIO = "bad_audio"  # sample rate, channels, NaN/Inf samples, empty
    TOO_LONG = "too_long"  # region longer than the server's maximum
    BAD_CHUNK = "bad_chunk"  # blob length or frame count does not match the header
    CHUNK_OUT_OF_ORDER = "chunk_out_of_order"
    UPLOAD_INCOMPLETE = "upload_incomplete"
    UNKNOWN_JOB = "unknown_job"
    JOB_CONFLICT = "job_conflict"  # same job id, different request
    NOT_READY = "not_ready"  # result asked for before the job is done
    RESULT_EXPIRED = "result_expired"
    BUSY = "busy"  # too many uploads or queued jobs; retry later
    BAD_REQUEST = "bad_request"  # the engine refused the parameters
    ENGINE_ERROR = "engine_error"  # the engine failed; the server keeps serving
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A refused message or job: ``code`` for machines, ``message`` for the producer, ``retry`` if retrying may help."""

    def __init__(self, code: str, message: str, *, retry: bool = False, **extra: Any):
        super().__init__(message)
        self.code, self.message, self.retry, self.extra = code, message, retry, extra

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "retry": self.retry, **self.extra}


@dataclass(frozen=True)
class Limits:
    """What a server accepts; sent to clients in ``welcome``."""

    max_duration_seconds: float = 600.0
    min_sample_rate: int = MIN_SAMPLE_RATE
    max_sample_rate: int = MAX_SAMPLE_RATE  # the engine's own range, so every path refuses the same rates
    max_channels: int = MAX_CHANNELS
    max_chunk_frames: int = 131_072
    upload_window_chunks: int = 4  # unacknowledged chunks a client may have in flight
    result_chunk_frames: int = 131_072
    max_uploads: int = 16  # jobs uploading at once, all clients together
    max_uploads_per_peer: int = 4  # jobs one connection may have uploading at once
    max_queued_jobs: int = 64
    upload_timeout_seconds: float = 10.0  # an upload with no chunk for this long is dropped
    max_reply_bytes_per_peer: int = 64 << 20  # replies queued for one connection that it has not read yet
    heartbeat_interval_seconds: float = 1.0
    progress_interval_seconds: float = 0.1  # at most one progress message per job per interval

    @property
    def max_message_bytes(self) -> int:
        """ZeroMQ MAXMSGSIZE: a larger frame makes the server drop the connection."""
        return MAX_HEADER_BYTES + self.max_chunk_frames * self.max_channels * BYTES_PER_SAMPLE

    def as_dict(self) -> dict:
        return {**asdict(self), "max_message_bytes": self.max_message_bytes}

    @property
    def max_reply_messages_per_peer(self) -> int:
        """ZeroMQ SNDHWM per connection: ``max_reply_bytes_per_peer`` in messages the size of a result chunk."""
        return max(8, self.max_reply_bytes_per_peer // (self.result_chunk_frames * self.max_channels * BYTES_PER_SAMPLE))


# Request types a client may send, with their required fields and types. Unknown fields are ignored.
REQUESTS: dict[str, dict[str, type]] = {
    "hello": {},
    "submit": {"job_id": str, "params": dict, "sample_rate": int, "channels": int, "frames": int, "audio_sha256": str},
    "chunk": {"job_id": str, "index": int, "start_frame": int, "frames": int},
    "start": {"job_id": str},
    "cancel": {"job_id": str},
    "status": {},  # optional job_id
    "fetch": {"job_id": str, "index": int},
}
BLOBS_EXPECTED = {"chunk": 1}


def encode(header: dict, blobs: tuple[bytes, ...] | list[bytes] = ()) -> list[bytes]:
    """Return the frames of one message: the JSON header (with ``v``) followed by the blobs."""
    header = {"v": PROTOCOL_VERSION, **header}
    return [json.dumps(header, separators=(",", ":"), allow_nan=False).encode(), *blobs]


def decode(frames: list) -> tuple[dict, list[memoryview]]:
    """Parse a message's frames (``bytes`` or ``zmq.Frame``) into ``(header, blobs)``, the blobs as memoryviews of
    the received frames (no copy); raises ``ProtocolError`` for garbage or a wrong version."""
    if not frames:
        raise ProtocolError(Code.BAD_FRAME, "empty message")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(Code.BAD_FRAME, f"header frame of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(memoryview(raw)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(Code.BAD_FRAME, "the first frame is not a UTF-8 JSON header") from None
    except RecursionError:
        raise ProtocolError(Code.BAD_FRAME, "the header is nested too deeply to be a Backline message") from None
    if not isinstance(header, dict):
        raise ProtocolError(Code.BAD_FRAME, "the header must be a JSON object")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            Code.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this engine speaks version {PROTOCOL_VERSION}. "
            "Update the plugin or the engine so they match.",
            supported=[PROTOCOL_VERSION],
        )
    return header, [memoryview(b) for b in frames[1:]]  # views, not copies: audio frames are large


def validate_request(header: dict, blobs: list[bytes]) -> dict:
    """Check a decoded client request's type, fields and blob count; returns the header or raises ``ProtocolError``."""
    kind = header.get("type")
    if kind not in REQUESTS:
        raise ProtocolError(Code.UNKNOWN_TYPE, f"unknown message type {kind!r}", known=sorted(REQUESTS))
    for name, expected in REQUESTS[kind].items():
        if name not in header:
            raise ProtocolError(Code.BAD_FIELD, f"{kind}: missing field {name!r}", field=name)
        value = header[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ProtocolError(
                Code.BAD_FIELD, f"{kind}: field {name!r} must be {expected.__name__}, got {type(value).__name__}",
                field=name,
            )
    for name in ("index", "start_frame"):
        if name in REQUESTS[kind] and header[name] < 0:
            raise ProtocolError(Code.BAD_CHUNK, f"{kind}: {name} must not be negative, got {header[name]}", field=name)
    if kind == "submit" and not SHA256_PATTERN.match(header["audio_sha256"]):
        raise ProtocolError(Code.BAD_FIELD, "submit: audio_sha256 must be the SHA-256 of the interleaved float32 "
                            "region as 64 lower-case hex digits", field="audio_sha256")
    job_id = header.get("job_id")
    if job_id is not None and not (isinstance(job_id, str) and JOB_ID_PATTERN.match(job_id)):
        raise ProtocolError(
            Code.BAD_FIELD, "job_id must be 1-128 characters from A-Z a-z 0-9 . _ : - (a UUID works)", field="job_id"
        )
    if len(blobs) != BLOBS_EXPECTED.get(kind, 0):
        raise ProtocolError(
            Code.BAD_FRAME, f"{kind}: expected {BLOBS_EXPECTED.get(kind, 0)} audio frame(s), got {len(blobs)}"
        )
    return header


def check_region(sample_rate: int, channels: int, frames: int, limits: Limits) -> None:
    """Refuse a region description before any audio is uploaded; raises ``ProtocolError``."""
    if not limits.min_sample_rate <= sample_rate <= limits.max_sample_rate:  # a server may take fewer rates
        raise ProtocolError(Code.BAD_AUDIO, sample_rate_message(sample_rate, limits.min_sample_rate,
                                                                limits.max_sample_rate, what="region"))
    try:
        # The engine's own checks (and messages) for sample rate and channel count, on one silent frame.
        validate_audio(np.zeros((max(channels, 0), 1), np.float32), sample_rate, what="region")
    except AudioError as error:
        raise ProtocolError(Code.BAD_AUDIO, str(error)) from None
    if channels > limits.max_channels:
        raise ProtocolError(Code.BAD_AUDIO, f"region: {channels} channels; at most {limits.max_channels}")
    if frames <= 0:
        raise ProtocolError(Code.BAD_AUDIO, "region: the audio is empty (0 frames)")
    if frames > limits.max_duration_seconds * sample_rate:
        raise ProtocolError(
            Code.TOO_LONG,
            f"region: {frames / sample_rate:.1f} s is longer than the limit of {limits.max_duration_seconds:.1f} s; "
            "select a shorter region",
        )


def request_digest(params: dict, sample_rate: int, channels: int, frames: int, audio_sha256: str) -> str:
    """A stable fingerprint of a submit request (its audio by content address), so a resubmitted job id can be
    told apart from a conflicting one."""
    canonical = json.dumps(
        {"params": params, "sample_rate": sample_rate, "channels": channels, "frames": frames,
         "audio_sha256": audio_sha256},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def audio_sha256(audio: np.ndarray, block_frames: int = 65_536) -> str:
    """SHA-256 (hex) of (channels, frames) audio as the wire carries it: interleaved little-endian float32."""
    audio = np.atleast_2d(audio)
    digest = hashlib.sha256()
    buffer = np.empty((min(block_frames, audio.shape[1]), audio.shape[0]), dtype="<f4")
    for start in range(0, audio.shape[1], block_frames):
        piece = audio[:, start:start + block_frames]
        digest.update(interleave(piece, out=buffer[:piece.shape[1]]))
    return digest.hexdigest()


def interleave(audio: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(channels, frames) float array -> a contiguous (frames, channels) little-endian float32 array (``out`` if
    given): the wire layout, ready to send as is. One channel at a time, about twice as fast as a transposed copy."""
    audio = np.asarray(audio)
    out = np.empty((audio.shape[1], audio.shape[0]), dtype="<f4") if out is None else out
    for channel, samples in enumerate(audio):
        out[:, channel] = samples
    return out


def deinterleave_into(blob, out: np.ndarray) -> None:
    """Copy interleaved little-endian float32 bytes into ``out`` (channels, frames), one channel at a time."""
    samples = np.frombuffer(blob, dtype="<f4").reshape(-1, out.shape[0])
    for channel in range(out.shape[0]):
        out[channel] = samples[:, channel]


def audio_to_blob(audio: np.ndarray) -> bytes:
    """(channels, frames) float array -> interleaved little-endian float32 bytes."""
    return interleave(audio).tobytes()


def blob_to_audio(blob: bytes, channels: int) -> np.ndarray:
    """Interleaved little-endian float32 bytes -> (channels, frames) float32 array (a copy)."""
    out = np.empty((channels, memoryview(blob).nbytes // (channels * BYTES_PER_SAMPLE)), dtype=np.float32)
    deinterleave_into(blob, out)
    return out


def process_alive(pid: object) -> bool:
    """Whether a process with this id (an int, or a string as found in a file name) exists; False if malformed."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, TypeError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
