"""A hypothesis stateful test of the bridge: random sequences of submit, resubmit, cancel, disconnect and
server restart against a real server on loopback, checking the protocol's invariants after every step:

- a job reaches exactly one final state per run of it, and a job that is done stays done with the
  same output (through resubmits, reconnects and restarts: results live on disk);
- identical (job id, parameters) give identical output, equal to the generator run directly;
- the same job id with other parameters is refused (job_conflict), never silently mixed up;
- the queue never exceeds the server's limit.
"""

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from backline.plugin_bridge import protocol as P
from backline.plugin_bridge.client import BridgeClient, BridgeError
from backline.plugin_bridge.demo_generator import demo_generate
from backline.plugin_bridge.server import BridgeServer

RATE = 16_000
REGION = (0.3 * np.sin(np.arange(4_000) * 0.07)).astype(np.float32)[None]
LIMITS = dict(heartbeat_interval_seconds=0.1, progress_interval_seconds=0.05, max_queued_jobs=3)
JOB_IDS = st.sampled_from(["a", "b", "c", "d"])
SEEDS = st.sampled_from([0, 1])


def params_of(seed: int) -> dict:
    return {"steps": 3, "demo_step_seconds": 0.01, "seed": seed}


def expected_output(seed: int) -> np.ndarray:
    return demo_generate(params_of(seed), REGION, RATE, lambda *_: None, lambda: False)[0]


class BridgeMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="bridge-stateful-"))
        self.server = self._start()
        self.client = self._connect()
        self.params: dict[str, int] = {}  # job id -> seed it was first submitted with (in this server's life)
        self.done: dict[str, np.ndarray] = {}  # job id -> output once done (survives restarts)
        self.done_seed: dict[str, int] = {}

    def _start(self) -> BridgeServer:
        return BridgeServer(demo_generate, runtime_dir=self.folder / "run", results_dir=self.folder / "results",
                            limits=P.Limits(**LIMITS), osc_port=None).start()

    def _connect(self) -> BridgeClient:
        return BridgeClient(self.server.connection_file, timeout_seconds=10.0, silence_seconds=10.0)

    @rule(job_id=JOB_IDS, seed=SEEDS)
    def submit(self, job_id, seed):
        first = self.params.get(job_id, self.done_seed.get(job_id))
        try:
            job = self.client.submit(job_id, params_of(seed), REGION, RATE)
        except BridgeError as error:
            if error.code == P.Code.BUSY:
                return  # the queue is full: refused, retryable, nothing lost
            assert error.code == P.Code.JOB_CONFLICT and first is not None and first != seed, error
            return
        assert first is None or first == seed, f"{job_id} resubmitted with other parameters was accepted"
        self.params[job_id] = seed
        if job_id in self.done:
            assert job["state"] == P.DONE, f"done job {job_id} came back {job['state']}"

    @rule(job_id=JOB_IDS)
    def cancel(self, job_id):
        try:
            self.client.cancel(job_id)
        except BridgeError as error:
            assert error.code == P.Code.UNKNOWN_JOB and job_id not in self.params and job_id not in self.done

    @rule()
    def settle(self):
        """Wait for every known job to reach its final state; check outputs."""
        for job_id, seed in list(self.params.items()):
            job = self.client.wait(job_id, timeout_seconds=20.0)
            assert job["state"] in P.FINAL_STATES
            if job_id in self.done:
                assert job["state"] == P.DONE, f"done job {job_id} became {job['state']}"
            if job["state"] == P.DONE:
                audio, rate, _ = self.client.fetch(job_id)
                assert rate == RATE
                np.testing.assert_array_equal(audio, expected_output(seed))
                if job_id in self.done:
                    np.testing.assert_array_equal(audio, self.done[job_id])
                self.done[job_id], self.done_seed[job_id] = audio, seed

    @rule()
    def disconnect(self):
        self.client.close()
        self.client = self._connect()

    @rule()
    def restart(self):
        self.client.close()
        self.server.stop()
        self.server = self._start()
        self.client = self._connect()
        self.params = {job_id: seed for job_id, seed in self.done_seed.items()}  # only results on disk survive
        for job_id in self.done:
            assert self.client.status(job_id)["state"] == P.DONE, f"{job_id}'s result did not survive a restart"

    @invariant()
    def queue_is_bounded(self):
        assert self.client.status()["queued"] <= LIMITS["max_queued_jobs"]

    def teardown(self):
        self.client.close()
        self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


BridgeMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=10, deadline=None,
                                           suppress_health_check=list(HealthCheck))
test_bridge_protocol_invariants = BridgeMachine.TestCase
