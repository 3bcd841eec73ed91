"""OSC control (ping, cancel) and the ``serve`` command run as a real subprocess."""

import json
import signal
import socket
import stat
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from backline.plugin_bridge import cli
from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient, BridgeError, BridgeTimeout
from bridge_helpers import osc_exchange, stop


def test_osc_ping_reports_status_and_osc_cancel_needs_the_token(start_server, connect, region):
    server = start_server()
    assert osc_exchange(server.osc_port, "/backline/ping") == ("/backline/alive", [])  # nothing more without the token
    assert osc_exchange(server.osc_port, "/backline/ping", "not-the-token") == (
        "/backline/error", [P.Code.UNAUTHORIZED, "wrong token"])
    assert osc_exchange(server.osc_port, "/backline/ping", server.token) == ("/backline/status", ["idle", "", 0, 0, 0])

    client = connect(server)
    client.submit("osc-job", {"steps": 100, "demo_step_seconds": 0.02}, region[:, :2_000], 44_100)
    deadline = time.monotonic() + 5
    while not client.progress["osc-job"] and time.monotonic() < deadline:
        client.receive(1.0)
    address, (state, job_id, step, steps, queued) = osc_exchange(server.osc_port, "/backline/ping", server.token)
    assert (address, state, job_id, steps, queued) == ("/backline/status", "busy", "osc-job", 100, 0) and step >= 1

    assert osc_exchange(server.osc_port, "/backline/cancel", "osc-job", "not-the-token") == (
        "/backline/error", [P.Code.UNAUTHORIZED, "wrong token"])
    assert osc_exchange(server.osc_port, "/backline/cancel", "osc-job")[0] == "/backline/error"
    assert osc_exchange(server.osc_port, "/backline/cancel", "osc-job", server.token) == (
        "/backline/cancelling", ["osc-job"])
    assert client.wait("osc-job", timeout_seconds=5)["state"] == P.CANCELLED


def test_serve_subprocess_writes_a_private_connection_file_serves_and_stops_on_sigterm(tmp_path, region):
    runtime, results = tmp_path / "runtime", tmp_path / "results"
    command = [sys.executable, "-m", "backline.plugin_bridge.cli", "serve", "--demo-generator",
               "--runtime-dir", str(runtime), "--results-dir", str(results), "--max-seconds", "30"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        connection_file = runtime / "engine.json"
        deadline = time.monotonic() + 20
        while not connection_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connection_file.exists(), "the server did not start"
        assert stat.S_IMODE(connection_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700

        with BridgeClient(connection_file, timeout_seconds=10, silence_seconds=10) as client:
            welcome = client.hello()
            assert welcome["limits"]["max_duration_seconds"] == 30 and welcome["models"] == ["demo (not a model)"]
            audio, sample_rate, _ = client.generate("cli-job", {"steps": 2}, region[:, :5_000], 44_100,
                                                    timeout_seconds=10)
        assert audio.shape == (1, 5_000) and sample_rate == 44_100 and np.isfinite(audio).all()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert not connection_file.exists()
        assert "DEMO generator" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.parametrize("pipeline", [None, "broken"])
def test_serve_without_a_usable_engine_says_what_to_do(monkeypatch, pipeline):
    """No pipeline module (ImportError) or models that fail to load: a clear message, not a traceback."""
    def load_bundle(autoencoder=None, denoiser=None, **runtime):
        raise ValueError("models/autoencoder/default.safetensors: no such model file")

    fake = None if pipeline is None else types.SimpleNamespace(load_bundle=load_bundle, make_generator=lambda bundle: bundle)
    monkeypatch.setitem(sys.modules, "backline.engine.pipeline", fake)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "--runtime-dir", "/nonexistent/never-created"])
    message = str(exit_.value.code)
    assert message.startswith("backline serve: ") and "--demo-generator" in message
    if pipeline:
        assert "could not load the engine's models: models/autoencoder/default.safetensors: no such" in message
    else:
        assert "the engine pipeline could not be imported" in message


def test_serve_on_a_busy_port_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            cli.main(["serve", "--demo-generator", "--port", str(port), "--runtime-dir", str(tmp_path / "run"),
                      "--results-dir", str(tmp_path / "results")])
    assert f"cannot listen on 127.0.0.1 (port {port}" in str(exit_.value.code)
    assert not (tmp_path / "run" / "engine.json").exists()


def start_serve(runtime, results, previous_pid=None):
    """Start `serve --demo-generator` and wait (bounded) until its own connection file is there."""
    process = subprocess.Popen(
        [sys.executable, "-m", "backline.plugin_bridge.cli", "serve", "--demo-generator",
         "--runtime-dir", str(runtime), "--results-dir", str(results)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads((runtime / "engine.json").read_text())["pid"] == process.pid:
                return process
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not start")


def test_an_engine_killed_mid_job_is_noticed_and_the_job_completes_after_a_restart(tmp_path, region,
                                                                                  demo_reference):
    runtime, results = tmp_path / "runtime", tmp_path / "results"
    params = {"steps": 25, "demo_step_seconds": 0.04}
    processes = [start_serve(runtime, results)]
    try:
        with BridgeClient(runtime / "engine.json", timeout_seconds=5, silence_seconds=1.0) as client:
            client.submit("survivor", params, region[:, :3_000], 44_100)
            deadline = time.monotonic() + 5
            while not client.progress["survivor"] and time.monotonic() < deadline:
                client.receive(1.0)
            processes[0].kill()  # SIGKILL: no clean-up, the connection file is left behind
            processes[0].wait(timeout=5)
            started = time.monotonic()
            with pytest.raises(BridgeTimeout):
                client.wait("survivor", timeout_seconds=10)
            assert time.monotonic() - started < 5  # noticed through the missing heartbeats, not a long timeout

        processes.append(start_serve(runtime, results))
        with BridgeClient(runtime / "engine.json", timeout_seconds=5, silence_seconds=5) as client:
            with pytest.raises(BridgeError) as error:
                client.status("survivor")  # the unfinished job died with the engine
            assert error.value.code == P.Code.UNKNOWN_JOB
            audio = client.generate("survivor", params, region[:, :3_000], 44_100, timeout_seconds=10)[0]
        assert np.array_equal(audio, demo_reference(params, region[:, :3_000], 44_100)[0])
    finally:
        for process in processes:
            stop(process)
