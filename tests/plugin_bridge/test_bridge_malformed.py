"""Unhappy paths over real sockets: wrong tokens, garbage frames, bad audio, broken uploads.
Each gets a structured error reply (or, for oversize frames, a dropped connection) and the server
keeps serving other clients afterwards."""

import json
import time

import numpy as np
import pytest

from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient, BridgeError

SUBMIT = {"type": "submit", "job_id": "j1", "params": {"steps": 1}, "sample_rate": 44_100, "channels": 2,
          "frames": 1_000, "audio_sha256": "0" * 64}


def assert_still_serves(server, region):
    with BridgeClient(server.connection_file, timeout_seconds=5, silence_seconds=5) as client:
        audio = client.generate(f"healthy-{time.monotonic_ns()}", {"steps": 1}, region[:, :1_000], 44_100,
                                timeout_seconds=5)[0]
    assert audio.shape == (1, 1_000)


def test_a_wrong_or_missing_token_is_refused(start_server, raw_peer, region):
    server = start_server()
    peer = raw_peer(server)
    peer.send_header({"type": "hello", "token": "0" * 64, "req": 1}, token=False)
    reply, _ = peer.reply()
    assert reply["type"] == "error" and reply["code"] == P.Code.UNAUTHORIZED and reply["req"] == 1
    assert "connection file" in reply["message"]
    peer.send_header({"type": "submit", **SUBMIT}, token=False)
    assert peer.reply()[0]["code"] == P.Code.UNAUTHORIZED
    assert server.counters["unauthorized"] == 2 and not server.jobs

    client = BridgeClient(server.connection_file, token="wrong", timeout_seconds=5)
    with pytest.raises(BridgeError) as error:
        client.hello()
    client.close()
    assert error.value.code == P.Code.UNAUTHORIZED
    assert_still_serves(server, region)


@pytest.mark.parametrize(
    "frames, code, words",
    [
        ([b"\xff\xfe not json"], P.Code.BAD_FRAME, "not a UTF-8 JSON header"),
        ([b"[1, 2, 3]"], P.Code.BAD_FRAME, "must be a JSON object"),
        ([b""], P.Code.BAD_FRAME, "not a UTF-8 JSON header"),
        ([json.dumps({"v": 1, "type": "hello"}).encode()], P.Code.UNSUPPORTED_VERSION, "speaks version 2"),
        ([json.dumps({"type": "hello"}).encode()], P.Code.UNSUPPORTED_VERSION, "version None"),
    ],
)
def test_garbage_frames_get_an_error_reply(start_server, raw_peer, region, frames, code, words):
    server = start_server()
    peer = raw_peer(server)
    peer.send(frames + [b"\x00" * 7])
    reply, _ = peer.reply()
    assert reply["type"] == "error" and reply["code"] == code and words in reply["message"]
    assert reply["retry"] is False
    assert_still_serves(server, region)


@pytest.mark.parametrize(
    "header, code, words",
    [
        ({"type": "launch_missiles"}, P.Code.UNKNOWN_TYPE, "unknown message type 'launch_missiles'"),
        ({"type": "submit", "job_id": "j1"}, P.Code.BAD_FIELD, "missing field 'params'"),
        ({**SUBMIT, "sample_rate": "44100"}, P.Code.BAD_FIELD, "field 'sample_rate' must be int, got str"),
        ({**SUBMIT, "frames": True}, P.Code.BAD_FIELD, "field 'frames' must be int"),
        ({**SUBMIT, "job_id": "../../etc/passwd"}, P.Code.BAD_FIELD, "job_id must be"),
        ({**SUBMIT, "sample_rate": 1_600_000_000}, P.Code.BAD_AUDIO, "sample rate 1600000000 Hz is not supported"),
        ({**SUBMIT, "sample_rate": 4_000}, P.Code.BAD_AUDIO, "sample rate 4000 Hz is not supported"),
        ({**SUBMIT, "channels": 6}, P.Code.BAD_AUDIO, "6 channels; Backline takes mono or stereo"),
        ({**SUBMIT, "frames": 0}, P.Code.BAD_AUDIO, "the audio is empty"),
        ({**SUBMIT, "frames": 44_100 * 601}, P.Code.TOO_LONG, "601.0 s is longer than the limit of 600.0 s"),
        ({"type": "fetch", "job_id": "nobody", "index": 0}, P.Code.UNKNOWN_JOB, "no job 'nobody'"),
        ({"type": "chunk", "job_id": "j1", "index": 0, "start_frame": 0, "frames": 1}, P.Code.BAD_FRAME,
         "expected 1 audio frame(s), got 0"),
    ],
)
def test_invalid_requests_get_a_clear_error(start_server, raw_peer, region, header, code, words):
    server = start_server()
    peer = raw_peer(server)
    peer.send_header({**header, "req": "r1"})
    reply, _ = peer.reply()
    assert (reply["type"], reply["code"], reply["req"]) == ("error", code, "r1")
    assert words in reply["message"]
    assert not server.jobs
    assert_still_serves(server, region)


