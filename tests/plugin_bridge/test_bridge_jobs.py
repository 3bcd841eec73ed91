"""Job lifecycle over real loopback sockets: round trip, progress, cancel, idempotency, failures, reconnects."""

import threading
import time

import numpy as np
import pytest

from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient, BridgeError
from backline.plugin_bridge.demo_generator import demo_generate


def test_full_round_trip_matches_the_generator_exactly(start_server, connect, region, demo_reference):
    server = start_server()
    assert server.connection_info()["host"] == "127.0.0.1"
    client = connect(server)
    welcome = client.hello()
    assert welcome["protocol_version"] == P.PROTOCOL_VERSION and welcome["limits"]["max_channels"] == 2

    params = {"steps": 4}
    job = client.submit("round-trip", params, region, 44_100, chunk_frames=16_384)  # 5 upload chunks
    assert job["state"] in (P.QUEUED, P.RUNNING, P.DONE) and job["received_frames"] == 70_000
    assert job["next_index"] == 5
    final = client.wait("round-trip", timeout_seconds=10)
    assert final["state"] == P.DONE and final["result"]["chunks"] == 5  # 70,000 frames in 16,384-frame chunks

    audio, sample_rate, info = client.fetch("round-trip")
    expected, expected_rate, expected_info = demo_reference(params, region, 44_100)
    assert sample_rate == expected_rate == 44_100
    assert audio.dtype == np.float32 and audio.shape == expected.shape == (1, 70_000)
    assert np.array_equal(audio, expected)
    assert info == expected_info and "not a model" in info["generator"]


def test_progress_arrives_in_order_at_a_bounded_rate(start_server, connect, region):
    server = start_server(progress_interval_seconds=0.1)
    client = connect(server)
    seen = []
    client.submit("progress", {"steps": 40, "demo_step_seconds": 0.01}, region[:, :8_000], 44_100)
    started = time.monotonic()
    final = client.wait("progress", on_progress=seen.append, timeout_seconds=10)
    elapsed = time.monotonic() - started
    assert final["state"] == P.DONE
    steps = [message["step"] for message in seen]
    assert steps == sorted(steps) and steps[-1] == 40 and all(m["steps"] == 40 for m in seen)
    assert 2 <= len(seen) <= elapsed / 0.1 + 2  # 40 steps, but no more than one message per 100 ms (+ the last)
    assert all(m["eta_seconds"] is not None and m["eta_seconds"] >= 0 for m in seen)


def test_cancel_mid_job_leaves_no_result(start_server, connect, region, tmp_path):
    server = start_server()
    client = connect(server)
    client.submit("long", {"steps": 100, "demo_step_seconds": 0.02}, region[:, :4_000], 44_100)
    client.submit("queued-behind", {"steps": 2}, region[:, :4_000], 44_100)
    deadline = time.monotonic() + 5
    while not client.progress["long"] and time.monotonic() < deadline:
        client.receive(1.0)
    assert client.progress["long"], "the job never started"

    assert client.cancel("queued-behind")["state"] == P.CANCELLED  # a queued job is cancelled at once
    reply = client.cancel("long")
    assert reply["state"] in (P.RUNNING, P.CANCELLED)
    final = client.wait("long", timeout_seconds=5)
    assert final["state"] == P.CANCELLED and final["result"] is None and final["step"] < 100
    with pytest.raises(BridgeError) as error:
        client.fetch("long")
    assert error.value.code in (P.Code.NOT_READY, P.CANCELLED)
    assert [p.name for p in (tmp_path / "results").iterdir()] == []
    assert client.wait("queued-behind", timeout_seconds=2)["state"] == P.CANCELLED


def test_resubmitting_a_job_id_is_idempotent_and_conflicts_are_refused(start_server, connect, region):
    server = start_server()
    client = connect(server)
    first = client.generate("same-id", {"steps": 3}, region, 44_100, timeout_seconds=10)[0]
    again = client.submit("same-id", {"steps": 3}, region, 44_100)
    assert again["state"] == P.DONE  # nothing uploaded or computed twice
    assert np.array_equal(client.fetch("same-id")[0], first)
    assert server.counters["jobs"] == 1
    with pytest.raises(BridgeError) as error:
        client.submit("same-id", {"steps": 5}, region, 44_100)
    assert error.value.code == P.Code.JOB_CONFLICT and "different parameters" in error.value.message


def test_generator_errors_fail_the_job_and_the_server_keeps_serving(start_server, connect, region):
    server = start_server()
    client = connect(server)
    client.submit("crash", {"demo_fail": True}, region[:, :2_000], 44_100)
    failed = client.wait("crash", timeout_seconds=5)
    assert failed["state"] == P.FAILED
    assert failed["error"]["code"] == P.Code.ENGINE_ERROR and "asked to fail" in failed["error"]["message"]

    client.submit("bad-steps", {"steps": 0}, region[:, :2_000], 44_100)  # the generator raises ValueError
    refused = client.wait("bad-steps", timeout_seconds=5)
    assert refused["error"] == {"code": P.Code.BAD_REQUEST, "retry": False,
                                "message": "steps must be a whole number from 1 to 1000, got 0"}

    audio = client.generate("after-crash", {"steps": 2}, region[:, :2_000], 44_100, timeout_seconds=5)[0]
    assert audio.shape == (1, 2_000)


