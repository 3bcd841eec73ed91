"""Fixtures for the JUCE plugin tests: build the VST3 once per session (incrementally, with CMake),
start the engine server with the demo generator, and read the plugin's saved state.

The build needs the Debian packages listed in juce_host_example/README.md (juce-modules-source,
libzmq3-dev, cppzmq-dev and JUCE's Linux build dependencies). When CMake or JUCE is missing the
tests are skipped with the reason; set BACKLINE_REQUIRE_PLUGIN=1 (CI) to make that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bridge_helpers import stop

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "juce_host_example"
BUILD = SOURCE / "build"
VST3 = BUILD / "Backline_artefacts" / "Release" / "VST3" / "Backline.vst3"
BUILD_TIMEOUT_SECONDS = 3600  # a cold build on 2 busy cores; an up-to-date build takes seconds



def _unavailable(reason: str):
    if os.environ.get("BACKLINE_REQUIRE_PLUGIN") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _run(command: list[str], log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_SECONDS)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-6000:]
        pytest.fail(f"plugin build failed ({' '.join(command)}):\n{tail}")


@pytest.fixture(scope="session")
def plugin_path() -> str:
    """Path of the built Backline.vst3 (configured and built on first use; make skips what is up to date).

    BACKLINE_PLUGIN_PATH=/path/Backline.vst3 tests a plugin built elsewhere instead (e.g. the sanitizer
    build in juce_host_example/build-asan, run with LD_PRELOAD of libasan and libubsan)."""
    prebuilt = os.environ.get("BACKLINE_PLUGIN_PATH")
    if prebuilt:
        assert Path(prebuilt).is_dir(), f"BACKLINE_PLUGIN_PATH={prebuilt} is not a built VST3 bundle"
        return prebuilt
    if shutil.which("cmake") is None:
        _unavailable("cmake is not installed")
    if not any(Path(root).glob("JUCE-*/JUCEConfig.cmake") for root in ("/usr/lib/x86_64-linux-gnu/cmake", "/usr/lib/cmake",
                                                                       "/usr/local/lib/cmake", "/usr/lib/aarch64-linux-gnu/cmake")) \
            and not os.environ.get("JUCE_DIR"):
        _unavailable("JUCE is not installed (apt-get install juce-modules-source)")
    BUILD.mkdir(exist_ok=True)
    log = BUILD / "pytest-build.log"
    log.write_text("")
    if not (BUILD / "CMakeCache.txt").exists():
        _run(["cmake", "-S", str(SOURCE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"], log)
    jobs = os.environ.get("BACKLINE_BUILD_JOBS", str(min(2, os.cpu_count() or 1)))
    _run(["cmake", "--build", str(BUILD), "--target", "Backline_VST3", "-j", jobs], log)
    assert VST3.is_dir(), f"the build did not produce {VST3}"
    return str(VST3)


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """Point the plugin at a private runtime folder (no engine) and stems folder; returns both."""
    runtime, stems = tmp_path / "runtime", tmp_path / "stems"
    runtime.mkdir()
    monkeypatch.setenv("BACKLINE_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("BACKLINE_STEMS_DIR", str(stems))
    return runtime, stems


@pytest.fixture
def engine(tmp_path, plugin_env):
    """`serve --demo-generator` as a subprocess writing its connection file where the plugin looks."""
    yield from _serve(tmp_path, plugin_env, ["--demo-generator"])


@pytest.fixture
def model_engine(tmp_path, plugin_env):
    """`serve` with the real engine pipeline on tiny random-weight models saved as model files."""
    from backline.models.autoencoder import save_autoencoder
    from backline.models.diffusion import save_denoiser
    from tiny_bundle import make_bundle

    backend = make_bundle().backend
    save_autoencoder(tmp_path / "ae.safetensors", backend.autoencoder, version="tiny")
    save_denoiser(tmp_path / "dn.safetensors", backend.denoiser, version="tiny")
    yield from _serve(tmp_path, plugin_env, ["--autoencoder", str(tmp_path / "ae.safetensors"),
                                             "--denoiser", str(tmp_path / "dn.safetensors")])


@pytest.fixture
def note_model_engine(tmp_path, plugin_env):
    """`serve` with the real engine on tiny models whose autoencoder reads notes (a bass gets four takes)."""
    from backline.models.autoencoder import save_autoencoder
    from backline.models.diffusion import save_denoiser
    from tiny_bundle import make_bundle

    backend = make_bundle("tiny-notes").backend
    save_autoencoder(tmp_path / "ae.safetensors", backend.autoencoder, version="tiny-notes")
    save_denoiser(tmp_path / "dn.safetensors", backend.denoiser, version="tiny")
    yield from _serve(tmp_path, plugin_env, ["--autoencoder", str(tmp_path / "ae.safetensors"),
                                             "--denoiser", str(tmp_path / "dn.safetensors")])


@pytest.fixture
def few_step_engine(tmp_path, plugin_env):
    """`serve` with the real engine on tiny models and a "distilled" denoiser beside them (the denoiser's config with
    other weights, recorded as distilled from it) for the few-step sampler."""
    import torch

    from backline.models.autoencoder import save_autoencoder
    from backline.models.diffusion import save_denoiser
    from tiny_bundle import make_bundle

    backend = make_bundle().backend
    save_autoencoder(tmp_path / "ae.safetensors", backend.autoencoder, version="tiny")
    save_denoiser(tmp_path / "dn.safetensors", backend.denoiser, version="tiny", dtype=torch.float32)
    with torch.no_grad():
        for parameter in backend.denoiser.parameters():
            parameter.mul_(1.1)
    save_denoiser(tmp_path / "student.safetensors", backend.denoiser, version="student", dtype=torch.float32,
                  extra={"distilled_from": "tiny", "sampling": {"steps": 2, "sampler": "euler"}})
    yield from _serve(tmp_path, plugin_env, ["--autoencoder", str(tmp_path / "ae.safetensors"),
                                             "--denoiser", str(tmp_path / "dn.safetensors"),
                                             "--few-step", str(tmp_path / "student.safetensors")])


def _serve(tmp_path, plugin_env, extra: list[str]):
    runtime, _ = plugin_env
    process = subprocess.Popen(
        [sys.executable, "-m", "backline.plugin_bridge.cli", "serve", *extra, "--port", "0",
         "--osc-port", "0", "--runtime-dir", str(runtime), "--results-dir", str(tmp_path / "results")],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )
    connection = runtime / "engine.json"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if connection.exists():
                try:
                    if json.loads(connection.read_text())["pid"] == process.pid:
                        break
                except (ValueError, KeyError):
                    pass
            if process.poll() is not None:
                raise AssertionError(f"the engine server exited: {process.stderr.read()}")
            time.sleep(0.05)
        else:
            raise AssertionError("the engine server did not write its connection file within 30 s")
        yield process
    finally:
        stop(process)
