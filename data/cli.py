"""``backline data``: build paired (context, stem) audio from MIDI, import real multitracks, report stats."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="build and inspect paired (context, stem) training audio",
        description="Build and inspect the paired audio every Backline model learns from.",
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    build = commands.add_parser(
        "build",
        help="render multi-track MIDI into sample-aligned (context, stem) pairs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Render human-written multi-track MIDI (Freedoom, Planet Blupi, or your own folder) through\n"
            "FluidSynth with General MIDI soundfonts, one instrument group at a time, into\n"
            "OUT/audio/<variant>/{stems/*.flac, mix.flac, bass/, drums/} and OUT/manifest.jsonl.\n"
            "Each variant draws a seeded augmentation: transposition, tempo, bass program 32-39, drum kit,\n"
            "reverb and chorus, stem gains, and a random subset of the other stems as context.\n"
            "An interrupted build resumes: finished variants are kept. Bad pieces are skipped and listed\n"
            "with their reason in OUT/report.json. Sources reserved for evaluation are refused."
        ),
    )
    build.add_argument("--preset", choices=("small", "full", "broad", "broad-small"), default="small",
                       help="small: 8 pieces x 20 s, one soundfont (about a minute); full: every source x every training "
                            "soundfont; broad: every MMA groove over three charts, many soundfonts and kits, mix chains "
                            "and an unseen-sound split (about 75 h of pairs); broad-small: its recipe on 24 grooves")
    build.add_argument("--out", type=Path, default=None,
                       help="build directory (default: $BACKLINE_DATA/<preset>; never inside the repository)")
    build.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel rendering processes (with --cluster "
                                                                       "local: Dask workers)")
    build.add_argument("--cluster", metavar="ADDRESS",
                       help="render on a Dask cluster: its scheduler's address (tcp://host:8786), or `local` for a local "
                            "one; the same variants and audio as without (needs `pip install 'backline[cluster]'`)")
    build.add_argument("--seed", type=int, default=None, help="augmentation seed (default: the preset's, 0)")
    build.add_argument("--source", action="append", dest="sources", metavar="NAME",
                       help="restrict to a source (repeatable): mma, freedoom, planetblupi, music21")
    build.add_argument("--soundfont", action="append", dest="soundfonts", metavar="PATH",
                       help="use this soundfont instead of the preset's (repeatable)")
    build.add_argument("--midi-dir", type=Path, help="render your own MIDI files from this folder instead of the built-in sources")
    build.add_argument("--midi-licence", default="user-supplied",
                       help="licence recorded in the manifest for --midi-dir files")
    build.add_argument("--variants", type=int, default=None, help="variants per piece and soundfont")
    build.add_argument("--max-pieces", type=int, default=None,
                       help="at most this many pieces per source (for mma: main grooves, spread over the style families)")
    build.add_argument("--max-seconds", type=float, default=None, help="trim every piece to this many seconds")
    build.set_defaults(func=_build)

    stats = commands.add_parser("stats", help="hours per instrument, source, soundfont and split; rendering speed")
    stats.add_argument("build_dir", type=Path)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--histogram", type=Path, metavar="PNG",
                       help="also draw hours per tempo and per key of the build's MMA songs into this PNG")
    stats.set_defaults(func=_stats)

    excerpt = commands.add_parser(
        "excerpt",
        help="cut a (context, stem) excerpt out of a build, with its provenance",
        description="Write CONTEXT and the true STEM of one variant's pair, from START for DURATION seconds,\n"
                    "as 16-bit FLAC plus a JSON file with the source, licence and augmentation used.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    excerpt.add_argument("build_dir", type=Path)
    excerpt.add_argument("--variant", required=True, help="variant id from manifest.jsonl")
    excerpt.add_argument("--instrument", choices=("bass", "drums"), default="bass")
    excerpt.add_argument("--start-seconds", type=float, default=0.0)
    excerpt.add_argument("--duration-seconds", type=float, default=16.0)
    excerpt.add_argument("--out", type=Path, required=True, help="folder for <name>_context.flac, <name>_<instrument>.flac, <name>.json")
    excerpt.add_argument("--name", default="example")
    excerpt.set_defaults(func=_excerpt)

    bench = commands.add_parser(
        "bench", help="rendering speed of a preset with 1 and N workers, written to a JSON file",
        description="Render the first VARIANTS variants of a preset into a temporary folder with each worker count\n"
                    "and report seconds of song (every stem rendered, mixed and written) per second of one\n"
                    "worker's time and per second of wall time.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--preset", default="broad-small", choices=("small", "full", "broad", "broad-small"))
    bench.add_argument("--variants", type=int, default=16)
    bench.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    bench.add_argument("--cluster", metavar="ADDRESS", help="render on a Dask cluster (`local`, or a scheduler address)")
    bench.add_argument("--out", type=Path, default=Path(__file__).parent / "benchmarks" / "render.json")
    bench.set_defaults(func=_bench)

    for name, help_text in (("import-musdb", "MUSDB18-HQ-style folders (mixture, bass, drums, other, vocals)"),
                            ("import-slakh", "Slakh2100-style folders (mix, stems/, metadata.yaml)")):
        importer = commands.add_parser(name, help=f"turn {help_text} into a build directory")
        importer.add_argument("root", type=Path)
        importer.add_argument("--out", type=Path, required=True)
        importer.set_defaults(func=_import, importer=name)

    data.set_defaults(func=lambda args: data.print_help() or 2)


def _default_out(preset: str) -> Path:
    root = os.environ.get("BACKLINE_DATA")
    if not root:
        raise SystemExit("say where to write the build: --out DIR, or set BACKLINE_DATA")
    return Path(root) / preset


def _build(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from backline.data.build import build, preset
    from backline.data.sources import midi_folder_pieces

    config = preset(args.preset)
    overrides = {
        "seed": args.seed,
        "sources": tuple(args.sources) if args.sources else None,
        "soundfonts": tuple(args.soundfonts) if args.soundfonts else None,
        "variants_per_soundfont": args.variants,
        "max_pieces_per_source": args.max_pieces,
        "max_grooves": args.max_pieces if "mma" in (args.sources or config.sources) else None,
        "max_duration_seconds": args.max_seconds,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    pieces = list(midi_folder_pieces(args.midi_dir, args.midi_licence)) if args.midi_dir else None
    out = args.out or _default_out(args.preset)

    def progress(done: int, total: int, variant_id: str) -> None:
        print(f"\r[{done}/{total}] {variant_id[:60]:<60}", end="", file=sys.stderr, flush=True)

    report = build(config, out, pieces=pieces, jobs=args.jobs, progress=progress, cluster=args.cluster)
    print(file=sys.stderr)
    print(f"{out}: {report.built} variants rendered, {report.reused} reused, {len(report.skipped)} skipped "
          f"in {report.wall_seconds:.1f} s")
    for skipped in report.skipped:
        print(f"  skipped {skipped['variant_id']}: {skipped['reason']}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from backline.data.bench import run

    figures = run(args.preset, args.variants, args.jobs, args.cluster)
    for row in figures["results"]:
        print(f"{row['jobs']} worker(s): {row['variants']} variants, {row['song_seconds']} s of song in "
              f"{row['wall_seconds']} s: {row['x_realtime_per_worker']}x real time per worker, "
              f"{row['x_realtime_wall']}x on the machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(args.out)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from backline.data.stats import build_stats, format_stats

    stats = build_stats(args.build_dir)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    if args.histogram:
        from backline.data.stats import histogram_png

        print(histogram_png(args.build_dir, args.histogram), file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from backline.data import multitrack

    importer = multitrack.import_musdb if args.importer == "import-musdb" else multitrack.import_slakh
    report = importer(args.root, args.out)
    print(f"{args.out}: {report['imported']} tracks imported, {len(report['skipped'])} skipped")
    for skipped in report["skipped"]:
        print(f"  skipped {skipped['track']}: {skipped['reason']}")
    return 0


def _excerpt(args: argparse.Namespace) -> int:
    from backline.data.dataset import read_manifest
    from backline.engine.audio import read_audio, write_audio

    records = {r["variant_id"]: r for r in read_manifest(args.build_dir)}
    if args.variant not in records:
        raise SystemExit(f"{args.variant}: not in {args.build_dir}/manifest.jsonl")
    record = records[args.variant]
    pair = record["pairs"].get(args.instrument)
    if pair is None:
        raise SystemExit(f"{args.variant} has no {args.instrument} part")
    written = []
    for role, rel in (("context", pair["context"]), (args.instrument, pair["target"])):
        audio, sample_rate = read_audio(args.build_dir / rel)
        start = int(args.start_seconds * sample_rate)
        stop = start + int(args.duration_seconds * sample_rate)
        path = args.out / f"{args.name}_{role}.flac"
        written.append(write_audio(path, audio[:, start:stop], sample_rate, subtype="PCM_16"))
    provenance = {k: record[k] for k in ("variant_id", "piece_id", "source", "licence", "origin", "soundfont",
                                           "programs", "transpose_semitones", "tempo_scale", "sample_rate")
                  if k in record}
    for key in ("soundfont_licence", "kit", "mma"):  # the broad build's sounds, groove and chart
        if key in record:
            provenance[key] = record[key]
    provenance["target_wet"] = pair.get("target_wet")
    provenance.update(instrument=args.instrument, context_stems=pair["context_stems"],
                      start_seconds=args.start_seconds, duration_seconds=args.duration_seconds,
                      command=" ".join(["backline", "data", "excerpt", "BUILD", "--variant", args.variant,
                                        "--instrument", args.instrument, "--start-seconds", str(args.start_seconds),
                                        "--duration-seconds", str(args.duration_seconds), "--name", args.name]))
    (args.out / f"{args.name}.json").write_text(json.dumps(provenance, indent=1) + "\n")
    for path in written:
        print(path)
    return 0