def test_unusable_generated_audio_fails_the_job_and_keeps_no_result(start_server, connect, region):
    seen = {}

    def generate(params, context, sample_rate, progress, cancelled):
        seen["writeable"], seen["shape"] = context.flags.writeable, context.shape
        progress(1, 1)
        if params.get("shape") == "3d":
            return context[None], sample_rate, {}
        audio = np.array(context, dtype=np.float64)
        audio[1, -1] = np.nan  # in the last block the store writes, after earlier blocks went to disk
        return audio, sample_rate, {}

    server = start_server(generate)
    client = connect(server)
    client.submit("nan", {}, region, 44_100)
    failed = client.wait("nan", timeout_seconds=5)
    assert seen == {"writeable": False, "shape": region.shape}  # the upload itself, mapped read-only
    assert failed["error"] == {"code": P.Code.ENGINE_ERROR, "retry": True, "message": (
        "the engine failed: the engine produced unusable audio: generated audio: contains NaN or infinite samples")}
    client.submit("3d", {"shape": "3d"}, region, 44_100)
    failed = client.wait("3d", timeout_seconds=5)
    assert failed["error"]["message"].endswith(
        "generated audio: expected (channels, frames), got an array of shape (1, 2, 70000)")
    assert list(server.store.root.iterdir()) == [] and list(server.upload_dir.iterdir()) == []


