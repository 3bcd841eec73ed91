"""The Python client of the engine server: the reference implementation of the protocol and the test driver.

One ZeroMQ DEALER socket, owned by whichever thread uses the client (not thread-safe: one client per
thread, as the plugin keeps one socket per worker thread). Replies are matched to requests by ``req``;
the server's unsolicited messages (job updates, progress, heartbeats) are recorded as they arrive.
Every wait is bounded: an engine that sends nothing at all (not even a heartbeat) for
``silence_seconds`` raises ``BridgeTimeout``; a busy engine keeps sending heartbeats.
"""

from __future__ import annotations

import collections
import itertools
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import zmq

from . import protocol as P


class BridgeError(Exception):
    """An error reply or a failed job: ``code`` (see protocol.Code), ``message`` for the producer, ``retry``."""

    def __init__(self, code: str, message: str, retry: bool = False, details: dict | None = None):
        super().__init__(f"{message} [{code}]")
        self.code, self.message, self.retry, self.details = code, message, retry, details or {}

    @classmethod
    def from_error(cls, error: dict) -> "BridgeError":
        return cls(error.get("code", "unknown"), error.get("message", ""), bool(error.get("retry")), error)


class BridgeTimeout(BridgeError):
    def __init__(self, message: str):
        super().__init__("timeout", message, retry=True)


