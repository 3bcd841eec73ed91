"""The faults a hostile or careless client found (issue 29), each over real sockets against a real server:
another region's stem under a reused id, stems readable by other users, job details over OSC without the
token, wrong parameter types, broken tokens and frames, negative chunk positions, two sample-rate ranges,
abandoned uploads, unread fetches, and unclear audio errors."""

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backline.engine.audio import AudioError, read_audio, validate_audio
from backline.engine.params import PARAMS, ParamError, check_params
from backline.engine.pipeline import make_generator
from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient, BridgeError, EngineNotRunning
from backline.plugin_bridge.demo_generator import demo_generate
from backline.plugin_bridge.server import BridgeServer
from bridge_helpers import osc_exchange
from tiny_bundle import make_bundle

DOCUMENTED_CODES = {value for name, value in vars(P.Code).items() if name.isupper()}


def submit_header(job_id, audio, **extra):
    return {"type": "submit", "job_id": job_id, "params": {"steps": 1}, "sample_rate": 44_100,
            "channels": audio.shape[0], "frames": audio.shape[1], "audio_sha256": P.audio_sha256(audio), **extra}


def test_a_reused_job_id_with_other_audio_is_a_conflict_not_the_old_stem(start_server, connect, region):
    server = start_server()
    client = connect(server)
    a, b = region[:, :20_000], region[:, 20_000:40_000]
    stem_a, _, _ = client.generate("x", {"steps": 1}, a, 44_100)
    with pytest.raises(BridgeError) as error:
        client.submit("x", {"steps": 1}, b, 44_100)  # same id, parameters and length; other samples
    assert error.value.code == P.Code.JOB_CONFLICT and not error.value.retry
    assert client.submit("x", {"steps": 1}, a, 44_100)["state"] == P.DONE  # the same audio again: the same job
    np.testing.assert_array_equal(client.fetch("x")[0], stem_a)


def test_audio_that_arrives_other_than_its_digest_says_is_refused_and_not_run(start_server, raw_peer, region):
    server = start_server()
    peer = raw_peer(server)
    sent, claimed = region[:, :1_000], region[:, 1_000:2_000]
    peer.send_header({**submit_header("lie", claimed), "req": 0})
    assert peer.reply()[0]["state"] == P.SUBMITTED
    peer.send_header({"type": "chunk", "job_id": "lie", "index": 0, "start_frame": 0, "frames": 1_000, "req": 1},
                     [P.audio_to_blob(sent)])
    reply = peer.reply()[0]
    assert reply["code"] == P.Code.BAD_AUDIO and "SHA-256 does not match" in reply["message"] and not reply["retry"]
    assert server.jobs["lie"].state == P.FAILED and server.counters["jobs"] == 1
    assert list(server.upload_dir.iterdir()) == []


def test_engine_folders_and_stems_are_private_whatever_existed_and_whatever_the_umask(tmp_path, connect, region):
    runtime, results = tmp_path / "runtime", tmp_path / "results"
    for folder in (runtime, results, tmp_path / "results.uploads"):
        folder.mkdir(mode=0o755)
        os.chmod(folder, 0o755)
    old_umask = os.umask(0o000)
    try:
        server = BridgeServer(demo_generate, runtime_dir=runtime, results_dir=results).start()
        try:
            connect(server).generate("private", {"steps": 1}, region[:, :5_000], 44_100)
        finally:
            server.stop()
    finally:
        os.umask(old_umask)
    for folder in (runtime, results, tmp_path / "results.uploads"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    stored = [p for p in results.rglob("*") if p.is_file()]
    assert stored and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in stored)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in results.rglob("*") if p.is_dir())


def test_osc_tells_a_stranger_only_that_the_engine_is_alive(start_server, connect, region):
    server = start_server()
    client = connect(server)
    client.submit("secret-job", {"steps": 100, "demo_step_seconds": 0.02}, region[:, :2_000], 44_100)
    deadline = time.monotonic() + 5
    while not client.progress["secret-job"] and time.monotonic() < deadline:
        client.receive(1.0)
    assert osc_exchange(server.osc_port, "/backline/ping") == ("/backline/alive", [])
    assert osc_exchange(server.osc_port, "/backline/ping", "not-the-token")[0] == "/backline/error"
    assert osc_exchange(server.osc_port, "/backline/ping", server.token)[1][1] == "secret-job"
    client.cancel("secret-job")


@pytest.fixture(scope="module")
def engine():
    return make_generator(make_bundle())


