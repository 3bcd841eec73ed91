"""``backline train style``: the prompt prior, trained, measured and written in one command."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from backline.engine.cli import add_threads_argument

STYLE_HELP = """\
Train the style encoder on the target stems of a latent directory, with descriptions of each stem's
GM program or drum kit (and effects) from the data build's manifest: the prompt prior (text -> the
audio style space, the modality-gap mapper), into the fixed latent statistics the shipped denoiser
uses (the default), or, with `--audio-space tower`, first a learned audio tower (CLAP-style,
contrastive against the descriptions and against other segments of the same stem) and then the prior
into its space. A denoiser trained on the tower's space
(`backline train diffusion --style FILE`) must ship with this file.
Measures prompt-to-family and audio-to-audio retrieval on the test split and writes OUT (the
.safetensors file) with report.json and report.md beside it. The text tower (all-MiniLM-L6-v2) needs
the `style` extra.

example:
  backline train style --latents $BACKLINE_DATA/latents --data $BACKLINE_DATA/full \\
      --out models/style/default.safetensors
"""


def register_train(train_models: argparse._SubParsersAction, formatter) -> None:
    p = train_models.add_parser("style", help="train the prompt prior (text prompts)", description=STYLE_HELP,
                                formatter_class=formatter)
    p.add_argument("--latents", required=True, type=Path, help="latent directory from `backline train latents`")
    p.add_argument("--data", required=True, type=Path, help="the data build the latents came from")
    p.add_argument("--out", required=True, type=Path, help="prior file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=3000, help="prompt prior steps")
    p.add_argument("--tower-steps", type=int, default=2000, help="audio tower steps")
    p.add_argument("--audio-space", choices=("statistics", "tower", "tower+statistics"), default="statistics",
                   help="the audio space: the fixed latent statistics (default: what the shipped denoiser uses), a "
                        "learned tower, or the tower's numbers followed by the statistics")
    p.add_argument("--tower-from", type=Path, default=None, help="keep the audio tower of this style file (no tower training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256,
                   help="the prior's global batch: under torchrun each of N processes embeds batch / N (default 256)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="keep a checkpoint of each phase here; the same command with it again resumes the run")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default 500)")
    add_threads_argument(p, None, what="torch")
    p.set_defaults(func=_train_style)


def _train_style(args: argparse.Namespace) -> int:
    import torch

    from backline.training.style_prior import render_report, train

    if args.threads:
        torch.set_num_threads(args.threads)
    report = train(args.latents, args.data, args.out, steps=args.steps, seed=args.seed, audio_space=args.audio_space,
                   tower_steps=args.tower_steps, tower_from=args.tower_from, batch_size=args.batch_size,
                   run_dir=args.run_dir, checkpoint_every=args.checkpoint_every,
                   log=lambda message: print(message, file=sys.stderr))
    if report["rank"] != 0:  # under torchrun, rank 0 reports
        return 0
    report["command"] = "backline " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (args.out.parent / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out.parent / "report.md").write_text(render_report(report))
    print(render_report(report))
    return 0


def register_ship(ship_models: argparse._SubParsersAction) -> None:
    p = ship_models.add_parser(
        "style-pad", help="store the style pad's sounds in a prompt prior file",
        description="Embed the style pad's named sounds (engine/style.py PAD_SOUNDS) with the prompt prior and store "
                    "their embeddings in its file, so the engine places them on the pad without the text model.")
    p.add_argument("--style", type=Path, default=None, help="prompt prior file (default: the shipped one)")
    p.set_defaults(func=_ship_style_pad)


def _ship_style_pad(args: argparse.Namespace) -> int:
    from backline.engine.style import DEFAULT_PRIOR_PATH
    from backline.training.style_prior import store_pad

    path = store_pad(args.style or DEFAULT_PRIOR_PATH)
    print(f"{path}: style pads stored")
    return 0
