"""The engine server: one process that serves any number of plugin instances over ZeroMQ, plus OSC control.

Threads, each owning its own sockets:
- the **socket thread** owns the ROUTER socket: it authenticates and validates every message, keeps
  the job table, writes uploaded chunks to disk, serves result chunks, and sends progress, job
  updates and heartbeats. It never runs the generator, so it stays responsive while a job computes;
- the **worker thread** runs queued jobs one at a time through the injected ``generate`` callable
  and reports back through an inproc socket;
- the **OSC thread** answers small UDP control messages (``/backline/ping``: alive to anyone, job details with
  the token; ``/backline/cancel`` with the token).

The compute is injected: ``generate(params, context (channels, frames) float32 read-only, sample_rate,
progress(step, steps), cancelled()) -> (audio (channels, frames), sample_rate, info)``. It may raise
``AudioError`` or ``ValueError`` for a bad request (the client gets a clear error); anything else fails
the job with its message and the server keeps serving.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import mmap
import os
import queue
import secrets
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import zmq

from backline.engine.audio import AudioError, validate_audio

from . import protocol as P
from .protocol import Code, Limits, ProtocolError
from .results import ResultStore, private_dir

log = logging.getLogger("backline.bridge")

Generate = Callable[..., tuple[np.ndarray, int, dict]]
CONNECTION_FILE_NAME = "engine.json"
MAX_SOCKET_PATH_BYTES = 103  # sun_path is 104 bytes on macOS and the BSDs, 108 on Linux, with its NUL
MAX_WATCHERS_PER_JOB = 8
MAX_FINAL_JOBS_IN_MEMORY = 1000
SERVER_PARAMS = ("source_job_id", "style_job_id", "kind")  # resolved by the server, not the generator
DISK_HEADROOM_BYTES = 256 << 20  # submit leaves at least this much disk free after the region


def _emit(events: zmq.Socket, event: dict) -> None:
    """Report to the socket thread; never blocks (once the socket thread has gone, reports are dropped)."""
    try:
        events.send_json(event, zmq.NOBLOCK)
    except zmq.ZMQError:
        pass


class JobCancelled(Exception):
    """Raised inside the generator (from its progress callback) once a job is cancelled."""


def keep_chunk_memory_in_process() -> bool:
    """Tune glibc's allocator for a process that streams audio in chunks; returns whether it applied.

    For the engine process only (``backline serve`` and the bridge benchmark call it), never from library code:
    it changes the whole process. By default glibc hands chunk-sized blocks (ZeroMQ's message buffers, each read
    result chunk) back to the kernel as soon as they are freed, so every next chunk faults in fresh pages; on the
    2-core development VM that was about 40% of the download time. With these settings blocks under 4 MiB come from
    the heap and up to 64 MiB of freed heap stays mapped for reuse. The peak does not grow: the same few chunk
    buffers are reused. All threads share one heap (glibc's arenas): each thread that allocates (the engine's
    STFT workers, onnxruntime's) would otherwise keep its own freed blocks, about 35 MiB more at the peak of a
    5-minute region. A no-op where there is no glibc (macOS, Windows)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
    return (bool(mallopt(m_mmap_threshold, 4 << 20)) and bool(mallopt(m_trim_threshold, 64 << 20))
            and bool(mallopt(m_arena_max, 1)))


def _create_upload_file(path: Path) -> None:
    """Create an empty upload file (0600); it grows as chunks arrive, so a client that submits and vanishes
    holds no disk (submit checks that the region would fit)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _drop_pages(mapping: mmap.mmap) -> None:
    """Unmap the pages of a read-only file mapping that this process has touched (they stay in the page cache)."""
    if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):  # not on Windows
        mapping.madvise(mmap.MADV_DONTNEED)


def default_runtime_dir() -> Path:
    """$BACKLINE_RUNTIME_DIR, else ~/.cache/backline/runtime: where the connection file lives."""
    return Path(os.environ.get("BACKLINE_RUNTIME_DIR") or Path.home() / ".cache" / "backline" / "runtime")


def default_results_dir() -> Path:
    """$BACKLINE_RESULTS_DIR, else ~/.cache/backline/results: the engine-owned folder of finished results."""
    return Path(os.environ.get("BACKLINE_RESULTS_DIR") or Path.home() / ".cache" / "backline" / "results")


def write_connection_file(path: Path, info: dict) -> Path:
    """Write ``info`` as JSON readable by the current user only (0600), in a 0700 folder."""
    private_dir(path.parent)
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        json.dump(info, file, indent=2)
    os.replace(partial, path)
    return path


@dataclass
class Job:
    job_id: str
    digest: str
    params: dict
    sample_rate: int
    channels: int
    frames: int
    state: str = P.SUBMITTED
    next_index: int = 0
    received_frames: int = 0
    step: int = 0
    steps: int = 0
    eta_seconds: float | None = None
    error: dict | None = None
    result: dict | None = None  # the result store's metadata once done
    watchers: list[bytes] = field(default_factory=list)  # ROUTER identities that get updates
    cancel: threading.Event = field(default_factory=threading.Event)
    upload_path: Path | None = None
    updated_at: float = field(default_factory=time.monotonic)
    audio_sha256: str = ""  # what the client says the region is; checked as the last chunk arrives
    owner: bytes = b""  # the connection that submitted it
    hasher: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)

    def snapshot(self, limits: Limits) -> dict:
        """The ``job`` message body: everything a client needs to resume or fetch."""
        body = {
            "type": "job", "job_id": self.job_id, "state": self.state, "next_index": self.next_index,
            "received_frames": self.received_frames, "frames": self.frames, "step": self.step,
            "steps": self.steps, "cancel_requested": self.cancel.is_set() and self.state not in P.FINAL_STATES,
            "error": self.error, "result": None,
        }
        if self.result is not None:
            chunk_frames = limits.result_chunk_frames
            body["result"] = {
                "sample_rate": self.result["sample_rate"], "channels": self.result["channels"],
                "frames": self.result["frames"], "chunk_frames": chunk_frames,
                "chunks": -(-self.result["frames"] // chunk_frames), "info": self.result["info"],
            }
        return body

    def watch(self, identity: bytes) -> None:
        if identity in self.watchers:
            self.watchers.remove(identity)
        self.watchers.append(identity)
        del self.watchers[:-MAX_WATCHERS_PER_JOB]


class BridgeServer:
    """ZeroMQ ROUTER job server with an injected generator. ``start()`` returns once it is serving."""

    def __init__(
        self,
        generate: Generate,
        *,
        runtime_dir: Path | None = None,
        results_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        osc_port: int | None = 0,
        limits: Limits = Limits(),
        max_results: int = 100,
        max_result_age_seconds: float = 7 * 86400.0,
        models: list[str] | None = None,
        ipc: bool = True,
        check_params: Callable[[dict], None] | None = None,
    ):
        self.generate, self.host, self.port, self.osc_port = generate, host, port, osc_port
        self.ipc = ipc
        self.ipc_endpoint: str | None = None  # set once bound
        self.limits, self.models = limits, models or list(getattr(generate, "models", []))  # named in welcome
        self.style_pads = getattr(generate, "style_pads", None) or {}  # the style pad's sounds, for plugins to draw
        self.runtime_dir = Path(runtime_dir) if runtime_dir else default_runtime_dir()
        self.store = ResultStore(
            Path(results_dir) if results_dir else default_results_dir(),
            max_results=max_results, max_age_seconds=max_result_age_seconds,
        )
        self.upload_dir = self.store.root.parent / (self.store.root.name + ".uploads")
        self.token = secrets.token_hex(32)
        self.connection_file = self.runtime_dir / CONNECTION_FILE_NAME
        self.counters = {"refused": 0, "unauthorized": 0, "dropped_sends": 0, "jobs": 0}
        # refuses bad parameters at submit, before the upload: given, or the generator's own (``check_params``)
        self.check_params = check_params or getattr(generate, "check_params", None)
        self._saturated: set[bytes] = set()  # connections whose reply queue was full at the last send
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._current: tuple[str, int, int, float] | None = None  # (job_id, step, steps, since) written by worker
        self._events_address = f"inproc://backline-events-{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._context = zmq.Context()
        self._osc_server = None
        self._started_monotonic = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "BridgeServer":
        """Bind, load finished results, write the connection file and start the threads."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "BridgeServer":
        private_dir(self.upload_dir)
        for stale in self.upload_dir.iterdir():  # uploads never survive a restart
            stale.unlink(missing_ok=True)
        self.store.prune()
        for meta in self.store.load_all():
            if meta.get("models") != self.models:  # made by other models: the same request must run again on these
                shutil.rmtree(self.store.folder(meta["job_id"]), ignore_errors=True)
                continue
            job = Job(meta["job_id"], meta["digest"], {}, meta["sample_rate"], meta["channels"], meta["frames"],
                      state=P.DONE, result=meta)
            self.jobs[job.job_id] = job

        self._router = self._context.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
        self._router.setsockopt(zmq.SNDHWM, self.limits.max_reply_messages_per_peer)  # bounds unread replies
        self._router.setsockopt(zmq.RCVHWM, 64)  # per peer: bounds memory held for chunks in flight
        if self.port:
            self._router.bind(f"tcp://{self.host}:{self.port}")
        else:
            self.port = self._router.bind_to_random_port(f"tcp://{self.host}")
        if self.ipc:
            self.ipc_endpoint = self._bind_ipc()
        self._events = self._context.socket(zmq.PULL)
        self._events.setsockopt(zmq.LINGER, 0)
        self._events.bind(self._events_address)

        self._threads = [
            threading.Thread(target=self._socket_loop, name="bridge-socket", daemon=True),
            threading.Thread(target=self._worker_loop, name="bridge-worker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if self.osc_port is not None:
            self._start_osc()
        write_connection_file(self.connection_file, self.connection_info())
        log.info("serving on tcp://%s:%d%s (OSC udp %s), connection file %s", self.host, self.port,
                 f" and {self.ipc_endpoint}" if self.ipc_endpoint else "", self.osc_port, self.connection_file)
        return self

    def _bind_ipc(self) -> str | None:
        """Bind the ROUTER also to a Unix domain socket in the private runtime folder and return its endpoint, or None
        where ZeroMQ has no ipc transport or the path is too long for a socket address (clients then use tcp).

        Same-machine clients reach the engine through it at about three times loopback TCP's throughput (no TCP
        segmentation and acknowledgements). The folder is 0700 and the socket 0600, so only this user can connect,
        and every message still needs the token. The name carries the pid, so a second server on the same folder
        never removes this one's socket; sockets left by killed servers are removed here."""
        if not zmq.has("ipc"):
            return None
        private_dir(self.runtime_dir)
        for stale in self.runtime_dir.glob("engine-*.sock"):
            if not P.process_alive(stale.stem.split("-")[1]):
                stale.unlink(missing_ok=True)
        path = self.runtime_dir.resolve() / f"engine-{os.getpid()}-{secrets.token_hex(3)}.sock"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            log.info("no ipc endpoint: the runtime folder's path is too long for a socket (%s)", path)
            return None
        endpoint = f"ipc://{path}"
        self._router.bind(endpoint)
        os.chmod(path, 0o600)
        return endpoint

    def connection_info(self) -> dict:
        return {
            "protocol_version": P.PROTOCOL_VERSION, "transport": "tcp", "host": self.host, "port": self.port,
            "osc_port": self.osc_port, "token": self.token, "pid": os.getpid(),
            "results_dir": str(self.store.root),
            **({"ipc_endpoint": self.ipc_endpoint} if self.ipc_endpoint else {}),
        }

    def stop(self) -> None:
        """Stop all threads, close sockets, remove the connection file. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._queue.put(None)
        waker = self._context.socket(zmq.PUSH)  # wake the socket thread now rather than at its next poll
        waker.connect(self._events_address)
        _emit(waker, {"event": "stop"})
        waker.close(linger=100)
        for job in list(self.jobs.values()):  # a running job stops at its next step
            job.cancel.set()
        if self._osc_server is not None:
            self._osc_server.shutdown()
            self._osc_server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        try:
            if json.loads(self.connection_file.read_text()).get("token") == self.token:
                self.connection_file.unlink()
        except (OSError, ValueError):
            pass
        if self.ipc_endpoint:  # this server's own name: no other server's socket is ever removed here
            Path(self.ipc_endpoint[len("ipc://"):]).unlink(missing_ok=True)
        if stuck:  # a generator that ignores cancel: leave its sockets to process exit rather than hang
            log.warning("threads still running at shutdown: %s", ", ".join(stuck))
        else:
            for sock in (getattr(self, "_router", None), getattr(self, "_events", None)):
                if sock is not None and not sock.closed:  # start() failed before the socket thread ran
                    sock.close(linger=0)
            self._context.term()
        log.info("stopped")

    def __enter__(self) -> "BridgeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- socket thread ---------------------------------------------------------------------------

    def _socket_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        next_heartbeat = time.monotonic()
        try:
            while not self._stop.is_set():
                timeout_ms = max(0, min(250, int((next_heartbeat - time.monotonic()) * 1000)))
                ready = dict(poller.poll(timeout_ms))
                if self._events in ready:
                    while self._events.poll(0):
                        self._on_event(self._events.recv_json())
                if self._router in ready:
                    for _ in range(100):  # bounded burst, then look at events and heartbeats again
                        try:
                            frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_message(frames)
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + self.limits.heartbeat_interval_seconds
                    self._send_heartbeats()
                    self._sweep()
        finally:
            self._router.close(linger=0)
            self._events.close(linger=0)

    def _send(self, identity: bytes, header: dict, blobs: list[bytes] | tuple = ()) -> None:
        """Send without blocking; a vanished peer (ROUTER_MANDATORY) or full queue only costs a counter.
        ZeroMQ copies the blobs: at these sizes that is cheaper than its zero-copy path (a release thread)."""
        try:
            self._router.send_multipart([identity, *P.encode(header, blobs)], zmq.NOBLOCK)
        except zmq.ZMQError as error:
            self.counters["dropped_sends"] += 1
            if error.errno == zmq.EAGAIN:  # its queue is full (max_reply_bytes_per_peer): it stopped reading
                self._saturated.add(identity)
        else:
            self._saturated.discard(identity)

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        identity, rest = frames[0].bytes, frames[1:]
        request_id = None
        try:
            header, blobs = P.decode(rest)
            request_id = header.get("req") if isinstance(header.get("req"), (str, int)) else None
            if not self._token_ok(header.get("token")):
                self.counters["unauthorized"] += 1
                raise ProtocolError(Code.UNAUTHORIZED, "wrong or missing token: re-read the engine's connection file")
            P.validate_request(header, blobs)
            reply = getattr(self, f"_on_{header['type']}")(identity, header, blobs)
        except ProtocolError as error:
            self.counters["refused"] += 1
            log.info("refused a message: %s (%s)", error.message, error.code)
            reply = {"type": "error", **error.as_dict()}
        except Exception as error:  # a bug here must not take the server down
            log.exception("error handling a message")
            reply = {"type": "error", "code": Code.INTERNAL, "message": f"engine error: {error}", "retry": True}
        if reply is not None:
            if request_id is not None:
                reply["req"] = request_id
            self._send(identity, reply)

    def _token_ok(self, token: object) -> bool:
        """Whether ``token`` is this server's (any other value, text that is not valid UTF-8 included, is not)."""
        try:
            return isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())
        except UnicodeEncodeError:
            return False

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ProtocolError(Code.UNKNOWN_JOB, f"no job {job_id!r} (it may have expired)", job_id=job_id)
        return job

    def _on_hello(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict:
        return {
            "type": "welcome", "protocol_version": P.PROTOCOL_VERSION, "server": "backline",
            "limits": self.limits.as_dict(), "models": self.models, "style_pads": self.style_pads,
        }

    def _on_submit(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict:
        job_id, params = header["job_id"], header["params"]
        sample_rate, channels, frames = header["sample_rate"], header["channels"], header["frames"]
        P.check_region(sample_rate, channels, frames, self.limits)
        if self.check_params is not None:
            try:
                self.check_params({k: v for k, v in params.items() if k not in SERVER_PARAMS})
            except ValueError as error:
                raise ProtocolError(Code.BAD_REQUEST, str(error)) from None
        digest = P.request_digest(params, sample_rate, channels, frames, header["audio_sha256"])
        job = self.jobs.get(job_id)
        if job is not None:
            if job.digest != digest:
                raise ProtocolError(
                    Code.JOB_CONFLICT,
                    f"job {job_id!r} already exists with different parameters or audio; use a new job id",
                    job_id=job_id,
                )
            job.watch(identity)
            return job.snapshot(self.limits)
        uploading = [job for job in self.jobs.values() if job.state in (P.SUBMITTED, P.UPLOADING)]
        if sum(job.owner == identity for job in uploading) >= self.limits.max_uploads_per_peer:
            raise ProtocolError(Code.BUSY, f"this connection already uploads {self.limits.max_uploads_per_peer} "
                                "regions; finish or cancel one first", retry=True)
        if len(uploading) >= self.limits.max_uploads:
            raise ProtocolError(Code.BUSY, "the engine is receiving too many regions; try again shortly", retry=True)
        if self._queue.qsize() >= self.limits.max_queued_jobs:
            raise ProtocolError(Code.BUSY, "the engine's queue is full; try again later", retry=True)
        length = frames * channels * P.BYTES_PER_SAMPLE
        if shutil.disk_usage(self.upload_dir).free < length + DISK_HEADROOM_BYTES:
            raise ProtocolError(Code.BUSY, "the engine's disk is full: there is no room for this region until space "
                                "is freed", retry=True)
        job = Job(job_id, digest, params, sample_rate, channels, frames, audio_sha256=header["audio_sha256"],
                  owner=identity)
        job.upload_path = self.upload_dir / f"{uuid.uuid4().hex}.f32"
        _create_upload_file(job.upload_path)
        job.watch(identity)
        self.jobs[job_id] = job
        self.counters["jobs"] += 1
        log.info("job %s submitted: %d frames x %d ch at %d Hz", job_id, frames, channels, sample_rate)
        return job.snapshot(self.limits)

    def _on_chunk(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict:
        job = self._job(header["job_id"])
        index, start_frame, frames = header["index"], header["start_frame"], header["frames"]
        ack = {"type": "ack", "job_id": job.job_id, "index": index}
        if job.state not in (P.SUBMITTED, P.UPLOADING) or index < job.next_index:
            # A repeated chunk (a client resending after a lost ack) or the upload is over: acknowledge again.
            return {**ack, "next_index": job.next_index, "received_frames": job.received_frames, "state": job.state}
        if index > job.next_index or start_frame != job.received_frames:
            raise ProtocolError(
                Code.CHUNK_OUT_OF_ORDER,
                f"chunk {index} (start frame {start_frame}) arrived out of order; expected chunk "
                f"{job.next_index} at frame {job.received_frames}",
                retry=True, job_id=job.job_id, next_index=job.next_index, received_frames=job.received_frames,
            )
        if not 0 < frames <= self.limits.max_chunk_frames or job.received_frames + frames > job.frames:
            raise ProtocolError(
                Code.BAD_CHUNK,
                f"chunk {index}: {frames} frames is not within 1..{self.limits.max_chunk_frames} or runs past the "
                f"region's {job.frames} frames", job_id=job.job_id,
            )
        expected_bytes = frames * job.channels * P.BYTES_PER_SAMPLE
        if blobs[0].nbytes != expected_bytes:
            raise ProtocolError(
                Code.BAD_CHUNK,
                f"chunk {index}: audio frame has {blobs[0].nbytes} bytes; {frames} frames x {job.channels} channels "
                f"of float32 need {expected_bytes}", job_id=job.job_id,
            )
        if not np.isfinite(np.frombuffer(blobs[0], dtype="<f4")).all():
            self._finish(job, P.FAILED, error=ProtocolError(
                Code.BAD_AUDIO, f"the region contains NaN or infinite samples (chunk {index})").as_dict())
            raise ProtocolError(
                Code.BAD_AUDIO, f"the region contains NaN or infinite samples (chunk {index})", job_id=job.job_id)
        fd = os.open(job.upload_path, os.O_WRONLY)  # straight from the received frame to the file, no copy
        try:
            written = os.pwrite(fd, blobs[0], job.received_frames * job.channels * P.BYTES_PER_SAMPLE)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            written = -1
        finally:
            os.close(fd)
        if written != expected_bytes:
            self._finish(job, P.FAILED, error=ProtocolError(
                Code.BUSY, "the engine's disk filled up during the upload; free some space and try again",
                retry=True).as_dict())
            raise ProtocolError(Code.BUSY, "the engine's disk filled up during the upload; free some space and try "
                                "again", retry=True, job_id=job.job_id)
        job.hasher.update(blobs[0])
        job.state, job.updated_at = P.UPLOADING, time.monotonic()
        job.next_index += 1
        job.received_frames += frames
        if job.received_frames == job.frames and job.hasher.hexdigest() != job.audio_sha256:
            message = ("the region's audio arrived different from what was sent (its SHA-256 does not match "
                       "audio_sha256); nothing was generated: send it again")
            self._finish(job, P.FAILED, error=ProtocolError(Code.BAD_AUDIO, message).as_dict())
            raise ProtocolError(Code.BAD_AUDIO, message, job_id=job.job_id)
        return {**ack, "next_index": job.next_index, "received_frames": job.received_frames, "state": job.state}

    def _on_start(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict:
        job = self._job(header["job_id"])
        job.watch(identity)
        if job.state in (P.SUBMITTED, P.UPLOADING):
            if job.received_frames < job.frames:
                raise ProtocolError(
                    Code.UPLOAD_INCOMPLETE,
                    f"the upload is incomplete: {job.received_frames} of {job.frames} frames received",
                    retry=True, job_id=job.job_id, next_index=job.next_index, received_frames=job.received_frames,
                )
            job.state, job.updated_at = P.QUEUED, time.monotonic()
            self._queue.put(job)
            log.info("job %s queued (%d ahead)", job.job_id, self._queue.qsize() - 1)
        return job.snapshot(self.limits)

    def _on_cancel(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict:
        job = self._job(header["job_id"])
        job.watch(identity)
        self.cancel_job(job)
        return job.snapshot(self.limits)

    def cancel_job(self, job: Job) -> None:
        """Cancel now if the job is not running; a running job stops at its next step (socket thread only)."""
        if job.state in P.FINAL_STATES:
            return
        job.cancel.set()
        if job.state != P.RUNNING:  # queued jobs are skipped by the worker when dequeued
            self._finish(job, P.CANCELLED)

    def _on_status(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict:
        if header.get("job_id") is None:
            return {**self._server_status(), "type": "status"}
        job = self._job(header["job_id"])
        job.watch(identity)
        return job.snapshot(self.limits)

    def _on_fetch(self, identity: bytes, header: dict, blobs: list[bytes]) -> dict | None:
        if identity in self._saturated:
            raise ProtocolError(Code.BUSY, "this connection has not read the result chunks already sent to it; "
                                "read them before asking for more", retry=True)
        job = self._job(header["job_id"])
        if job.state != P.DONE:
            raise ProtocolError(Code.NOT_READY, f"job {job.job_id!r} is {job.state}, not done", job_id=job.job_id,
                                state=job.state, retry=job.state not in P.FINAL_STATES)
        meta, chunk_frames = job.result, self.limits.result_chunk_frames
        chunks = -(-meta["frames"] // chunk_frames)
        index = header["index"]
        if not 0 <= index < chunks:
            raise ProtocolError(Code.BAD_FIELD, f"result chunk {index} is not within 0..{chunks - 1}", field="index")
        start_frame = index * chunk_frames
        frames = min(chunk_frames, meta["frames"] - start_frame)
        try:
            blob = self.store.read_chunk(meta, start_frame, frames)
        except OSError:
            raise ProtocolError(Code.RESULT_EXPIRED, f"the result of job {job.job_id!r} is no longer on disk",
                                job_id=job.job_id) from None
        reply = {"type": "result_chunk", "job_id": job.job_id, "index": index, "chunks": chunks,
                 "start_frame": start_frame, "frames": frames, "channels": meta["channels"],
                 "sample_rate": meta["sample_rate"]}
        if isinstance(header.get("req"), (str, int)):
            reply["req"] = header["req"]
        self._send(identity, reply, [blob])
        return None

    def _server_status(self) -> dict:
        current = self._current
        states = [job.state for job in list(self.jobs.values())]  # also called from the OSC thread
        return {
            "busy": current is not None,
            "job_id": current[0] if current else None,
            "step": current[1] if current else 0,
            "steps": current[2] if current else 0,
            "step_elapsed_seconds": round(time.monotonic() - current[3], 3) if current else 0.0,
            "queued": states.count(P.QUEUED),
            "uploading": states.count(P.UPLOADING) + states.count(P.SUBMITTED),
            "uptime_seconds": round(time.monotonic() - self._started_monotonic, 3),
        }

    def _send_heartbeats(self) -> None:
        """Heartbeat every client that watches an unfinished job: which job runs, which step, for how long."""
        identities = {i for job in self.jobs.values() if job.state not in P.FINAL_STATES for i in job.watchers}
        if identities:
            beat = {"type": "heartbeat", **self._server_status()}
            for identity in identities:
                self._send(identity, beat)

    def _sweep(self) -> None:
        """Drop uploads whose client went quiet, and forget old unfinished-on-disk job records."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.state in (P.SUBMITTED, P.UPLOADING) and now - job.updated_at > self.limits.upload_timeout_seconds:
                log.info("job %s: upload abandoned after %.0f s, freed", job.job_id, now - job.updated_at)
                job.upload_path.unlink(missing_ok=True)
                del self.jobs[job.job_id]  # forgotten: resubmitting the id starts afresh
        final = [job for job in self.jobs.values() if job.state in (P.FAILED, P.CANCELLED)]
        for job in sorted(final, key=lambda j: j.updated_at)[: max(0, len(final) - MAX_FINAL_JOBS_IN_MEMORY)]:
            del self.jobs[job.job_id]

    def _finish(self, job: Job, state: str, *, error: dict | None = None, result: dict | None = None) -> None:
        """Record a final state and tell the job's watchers (socket thread only)."""
        if job.state in (P.SUBMITTED, P.UPLOADING) and job.upload_path is not None:
            job.upload_path.unlink(missing_ok=True)  # once queued, the worker owns (and removes) the upload
        job.state, job.error, job.updated_at = state, error, time.monotonic()
        job.result = result if state == P.DONE else None
        log.info("job %s %s%s", job.job_id, state, f": {error['message']}" if error else "")
        update = job.snapshot(self.limits)
        for identity in job.watchers:
            self._send(identity, update)

    def _on_event(self, event: dict) -> None:
        """Apply a report from the worker or the OSC thread (socket thread only)."""
        kind = event["event"]
        if kind == "stop":
            return
        if kind == "osc_cancel":
            job = self.jobs.get(event["job_id"])
            if job is not None:
                self.cancel_job(job)
            return
        if kind == "pruned":
            for job_id in event["job_ids"]:
                job = self.jobs.get(job_id)
                if job is not None and job.state == P.DONE:
                    del self.jobs[job_id]
            return
        job = self.jobs.get(event["job_id"])
        if job is None or job.state in P.FINAL_STATES:
            # Cancelled here while the worker was already picking it up: the first final state stands.
            if job is not None and kind == "finished" and event["state"] == P.DONE and job.state != P.DONE:
                shutil.rmtree(self.store.folder(job.job_id), ignore_errors=True)
            return
        if kind == "running":
            job.state, job.updated_at = P.RUNNING, time.monotonic()
            update = job.snapshot(self.limits)
            for identity in job.watchers:
                self._send(identity, update)
        elif kind == "progress":
            job.step, job.steps, job.eta_seconds = event["step"], event["steps"], event["eta_seconds"]
            message = {"type": "progress", "job_id": job.job_id, "step": job.step, "steps": job.steps,
                       "eta_seconds": job.eta_seconds, "elapsed_seconds": event["elapsed_seconds"]}
            for identity in job.watchers:
                self._send(identity, message)
        elif kind == "finished":
            job.upload_path = None  # the worker already removed it
            self._finish(job, event["state"], error=event.get("error"), result=event.get("result"))

    # ---- worker thread ---------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        events = self._context.socket(zmq.PUSH)
        events.setsockopt(zmq.LINGER, 0)
        events.connect(self._events_address)
        try:
            while not self._stop.is_set():
                job = self._queue.get()
                if job is None:
                    break
                if job.cancel.is_set():
                    job.upload_path and job.upload_path.unlink(missing_ok=True)
                    continue  # already reported cancelled by the socket thread
                self._run(job, events)
        finally:
            events.close(linger=0)

    def _source_audio(self, source_id: object, job: Job, *, same_region: bool = True) -> tuple[np.ndarray, int]:
        """The finished result of job ``source_id``: ((channels, frames), sample rate); with ``same_region``,
        checked to cover ``job``'s region (same rate and length)."""
        source = self.jobs.get(source_id) if isinstance(source_id, str) else None
        meta = source.result if source is not None else None
        if meta is None:
            raise ValueError(f"source job {source_id!r} has no finished result to work on")
        if same_region and (meta["sample_rate"] != job.sample_rate or meta["frames"] != job.frames):
            raise ValueError(f"source job {source_id!r} is {meta['frames']} frames at {meta['sample_rate']} Hz; "
                             f"this region is {job.frames} frames at {job.sample_rate} Hz")
        try:
            blob = self.store.read_chunk(meta, 0, meta["frames"])
        except OSError:
            raise ValueError(f"the result of source job {source_id!r} is no longer on disk") from None
        return np.frombuffer(blob, dtype="<f4").reshape(-1, meta["channels"]).T.copy(), meta["sample_rate"]

    def _run(self, job: Job, events: zmq.Socket) -> None:
        """Run one job through the generator and report exactly one final state."""
        started = time.monotonic()
        last_progress = [0.0]
        self._current = (job.job_id, 0, 0, started)
        _emit(events, {"event": "running", "job_id": job.job_id})

        def progress(step: int, steps: int) -> None:
            now = time.monotonic()
            self._current = (job.job_id, step, steps, now)
            if now - last_progress[0] >= self.limits.progress_interval_seconds or step >= steps:
                last_progress[0] = now
                elapsed = now - started
                eta = elapsed / step * (steps - step) if step > 0 else None
                _emit(events, {"event": "progress", "job_id": job.job_id, "step": step, "steps": steps,
                                  "eta_seconds": None if eta is None else round(eta, 3),
                                  "elapsed_seconds": round(elapsed, 3)})
            if job.cancel.is_set():
                raise JobCancelled(job.job_id)

        outcome: dict = {"event": "finished", "job_id": job.job_id}
        mapping = None
        try:
            mapping = self._map_upload(job)
            # The region as the generator sees it: a read-only (channels, frames) float32 view of the uploaded
            # file, whose shape, rate and samples were checked as it arrived. The server holds no copy of it.
            context = np.frombuffer(mapping, dtype="<f4").reshape(job.frames, job.channels).T
            params = dict(job.params)
            if params.get("kind") == "reference":  # a style reference: kept as uploaded, nothing generated
                if set(params) != {"kind"}:
                    raise ValueError("a reference upload takes no other parameters")
                audio, sample_rate, info = context, job.sample_rate, {"kind": "reference"}
            else:
                if "source_job_id" in params:  # regenerate a range of, or vary, an earlier job's stem
                    params["stem"], _ = self._source_audio(params.pop("source_job_id"), job)
                if "style_job_id" in params:  # a style reference uploaded earlier as a reference job
                    params["style_audio"], params["style_sample_rate"] = self._source_audio(
                        params.pop("style_job_id"), job, same_region=False)
                audio, sample_rate, info = self.generate(
                    params, context, job.sample_rate, progress, job.cancel.is_set)
            if job.cancel.is_set():
                raise JobCancelled(job.job_id)
            audio = np.asarray(audio)
            audio = audio[None, :] if audio.ndim == 1 else audio
            try:  # shape, type and rate checked on the first frame; the store checks every sample as it writes
                validate_audio(audio[:, :1] if audio.ndim == 2 else audio, int(sample_rate), what="generated audio")
                # Streamed to disk a block at a time. An echoed region is read through the mapping, so its pages
                # are dropped from this process after each block: the page cache keeps them, not the server.
                meta = self.store.save(job.job_id, job.digest, audio, int(sample_rate), dict(info or {}),
                                       models=self.models, after_block=lambda: _drop_pages(mapping))
            except AudioError as error:
                raise RuntimeError(f"the engine produced unusable audio: {error}") from error
            outcome.update(state=P.DONE, result=meta)
            pruned = [job_id for job_id in self.store.prune() if job_id != job.job_id]
            if pruned:  # reported before "finished", so a client never sees a pruned result as fetchable
                _emit(events, {"event": "pruned", "job_ids": pruned})
        except Exception as error:
            if job.cancel.is_set():
                outcome.update(state=P.CANCELLED)
            elif isinstance(error, AudioError):
                outcome.update(state=P.FAILED, error=ProtocolError(Code.BAD_AUDIO, str(error)).as_dict())
            elif isinstance(error, ValueError):
                outcome.update(state=P.FAILED, error=ProtocolError(Code.BAD_REQUEST, str(error)).as_dict())
            else:
                log.exception("job %s failed", job.job_id)
                outcome.update(state=P.FAILED, error=ProtocolError(
                    Code.ENGINE_ERROR, f"the engine failed: {error}", retry=True).as_dict())
        finally:
            context = audio = None
            if mapping is not None:
                try:
                    mapping.close()
                except BufferError:  # the generator kept a view of the region: unmapped once that goes
                    pass
            job.upload_path.unlink(missing_ok=True)
            self._current = None
        _emit(events, outcome)

    @staticmethod
    def _map_upload(job: Job) -> mmap.mmap:
        """The job's complete upload file, memory-mapped read-only."""
        length = job.frames * job.channels * P.BYTES_PER_SAMPLE
        fd = os.open(job.upload_path, os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != length:  # a short file would fault (SIGBUS) when read through the map
                raise RuntimeError(f"the uploaded region is {os.fstat(fd).st_size} bytes on disk, not {length}")
            return mmap.mmap(fd, length, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    # ---- OSC thread ------------------------------------------------------------------------------

    def _start_osc(self) -> None:
        from pythonosc.dispatcher import Dispatcher
        from pythonosc.osc_message_builder import OscMessageBuilder
        from pythonosc.osc_server import BlockingOSCUDPServer

        local = threading.local()

        def reply(address: tuple, path: str, *args) -> None:
            builder = OscMessageBuilder(address=path)
            for arg in args:
                builder.add_arg(arg)
            self._osc_server.socket.sendto(builder.build().dgram, address)

        def on_ping(client_address, osc_path, *args):
            # /backline/ping: "alive" to anyone; /backline/ping TOKEN: the job details too
            if not args:
                reply(client_address, "/backline/alive")
                return
            if len(args) != 1 or not self._token_ok(args[0]):
                self.counters["unauthorized"] += 1
                reply(client_address, "/backline/error", Code.UNAUTHORIZED, "wrong token")
                return
            status = self._server_status()
            reply(client_address, "/backline/status", "busy" if status["busy"] else "idle",
                  status["job_id"] or "", status["step"], status["steps"], status["queued"])

        def on_cancel(client_address, osc_path, *args):
            # /backline/cancel JOB_ID TOKEN: UDP has no connection, so the token travels with the command.
            if len(args) != 2 or not all(isinstance(arg, str) for arg in args):
                reply(client_address, "/backline/error", Code.BAD_FIELD, "usage: /backline/cancel JOB_ID TOKEN")
                return
            if not self._token_ok(args[1]):
                self.counters["unauthorized"] += 1
                reply(client_address, "/backline/error", Code.UNAUTHORIZED, "wrong token")
                return
            if not hasattr(local, "events"):  # one PUSH socket owned by the OSC thread
                local.events = self._context.socket(zmq.PUSH)
                local.events.setsockopt(zmq.LINGER, 0)
                local.events.connect(self._events_address)
            _emit(local.events, {"event": "osc_cancel", "job_id": args[0]})
            reply(client_address, "/backline/cancelling", args[0])

        dispatcher = Dispatcher()
        dispatcher.map("/backline/ping", on_ping, needs_reply_address=True)
        dispatcher.map("/backline/cancel", on_cancel, needs_reply_address=True)
        self._osc_server = BlockingOSCUDPServer((self.host, self.osc_port or 0), dispatcher)
        self.osc_port = self._osc_server.server_address[1]

        def serve() -> None:
            try:
                self._osc_server.serve_forever(poll_interval=0.05)
            finally:
                if hasattr(local, "events"):
                    local.events.close(linger=0)

        thread = threading.Thread(target=serve, name="bridge-osc", daemon=True)
        thread.start()
        self._threads.append(thread)