@pytest.mark.parametrize("params, words", [
    ({"steps": "ten"}, "steps must be a whole number from 1 to 500, got 'ten'"),
    ({"seed": 1.5}, "seed must be a whole number from 0 to 4294967295, got 1.5"),
    ({"stereo_width": "wide"}, "stereo width must be a number from 0 to 1, got 'wide'"),
    ({"regenerate_seconds": [1]}, "regenerate seconds must be two numbers of seconds"),
    ({"instrument": 3}, "instrument must be one of bass, drums, got 3"),
    ({"midi": "yes"}, "midi must be true or false"),
    ({"volume": 11}, "unknown generation parameter 'volume'"),
])
def test_wrong_parameter_types_are_a_bad_request_in_words_at_submit(start_server, connect, engine, region, params,
                                                                   words):
    server = start_server(engine)
    client = connect(server)
    with pytest.raises(BridgeError) as error:
        client.submit("typed", params, region[:, :4_000], 44_100)
    assert error.value.code == P.Code.BAD_REQUEST and error.value.retry is False
    assert words in error.value.message and "typed" not in server.jobs


def test_a_seed_that_is_not_a_number_is_refused_in_words():
    for seed in (float("nan"), float("inf"), -1, "3"):
        with pytest.raises(ParamError, match="seed must be a whole number from 0 to 4294967295"):
            check_params({"seed": seed})


def test_a_broken_token_is_unauthorized_and_a_deep_header_is_a_bad_frame(start_server, raw_peer, region):
    server = start_server()
    peer = raw_peer(server)
    peer.send([b'{"v": 2, "type": "hello", "req": 1, "token": "\\ud800"}'])
    reply = peer.reply()[0]
    assert reply["code"] == P.Code.UNAUTHORIZED and server.counters["unauthorized"] == 1
    peer.send([b'{"v": 2, "type": "hello", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"])
    reply = peer.reply()[0]
    assert reply["code"] == P.Code.BAD_FRAME and reply["retry"] is False and "nested too deeply" in reply["message"]
    peer.send_header({"type": "hello", "req": 2})
    assert peer.reply()[0]["type"] == "welcome"


def test_negative_chunk_positions_are_bad_chunks(start_server, raw_peer, region):
    server = start_server()
    peer = raw_peer(server)
    audio = region[:, :1_000]
    peer.send_header({**submit_header("neg", audio), "req": 0})
    peer.reply()
    peer.send_header({"type": "chunk", "job_id": "neg", "index": 0, "start_frame": 0, "frames": 500, "req": 1},
                     [P.audio_to_blob(audio[:, :500])])
    assert peer.reply()[0]["type"] == "ack"
    peer.send_header({"type": "chunk", "job_id": "neg", "index": -1, "start_frame": -5, "frames": 500, "req": 2},
                     [P.audio_to_blob(audio[:, 500:])])
    reply = peer.reply()[0]
    assert reply["type"] == "error" and reply["code"] == P.Code.BAD_CHUNK and "must not be negative" in reply["message"]


def test_one_sample_rate_range_with_one_message_everywhere(start_server, connect, region):
    server = start_server()
    client = connect(server)
    messages = []
    for rate in (500_000, 384_000):
        with pytest.raises(BridgeError) as error:
            client.submit(f"rate-{rate}", {"steps": 1}, region[:, :1_000], rate)
        messages.append(error.value.message)
        with pytest.raises(AudioError) as local:  # the command line and the Python API
            validate_audio(region[:, :1_000], rate, what="region")
        assert str(local.value) == error.value.message
    assert all("(expected 8000..192000 Hz)" in m for m in messages)
    assert server.limits.as_dict()["max_sample_rate"] == 192_000


def test_abandoned_uploads_hold_no_disk_are_capped_per_connection_and_dropped_quickly(start_server, raw_peer, connect,
                                                                                        region):
    server = start_server(upload_timeout_seconds=0.5, max_uploads_per_peer=4)
    vandal = raw_peer(server)
    for index in range(6):
        audio = region[:, index * 1_000:(index + 1) * 1_000]
        vandal.send_header({**submit_header(f"gone-{index}", audio, frames=44_100 * 600), "req": index})
    replies = [vandal.reply()[0] for _ in range(6)]
    assert [r.get("state") for r in replies[:4]] == [P.SUBMITTED] * 4
    assert all(r["code"] == P.Code.BUSY and "already uploads 4 regions" in r["message"] for r in replies[4:])
    assert sum(p.stat().st_size for p in server.upload_dir.iterdir()) == 0  # no disk reserved at submit
    # another producer is not locked out
    assert connect(server).generate("fair", {"steps": 1}, region[:, :3_000], 44_100)[0].shape[1] == 3_000
    deadline = time.monotonic() + 5
    while any(job_id.startswith("gone-") for job_id in server.jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(job_id.startswith("gone-") for job_id in server.jobs)
    assert list(server.upload_dir.iterdir()) == []


def _rss_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_a_client_that_never_reads_its_fetches_is_bounded_and_refused(start_server, raw_peer, connect, region):
    server = start_server(result_chunk_frames=131_072, max_reply_bytes_per_peer=16 << 20)
    client = connect(server)
    long = np.tile(region, (1, 4))[:, :262_144]
    client.generate("big", {"steps": 1}, long, 44_100)
    before = _rss_bytes()
    hog = raw_peer(server)
    hog.socket.setsockopt(zmq.RCVHWM, 1)
    hog.socket.setsockopt(zmq.RCVBUF, 4096)
    for request in range(300):
        hog.send_header({"type": "fetch", "job_id": "big", "index": 0, "req": request})
    time.sleep(1.5)
    grown = _rss_bytes() - before
    assert grown < 120 << 20, f"grew {grown >> 20} MiB for a client that never reads"
    assert server.counters["dropped_sends"] > 0 and server.counters["refused"] > 200  # refused (busy), not queued
    assert client.fetch("big")[0].shape[1] == long.shape[1]  # everyone else is still served


def test_unreadable_and_cut_off_files_get_one_clear_sentence(tmp_path, capfd):
    (tmp_path / "noise.wav").write_bytes(os.urandom(4_096))
    with pytest.raises(AudioError) as error:
        read_audio(tmp_path / "noise.wav")
    assert str(error.value) == "noise.wav: not an audio file Backline can read: WAV, AIFF, FLAC or OGG"
    import soundfile as sf

    sf.write(tmp_path / "whole.wav", np.zeros((44_100, 2), np.float32), 44_100)
    data = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 4])
    with pytest.raises(AudioError, match="cut.wav: the file ends early: its header promises 1.0 s"):
        read_audio(tmp_path / "cut.wav")
    assert capfd.readouterr().err == ""  # no decoder noise


def test_a_stale_connection_file_is_reported_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = {"protocol_version": P.PROTOCOL_VERSION, "transport": "tcp", "host": "127.0.0.1", "port": 9,
            "osc_port": None, "token": "t", "pid": int(dead.stdout)}
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(info))
    start = time.monotonic()
    with pytest.raises(EngineNotRunning, match="engine is not running .*start it with `backline serve`"):
        BridgeClient(path)
    assert time.monotonic() - start < 1.0
    with pytest.raises(EngineNotRunning, match="no connection file"):
        BridgeClient(tmp_path / "missing.json")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(header=st.dictionaries(st.sampled_from(["v", "type", "token", "job_id", "index", "start_frame", "frames",
                                               "params", "sample_rate", "channels", "audio_sha256", "req"]),
                              json_values, max_size=8),
       blobs=st.lists(st.binary(max_size=16), max_size=2))
