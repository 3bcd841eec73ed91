"""``backline eval style``: do generated stems follow the style they were given (a reference, a prompt)?

APA-style adherence (FIELD_NOTES): for candidates C generated with references R,
``APA = 1/2 + (D(C, R') - D(C, R)) / (2 D(R, R'))``, clipped to [0, 1], where R' are the same
references shuffled (a derangement), and D the mean Euclidean distance between paired embeddings.
1 = the stems sit as close to their own reference as references sit to each other's; 0.5 = no closer
to their own reference than to another's.

- **reference**: held-out pairs; the reference is another segment of the pair's real stem (never the
  segment being accompanied); the stem is generated for the context with it.
- **prompt**: the same contexts, generated with a prompt naming the stem's GM family (e.g. "slap
  bass"); R is the prompt's embedding in the style space, R' another family's.

Two embeddings: the style space the denoiser is conditioned on (the style file's audio tower, or latent
statistics for a denoiser trained on them; standardised by the prompt prior's statistics) and, as an independent view, a fixed log-mel embedding (``fit_metrics``;
reference adherence only, since a prompt has no audio).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from backline.data.dataset import read_manifest
from backline.engine.audio import read_audio, to_mono
from backline.engine.pipeline import MAX_DURATION_SECONDS, Bundle, GenerateRequest, generate
from backline.engine.style import PromptPrior
from backline.training import fit_metrics
from backline.training.fit_metrics import derangement
from backline.training.style_prior import family


def apa(candidates: np.ndarray, references: np.ndarray, shuffle: np.ndarray) -> float:
    """APA over paired rows of (n, d) embeddings; ``shuffle`` re-pairs the references. Candidate rows that
    are not finite (a silent stem has no log-mel embedding) are left out; nan if none is left."""
    kept = np.isfinite(candidates).all(axis=1)
    if not kept.any():
        return float("nan")
    candidates, references, others = candidates[kept], references[kept], references[shuffle][kept]
    own = np.linalg.norm(candidates - references, axis=1).mean()
    other = np.linalg.norm(candidates - others, axis=1).mean()
    spread = np.linalg.norm(references - others, axis=1).mean()
    if spread < 1e-9:
        return float("nan")
    return float(np.clip(0.5 + (other - own) / (2 * spread), 0.0, 1.0))


SILENT_DBFS = -50.0  # a reference (or context) quieter than this is not a style: the pair is skipped


def _rms_dbfs(audio: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.square(audio, dtype=np.float64))), 1e-20)))


def _pairs(build_dir: Path, instrument: str, split: str, seconds: float, count: int) -> list[dict]:
    """The first ``count`` pairs long enough for a context segment and a separate reference segment, with a
    named family and neither segment silent (a stem may rest for a while); the segments are loaded."""
    chosen = []
    for record in read_manifest(build_dir, split=split):
        named = family(instrument, record.get("programs", {}))
        if instrument not in record["pairs"] or not named or record["duration_seconds"] < 2 * seconds + 1:
            continue
        context, rate = read_audio(build_dir / record["pairs"][instrument]["context"])
        target, _ = read_audio(build_dir / record["pairs"][instrument]["target"])
        frames = int(seconds * rate)
        context, reference = context[:, :frames], target[:, frames:2 * frames]  # the reference: later, never the same
        if min(_rms_dbfs(context), _rms_dbfs(reference)) < SILENT_DBFS:
            continue
        chosen.append({"record": record, "family": named[0], "context": context, "reference": reference,
                       "real": target[:, :frames], "rate": rate})
        if len(chosen) == count:
            break
    return chosen


def run(bundle: Bundle, build_dir: Path, out: Path, *, count: int = 6, seconds: float = 8.0, steps: int = 20,
        split: str = "test", seed: int = 0, prior: PromptPrior | None = None, cfg_style: float | None = None) -> dict:
    prior = prior or PromptPrior.load()
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    style = lambda audio, rate: (bundle.reference_embedding(audio, rate, "stem", MAX_DURATION_SECONDS)
                                 - prior.mean) / prior.std
    def mel(audio: np.ndarray, rate: int) -> np.ndarray:  # all nan for a silent stem (no segment to embed)
        segments = fit_metrics.embed(to_mono(audio)[0], rate, segment_seconds=seconds / 2)
        return segments.mean(axis=0) if len(segments) else np.full(segments.shape[1], np.nan)

    report: dict = {"data": str(build_dir), "split": split, "seconds": seconds, "steps": steps, "seed": seed,
                    "cfg_style": cfg_style if cfg_style is not None else bundle.contract.guidance["cfg_style"],
                    "models": bundle.versions, "prior": prior.metadata.get("version")}
    for instrument in ("bass", "drums"):
        pairs = _pairs(build_dir, instrument, split, seconds, count)
        if len(pairs) < 3:
            continue
        rows = {"ref_style": [], "ref_mel": [], "gen_style": [], "gen_mel": [], "prompt_style": [], "gen_prompt_style": []}
        stems = {"real": [], "unsteered": [], "reference": [], "prompt": []}  # for coherence with the context
        for index, pair in enumerate(pairs):
            context, reference, rate = pair["context"], pair["reference"], pair["rate"]
            common = dict(context=context, sample_rate=rate, instrument=instrument, steps=steps, seed=seed + index,
                          cfg_style=cfg_style)
            by_reference = generate(bundle, GenerateRequest(**common, style_audio=reference)).audio
            prompt = pair["family"]
            by_prompt = generate(bundle, GenerateRequest(**common, style_prompt=prompt)).audio
            rows["ref_style"].append(style(reference, rate))
            rows["ref_mel"].append(mel(reference, rate))
            rows["gen_style"].append(style(by_reference, rate))
            rows["gen_mel"].append(mel(by_reference, rate))
            rows["prompt_style"].append((bundle.prompts(prompt) - prior.mean) / prior.std)
            rows["gen_prompt_style"].append(style(by_prompt, rate))
            stems["real"].append(pair["real"])
            stems["unsteered"].append(generate(bundle, GenerateRequest(**common)).audio)  # the same seed, no style
            stems["reference"].append(by_reference)
            stems["prompt"].append(by_prompt)
        rows = {k: np.stack(v) for k, v in rows.items()}
        shuffle = derangement([p["record"]["piece_id"] for p in pairs], rng)
        families = [p["family"] for p in pairs]
        other_family = np.array([next((j for j in np.roll(np.arange(len(pairs)), -i - 1) if families[j] != families[i]), shuffle[i])
                                 for i in range(len(pairs))])
        report[instrument] = {
            "pairs": len(pairs), "families": sorted(set(families)),
            "reference_apa_style_space": apa(rows["gen_style"], rows["ref_style"], shuffle),
            "reference_apa_log_mel": apa(rows["gen_mel"], rows["ref_mel"], shuffle),
            "silent_by_reference": int((~np.isfinite(rows["gen_mel"]).all(axis=1)).sum()),
            "prompt_apa_style_space": apa(rows["gen_prompt_style"], rows["prompt_style"], other_family),
            "coherence": coherence([p["context"] for p in pairs], stems, shuffle, pairs[0]["rate"], instrument),
        }
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render(report))
    return report


def coherence(contexts: list[np.ndarray], stems: dict[str, list[np.ndarray]], shuffle: np.ndarray,
              sample_rate: int, instrument: str) -> dict:
    """How well the steered stems fit their contexts, as ``backline eval accompaniment`` measures it:
    harmonic (bass only) and rhythmic fit normalised so the real stems score 1 and the real stems of
    other pieces (``shuffle``) 0, for each set of ``stems`` but the real one. Style guidance that wins adherence
    by losing the context shows against the stems generated for the same contexts and seeds without a style."""
    from backline.training.eval_suite import fit_table

    features = [fit_metrics.context_features(c, sample_rate) for c in contexts]
    candidates = {**stems, "shuffled": [stems["real"][j] for j in shuffle]}
    rows = {name: [fit_metrics.fit_scores(fit_metrics.stem_features(stem, sample_rate), features[i])
                   for i, stem in enumerate(audio)] for name, audio in candidates.items()}
    table = fit_table(rows, instrument)
    return {name: {k: table[name][f"{k}_normalised"] for k in ("harmonic_fit", "rhythmic_fit")}
            for name in stems if name != "real"}


def render(report: dict) -> str:
    lines = ["# Style adherence of generated stems (APA)", "",
             f"Held-out pairs of `{report['data']}` ({report['split']} split), {report['seconds']} s contexts, "
             f"{report['steps']} steps, style guidance {report['cfg_style']}, models {report['models']}, "
             f"prompt prior {report['prior']}.", "",
             "APA = 1/2 + (D(C,R') - D(C,R)) / (2 D(R,R')), clipped to [0,1]: 1 = as close to its own reference as "
             "references are to each other's, 0.5 = no closer to its own than to another's. Reference: a later segment "
             "of the pair's real stem. Prompt: the stem's GM family name, against another family's prompt.", "",
             "| instrument | pairs | reference APA (style space) | reference APA (log-mel) | prompt APA (style space) |",
             "|---|---|---|---|---|"]
    for instrument in ("bass", "drums"):
        if instrument in report:
            r = report[instrument]
            lines.append(f"| {instrument} | {r['pairs']} | {r['reference_apa_style_space']:.2f} | "
                         f"{r['reference_apa_log_mel']:.2f} | {r['prompt_apa_style_space']:.2f} |")
    silent = [f"{i} {report[i]['silent_by_reference']}" for i in ("bass", "drums") if i in report]
    lines += ["", "Stems steered by a reference that came out silent (no 4 s segment above -60 dBFS; left out of the "
              "log-mel APA): " + ", ".join(silent) + "."]
    lines += ["", "Coherence of the same stems with their contexts, as `backline eval accompaniment` normalises it (the "
              "real stems 1, another piece's real stems 0; drums have no harmonic fit), beside stems generated for the "
              "same contexts and seeds with no style:", "",
              "| instrument | harmonic fit, no style | rhythmic fit, no style | harmonic fit, by reference | "
              "rhythmic fit, by reference | harmonic fit, by prompt | rhythmic fit, by prompt |",
              "|---|---|---|---|---|---|---|"]
    for instrument in ("bass", "drums"):
        if instrument in report and "coherence" in report[instrument]:
            c = report[instrument]["coherence"]
            cells = [c[way][k] for way in ("unsteered", "reference", "prompt") for k in ("harmonic_fit", "rhythmic_fit")]
            lines.append(f"| {instrument} | " + " | ".join("n/a" if not np.isfinite(v) else f"{v:.2f}" for v in cells) + " |")
    lines += ["", f"Wall time {report['wall_seconds']} s.", ""]
    return "\n".join(lines)
