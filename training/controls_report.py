"""``backline eval controls``: what each producer control does with the shipped models, in numbers.

On the bundled example (a held-out Freedoom piece: context and its real bass) it measures:

- **regenerate a range**: spectral flux at the range's edges relative to the median flux of the
  stem, against a naive splice of a fresh stem (no inpainting, no crossfade); and the fit of the
  regenerated range to its context (``fit_metrics``);
- **variations**: log-mel distance to the input stem for strengths 0..1;
- **loops**: periodicity error (relative difference between successive periods) for loop strengths
  1..0, and the jump at the join of one looped cycle;
- **pseudo-stereo**: left/right correlation, side-to-mid energy and the mono sum's error per width;
- **style blends**: distance of the output's style embedding to each of two references per ratio;
- **arrangement from nothing**: drums then bass over silence, the bass's rhythmic fit to the drums
  and the sanity flags of both.

Writes report.md, report.json and a few short FLAC examples to --out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from backline.engine.audio import read_audio, write_audio
from backline.engine.controls import loop_cycle
from backline.engine.pipeline import MAX_DURATION_SECONDS, Bundle, GenerateRequest, arrange, generate
from backline.training import fit_metrics

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ultima"
MEL_HOP = 512  # fit_metrics.log_mel's hop at its analysis rate


def spectral_flux(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Positive log-mel flux per frame (dB), the measure of a seam."""
    mel = fit_metrics.log_mel(audio, sample_rate)  # (frames, mels)
    return np.maximum(np.diff(mel, axis=0), 0).mean(axis=1)


def seam_ratio(audio: np.ndarray, sample_rate: int, boundaries_seconds: list[float]) -> float:
    """Largest flux within ±2 frames of a boundary, over the stem's median flux."""
    flux = spectral_flux(audio, sample_rate)
    hop_seconds = MEL_HOP / fit_metrics.ANALYSIS_RATE
    worst = 0.0
    for boundary in boundaries_seconds:
        frame = int(round(boundary / hop_seconds))
        worst = max(worst, float(flux[max(0, frame - 2):frame + 3].max()))
    return worst / max(float(np.median(flux)), 1e-6)