def test_eight_clients_at_once_each_get_their_own_result(start_server, region, demo_reference):
    server = start_server()
    outputs, errors = {}, []

    def run(name, audio):
        try:
            with BridgeClient(server.connection_file, timeout_seconds=10, silence_seconds=10) as client:
                outputs[name] = client.generate(name, {"steps": 3}, audio, 44_100, timeout_seconds=20)[0]
        except Exception as error:  # reported below
            errors.append(error)

    # Different lengths, offsets and channel counts, so a mixed-up result cannot pass.
    inputs = {f"client-{i}": region[: 1 + i % 2, 1_000 * i: 1_000 * i + 5_000 + 700 * i] * (1 + i) for i in range(8)}
    threads = [threading.Thread(target=run, args=item) for item in inputs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert sorted(outputs) == sorted(inputs)
    for name, audio in inputs.items():
        assert np.array_equal(outputs[name], demo_reference({"steps": 3}, audio, 44_100)[0])


def test_a_reconnecting_client_fetches_a_finished_result_even_after_a_restart(start_server, connect, region,
                                                                             tmp_path):
    server = start_server()
    first = connect(server)
    first.submit("survives", {"steps": 2}, region, 44_100)
    assert first.wait("survives", timeout_seconds=5)["state"] == P.DONE
    expected = first.fetch("survives")[0]
    first.close()

    assert np.array_equal(connect(server).fetch("survives")[0], expected)  # a new connection

    server.stop()
    restarted = start_server()  # same results folder, new port and token
    client = connect(restarted)
    assert client.status("survives")["state"] == P.DONE
    assert np.array_equal(client.fetch("survives")[0], expected)
    assert client.submit("survives", {"steps": 2}, region, 44_100)["state"] == P.DONE


def test_results_made_by_other_models_are_not_served_after_a_restart(start_server, connect, region):
    """An engine restarted with other models (an upgrade, another --denoiser) runs a request again instead of
    answering with the stem the old models made."""
    def generator(models, gain):
        def generate(params, context, sample_rate, progress, cancelled):
            audio, rate, info = demo_generate(params, context, sample_rate, progress, cancelled)
            return audio * gain, rate, info

        generate.models = models
        return generate

    server = start_server(generator(["denoiser 1"], 0.5))
    first = connect(server)
    first.submit("region", {"steps": 2}, region, 44_100)
    assert first.wait("region", timeout_seconds=5)["state"] == P.DONE
    old = first.fetch("region")[0]
    server.stop()
    same = start_server(generator(["denoiser 1"], 0.5))  # the same models: the result is still there
    assert connect(same).status("region")["state"] == P.DONE
    same.stop()
    upgraded = start_server(generator(["denoiser 2"], 0.25))
    client = connect(upgraded)
    with pytest.raises(BridgeError, match="no job 'region'"):  # not known to the new models
        client.status("region")
    client.submit("region", {"steps": 2}, region, 44_100)
    assert client.wait("region", timeout_seconds=5)["state"] == P.DONE
    np.testing.assert_allclose(client.fetch("region")[0], old / 2, atol=1e-6)


def test_heartbeat_reports_the_running_job_and_step(start_server, connect, region):
    server = start_server(heartbeat_interval_seconds=0.1)
    client = connect(server)
    client.submit("busy", {"steps": 20, "demo_step_seconds": 0.05}, region[:, :4_000], 44_100)
    beats = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(b["busy"] and b["step"] >= 2 for b in beats):
        header, _ = client.receive(1.0)
        if header["type"] == "heartbeat":
            beats.append(header)
    busy = [b for b in beats if b["busy"]]
    assert busy and busy[-1]["job_id"] == "busy" and busy[-1]["steps"] == 20 and busy[-1]["step"] >= 2
    assert busy[-1]["step_elapsed_seconds"] >= 0
    status = client.status()  # the same picture on request
    assert status["busy"] and status["job_id"] == "busy"
    client.cancel("busy")
    assert client.wait("busy", timeout_seconds=5)["state"] == P.CANCELLED


def test_results_beyond_the_retention_limit_are_deleted(start_server, connect, region, tmp_path):
    server = start_server(max_results=2)
    client = connect(server)
    for index in range(3):
        client.generate(f"kept-{index}", {"steps": 1}, region[:, :1_000], 44_100, timeout_seconds=5)
    assert len(list((tmp_path / "results").iterdir())) == 2
    with pytest.raises(BridgeError) as error:
        client.fetch("kept-0")
    assert error.value.code == P.Code.UNKNOWN_JOB
    assert client.fetch("kept-2")[0].shape == (1, 1_000)


@pytest.mark.parametrize("chunk_frames", [1_000, 4_097, 65_536])
def test_the_upload_chunk_size_does_not_change_the_result(start_server, connect, region, demo_reference, chunk_frames):
    client = connect(start_server())
    job = client.submit(f"chunks-{chunk_frames}", {"steps": 2}, region[:, :9_000], 48_000, chunk_frames=chunk_frames)
    assert job["next_index"] == -(-9_000 // chunk_frames)
    client.wait(f"chunks-{chunk_frames}", timeout_seconds=5)
    audio, sample_rate, _ = client.fetch(f"chunks-{chunk_frames}")
    assert sample_rate == 48_000
    assert np.array_equal(audio, demo_reference({"steps": 2}, region[:, :9_000], 48_000)[0])


def _echo(params, context, sample_rate, progress, cancelled):
    progress(1, 1)
    return context, sample_rate, {}


def test_region_after_region_arrives_intact_through_the_clients_reused_upload_buffers(start_server, connect, region):
    # The client sends each chunk from one of upload_window_chunks buffers it keeps (no copy: chunks of 64 KiB and
    # more) and refills a buffer once its chunk is acknowledged: several chunks per buffer, an upload refused
    # halfway, and a change of chunk size.
    client = connect(start_server(_echo, upload_window_chunks=3))
    first = region.copy()
    client.submit("reuse-a", {}, first, 44_100, chunk_frames=10_000)  # 7 chunks of 80 KB through 3 buffers
    broken = region.copy()
    broken[0, 45_678] = np.inf  # chunk 4 of 7: the chunks after it may still be in flight from the buffers
    with pytest.raises(BridgeError) as error:
        client.submit("reuse-b", {}, broken, 44_100, chunk_frames=10_000)
    assert error.value.code == P.Code.BAD_AUDIO
    second = -region
    client.submit("reuse-c", {}, second, 44_100, chunk_frames=10_000)
    third = region[:, ::-1]
    client.submit("reuse-d", {}, third, 44_100, chunk_frames=16_384)
    for job_id, sent in (("reuse-a", first), ("reuse-c", second), ("reuse-d", third)):
        assert client.wait(job_id, timeout_seconds=5)["state"] == P.DONE
        assert np.array_equal(client.fetch(job_id)[0], sent), job_id


def test_a_full_disk_is_refused_at_submit_and_leaves_nothing(start_server, connect, region, monkeypatch):
    import collections
    import shutil

    from backline.plugin_bridge import server as server_module

    server = start_server()
    client = connect(server)
    usage, real_disk_usage = collections.namedtuple("usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(server_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(BridgeError) as error:
        client.submit("no-room", {"steps": 1}, region, 44_100)
    assert error.value.code == P.Code.BUSY and error.value.retry and "disk is full" in error.value.message
    assert list(server.upload_dir.iterdir()) == [] and "no-room" not in server.jobs
    monkeypatch.setattr(server_module.shutil, "disk_usage", real_disk_usage)
    client.submit("room-again", {"steps": 1}, region, 44_100)
    assert client.wait("room-again", timeout_seconds=5)["state"] == P.DONE


def test_a_disk_that_fills_during_the_upload_fails_the_job_and_frees_it(start_server, connect, region, monkeypatch):
    import errno
    import os

    server = start_server()
    client = connect(server)
    real_pwrite, calls = os.pwrite, []

    def fills_up(fd, data, offset):
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", fills_up)
    with pytest.raises(BridgeError) as error:
        client.submit("fills", {"steps": 1}, region, 44_100, chunk_frames=16_384)
    assert error.value.code == P.Code.BUSY and "disk filled up" in error.value.message
    assert server.jobs["fills"].state == P.FAILED and list(server.upload_dir.iterdir()) == []
