"""The ``backline`` command: one entry point, subcommands registered by each room.

Each room exposes ``register(subparsers)`` that adds its subcommands and sets ``func`` on them.
Registration must stay cheap (no torch import) so ``backline --help`` is instant; heavy imports
happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Rooms that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = (
    "backline.engine.cli",
    "backline.engine.transcribe_cli",
    "backline.engine.clap_cli",
    "backline.plugin_bridge.cli",
    "backline.plugin_bridge.daw",
    "backline.data.cli",
    "backline.training.cli",
    "backline.export.cli",
    "backline.bench_cli",
)

DESCRIPTION = """\
Backline generates a bass or drum stem that plays along with the audio you already have.

Typical session:
  backline generate --context song.wav --instrument bass --out bass.wav   the main job
  backline serve                                                  the local engine the plugin talks to
  backline daw install ardour                                     "generate accompaniment" on a region in Ardour
  backline data build --preset small --out $BACKLINE_DATA/small   render paired (mix, stem) audio
  backline data stats $BACKLINE_DATA/small                        hours per instrument, source, split
  backline train autoencoder --config tiny --data DIR --run DIR   train the audio autoencoder

Run `backline COMMAND --help` for the manual of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"backline {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:  # a room whose optional extra is missing
            if error.name and error.name.startswith("backline"):
                raise
            continue
        module.register(subparsers)
    return parser


def _version() -> str:
    from backline import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
