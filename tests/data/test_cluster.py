"""A data build on a Dask cluster makes what the local process pool makes, and survives a worker dying."""

import json
import os
import signal
import threading
from dataclasses import replace

import numpy as np
import pytest

from backline.data.build import BuildConfig, build
from backline.data.dataset import read_manifest
from backline.engine.audio import read_audio

from pieces import SOUNDFONT

distributed = pytest.importorskip("distributed")

CONFIG = BuildConfig(sources=(), soundfonts=(SOUNDFONT,), variants_per_soundfont=3, seed=11)


def same_builds(a, b):
    rows_a, rows_b = read_manifest(a), read_manifest(b)
    assert [json.dumps(r, sort_keys=True) for r in rows_a] == [json.dumps(r, sort_keys=True) for r in rows_b]
    for record in rows_a:
        for rel in record["stems"].values():
            np.testing.assert_array_equal(read_audio(a / rel)[0], read_audio(b / rel)[0])


def test_a_local_dask_cluster_builds_what_the_process_pool_builds(tmp_path, band):
    build(CONFIG, tmp_path / "pool", pieces=band, jobs=2)
    report = build(CONFIG, tmp_path / "dask", pieces=band, jobs=2, cluster="local")
    assert report.built == 9 and not report.skipped
    same_builds(tmp_path / "pool", tmp_path / "dask")


def test_a_worker_killed_mid_build_loses_nothing_and_duplicates_nothing(tmp_path, band):
    config = replace(CONFIG, variants_per_soundfont=4)
    build(config, tmp_path / "pool", pieces=band, jobs=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        seen = []

        def progress(done, total, variant_id):
            seen.append(variant_id)
            if len(seen) == 2:  # a worker dies while the build runs
                os.kill(pids[0], signal.SIGKILL)

        result = {}
        worker = threading.Thread(target=lambda: result.update(report=build(
            config, tmp_path / "dask", pieces=band, jobs=2, cluster=cluster.scheduler_address, progress=progress)))
        worker.start()
        worker.join(timeout=300)
    report = result["report"]
    assert report.built + report.reused == 12 and not report.skipped
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 12  # each variant reported once
    same_builds(tmp_path / "pool", tmp_path / "dask")
