"""Fixtures for the bridge tests: servers on 127.0.0.1 with ephemeral ports, clients and raw sockets,
all shut down at the end of each test. Timings are kept short so the suite runs in seconds."""

import json

import numpy as np
import pytest
import zmq

from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient
from backline.plugin_bridge.demo_generator import demo_generate
from backline.plugin_bridge.server import BridgeServer

FAST_LIMITS = dict(heartbeat_interval_seconds=0.1, progress_interval_seconds=0.1, result_chunk_frames=16_384)


@pytest.fixture
def start_server(tmp_path):
    """start_server(generate=demo_generate, **limits) -> a running BridgeServer (tcp, and ipc unless ``ipc=False``);
    stopped after the test."""
    servers = []

    def start(generate=demo_generate, *, results_dir=None, max_results=100, runtime_dir=None, ipc=True, **limits):
        server = BridgeServer(
            generate, runtime_dir=runtime_dir or tmp_path / f"run{len(servers)}",
            results_dir=results_dir or tmp_path / "results",
            limits=P.Limits(**{**FAST_LIMITS, **limits}), max_results=max_results, ipc=ipc,
        )
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def connect():
    """connect(server, **kwargs) -> a BridgeClient with short timeouts; closed after the test."""
    clients = []

    def make(server, **kwargs):
        client = BridgeClient(server.connection_file, **{"timeout_seconds": 5.0, "silence_seconds": 5.0, **kwargs})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class RawPeer:
    """A bare DEALER socket for sending hand-made (often malformed) frames; over tcp unless given an endpoint."""

    def __init__(self, server, endpoint=None):
        self.token = server.token
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint or f"tcp://127.0.0.1:{server.port}")

    def send(self, frames):
        self.socket.send_multipart(frames)

    def send_header(self, header, blobs=(), *, token=True):
        header = {"v": P.PROTOCOL_VERSION, **({"token": self.token} if token else {}), **header}
        self.send([json.dumps(header).encode(), *blobs])

    def reply(self, timeout_seconds=5.0, skip=("heartbeat", "progress", "job")):
        """The next reply (unsolicited updates skipped); fails the test if none comes in time."""
        while True:
            assert self.socket.poll(int(timeout_seconds * 1000)), "no reply from the server"
            frames = self.socket.recv_multipart()
            header = json.loads(frames[0])
            if header.get("type") not in skip or "req" in header:
                return header, frames[1:]

    def close(self):
        self.socket.close(0)
        self.context.term()


@pytest.fixture
def raw_peer():
    peers = []

    def make(server, endpoint=None):
        peers.append(RawPeer(server, endpoint))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture
def region():
    """A stereo 44.1 kHz region of 70,000 frames (several upload chunks): a decaying 55 Hz tone plus noise."""
    rng = np.random.default_rng(7)
    t = np.arange(70_000) / 44_100
    tone = 0.5 * np.sin(2 * np.pi * 55.0 * t) * np.exp(-t)
    return np.stack([tone, tone]).astype(np.float32) + 0.01 * rng.standard_normal((2, 70_000)).astype(np.float32)


def reference(params, audio, sample_rate):
    return demo_generate(params, audio, sample_rate, lambda step, steps: None, lambda: False)


@pytest.fixture
def demo_reference():
    """demo_reference(params, audio, sample_rate): the demo generator's output called directly, to compare."""
    return reference


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    """A demo server and a raw peer shared by a module's fuzzed requests; afterwards it must still serve."""
    folder = tmp_path_factory.mktemp("fuzz")
    server = BridgeServer(demo_generate, runtime_dir=folder / "run", results_dir=folder / "results",
                          limits=P.Limits(**FAST_LIMITS)).start()
    peer = RawPeer(server)
    yield server, peer
    peer.close()
    with BridgeClient(server.connection_file, timeout_seconds=5) as client:
        tone = np.zeros((1, 2_000), np.float32)
        assert client.generate("after-fuzz", {"steps": 1}, tone, 44_100)[0].shape == (1, 2_000)
    server.stop()
