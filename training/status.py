"""STATUS.md, generated from the committed reports: what works and its current figures, one cell per figure,
each with the command that made its report and a link to it (``python -m backline.training.status``).

A test regenerates the page and compares it with the committed one, so a figure cannot drift from its report.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Figure:
    what: str
    report: str  # path from the repository root
    value: Callable[[dict], object]
    form: str = "{:.2f}"
    command: str | None = None  # None: the report's own "command"


def _result(report: dict, backend: str, seconds: float, key: str) -> float:
    return next(r[key] for r in report["results"] if r["backend"] == backend and r["seconds"] == seconds)


def accompaniment_figures(report: str) -> list[Figure]:
    """The generated stems' normalised fits (real 1, another song's 0) and the autoencoder's ceiling, from a
    ``backline eval accompaniment`` report."""
    fit = lambda instrument, stems, key: lambda r: r["instruments"][instrument]["fit"][stems][f"{key}_normalised"]
    return [Figure("bass harmonic fit, normalised (real 1, another song's 0)", report, fit("bass", "generated", "harmonic_fit")),
            Figure("bass rhythmic fit, normalised", report, fit("bass", "generated", "rhythmic_fit")),
            Figure("drums rhythmic fit, normalised", report, fit("drums", "generated", "rhythmic_fit")),
            Figure("real bass through the autoencoder, harmonic fit normalised", report,
                   fit("bass", "real, autoencoded", "harmonic_fit")),
            Figure("bass copy-likeness: log-mel correlation with the context (the real bass's in brackets)", report,
                   lambda r: "{:.2f} ({:.2f})".format(*(r["instruments"]["bass"]["context_correlation"][k]
                                                        for k in ("generated", "real"))), "{}")]


ACCOMPANIMENT = "training/reports/accompaniment-broad-test/report.json"
STYLE_COMMAND = "backline eval style --data $BACKLINE_DATA/broad --split test --count 12 --out training/reports/style"
SECTIONS: dict[str, tuple[str, list[Figure]]] = {
    "Accompaniment (broad build's test split: grooves never trained on, sounds shared with training)": (
        "works: bass and drums told the beat and the chords; one bass take (more on request, the most in key kept)",
        accompaniment_figures(ACCOMPANIMENT)),
    "Style (broad build's test split)": ("works: a reference, a prompt, or both blended", [
        Figure("bass reference APA, judge's space", "training/reports/style/report.json",
               lambda r: r["bass"]["reference_apa_judge"],
               command=STYLE_COMMAND),
        Figure("bass prompt APA, judge's space", "training/reports/style/report.json",
               lambda r: r["bass"]["prompt_apa_judge"],
               command=STYLE_COMMAND),
        Figure("drums reference APA, judge's space", "training/reports/style/report.json",
               lambda r: r["drums"]["reference_apa_judge"],
               command=STYLE_COMMAND),
    ]),
    "Transcription (test split)": ("works: bass notes, drum hits; MIDI at the given or estimated tempo", [
        Figure("bass note F1 (onset 50 ms, exact pitch)", "training/reports/transcription.json",
               lambda r: r["bass"]["pooled"]["f1"]),
    ]),
    "Speed and memory (2 CPU cores, onnxruntime, shipped models)": ("works: CPU; CUDA untested (no GPU lent)", [
        Figure("30 s bass, warm engine (the server): generate seconds", "export/benchmarks/cpu_shipped.json",
               lambda r: _result(r, "onnx", 30.0, "warm_generate_seconds"),
               command="backline bench generate --seconds 10 30 300 --backends onnx --json export/benchmarks/cpu_shipped.json"),
        Figure("30 s bass, `backline generate` from a cold start: seconds", "export/benchmarks/cpu_shipped.json",
               lambda r: _result(r, "onnx", 30.0, "command_seconds"),
               command="backline bench generate --seconds 10 30 300 --backends onnx --json export/benchmarks/cpu_shipped.json"),
        Figure("5-minute region: peak memory MiB", "export/benchmarks/cpu_shipped.json",
               lambda r: _result(r, "onnx", 300.0, "peak_rss_mib"), "{:.0f}",
               command="backline bench generate --seconds 10 30 300 --backends onnx --json export/benchmarks/cpu_shipped.json"),
        Figure("few-step sampler (on request: a fast draft), one 30 s bass take warm: seconds",
               "training/reports/few-step/bench-student.json",
               lambda r: _result(r, "onnx", 30.0, "warm_one_take_seconds"),
               command="backline bench generate --denoiser models/diffusion/few_step.safetensors --seconds 10 30 300 "
                       "--backends onnx --json training/reports/few-step/bench-student.json"),
    ]),
    "Bridge under faults (shipped models, real sockets)": ("works: protocol 2, content-addressed jobs", [
        Figure("malformed messages answered clearly", "plugin_bridge/benchmarks/reliability.json",
               lambda r: f"{r['malformed_messages']['answered_clearly']} of {r['malformed_messages']['tried']}", "{}"),
        Figure("bad audio files refused in one sentence", "plugin_bridge/benchmarks/reliability.json",
               lambda r: f"{r['bad_audio_files']['answered_clearly']} of {r['bad_audio_files']['tried']}", "{}"),
        Figure("jobs lost or wrong", "plugin_bridge/benchmarks/reliability.json",
               lambda r: f"{r['jobs']['lost'] + r['jobs']['wrong']} of {r['jobs']['jobs']}", "{}"),
        Figure("faults survived", "plugin_bridge/benchmarks/reliability.json",
               lambda r: f"{len(r['faults']['survived'])} of {len(r['faults']['tried'])}", "{}"),
    ]),
}
BROAD_STATS = "data/broad_stats.json"
BROAD_STATS_COMMAND = "backline data stats $BACKLINE_DATA/broad --json > data/broad_stats.json"
ACC_UNSEEN = "training/reports/accompaniment-unseen/report.json"
ACC_UNSEEN_GIVEN = "training/reports/accompaniment-unseen-given/report.json"
AE_UNSEEN = "training/reports/autoencoder-unseen/report.json"
AE_UNSEEN_COMMAND = ("backline eval autoencoder --model models/autoencoder/default.safetensors --data $BACKLINE_DATA/broad "
                     "--split unseen --max-files 12 --max-seconds 20 --out training/reports/autoencoder-unseen")
OPTIONAL: dict[str, tuple[str, list[Figure]]] = {  # sections whose reports a later step of the work writes
    "Data": ("works: MMA grooves over chord charts, many sounds and kits, an unseen-sound split", [
        Figure("broad build: hours of (context, stem) pairs", BROAD_STATS, lambda r: r["pair_hours"], "{:.1f}",
               command=BROAD_STATS_COMMAND),
        Figure("broad build: MMA grooves / style families / drum kits", BROAD_STATS,
               lambda r: f"{r['grooves']} / {r['style_families']} / {r['drum_kits']}", "{}", command=BROAD_STATS_COMMAND),
        Figure("render speed, x real time per worker (broad-small)", "data/benchmarks/render.json",
               lambda r: r["results"][0]["x_realtime_per_worker"], "{:.1f}"),
        Figure("encode speed, x real time, 2 workers", "data/benchmarks/encode.json",
               lambda r: r["results"][-1]["x_realtime_wall"], "{:.1f}"),
    ]),
    "Accompaniment (unseen sounds and styles of the broad build: OPL3 soundfont, AVL and Black Pearl kits, reggae, "
    "bossa/samba, march/polka)": ("works; few pairs (see the intervals in the report); the autoencoder's round trip "
                                  "is issue 23", accompaniment_figures(ACC_UNSEEN)),
    "Accompaniment with the song's tempo and chords given (unseen split)": ("works: `--tempo`, `--chords`", [
        Figure("bass harmonic fit, normalised", ACC_UNSEEN_GIVEN,
               lambda r: r["instruments"]["bass"]["fit"]["generated"]["harmonic_fit_normalised"]),
        Figure("drums rhythmic fit, normalised", ACC_UNSEEN_GIVEN,
               lambda r: r["instruments"]["drums"]["fit"]["generated"]["rhythmic_fit_normalised"]),
    ]),
    "Autoencoder round trip (unseen sounds and styles)": ("works; the retraining is issue 23", [
        Figure("bass: multi-resolution STFT distance", AE_UNSEEN,
               lambda r: r["categories"]["bass"]["metrics"]["autoencoder"]["stft_distance"], command=AE_UNSEEN_COMMAND),
        Figure("bass: log-mel Fréchet distance", AE_UNSEEN,
               lambda r: r["categories"]["bass"]["metrics"]["autoencoder"]["log_mel_frechet"], "{:.1f}",
               command=AE_UNSEEN_COMMAND),
    ]),
    "Tempo estimation (unseen split)": ("works: when no tempo is given", [
        Figure("right within 4 %", "training/reports/tempo/report.json", lambda r: r["overall"]["right"]),
        Figure("half or double", "training/reports/tempo/report.json", lambda r: r["overall"]["octave"]),
    ]),
}


def render(root: Path = ROOT) -> str:
    lines = ["# Status", "",
             "What works and its current figures. Generated by `python -m backline.training.status` from the "
             "committed reports (a test keeps it equal to them); history is in git.", "",
             "| area | what works | figure | value | command (report) |", "|---|---|---|---|---|"]
    sections = dict(SECTIONS)
    sections.update({k: v for k, v in OPTIONAL.items() if all((root / f.report).is_file() for f in v[1])})
    for area, (works, figures) in sections.items():
        previous = None
        for index, figure in enumerate(figures):
            report = json.loads((root / figure.report).read_text())
            command = figure.command or report.get("command", "")
            value = figure.form.format(figure.value(report))
            source = "same" if (command, figure.report) == previous else f"`{command}` ([report]({figure.report}))"
            previous = (command, figure.report)
            lines.append(f"| {area if index == 0 else ''} | {works if index == 0 else ''} | {figure.what} | {value} | "
                         f"{source} |")
    lines += ["", "Open work: `issues` lists it. History, and what each session measured and noticed: CHANGELOG.md.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    text = render()
    (ROOT / "STATUS.md").write_text(text)
    print(ROOT / "STATUS.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
