"""``backline bench bridge``: the bridge's own overhead, generation excluded.

A server runs in a child process with an *echo* generator (returns the region as the stem at once),
so everything measured is transport: upload (submit + chunks + acks), queueing, the result written to
the engine's folder, and the download. For each region length a fresh server (or ``servers`` of them, one
after the other, since a single first job says little on a noisy machine) runs ``jobs`` jobs in a row: it
reports the wall time of each part for the first job (a just-started server and client), the median of the
later jobs (an engine that has been running, as a plugin's is), the throughput, and the
server process's peak resident memory over all jobs (VmHWM) against its idle baseline. By default every download
goes into a new array, as ``BridgeClient.fetch`` returns by default; with ``into="buffer"`` into one buffer the
client allocated and filled before the first job (``fetch(out=...)``), as the region it uploads was: then neither
end of the transfer is fresh memory of the client's, and what is timed is the bridge. The client connects as it
would by default (the server's Unix domain socket where it has one, as the plugin does too) or, with
``--transport tcp``, over loopback TCP (remote clients, and where there is no Unix socket).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HELP = """\
Measure the bridge's overhead (upload + download, no generation) on loopback, per region length,
with the server's peak memory. Writes a JSON report with --json.

examples:
  backline bench bridge                                  4 min 48 kHz stereo, 5 jobs on one server
  backline bench bridge --minutes 1 4 10 --json plugin_bridge/benchmarks/bridge.json
  backline bench bridge --transport tcp                  over loopback TCP
  backline bench bridge --into buffer                    downloads into a buffer the client keeps (fetch out=)
  backline bench bridge --servers 10                     ten fresh servers: how often the first job is under 100 ms
