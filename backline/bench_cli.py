"""``backline bench``: every room's benchmarks under one command (each room registers its own)."""

from __future__ import annotations

import argparse
import importlib

# Rooms with a ``register_bench(bench_subparsers)``, in the order --help lists them.
BENCH_MODULES = ("backline.training.cli", "backline.export.cli", "backline.plugin_bridge.bench",
                 "backline.plugin_bridge.reliability")


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="time a model or the engine server, write the figures to a file",
                                  description="Benchmarks that write their figures to a committed file.")
    benches = bench.add_subparsers(dest="model", metavar="WHAT")
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:  # a room whose optional extra is missing
            if error.name and error.name.startswith("backline"):
                raise
            continue
        module.register_bench(benches)
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
