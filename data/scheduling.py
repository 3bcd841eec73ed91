"""Where independent tasks run: in this process, in a local process pool (the default), or on a Dask
cluster (``--cluster local`` or ``--cluster tcp://scheduler:8786``; the optional ``cluster`` extra).

``tasks(jobs, cluster)`` yields a ``run(function, items)`` that returns each item's result as it finishes
(order not kept: callers key results by what they are). Every task is a pure function of its item, so
where it runs never changes what it makes; a Dask worker that dies mid-task has its tasks run again
elsewhere.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterable, Iterator


@contextlib.contextmanager
def tasks(jobs: int, cluster: str | None = None) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """A task runner for ``jobs`` local processes, or for the Dask cluster at ``cluster`` (``"local"``: a local
    Dask cluster of ``jobs`` single-threaded worker processes)."""
    if cluster:
        with _dask(jobs, cluster) as run:
            yield run
    elif jobs <= 1:
        yield lambda function, items: map(function, items)
    else:
        # spawn, not fork: a forked child can inherit FluidSynth's or glib's locks held by another thread
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield lambda function, items: (f.result() for f in as_completed([pool.submit(function, i) for i in items]))


@contextlib.contextmanager
def _dask(jobs: int, address: str):
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError as error:
        raise SystemExit("--cluster needs Dask distributed: pip install 'backline[cluster]'") from error
    if address == "local":
        with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield _dask_runner(client, dask_completed)
    else:
        with Client(address) as client:
            yield _dask_runner(client, dask_completed)


def _dask_runner(client, completed):
    def run(function, items):
        futures = client.map(function, list(items), pure=False)
        for future in completed(futures):
            yield future.result()

    return run
