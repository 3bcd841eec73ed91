"""``backline transcribe``: a bass or drum stem as a MIDI file (registration is cheap: no model loads here)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = """\
Transcribe a bass or drum stem (WAV, AIFF, FLAC) into a Standard MIDI File.

Bass goes through basic-pitch's note model (its ONNX file, run with onnxruntime; install it with
`pip install --no-deps basic-pitch==0.4.0`, TensorFlow is not needed) and is kept to one note at a
time. Drums go through onset detection in three bands and come out as General MIDI kick (36),
snare (38) and closed hi-hat (42) on channel 10.

The MIDI file carries --bpm as its tempo (estimated from the stem's onsets if not given, and said so),
so it lines up in a DAW set to the same tempo. With --quantize, note starts and ends snap to that grid at --bpm, counted from
--start-seconds (where bar 1 begins in the audio).

examples:
  backline transcribe bass.wav --instrument bass --out bass.mid
  backline transcribe drums.wav --instrument drums --out drums.mid --bpm 96 --quantize 1/16
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transcribe", help="turn a bass or drum stem into MIDI", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help="the stem to transcribe")
    p.add_argument("--instrument", choices=("bass", "drums"), required=True)
    p.add_argument("--out", type=Path, required=True, help="where to write the MIDI file (.mid)")
    p.add_argument("--bpm", type=float, default=None, help="tempo written into the file and used by --quantize")
    p.add_argument("--quantize", default=None, metavar="NOTE", help="snap to a grid, e.g. 1/8 or 1/16 (needs --bpm)")
    p.add_argument("--start-seconds", type=float, default=0.0, help="where the grid starts in the audio (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of a sentence")
    p.set_defaults(func=_transcribe)


def _transcribe(args: argparse.Namespace) -> int:
    from backline.engine.audio import AudioError
    from backline.engine.transcribe import transcribe_file

    if args.quantize and args.bpm is None:
        print("error: --quantize needs --bpm (the grid is in beats)", file=sys.stderr)
        return 2
    try:
        summary = transcribe_file(args.audio, args.instrument, args.out, bpm=args.bpm, quantize=args.quantize,
                                  start_seconds=args.start_seconds)
    except (AudioError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['notes']} notes -> {summary['out']} ({summary['bpm']:g} BPM"
              + (", estimated from the audio; --bpm sets it" if summary["tempo_source"] == "estimated" else "")
              + (f", quantised to {summary['quantize']})" if summary["quantize"] else ")"))
    return 0