"""


def _echo(params, context, sample_rate, progress, cancelled):
    progress(1, 1)
    return context, sample_rate, {"echo": True}


def _serve(folder: str, ready) -> None:
    from backline.plugin_bridge.server import BridgeServer, keep_chunk_memory_in_process

    keep_chunk_memory_in_process()  # as ``backline serve`` does
    server = BridgeServer(_echo, runtime_dir=Path(folder) / "run", results_dir=Path(folder) / "results",
                          osc_port=None)
    server.start()
    ready.put(str(server.connection_file))
    while True:
        time.sleep(1)


def _peak_rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _one_server(length: float, sample_rate: int, channels: int, jobs: int, transport: str, into: str) -> dict:
    """Start a fresh server, run ``jobs`` jobs of ``length`` minutes through it; timings per job and its memory."""
    from backline.plugin_bridge.client import BridgeClient

    with tempfile.TemporaryDirectory() as folder:
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        process = context.Process(target=_serve, args=(folder, ready), daemon=True)
        process.start()
        try:
            connection = ready.get(timeout=60)
            idle_mb, _ = _peak_rss_mb(process.pid)
            frames = int(length * 60 * sample_rate)
            audio = (0.1 * np.random.default_rng(0).standard_normal((channels, frames))).astype(np.float32)
            buffer = None
            if into == "buffer":  # allocated and written before timing, as the region was
                buffer = np.empty_like(audio)
                buffer.fill(1.0)
            timings = []  # (upload, queue and store, download) seconds per job
            with BridgeClient(connection, timeout_seconds=60, silence_seconds=60, transport=transport) as client:
                client.hello()
                endpoint = client.endpoint.partition("://")[0]
                for job in range(jobs):
                    started = time.perf_counter()
                    client.submit(f"bench-{job}", {}, audio, sample_rate)
                    uploaded = time.perf_counter()
                    client.wait(f"bench-{job}", timeout_seconds=600)
                    finished = time.perf_counter()
                    stem, _, _ = client.fetch(f"bench-{job}", out=buffer)
                    fetched = time.perf_counter()
                    assert stem.shape == audio.shape and np.array_equal(stem, audio), "the echo came back changed"
                    timings.append((uploaded - started, finished - uploaded, fetched - finished))
                    del stem
                    if buffer is not None:
                        buffer.fill(1.0)  # the next job's check cannot pass on what this one left
            _, peak_mb = _peak_rss_mb(process.pid)
        finally:
            process.kill()
            process.join()
    return {"timings": timings, "endpoint": endpoint, "idle_mb": idle_mb, "peak_mb": peak_mb,
            "megabytes": audio.nbytes / 2**20}


def run(minutes: list[float], sample_rate: int = 48_000, channels: int = 2, jobs: int = 5,
        transport: str = "auto", into: str = "new", servers: int = 1) -> dict:
    """Per region length, ``servers`` fresh servers one after the other, each running ``jobs`` jobs. The first
    job's figures are the median over servers of each server's first job (all of them in
    ``first_overhead_seconds_each_server``); "later" is the median of every later job on every server."""
    results = []
    for length in minutes:  # fresh servers per length, so each peak is its own
        runs = [_one_server(length, sample_rate, channels, jobs, transport, into) for _ in range(servers)]
        megabytes = runs[0]["megabytes"]
        firsts = [r["timings"][0] for r in runs]
        later = [t for r in runs for t in r["timings"][1:]]
        upload = statistics.median(up for up, _, _ in firsts)
        store = statistics.median(st for _, st, _ in firsts)
        download = statistics.median(down for _, _, down in firsts)
        overhead = statistics.median(up + down for up, _, down in firsts)
        result = {"minutes": length, "transport": runs[0]["endpoint"], "download_into": into,
                  "sample_rate": sample_rate, "channels": channels,
                  "region_mb": round(megabytes, 1), "upload_seconds": round(upload, 3),
                  "queue_and_store_seconds": round(store, 3), "download_seconds": round(download, 3),
                  "overhead_seconds": round(overhead, 3),
                  "throughput_mb_per_second": round(2 * megabytes / overhead, 1),
                  "jobs": jobs, "servers": servers,
                  "overhead_seconds_each": [round(up + down, 3) for up, _, down in runs[0]["timings"]]}
        if servers > 1:
            each_first = [round(up + down, 3) for up, _, down in firsts]
            result.update(first_overhead_seconds_each_server=each_first,
                          first_jobs_under_100_ms=sum(value < 0.1 for value in each_first))
        if later:
            later_upload = statistics.median(up for up, _, _ in later)
            later_download = statistics.median(down for _, _, down in later)
            later_overhead = statistics.median(up + down for up, _, down in later)
            result.update(later_upload_seconds=round(later_upload, 3), later_download_seconds=round(later_download, 3),
                          later_overhead_seconds=round(later_overhead, 3),
                          later_throughput_mb_per_second=round(2 * megabytes / later_overhead, 1),
                          later_jobs_under_100_ms=sum(up + down < 0.1 for up, _, down in later),
                          later_jobs=len(later))
        results.append({**result, "server_idle_rss_mb": round(max(r["idle_mb"] for r in runs), 1),
                        "server_peak_rss_mb": round(max(r["peak_mb"] for r in runs), 1)})
    return {"machine": {"platform": platform.platform(), "python": platform.python_version()}, "results": results}


def register_bench(bench_models: argparse._SubParsersAction) -> None:
    p = bench_models.add_parser("bridge", help="transport overhead of the engine server (no generation)",
                                description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[4.0], help="region lengths (default 4)")
    p.add_argument("--sample-rate", type=int, default=48_000)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--jobs", type=int, default=5,
                   help="jobs in a row on each server (default 5): the first, then the median of the rest")
    p.add_argument("--transport", choices=["auto", "tcp"], default="auto",
                   help="auto (default): the server's Unix domain socket, as the Python client and the plugin prefer; "
                        "tcp: loopback TCP")
    p.add_argument("--into", choices=["new", "buffer"], default="new",
                   help="new (default): each download into a new array, as fetch() returns; buffer: into one buffer "
                        "allocated and filled before the first job, as the uploaded region was (fetch(out=...))")
    p.add_argument("--servers", type=int, default=1,
                   help="fresh servers per length, one after the other (default 1): the first job's figures are then "
                        "the median over servers, and the report counts the first jobs under 100 ms")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.jobs < 1 or args.servers < 1:
        raise SystemExit("backline bench bridge: --jobs and --servers must be at least 1")
    report = run(args.minutes, args.sample_rate, args.channels, args.jobs, args.transport, args.into, args.servers)
    print(f"transport: {report['results'][0]['transport']}, downloads into: "
          f"{'a new array each' if args.into == 'new' else 'a buffer the client keeps'}")
    print(f"{'minutes':>7} {'MB':>7} {'upload s':>9} {'store s':>8} {'download s':>10} {'overhead s':>10} "
          f"{'later s':>8} {'MB/s':>7} {'idle MB':>8} {'peak MB':>8}")
    for r in report["results"]:
        print(f"{r['minutes']:>7} {r['region_mb']:>7} {r['upload_seconds']:>9} {r['queue_and_store_seconds']:>8} "
              f"{r['download_seconds']:>10} {r['overhead_seconds']:>10} {r.get('later_overhead_seconds', '-'):>8} "
              f"{r['throughput_mb_per_second']:>7} {r['server_idle_rss_mb']:>8} {r['server_peak_rss_mb']:>8}")
        if "first_overhead_seconds_each_server" in r:
            print(f"{'':>7} first jobs under 100 ms: {r['first_jobs_under_100_ms']} of {r['servers']} servers "
                  f"{r['first_overhead_seconds_each_server']}; later jobs: {r.get('later_jobs_under_100_ms', 0)} of "
                  f"{r.get('later_jobs', 0)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="backline bench")
    register_bench(parser.add_subparsers())
    arguments = parser.parse_args(["bridge", *sys.argv[1:]])
    raise SystemExit(arguments.func(arguments))
