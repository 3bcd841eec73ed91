"""The two ways into one server, over real sockets: the Unix domain socket (``ipc://``) the server advertises in
its connection file for same-machine clients, and loopback TCP (the plugin, remote clients, older clients)."""

import json
import os
import stat

import numpy as np
import pytest

from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient


def _socket_path(server) -> str:
    endpoint = json.loads(server.connection_file.read_text())["ipc_endpoint"]
    assert endpoint.startswith("ipc://")
    return endpoint[len("ipc://"):]


def test_the_server_advertises_a_private_unix_socket_and_the_client_prefers_it(
        start_server, connect, region, demo_reference):
    server = start_server()
    path = _socket_path(server)
    assert os.path.dirname(path) == str(server.runtime_dir.resolve())
    assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(server.runtime_dir.stat().st_mode) == 0o700

    client = connect(server)
    assert client.endpoint == f"ipc://{path}"
    audio, sample_rate, _ = client.generate("over-ipc", {"steps": 3}, region, 44_100, timeout_seconds=10)
    expected, _, _ = demo_reference({"steps": 3}, region, 44_100)
    assert sample_rate == 44_100 and np.array_equal(audio, expected)


def test_tcp_and_ipc_reach_the_same_jobs(start_server, connect, region, demo_reference):
    server = start_server()
    over_tcp, over_ipc = connect(server, transport="tcp"), connect(server)
    assert over_tcp.endpoint == f"tcp://127.0.0.1:{server.port}" and over_ipc.endpoint.startswith("ipc://")
    over_tcp.submit("uploaded-over-tcp", {"steps": 2}, region, 44_100, chunk_frames=16_384)
    over_ipc.wait("uploaded-over-tcp", timeout_seconds=10)  # a watcher through the other transport
    expected, _, _ = demo_reference({"steps": 2}, region, 44_100)
    assert np.array_equal(over_ipc.fetch("uploaded-over-tcp")[0], expected)
    assert np.array_equal(over_tcp.fetch("uploaded-over-tcp")[0], expected)


def test_a_client_that_knows_nothing_of_ipc_still_works(start_server, tmp_path, region, demo_reference):
    server = start_server()
    info = json.loads(server.connection_file.read_text())
    old_style = {key: value for key, value in info.items() if key != "ipc_endpoint"}  # a version-1 file before ipc
    (tmp_path / "old.json").write_text(json.dumps(old_style))
    for client in (BridgeClient(host=info["host"], port=info["port"], token=info["token"], timeout_seconds=5),
                   BridgeClient(tmp_path / "old.json", timeout_seconds=5, silence_seconds=5)):
        with client:
            assert client.endpoint.startswith("tcp://")
            job_id = f"old-client-{id(client)}"
            audio, _, _ = client.generate(job_id, {"steps": 2}, region[:, :9_000], 44_100, timeout_seconds=10)
            assert np.array_equal(audio, demo_reference({"steps": 2}, region[:, :9_000], 44_100)[0])


def test_a_server_without_ipc_advertises_only_tcp_and_clients_use_it(start_server, connect, region):
    server = start_server(ipc=False)
    assert "ipc_endpoint" not in json.loads(server.connection_file.read_text())
    assert not list(server.runtime_dir.glob("*.sock"))
    client = connect(server)
    assert client.endpoint == f"tcp://127.0.0.1:{server.port}"
    assert client.hello()["protocol_version"] == P.PROTOCOL_VERSION


def test_a_runtime_folder_too_deep_for_a_socket_address_falls_back_to_tcp(start_server, connect, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = start_server(runtime_dir=deep)
    assert "ipc_endpoint" not in server.connection_info() and not list(deep.glob("*.sock"))
    assert connect(server).endpoint.startswith("tcp://")


def test_the_ipc_socket_still_needs_the_token(start_server, raw_peer):
    server = start_server()
    peer = raw_peer(server, f"ipc://{_socket_path(server)}")
    peer.send_header({"type": "hello", "req": 1}, token=False)
    reply, _ = peer.reply()
    assert reply["type"] == "error" and reply["code"] == P.Code.UNAUTHORIZED and reply["req"] == 1
    peer.send_header({"type": "hello", "req": 2})
    assert peer.reply()[0]["type"] == "welcome"


def test_stop_removes_the_socket_and_a_start_removes_those_of_dead_servers(start_server, tmp_path):
    runtime = tmp_path / "shared-run"
    runtime.mkdir(mode=0o700)
    dead = runtime / "engine-999999999-abcdef.sock"  # no such pid: left by a killed server
    dead.touch()
    server = start_server(runtime_dir=runtime)
    path = _socket_path(server)
    assert not dead.exists() and os.path.exists(path)
    server.stop()
    assert not os.path.exists(path) and not server.connection_file.exists()


def test_fetch_into_a_reused_buffer(start_server, connect, region, demo_reference):
    server = start_server()
    client = connect(server)
    buffer = np.full((2, 80_000), 7.0, dtype=np.float32)  # larger than the result: written from its start
    for seed in (1, 2):
        client.submit(f"reuse-{seed}", {"steps": 2, "seed": seed}, region, 44_100)
        client.wait(f"reuse-{seed}", timeout_seconds=10)
        audio, _, _ = client.fetch(f"reuse-{seed}", out=buffer)
        expected, _, _ = demo_reference({"steps": 2, "seed": seed}, region, 44_100)
        assert audio.shape == (1, 70_000) and np.shares_memory(audio, buffer)
        assert np.array_equal(audio, expected) and np.array_equal(buffer[0, :70_000], expected[0])
    assert (buffer[1] == 7.0).all() and (buffer[0, 70_000:] == 7.0).all()  # nothing written outside the result
    with pytest.raises(ValueError, match="at least"):
        client.fetch("reuse-1", out=np.empty((1, 69_999), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        client.fetch("reuse-1", out=np.empty((1, 70_000), dtype=np.float64))