def mel_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean absolute log-mel difference in dB (floored 80 dB below the louder peak)."""
    x, y = fit_metrics.log_mel(a, sample_rate), fit_metrics.log_mel(b, sample_rate)
    floor = max(float(x.max()), float(y.max())) - 80.0
    n = min(len(x), len(y))
    return float(np.abs(np.maximum(x[:n], floor) - np.maximum(y[:n], floor)).mean())


def periodicity_error(audio: np.ndarray, period: int) -> float:
    """Relative RMS difference between successive periods (edges excluded), 0 = exactly periodic."""
    repeats = audio.shape[-1] // period
    if repeats < 3:
        raise ValueError("need at least three periods")
    body = audio[..., period:(repeats - 1) * period]
    shifted = audio[..., 2 * period:repeats * period]
    n = min(body.shape[-1], shifted.shape[-1])
    return float(np.sqrt(np.mean((body[..., :n] - shifted[..., :n]) ** 2)) / max(np.sqrt(np.mean(body ** 2)), 1e-9))


def run(bundle: Bundle, out: Path, *, steps: int = 20, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    context, rate = read_audio(EXAMPLE.with_name("ultima_context.flac"))
    bass, _ = read_audio(EXAMPLE.with_name("ultima_bass.flac"))
    base = dict(context=context, sample_rate=rate, steps=steps, seed=seed)
    report: dict = {"example": "examples/ultima (Freedoom D_ULTIMA, test split, FluidR3_GM)", "steps": steps,
                    "seed": seed, "models": bundle.versions}
    started = time.perf_counter()
    clip = lambda audio: audio[..., : 8 * rate]  # short examples keep the repository small

    # regenerate 6 s..10 s of the real bass
    start, end = 6.0, 10.0
    inpainted = generate(bundle, GenerateRequest(**base, stem=bass, regenerate_seconds=(start, end))).audio
    fresh = generate(bundle, GenerateRequest(**base)).audio
    a, b = int(start * rate), int(end * rate)
    spliced = np.concatenate([bass[:, :a], fresh[:, a:b], bass[:, b:]], axis=1)
    inside_context = context[:, a:b]
    report["regenerate"] = {
        "range_seconds": [start, end],
        "seam_ratio_inpainted": seam_ratio(inpainted, rate, [start, end]),
        "seam_ratio_naive_splice": seam_ratio(spliced, rate, [start, end]),
        "seam_ratio_real_stem": seam_ratio(bass, rate, [start, end]),
        "kept_max_abs_difference": float(max(np.abs(inpainted[:, :a] - bass[:, :a]).max(),
                                             np.abs(inpainted[:, b:] - bass[:, b:]).max())),
        "harmonic_fit_inside": fit_metrics.harmonic_fit(inpainted[:, a:b], inside_context, rate),
        "harmonic_fit_inside_real": fit_metrics.harmonic_fit(bass[:, a:b], inside_context, rate),
        "rhythmic_fit_inside": fit_metrics.rhythmic_fit(inpainted[:, a:b], inside_context, rate),
        "rhythmic_fit_inside_real": fit_metrics.rhythmic_fit(bass[:, a:b], inside_context, rate),
    }
    write_audio(out / "regenerate_6-10s.flac", inpainted[:, 4 * rate:12 * rate], rate)

    # variations of the real bass
    report["variation"] = []
    for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
        varied = generate(bundle, GenerateRequest(**base, stem=bass, variation_strength=strength)).audio
        report["variation"].append({"strength": strength, "mel_distance_db": mel_distance(varied, bass, rate),
                                    "harmonic_fit": fit_metrics.harmonic_fit(varied, context, rate)})
        if strength == 0.5:
            write_audio(out / "variation_0.5.flac", clip(varied), rate)

    # loops of 2 s
    report["loop"] = []
    for strength in (1.0, 0.9, 0.75, 0.5, 0.0):
        result = generate(bundle, GenerateRequest(**base, loop_seconds=2.0, loop_strength=strength)) if strength else None
        audio = result.audio if result else fresh
        period = int(round((result.info["controls"]["loop_seconds"] if result else 2.0) * rate))
        cycle = loop_cycle(audio, period)[0]
        steps_abs = np.abs(np.diff(cycle))
        report["loop"].append({"strength": strength, "period_seconds": period / rate,
                               "periodicity_error": periodicity_error(audio[0], period),
                               "join_jump_over_p99_step": float(abs(cycle[0] - cycle[-1]) / max(np.percentile(steps_abs, 99), 1e-9))})
        if strength == 1.0:
            write_audio(out / "loop_2s_cycle.flac", np.tile(cycle, 3)[None], rate)

    # pseudo-stereo
    report["stereo"] = []
    for width in (0.0, 0.25, 0.5, 1.0):
        audio = generate(bundle, GenerateRequest(**base, stereo_width=width)).audio
        left, right = (audio[0], audio[1]) if audio.shape[0] == 2 else (audio[0], audio[0])
        mid, side = 0.5 * (left + right), 0.5 * (left - right)
        report["stereo"].append({"width": width, "channels": int(audio.shape[0]),
                                 "lr_correlation": float(np.corrcoef(left, right)[0, 1]),
                                 "side_to_mid_db": float(10 * np.log10(max(np.mean(side ** 2), 1e-12) / max(np.mean(mid ** 2), 1e-12))),
                                 "mono_sum_max_error": float(np.abs(mid - fresh[0]).max())})
        if width == 1.0:
            write_audio(out / "stereo_width_1.flac", clip(audio), rate)

    # style blends between two references of different sounds: the real bass and a generated drum stem
    reference_a = bass
    reference_b = generate(bundle, GenerateRequest(**{**base, "seed": seed + 7}, instrument="drums")).audio
    embed = lambda audio: bundle.reference_embedding(audio, rate, "stem", MAX_DURATION_SECONDS)
    ea, eb = embed(reference_a), embed(reference_b)
    report["blend"] = []
    for ratio in (0.0, 0.5, 1.0):
        audio = generate(bundle, GenerateRequest(**base, style_audio=reference_a, style_audio_b=reference_b,
                                                 style_ratio=ratio)).audio
        e = embed(audio)
        report["blend"].append({"ratio": ratio, "distance_to_a": float(np.linalg.norm(e - ea)),
                                "distance_to_b": float(np.linalg.norm(e - eb))})

    # an arrangement from nothing
    silence = np.zeros_like(context)
    stems, mix = arrange(bundle, GenerateRequest(**{**base, "context": silence}), ["drums", "bass"])
    report["arrangement"] = {
        "bass_rhythmic_fit_to_drums": fit_metrics.rhythmic_fit(stems["bass"], stems["drums"], rate),
        "drums_rhythmic_fit_to_bass": fit_metrics.rhythmic_fit(stems["drums"], stems["bass"], rate),
        "real_bass_rhythmic_fit_to_context": fit_metrics.rhythmic_fit(bass, context, rate),
        "sanity": {name: fit_metrics.sanity(stem, None, rate, expected_frames=context.shape[1])
                   for name, stem in stems.items()},
    }
    write_audio(out / "arrangement_mix.flac", clip(mix), rate)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render(report))
    return report


def render(report: dict) -> str:
    r = report["regenerate"]
    lines = [
        "# The producer's controls with the shipped models",
        "",
        f"Example: {report['example']}; {report['steps']} steps, seed {report['seed']}; models {report['models']}.",
        "Regenerate with `backline eval controls --out training/reports/controls`.",
        "",
        f"## Regenerate {r['range_seconds'][0]:.0f}-{r['range_seconds'][1]:.0f} s of the real bass",
        "",
        "Seam = largest spectral flux within two frames of the range's edges over the median flux (1 = an ordinary frame).",
        "",
        "| | seam ratio |",
        "|---|---|",
        f"| inpainted | {r['seam_ratio_inpainted']:.2f} |",
        f"| naive splice of a fresh stem | {r['seam_ratio_naive_splice']:.2f} |",
        f"| the real stem at the same times | {r['seam_ratio_real_stem']:.2f} |",
        "",
        f"Kept region: largest difference to the input {r['kept_max_abs_difference']:.2g}. Inside the range: harmonic fit "
        f"{r['harmonic_fit_inside']:.3f} (real {r['harmonic_fit_inside_real']:.3f}), rhythmic fit {r['rhythmic_fit_inside']:.3f} "
        f"(real {r['rhythmic_fit_inside_real']:.3f}).",
        "",
        "## Variations of the real bass",
        "",
        "| strength | log-mel distance to the input (dB) | harmonic fit |",
        "|---|---|---|",
        *[f"| {v['strength']:.2f} | {v['mel_distance_db']:.2f} | {v['harmonic_fit']:.3f} |" for v in report["variation"]],
        "",
        "## Loops (2 s)",
        "",
        "| loop strength | period (s) | periodicity error | join jump / 99th-percentile step |",
        "|---|---|---|---|",
        *[f"| {v['strength']:.2f} | {v['period_seconds']:.3f} | {v['periodicity_error']:.4f} | {v['join_jump_over_p99_step']:.2f} |"
          for v in report["loop"]],
        "",
        "Strength 0 is a plain generation measured at the same period, the baseline.",
        "",
        "## Pseudo-stereo",
        "",
        "| width | channels | L/R correlation | side/mid (dB) | mono sum max error |",
        "|---|---|---|---|---|",
        *[f"| {v['width']:.2f} | {v['channels']} | {v['lr_correlation']:.3f} | {v['side_to_mid_db']:.1f} | {v['mono_sum_max_error']:.2g} |"
          for v in report["stereo"]],
        "",
        "## Style blends (reference a: the real bass; b: a generated drum stem)",
        "",
        "| ratio | distance to a | distance to b |",
        "|---|---|---|",
        *[f"| {v['ratio']:.1f} | {v['distance_to_a']:.3f} | {v['distance_to_b']:.3f} |" for v in report["blend"]],
        "",
        "## Arrangement from silence (drums, then bass)",
        "",
    ]
    a = report["arrangement"]
    flagged = {name: [k for k, v in flags.items() if v] for name, flags in a["sanity"].items()}
    lines += [f"Bass rhythmic fit to the generated drums {a['bass_rhythmic_fit_to_drums']:.3f} (the real bass to its "
              f"real context: {a['real_bass_rhythmic_fit_to_context']:.3f}); drums to bass {a['drums_rhythmic_fit_to_bass']:.3f}. "
              f"Sanity flags: {flagged}.", "", f"Wall time {report['wall_seconds']} s.", ""]
    return "\n".join(lines)
