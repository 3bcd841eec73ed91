"""The audio examples beside the denoiser's model card, from the shipped models.

    python -m backline.training.card_examples [--out models/diffusion/examples] [--seconds 8]

Generates a bass and a drum stem for the bundled example context (``examples/ultima_context.flac``,
seed 0, the models' default settings, as ``make demo`` does) and writes the first ``--seconds`` of
each, and of the context with both stems added (peak-limited to -1 dBFS), as FLAC.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONTEXT = REPO / "examples" / "ultima_context.flac"
PEAK = 10 ** (-1 / 20)


def write_examples(out_dir: Path, *, seconds: float = 8.0, seed: int = 0) -> list[Path]:
    """Generate both stems for the example context; returns the files written."""
    from backline.engine.audio import read_audio, write_audio
    from backline.engine.pipeline import GenerateRequest, generate, load_bundle

    context, rate = read_audio(CONTEXT)
    bundle = load_bundle()
    frames = int(seconds * rate)
    stems = {instrument: generate(bundle, GenerateRequest(context, rate, instrument=instrument, seed=seed)).audio
             for instrument in ("bass", "drums")}
    mix = context + stems["bass"] + stems["drums"]
    mix = mix * min(1.0, PEAK / max(float(np.abs(mix[:, :frames]).max()), 1e-9))
    files = {"ultima_bass_generated.flac": stems["bass"], "ultima_drums_generated.flac": stems["drums"],
             "ultima_context_with_generated_bass_and_drums.flac": mix}
    return [write_audio(out_dir / name, audio[:, :frames], rate) for name, audio in files.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backline.training.card_examples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "models" / "diffusion" / "examples")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write_examples(args.out, seconds=args.seconds, seed=args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