def test_fuzzed_headers_only_ever_raise_documented_protocol_errors(header, blobs):
    frames = [json.dumps(header).encode(), *blobs]
    try:
        decoded, views = P.decode(frames)
        P.validate_request(decoded, views)
    except P.ProtocolError as error:
        assert error.code in DOCUMENTED_CODES and isinstance(error.message, str) and error.message


@settings(max_examples=300, deadline=None)
@given(params=st.dictionaries(st.sampled_from(sorted(PARAMS) + ["bogus"]), json_values, max_size=5))
def test_fuzzed_parameters_are_accepted_or_refused_in_words(params):
    try:
        check_params(params)
    except ParamError as error:
        assert str(error) and "Traceback" not in str(error)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.sampled_from(["type", "job_id", "index", "start_frame", "frames", "params",
                                               "sample_rate", "channels", "audio_sha256"]), json_values, max_size=7),
       kind=st.sampled_from(sorted(P.REQUESTS) + ["nope"]))
def test_a_real_server_answers_fuzzed_requests_with_documented_codes_and_keeps_serving(fuzz_server, header, kind):
    server, peer = fuzz_server
    peer.send_header({**header, "type": kind, "req": "fuzz"})
    reply, _ = peer.reply()
    assert reply["type"] != "error" or (reply["code"] in DOCUMENTED_CODES and reply["code"] != P.Code.INTERNAL)


def test_every_malformed_message_of_the_reliability_report_is_answered_clearly(start_server, raw_peer, engine):
    from backline.plugin_bridge.reliability import _clear, malformed_messages

    server = start_server(engine)
    unclear = []
    for name, frames in malformed_messages(server.token, "0" * 64):
        peer = raw_peer(server)
        peer.send(frames)
        if not peer.socket.poll(5000):
            unclear.append((name, None))
            continue
        reply, _ = peer.reply()
        if not _clear(reply):
            unclear.append((name, reply))
    assert unclear == []


def test_every_bad_file_of_the_reliability_report_is_refused_in_one_sentence(tmp_path):
    from backline.plugin_bridge.reliability import INTERNALS, bad_audio_files

    for name, path in bad_audio_files(tmp_path).items():
        with pytest.raises(AudioError) as error:
            read_audio(path)
        assert str(error.value) and not INTERNALS.search(str(error.value)), (name, str(error.value))