class EngineNotRunning(BridgeError):
    def __init__(self, message: str):
        super().__init__("engine_not_running", message, retry=False)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def read_connection_file(path: str | Path) -> dict:
    """The server's connection info: host, port, osc_port, token, and ``ipc_endpoint`` where it has one.

    Raises ``EngineNotRunning`` at once when there is no such file, or when it names a local engine process
    that has exited (a stale file left by an engine that was killed)."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineNotRunning(f"the Backline engine is not running (no connection file at {path}); "
                               "start it with `backline serve`") from None
    except (OSError, ValueError) as error:
        raise EngineNotRunning(f"{path} is not a Backline connection file ({error}); start the engine with "
                               "`backline serve`") from None
    if info.get("host") in LOOPBACK_HOSTS and "pid" in info and not P.process_alive(info["pid"]):
        raise EngineNotRunning(f"the Backline engine is not running (its connection file {path} names process "
                               f"{info['pid']}, which has exited); start it with `backline serve`")
    return info


class BridgeClient:
    def __init__(
        self,
        connection_file: str | Path | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        timeout_seconds: float = 10.0,
        silence_seconds: float = 10.0,
        transport: str = "auto",
    ):
        """``transport``: ``"auto"`` uses the server's Unix domain socket (``ipc_endpoint`` in the connection file)
        when it has one, this pyzmq supports it and no ``host``/``port`` is given, else tcp; ``"tcp"`` always tcp."""
        if transport not in ("auto", "tcp"):
            raise ValueError(f"transport must be 'auto' or 'tcp', not {transport!r}")
        ipc_endpoint = None
        if connection_file is not None:
            info = read_connection_file(connection_file)
            if transport == "auto" and host is None and port is None and zmq.has("ipc"):
                ipc_endpoint = info.get("ipc_endpoint")
            host, port, token = host or info["host"], port or info["port"], token or info["token"]
        if host is None or port is None or token is None:
            raise ValueError("give a connection file, or host, port and token")
        self.token, self.timeout_seconds, self.silence_seconds = token, timeout_seconds, silence_seconds
        self.endpoint = ipc_endpoint or f"tcp://{host}:{port}"
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.endpoint)
        self._req = itertools.count(1)
        self.limits: dict | None = None
        self.jobs: dict[str, dict] = {}  # latest job snapshot per job id
        self.progress: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=1000))
        self.last_heartbeat: dict | None = None
        self.last_message_at = time.monotonic()
        self._upload_pool: np.ndarray | None = None  # the upload's interleaving buffers, one per chunk in flight

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> "BridgeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------------------

    def send(self, header: dict, blobs: list | tuple = (), *, copy: bool = True) -> None:
        """Send one message with the token added (no reply awaited). Blobs are bytes-like (an interleaved array
        works); ZeroMQ copies them, so a blob's buffer may be reused once this returns. With ``copy=False`` it
        sends them from the caller's buffers instead, which must then stay unchanged until the server has them."""
        self._socket.send_multipart(P.encode({**header, "token": self.token}, blobs), copy=copy)

    def receive(self, timeout_seconds: float) -> tuple[dict, list[memoryview]]:
        """The next message from the server (its audio frames as memoryviews), recorded if unsolicited; raises
        ``BridgeTimeout``."""
        if not self._socket.poll(int(timeout_seconds * 1000)):
            raise BridgeTimeout(f"no reply from the engine at {self.endpoint} within {timeout_seconds:.1f} s")
        header, blobs = P.decode(self._socket.recv_multipart(copy=False))
        self.last_message_at = time.monotonic()
        kind = header.get("type")
        if kind == "job":
            self.jobs[header["job_id"]] = header
        elif kind == "progress":
            self.progress[header["job_id"]].append(header)
        elif kind == "heartbeat":
            self.last_heartbeat = header
        return header, blobs

    def request(self, header: dict, blobs: list[bytes] | tuple = (), timeout_seconds: float | None = None):
        """Send a request and return ``(reply header, blobs)``; an ``error`` reply raises ``BridgeError``."""
        request_id = next(self._req)
        self.send({**header, "req": request_id}, blobs)
        deadline = time.monotonic() + (timeout_seconds or self.timeout_seconds)
        while True:
            reply, reply_blobs = self.receive(max(0.0, deadline - time.monotonic()))
            if reply.get("req") == request_id:
                if reply.get("type") == "error":
                    raise BridgeError.from_error(reply)
                return reply, reply_blobs

    # ---- the protocol ------------------------------------------------------------------------------

    def hello(self) -> dict:
        """Check the protocol version; returns ``welcome`` (limits, models) and keeps the limits."""
        welcome, _ = self.request({"type": "hello", "client": "backline-python"})
        self.limits = welcome["limits"]
        return welcome

    def status(self, job_id: str | None = None) -> dict:
        """A job's snapshot, or (without ``job_id``) the server's: busy, current job, step, queue."""
        header = {"type": "status"} if job_id is None else {"type": "status", "job_id": job_id}
        return self.request(header)[0]

    def cancel(self, job_id: str) -> dict:
        return self.request({"type": "cancel", "job_id": job_id})[0]

    def submit(self, job_id: str, params: dict, audio: np.ndarray, sample_rate: int,
               *, chunk_frames: int | None = None) -> dict:
        """Submit a job, upload ``audio`` (channels, frames) in chunks (resuming where the server stopped) and
        start it. Returns the job snapshot; a resubmitted finished job comes back as it is."""
        if self.limits is None:
            self.hello()
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        channels, frames = audio.shape
        chunk_frames = min(chunk_frames or self.limits["max_chunk_frames"], self.limits["max_chunk_frames"])
        job, _ = self.request({"type": "submit", "job_id": job_id, "params": params,
                               "sample_rate": int(sample_rate), "channels": channels, "frames": frames,
                               "audio_sha256": P.audio_sha256(audio)})
        if job["state"] in (P.SUBMITTED, P.UPLOADING):
            self._upload(job_id, audio, chunk_frames, job["next_index"], job["received_frames"])
            job, _ = self.request({"type": "start", "job_id": job_id})
        return job

    def _upload(self, job_id: str, audio: np.ndarray, chunk_frames: int, first_index: int, first_frame: int) -> None:
        """Send chunks with at most ``upload_window_chunks`` unacknowledged; stop on an error or a final state."""
        frames = audio.shape[1]
        starts = list(range(first_frame, frames, chunk_frames))
        window = self.limits["upload_window_chunks"]
        # One interleaving buffer per chunk in flight, sent as it is (no copy into a ZeroMQ message). Chunk i's
        # buffer is refilled for chunk i + window, which is sent only once chunk i is acknowledged: by then the
        # server has received all of it, so ZeroMQ no longer reads the buffer.
        buffers = self._upload_buffers(window, chunk_frames, audio.shape[0])
        sent = acked = 0
        deadline = time.monotonic() + self.timeout_seconds
        while acked < len(starts):
            while sent < len(starts) and sent - acked < window:
                start = starts[sent]
                piece = audio[:, start:start + chunk_frames]
                self.send({"type": "chunk", "job_id": job_id, "index": first_index + sent, "start_frame": start,
                           "frames": piece.shape[1], "req": f"chunk-{first_index + sent}"},
                          [P.interleave(piece, out=buffers[sent % len(buffers)][:piece.shape[1]])], copy=False)
                sent += 1
            reply, _ = self.receive(max(0.0, deadline - time.monotonic()))
            if reply.get("type") == "error" and str(reply.get("req", "")).startswith("chunk-"):
                raise BridgeError.from_error(reply)
            if reply.get("type") == "ack" and reply.get("job_id") == job_id:
                if reply["state"] in P.FINAL_STATES:
                    error = self.jobs.get(job_id, {}).get("error") or {"code": reply["state"], "message": reply["state"]}
                    raise BridgeError.from_error(error)
                acked = max(acked, reply["next_index"] - first_index)
                deadline = time.monotonic() + self.timeout_seconds

    def _upload_buffers(self, window: int, chunk_frames: int, channels: int) -> list[np.ndarray]:
        """``window`` interleaving buffers of ``chunk_frames`` x ``channels``, kept for the next upload of that shape
        (a client uploads region after region; fresh buffers would fault in new memory each time)."""
        shape = (window, chunk_frames, channels)
        if self._upload_pool is None or self._upload_pool.shape != shape:
            self._upload_pool = np.empty(shape, dtype="<f4")
        return list(self._upload_pool)

    def wait(self, job_id: str, *, on_progress: Callable[[dict], None] | None = None,
             timeout_seconds: float = 60.0) -> dict:
        """Block until the job is done, failed or cancelled; returns its final snapshot.

        ``on_progress`` gets each progress message. Raises ``BridgeTimeout`` after ``timeout_seconds`` in all,
        or once the engine has been silent (no heartbeat either) for ``silence_seconds``.
        """
        deadline = time.monotonic() + timeout_seconds
        job, _ = self.request({"type": "status", "job_id": job_id},
                              timeout_seconds=min(self.silence_seconds, self.timeout_seconds))
        while True:
            while self.progress[job_id]:
                message = self.progress[job_id].popleft()
                if on_progress:
                    on_progress(message)
            job = self.jobs.get(job_id, job)
            if job["state"] in P.FINAL_STATES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BridgeTimeout(f"job {job_id} still {job['state']} after {timeout_seconds:.1f} s")
            try:
                self.receive(min(remaining, self.silence_seconds))
            except BridgeTimeout:
                if time.monotonic() - self.last_message_at >= self.silence_seconds:
                    raise BridgeTimeout(f"the engine has been silent for {self.silence_seconds:.1f} s") from None

    def fetch(self, job_id: str, *, out: np.ndarray | None = None) -> tuple[np.ndarray, int, dict]:
        """Download a finished result in chunks; returns ``(audio (channels, frames) float32, sample_rate, info)``.

        ``audio`` is a new array, or ``out`` when given: a float32 array of at least (channels, frames) that the
        result is written into from its start (the returned array is its view of exactly (channels, frames)), so a
        client that fetches job after job can reuse one buffer instead of faulting in fresh memory each time."""
        job = self.status(job_id)
        if job["state"] != P.DONE:
            raise BridgeError.from_error(job.get("error") or {"code": P.Code.NOT_READY,
                                                             "message": f"job {job_id} is {job['state']}"})
        result = job["result"]
        shape = (result["channels"], result["frames"])
        if out is None:
            audio = np.empty(shape, dtype=np.float32)
        elif out.dtype != np.float32 or out.ndim != 2 or out.shape[0] < shape[0] or out.shape[1] < shape[1]:
            raise ValueError(f"out must be float32 of at least {shape}, not {out.dtype} {out.shape}")
        else:
            audio = out[:shape[0], :shape[1]]
        window = (self.limits or {}).get("upload_window_chunks", 4)
        pending: dict[int, int] = {}  # request id -> chunk index
        next_index = received = 0
        deadline = time.monotonic() + self.timeout_seconds
        while received < result["chunks"]:
            while next_index < result["chunks"] and len(pending) < window:
                request_id = next(self._req)
                self.send({"type": "fetch", "job_id": job_id, "index": next_index, "req": request_id})
                pending[request_id] = next_index
                next_index += 1
            reply, blobs = self.receive(max(0.0, deadline - time.monotonic()))
            if reply.get("req") not in pending:
                continue
            del pending[reply["req"]]
            if reply["type"] == "error":
                raise BridgeError.from_error(reply)
            start, frames = reply["start_frame"], reply["frames"]
            P.deinterleave_into(blobs[0], audio[:, start:start + frames])
            received += 1
            deadline = time.monotonic() + self.timeout_seconds
        return audio, result["sample_rate"], result["info"]

    def reference(self, audio: np.ndarray, sample_rate: int, *, timeout_seconds: float = 600.0) -> str:
        """Upload a style reference as its own job, named by its content (so it is uploaded once), and wait for
        it; returns the job id a generation names as ``style_job_id``."""
        import hashlib

        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        job_id = "ref-" + hashlib.sha256(audio.tobytes() + str(sample_rate).encode()).hexdigest()[:16]
        self.submit(job_id, {"kind": "reference"}, audio, sample_rate)
        self.wait(job_id, timeout_seconds=timeout_seconds)
        return job_id

    def generate(self, job_id: str, params: dict, audio: np.ndarray, sample_rate: int, *,
                 on_progress: Callable[[dict], None] | None = None, timeout_seconds: float = 600.0):
        """Submit, wait and fetch in one call; raises ``BridgeError`` if the job fails or is cancelled."""
        self.submit(job_id, params, audio, sample_rate)
        job = self.wait(job_id, on_progress=on_progress, timeout_seconds=timeout_seconds)
        if job["state"] != P.DONE:
            raise BridgeError.from_error(job.get("error") or {"code": job["state"], "message": f"job {job['state']}"})
        return self.fetch(job_id)
