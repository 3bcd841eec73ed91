"""``backline export`` (models to checked ONNX graphs) and ``backline bench generate`` (runtime speed and memory).

Registration imports nothing heavy; torch, onnx and onnxruntime load inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from backline.engine.cli import add_threads_argument

EXPORT_HELP = """\
Export the autoencoder and the denoiser to ONNX for the onnxruntime engine, and check them.

Writes four files to OUT: autoencoder_encoder.onnx, autoencoder_decoder.onnx, denoiser.onnx and
guided_step.onnx (one sampler evaluation whole: the guidance passes batched through the denoiser,
their combination, inpainting and loop tying, and the solver's update), and autoencoder_notes.onnx for
an autoencoder with a note head, each carrying its model's
contract (kind, version, config, sample rate, latent rate, channels, latent scale; sigma range and
instruments for the denoiser) in its ONNX metadata. Batch and length axes are dynamic. Before
writing, every graph is run in onnxruntime and compared with torch (the step graph with torch's
denoiser and the engine's numpy guidance, controls and update) on fresh random inputs of several
lengths; if any differs beyond the tolerance nothing is written and the command fails with the errors. The STFT and inverse STFT run in numpy beside the graphs (exact and
faster than a DFT inside them). With --int8, also denoiser.int8.onnx and guided_step.int8.onnx: the same graphs
with int8 weights and dynamically quantised activations, for `backline generate --precision int8` on a CPU
(checked against the float graphs; their effect on speed and quality is in export/benchmarks/).

The engine picks the files up with `load_bundle(backend="onnx", onnx_dir=OUT)`, or by default from
$BACKLINE_ONNX_DIR or the onnx folder beside the shipped weights.

examples:
  backline export --autoencoder models/autoencoder/default.safetensors \\
                  --denoiser models/diffusion/default.safetensors --out models/onnx
  backline export --autoencoder ae.safetensors --denoiser dn.safetensors --out /tmp/onnx --json report.json
  backline export --autoencoder models/autoencoder/default.safetensors \
                  --denoiser models/diffusion/default.safetensors --out models/onnx --int8
"""

BENCH_HELP = """\
Measure generation speed and peak memory for the torch and onnxruntime backends (onnxruntime with
the step graph, the engine's default, and with one denoiser call per step: onnx-calls).

Each backend and region length runs in a fresh process that loads the models and generates one stem
with the default settings (30 steps, three guidance passes), reporting per-step latency, the
real-time factor (seconds of audio per second of compute), whole-process time and peak memory.
The onnxruntime process runs with torch blocked. Without model files it uses the shipped ones, else
random weights of --config (speed does not depend on the weights).

examples:
  backline bench generate                                   60 s, every backend, a table on stdout
  backline bench generate --seconds 10 30 120 --json bench.json
  backline bench generate --config tiny --seconds 5 --steps 4   a quick smoke run
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export the models to ONNX and check the files against torch",
                              description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--autoencoder", required=True, type=Path, help="autoencoder .safetensors file")
    p.add_argument("--denoiser", required=True, type=Path, help="denoiser .safetensors file")
    p.add_argument("--out", required=True, type=Path, help="folder for the four .onnx files")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest error relative to the output's peak (default 1e-4; torch float32's own error "
                        "is also accepted where it is larger)")
    p.add_argument("--seed", type=int, help="seed of the random check inputs (default: fresh, reported)")
    add_threads_argument(p, None, what="the onnxruntime check")
    p.add_argument("--json", type=Path, help="also write the check report here")
    p.add_argument("--int8", action="store_true",
                   help="also write int8 versions of the denoiser and the step graph (denoiser.int8.onnx, "
                        "guided_step.int8.onnx) for `--precision int8` on a CPU, checked against the float graphs")
    p.add_argument("--style", type=Path, default=None, help="style file whose tower the denoiser was trained on "
                   "(default: the shipped one; only for a denoiser on a style tower)")
    p.add_argument("--few-step", type=Path, default=None, help="a denoiser distilled from --denoiser's (`backline train "
                   "diffusion --distill-from`): its graphs too, for the engine's few_step sampler")
    p.set_defaults(func=_export)



def register_bench(bench_models: argparse._SubParsersAction) -> None:
    """``backline bench generate``, next to the training room's ``bench autoencoder``."""
    b = bench_models.add_parser("generate", help="generation speed and memory of the runtime backends",
                                description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    from backline.export.bench import add_arguments

    add_arguments(b)
    b.set_defaults(func=_bench)


def _export(args: argparse.Namespace) -> int:
    from backline.export.onnx import ExportError, export_models

    try:
        report = export_models(args.autoencoder, args.denoiser, args.out, opset=args.opset,
                               tolerance=args.tolerance, seed=args.seed, threads=args.threads, style_path=args.style,
                               int8=args.int8, few_step_path=args.few_step)
        data = report.to_dict()
        status = 0
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        data, status = error.report, 1
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for part, check in data["checks"].items():
        against = (f"max abs error {check['max_abs_error']:.3g}  max rel error {check['max_rel_error']:.3g}  (torch "
                   f"float32: {check['torch_float32_rel_error']:.3g})" if "torch_float32_rel_error" in check else
                   f"max rel error {check['max_rel_error']:.3g} against {check['against']} (at most {check['tolerance']:g})")
        print(f"{part:13} {against}  {'ok' if check['passed'] else 'FAILED'}")
    for path in data.get("files", {}).values():
        print(f"wrote {path}")
    print(f"check inputs seed {data['seed']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return status


def _bench(args: argparse.Namespace) -> int:
    from backline.export.bench import main

    return main(args)
