"""``backline clap``: LAION-CLAP embeddings of recordings and prompts (registration is cheap: no torch here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = """\
Embed recordings and prompts with a LAION-CLAP checkpoint you have, and compare them.

Backline ships no CLAP weights and downloads none: point it at a checkpoint LAION released (the
music one, music_audioset_epoch_15_esc_90.14.pt, is the usual choice) with --clap-checkpoint or
BACKLINE_CLAP_CHECKPOINT. Prompts also need RoBERTa's tokenizer files (vocab.json and merges.txt of
roberta-base) in a folder given by --clap-tokenizer or BACKLINE_CLAP_TOKENIZER; recordings do not.
Needs the clap extra: pip install 'backline[clap]' && pip install --no-deps laion-clap==1.1.7

Each input becomes a 512-number unit vector; the command prints the cosine similarity of every pair
(1 = same direction), and --out saves the vectors (.npz: names, embeddings). These are for retrieval
and adherence measures: the shipped denoiser is conditioned on Backline's own style space, not on
CLAP's, so `backline generate` does not take CLAP embeddings.

examples:
  backline clap embed ref.wav take1.wav take2.wav --clap-checkpoint music_audioset_epoch_15_esc_90.14.pt
  backline clap embed bass.wav --prompt "slap bass" --prompt "fretless bass" --clap-tokenizer roberta-base/ --out e.npz
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("clap", help="LAION-CLAP embeddings from a checkpoint you have", description=HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="clap_command", metavar="COMMAND", required=True)
    e = commands.add_parser("embed", help="embed recordings and prompts, print their similarities",
                            description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("audio", type=Path, nargs="*", help="recordings (WAV, AIFF, FLAC), any rate")
    e.add_argument("--prompt", action="append", default=[], help="a text description (repeatable)")
    e.add_argument("--clap-checkpoint", type=Path, help="the CLAP .pt file (default: $BACKLINE_CLAP_CHECKPOINT)")
    e.add_argument("--clap-tokenizer", type=Path, help="folder with roberta-base's vocab.json and merges.txt (prompts only)")
    e.add_argument("--cache-dir", type=Path, help="keep embeddings here, keyed by content and checkpoint")
    e.add_argument("--out", type=Path, help="save names and embeddings to this .npz file")
    e.set_defaults(func=_embed)


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from backline.engine.audio import AudioError, read_audio
    from backline.engine.clap import ClapCheckpointError, ClapEncoder, ClapUnavailable

    if not args.audio and not args.prompt:
        print("backline clap embed: give recordings, --prompt, or both", file=sys.stderr)
        return 2
    try:
        encoder = ClapEncoder.load(args.clap_checkpoint, tokenizer=args.clap_tokenizer, cache_dir=args.cache_dir)
        names, vectors = [], []
        for path in args.audio:
            audio, rate = read_audio(path)
            names.append(str(path))
            vectors.append(encoder.embed_audio(audio, rate))
        if args.prompt:
            names += [f'"{p}"' for p in args.prompt]
            vectors += list(encoder.embed_text(args.prompt))
    except (ClapCheckpointError, ClapUnavailable, AudioError, ValueError) as error:
        print(f"backline clap embed: {error}", file=sys.stderr)
        return 1
    embeddings = np.stack(vectors)
    similarity = embeddings @ embeddings.T
    width = max(len(n) for n in names)
    for i, name in enumerate(names):
        print(f"{name:<{width}}  " + " ".join(f"{s:+.3f}" for s in similarity[i]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, names=np.array(names), embeddings=embeddings)
        print(f"wrote {args.out}: {len(names)} embeddings of {embeddings.shape[1]}")
    return 0
