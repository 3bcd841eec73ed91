"""``backline bench reliability``: the engine server tried as a hostile or careless client would, on loopback.

Runs ``backline serve`` (the shipped models, or ``--demo-generator``) as a real process and counts: faults
survived (SIGKILL mid-job and a restart, SIGSTOP, a client vanishing mid-upload, a reused job id with other
audio), malformed messages answered clearly (a documented code other than ``internal``, ``retry`` false where
retrying cannot help, a message without Python internals), bad audio files refused in one sentence, jobs
lost or wrong over 20 jobs (each stem equal to its twin's), and the server's memory over those jobs and
under a client that never reads its replies. Writes the figures to a JSON file.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from backline.engine.audio import AudioError, read_audio

from . import protocol as P
from .client import BridgeClient, BridgeError

SAMPLE_RATE = 44_100
INTERNALS = re.compile(r"Traceback|not supported between|NoneType|unpack|SeedSequence|ufunc|object has no attribute|"
                       r"possibly a pipe|Error :|codec can't")
DOCUMENTED = {value for name, value in vars(P.Code).items() if name.isupper()}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Engine:
    """``backline serve`` in a subprocess with its own runtime and results folders."""

    def __init__(self, folder: Path, demo: bool):
        self.folder, self.demo, self.process = folder, demo, None

    def start(self) -> "Engine":
        command = [sys.executable, "-m", "backline", "serve", "--runtime-dir", str(self.folder / "run"),
                   "--results-dir", str(self.folder / "results"), "--osc-port", "-1"]
        self.process = subprocess.Popen(command + (["--demo-generator"] if self.demo else []),
                                        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                info = json.loads(self.connection_file.read_text())
                if info.get("pid") == self.process.pid:
                    return self
            except (OSError, ValueError):
                pass
            if self.process.poll() is not None:
                raise RuntimeError("backline serve exited at start")
            time.sleep(0.1)
        raise RuntimeError("backline serve did not start in 120 s")

    @property
    def connection_file(self) -> Path:
        return self.folder / "run" / "engine.json"

    def client(self, **kwargs) -> BridgeClient:
        return BridgeClient(self.connection_file, **{"timeout_seconds": 60.0, "silence_seconds": 30.0, **kwargs})

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


def _region(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * (55 + seed) * t)
    return np.stack([tone, tone]).astype(np.float32) + 0.01 * rng.standard_normal((2, len(t))).astype(np.float32)


def _clear(reply: dict) -> bool:
    """A refusal a producer can act on: an error with a documented code, not internal, words without Python
    internals (every message tried is malformed, so accepting one is not an answer)."""
    if reply.get("type") != "error":
        return False
    retry_ok = reply["code"] in (P.Code.BUSY, P.Code.CHUNK_OUT_OF_ORDER, P.Code.UPLOAD_INCOMPLETE,
                                 P.Code.NOT_READY) or reply.get("retry") is False
    return reply["code"] in DOCUMENTED and reply["code"] != P.Code.INTERNAL and retry_ok and \
        bool(reply.get("message")) and not INTERNALS.search(reply["message"])


def malformed_messages(token: str, audio_sha: str) -> list[tuple[str, list[bytes]]]:
    """(name, frames) of messages no client should send."""
    def header(**fields):
        return json.dumps({"v": P.PROTOCOL_VERSION, "token": token, "req": "m", **fields}).encode()

    submit = dict(type="submit", job_id="m1", params={"steps": 1}, sample_rate=SAMPLE_RATE, channels=2, frames=1000,
                  audio_sha256=audio_sha)
    cases = [
        ("empty frame", [b""]), ("not json", [b"\xff\xfe junk"]), ("json array", [b"[1,2]"]),
        ("no version", [json.dumps({"type": "hello", "token": token}).encode()]),
        ("version 1", [json.dumps({"v": 1, "type": "hello", "token": token}).encode()]),
        ("no token", [json.dumps({"v": P.PROTOCOL_VERSION, "type": "hello", "req": 1}).encode()]),
        ("wrong token", [header(type="hello", token="0" * 64)]),
        ("surrogate token", [b'{"v": %d, "type": "hello", "token": "\\ud800", "req": 1}' % P.PROTOCOL_VERSION]),
        ("token a number", [header(type="hello", token=5)]),
        ("nested 5000 deep", [header(type="hello")[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"]),
        ("header of 70 KB", [header(type="hello", pad="x" * 70_000)]),
        ("unknown type", [header(type="launch")]), ("type a number", [header(type=3)]),
        ("submit without params", [header(type="submit", job_id="m1")]),
        ("rate as text", [header(**{**submit, "sample_rate": "44100"})]),
        ("frames boolean", [header(**{**submit, "frames": True})]),
        ("job id path", [header(**{**submit, "job_id": "../../etc/passwd"})]),
        ("rate 500 kHz", [header(**{**submit, "sample_rate": 500_000})]),
        ("rate 384 kHz", [header(**{**submit, "sample_rate": 384_000})]),
        ("rate 4 kHz", [header(**{**submit, "sample_rate": 4_000})]),
        ("6 channels", [header(**{**submit, "channels": 6})]), ("0 frames", [header(**{**submit, "frames": 0})]),
        ("too long", [header(**{**submit, "frames": SAMPLE_RATE * 601})]),
        ("digest not hex", [header(**{**submit, "audio_sha256": "zz"})]),
        ("params a list", [header(**{**submit, "params": [1]})]),
        ("steps as text", [header(**{**submit, "params": {"steps": "ten"}})]),
        ("seed 1.5", [header(**{**submit, "params": {"seed": 1.5}})]),
        ("seed NaN", [b'{"v": %d, "token": "%s", "req": "m", "type": "submit", "job_id": "m1", "params": {"seed": NaN}, '
                      b'"sample_rate": 44100, "channels": 2, "frames": 1000, "audio_sha256": "%s"}'
                      % (P.PROTOCOL_VERSION, token.encode(), audio_sha.encode())]),
        ("stereo width as text", [header(**{**submit, "params": {"stereo_width": "wide"}})]),
        ("regenerate one number", [header(**{**submit, "params": {"regenerate_seconds": [1]}})]),
        ("unknown parameter", [header(**{**submit, "params": {"volume": 11}})]),
        ("chunk unknown job", [header(type="chunk", job_id="nobody", index=0, start_frame=0, frames=1), b"\0" * 8]),
        ("chunk without audio", [header(type="chunk", job_id="m1", index=0, start_frame=0, frames=1)]),
        ("chunk negative", [header(type="chunk", job_id="m1", index=-1, start_frame=-5, frames=1), b"\0" * 8]),
        ("chunk index text", [header(type="chunk", job_id="m1", index="0", start_frame=0, frames=1), b"\0" * 8]),
        ("fetch unknown job", [header(type="fetch", job_id="nobody", index=0)]),
        ("fetch index -1", [header(type="fetch", job_id="nobody", index=-1)]),
        ("start unknown job", [header(type="start", job_id="nobody")]),
        ("cancel unknown job", [header(type="cancel", job_id="nobody")]),
        ("status job id a number", [header(type="status", job_id=5)]),
        ("two audio frames on hello", [header(type="hello"), b"\0" * 8, b"\0" * 8]),
    ]
    return cases


def _malformed(engine: Engine) -> dict:
    token = json.loads(engine.connection_file.read_text())["token"]
    info = json.loads(engine.connection_file.read_text())
    context = zmq.Context()
    unclear = []
    cases = malformed_messages(token, P.audio_sha256(_region(1000 / SAMPLE_RATE, 0)))
    for name, frames in cases:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(f"tcp://{info['host']}:{info['port']}")
        socket.send_multipart(frames)
        reply = None
        deadline = time.monotonic() + 5
        while socket.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            header = json.loads(socket.recv_multipart()[0])
            if header.get("type") not in ("heartbeat", "progress", "job") or "req" in header:
                reply = header
                break
        socket.close()
        if reply is None or not _clear(reply):
            unclear.append({"message": name, "reply": reply})
    context.term()
    return {"tried": len(cases), "answered_clearly": len(cases) - len(unclear), "unclear": unclear}


def bad_audio_files(folder: Path) -> dict[str, Path]:
    """Files a producer might drop on Backline by mistake, written into ``folder``."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    files = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        files[name] = folder / name

    rng = np.random.default_rng(0)
    put("random.wav", rng.bytes(5000))
    put("empty.wav", b"")
    put("text.wav", b"this is a text file, not audio\n" * 20)
    put("png.wav", b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    put("mp3ish.flac", b"ID3\x03\x00" + rng.bytes(400))
    put("riff-only.wav", b"RIFF\x00\x00\x00\x00WAVE")
    put("zeros.aiff", b"\0" * 2048)
    sf.write(folder / "whole.wav", np.zeros((44_100, 2), np.float32), 44_100)
    whole = (folder / "whole.wav").read_bytes()
    put("quarter.wav", whole[: len(whole) // 4])
    put("header-only.wav", whole[:44])
    sf.write(folder / "nan.wav", np.full((1000, 1), np.nan, np.float32), 44_100, subtype="FLOAT")
    files["nan.wav"] = folder / "nan.wav"
    sf.write(folder / "no-frames.wav", np.zeros((0, 1), np.float32), 44_100)
    files["no-frames.wav"] = folder / "no-frames.wav"
    sf.write(folder / "six-channels.wav", np.zeros((1000, 6), np.float32), 44_100)
    files["six-channels.wav"] = folder / "six-channels.wav"
    sf.write(folder / "rate-4k.wav", np.zeros((1000, 1), np.float32), 4_000)
    files["rate-4k.wav"] = folder / "rate-4k.wav"
    absurd = bytearray((folder / "whole.wav").read_bytes())
    absurd[24:28] = (1_600_000_000).to_bytes(4, "little")
    put("rate-1.6GHz.wav", bytes(absurd))
    sf.write(folder / "flac-cut.flac", rng.standard_normal((44_100, 1)).astype(np.float32) * 0.1, 44_100)
    flac = (folder / "flac-cut.flac").read_bytes()
    put("flac-cut.flac", flac[: len(flac) // 3])
    put("ogg-junk.ogg", b"OggS" + rng.bytes(300))
    put("aiff-junk.aiff", b"FORM\x00\x00\x01\x00AIFF" + rng.bytes(100))
    put("folder-named.wav", b"")
    (folder / "folder-named.wav").unlink()
    (folder / "folder-named.wav").mkdir()
    return files


def _bad_files(folder: Path) -> dict:
    unclear = []
    files = bad_audio_files(folder)
    for name, path in files.items():
        try:
            read_audio(path)
            unclear.append({"file": name, "outcome": "accepted"})
        except AudioError as error:
            if INTERNALS.search(str(error)) or not str(error):
                unclear.append({"file": name, "outcome": str(error)})
        except Exception as error:  # anything but AudioError is not an answer a producer can act on
            unclear.append({"file": name, "outcome": f"{type(error).__name__}: {error}"})
    return {"tried": len(files), "answered_clearly": len(files) - len(unclear), "unclear": unclear}


def _jobs(engine: Engine, count: int, params: dict, seconds: float) -> dict:
    """``count`` jobs, each run twice under two ids (twins): lost = never done, wrong = twins differ."""
    lost = wrong = 0
    rss = [_rss_mb(engine.process.pid)]
    with engine.client() as client:
        for index in range(count):
            region = _region(seconds, index)
            stems = []
            for twin in ("a", "b"):
                try:
                    stems.append(client.generate(f"job-{index}-{twin}", {**params, "seed": index}, region,
                                                 SAMPLE_RATE)[0])
                except BridgeError:
                    lost += 1
            if len(stems) == 2 and not np.array_equal(stems[0], stems[1]):
                wrong += 1
            rss.append(_rss_mb(engine.process.pid))
    return {"jobs": 2 * count, "lost": lost, "wrong": wrong, "server_rss_mb_first_last_max": [rss[1], rss[-1], max(rss)]}


def _faults(engine: Engine, params: dict) -> dict:
    survived, tried = [], []
    region = _region(2.0, 99)
    # a reused id with other audio: a conflict, never the other region's stem
    tried.append("reused job id with other audio")
    with engine.client() as client:
        first = client.generate("reuse", params, region, SAMPLE_RATE)[0]
        try:
            client.submit("reuse", params, _region(2.0, 98), SAMPLE_RATE)
        except BridgeError as error:
            if error.code == P.Code.JOB_CONFLICT:
                survived.append("reused job id with other audio")
        # a client that vanishes mid-upload
        tried.append("client vanishing mid-upload")
        vanishing = engine.client()
        vanishing.request({"type": "submit", "job_id": "vanish", "params": params, "sample_rate": SAMPLE_RATE,
                           "channels": 2, "frames": region.shape[1], "audio_sha256": P.audio_sha256(region)})
        vanishing.close()
        if np.array_equal(client.generate("after-vanish", params, region, SAMPLE_RATE)[0], first):
            survived.append("client vanishing mid-upload")
        # SIGSTOP for 3 s while a job runs
        tried.append("SIGSTOP 3 s mid-job")
        client.submit("stopped", params, region, SAMPLE_RATE)
        engine.process.send_signal(signal.SIGSTOP)
        time.sleep(3)
        engine.process.send_signal(signal.SIGCONT)
        if client.wait("stopped", timeout_seconds=120)["state"] == P.DONE and np.array_equal(
                client.fetch("stopped")[0], first):
            survived.append("SIGSTOP 3 s mid-job")
    # SIGKILL mid-job, restart, resubmit the same id: the job runs once to the right stem
    tried.append("SIGKILL mid-job and restart")
    with engine.client() as client:
        client.submit("killed", params, region, SAMPLE_RATE)
    engine.stop(signal.SIGKILL)
    engine.start()
    with engine.client() as client:
        again = client.generate("killed", params, region, SAMPLE_RATE)[0]
        if np.array_equal(again, first) and np.array_equal(client.fetch("reuse")[0], first):
            survived.append("SIGKILL mid-job and restart")
    return {"tried": tried, "survived": survived}


def _never_reads(engine: Engine) -> dict:
    with engine.client() as client:
        client.generate("long", {"steps": 1} if engine.demo else {"steps": 2, "instrument": "drums"},
                        _region(12.0, 5), SAMPLE_RATE)
    info = json.loads(engine.connection_file.read_text())
    before = _rss_mb(engine.process.pid)
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.RCVHWM, 1)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"tcp://{info['host']}:{info['port']}")
    for request in range(300):
        socket.send_multipart([json.dumps({"v": P.PROTOCOL_VERSION, "token": info["token"], "type": "fetch",
                                           "job_id": "long", "index": request % 4, "req": request}).encode()])
    time.sleep(3)
    during = _rss_mb(engine.process.pid)
    socket.close()
    context.term()
    time.sleep(1)
    return {"fetches_sent_unread": 300, "server_rss_mb_before_during_after": [before, during,
                                                                             _rss_mb(engine.process.pid)]}


def run(demo: bool) -> dict:
    params = {"steps": 1} if demo else {"steps": 2, "instrument": "drums"}
    with tempfile.TemporaryDirectory(prefix="backline-reliability-") as folder:
        engine = Engine(Path(folder), demo).start()
        try:
            report = {
                "engine": "demo generator" if demo else "shipped models",
                "malformed_messages": _malformed(engine),
                "bad_audio_files": _bad_files(Path(folder) / "files"),
                "jobs": _jobs(engine, 10, params, 2.0),
                "faults": _faults(engine, params),
                "client_that_never_reads": _never_reads(engine),
            }
        finally:
            engine.stop()
    report["command"] = "backline bench reliability" + (" --demo-generator" if demo else "")
    return report


def register_bench(bench_models) -> None:
    import argparse

    p = bench_models.add_parser("reliability", help="the engine server under faults, bad messages and bad files",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-generator", action="store_true", help="serve the DSP demo generator, not the models")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "benchmarks" / "reliability.json")
    p.set_defaults(func=_main)


def _main(args) -> int:
    report = run(args.demo_generator)
    for key in ("malformed_messages", "bad_audio_files"):
        part = report[key]
        print(f"{key.replace('_', ' ')}: {part['answered_clearly']} of {part['tried']} answered clearly")
        for item in part["unclear"]:
            print(f"  unclear: {item}")
    jobs = report["jobs"]
    print(f"jobs: {jobs['jobs']} run, {jobs['lost']} lost, {jobs['wrong']} wrong; server RSS first/last/max "
          f"{jobs['server_rss_mb_first_last_max']} MiB")
    faults = report["faults"]
    print(f"faults: {len(faults['survived'])} of {len(faults['tried'])} survived "
          f"({', '.join(sorted(set(faults['tried']) - set(faults['survived']))) or 'all'})")
    print(f"a client that never reads 300 fetches: server RSS before/during/after "
          f"{report['client_that_never_reads']['server_rss_mb_before_during_after']} MiB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(args.json)
    return 0