def test_broken_uploads_are_refused_chunk_by_chunk(start_server, raw_peer, region):
    server = start_server()
    peer = raw_peer(server)
    peer.send_header({**SUBMIT, "req": 0})
    assert peer.reply()[0]["state"] == P.SUBMITTED

    def chunk(index, start_frame, frames, blob):
        peer.send_header({"type": "chunk", "job_id": "j1", "index": index, "start_frame": start_frame,
                          "frames": frames, "req": index}, [blob])
        return peer.reply()[0]

    good = P.audio_to_blob(region[:, :600])
    assert chunk(0, 0, 600, good[:-4])["code"] == P.Code.BAD_CHUNK  # blob one sample short
    reply = chunk(1, 600, 400, P.audio_to_blob(region[:, 600:1_000]))  # skips chunk 0
    assert reply["code"] == P.Code.CHUNK_OUT_OF_ORDER and reply["next_index"] == 0 and reply["retry"]
    assert chunk(0, 0, 600, good)["next_index"] == 1
    resent = chunk(0, 0, 600, good)  # a client resending after a lost ack is acknowledged again
    assert (resent["type"], resent["next_index"], resent["received_frames"]) == ("ack", 1, 600)
    peer.send_header({"type": "start", "job_id": "j1", "req": "s"})
    reply = peer.reply()[0]
    assert reply["code"] == P.Code.UPLOAD_INCOMPLETE and "600 of 1000 frames" in reply["message"]
    assert chunk(1, 600, 500, P.audio_to_blob(region[:, 600:1_100]))["code"] == P.Code.BAD_CHUNK  # runs past the end

    nan = region[:, 600:1_000].copy()
    nan[1, 17] = np.nan
    reply = chunk(1, 600, 400, P.audio_to_blob(nan))
    assert reply["code"] == P.Code.BAD_AUDIO and "NaN or infinite" in reply["message"]
    assert server.jobs["j1"].state == P.FAILED
    assert list(server.upload_dir.iterdir()) == []
    assert_still_serves(server, region)


def test_an_oversize_frame_drops_that_connection_only(start_server, raw_peer, region):
    server = start_server(max_chunk_frames=1_024)
    peer = raw_peer(server)
    peer.send_header({"type": "hello", "req": 1}, [b"\x00" * (server.limits.max_message_bytes + 1)])
    assert not peer.socket.poll(300)  # ZeroMQ's MAXMSGSIZE: no reply, the connection is closed
    assert_still_serves(server, region)


def test_an_abandoned_upload_is_freed(start_server, raw_peer, region):
    server = start_server(upload_timeout_seconds=0.3)
    peer = raw_peer(server)
    peer.send_header({**SUBMIT, "req": 0})
    peer.reply()
    peer.send_header({"type": "chunk", "job_id": "j1", "index": 0, "start_frame": 0, "frames": 500, "req": 1},
                     [P.audio_to_blob(region[:, :500])])
    assert peer.reply()[0]["type"] == "ack"
    assert len(list(server.upload_dir.iterdir())) == 1
    peer.close()  # the plugin vanished mid-upload
    deadline = time.monotonic() + 5
    while "j1" in server.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "j1" not in server.jobs and list(server.upload_dir.iterdir()) == []
    assert_still_serves(server, region)
