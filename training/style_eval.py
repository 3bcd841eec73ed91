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

Three embeddings: the style space the denoiser is conditioned on (the style file's audio tower, or latent
statistics for a denoiser trained on them; standardised by the prompt prior's statistics); as an independent view, a
fixed log-mel embedding (``fit_metrics``; reference adherence only, since a prompt has no audio); and, with a
**judge** (a style file with a CLAP-style audio tower, ``backline train style --audio-space tower``: audio and text
in one space, as Diff-A-Riff measures APA in CLAP's), the judge's space for both.

Every APA is also taken for the **real stems** (the real stem under the context, against the same references and
prompts): a space that tells the named families apart poorly lets no stem, real or generated, sit much closer to its
own prompt than to another's, and the real stems' figure says how far a measure can go.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from backline.data.dataset import read_manifest
from backline.engine.audio import read_audio, resample, to_mono
from backline.engine.pipeline import Bundle, GenerateRequest, generate
from backline.engine.runtime import check_latent_space
from backline.engine.style import PromptPrior, TextTower
from backline.models.style_space import STATISTICS_SPACE
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


DEFAULT_JUDGE_PATH = Path(__file__).resolve().parents[1] / "models" / "judge" / "default.safetensors"


class Judge:
    """A CLAP-style space to measure adherence in: a style file's audio tower (over the autoencoder's latents) and
    its prompt prior, standardised. ``text`` maps prompts to unit text embeddings (default: the frozen text tower)."""

    def __init__(self, prior: PromptPrior, text=None, path: str | None = None):
        if prior.audio_space == STATISTICS_SPACE:
            raise ValueError(f"{path or 'the judge'}: a judge needs a style file with an audio tower "
                             "(backline train style --audio-space tower)")
        self.prior, self.path = prior, path
        self.text = text or TextTower().embed

    def check(self, bundle: Bundle) -> None:
        """Refuse to judge the latents of another autoencoder than the one the tower learnt."""
        check_latent_space(f"{self.path or 'the judge'} (the judge's tower)", self.prior.metadata.get("autoencoder"),
                           bundle.contract.latent_space)

    def embedding(self, latents: np.ndarray) -> np.ndarray:
        """(channels, frames) latents of the checked autoencoder -> the standardised tower embedding."""
        return (self.prior.audio_embedding(latents) - self.prior.mean) / self.prior.std

    def audio(self, bundle: Bundle, audio: np.ndarray, rate: int) -> np.ndarray:
        self.check(bundle)
        return self.embedding(_encode(bundle, audio, rate))

    def prompt(self, text: str) -> np.ndarray:
        return (self.prior.embed(self.text([text]))[0] - self.prior.mean) / self.prior.std

    @property
    def name(self) -> dict:
        return {"path": self.path, "version": self.prior.metadata.get("version"), "audio_space": self.prior.audio_space}


def _encode(bundle: Bundle, audio: np.ndarray, rate: int) -> np.ndarray:
    """A recording's (channels, frames) latents, as the engine encodes a style reference."""
    return bundle.backend.encode(resample(to_mono(audio), rate, bundle.sample_rate))[0]


SILENT_DBFS = -50.0  # a reference (or context) quieter than this is not a style: the pair is skipped


def _rms_dbfs(audio: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(np.square(audio, dtype=np.float64))), 1e-20)))


def _pairs(build_dir: Path, instrument: str, split: str, seconds: float, count: int) -> list[dict]:
    """The first ``count`` pairs long enough for a context segment and a separate reference segment, with a
    named family and neither segment silent (a stem may rest for a while); the segments are loaded."""
    chosen = []
    for record in read_manifest(build_dir, split=split):
        named = family(instrument, record)
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
        split: str = "test", seed: int = 0, prior: PromptPrior | None = None, cfg_style: float | None = None,
        judge: Judge | None = None, style_match: float | None = None) -> dict:
    prior = prior or PromptPrior.load()
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    if judge:
        judge.check(bundle)

    def mel(audio: np.ndarray, rate: int) -> np.ndarray:  # all nan for a silent stem (no segment to embed)
        segments = fit_metrics.embed(to_mono(audio)[0], rate, segment_seconds=seconds / 2)
        return segments.mean(axis=0) if len(segments) else np.full(segments.shape[1], np.nan)

    def embed(rows: dict, what: str, audio: np.ndarray, rate: int, log_mel: bool = True) -> None:
        """One recording's embeddings: the style space's and the judge's from one encode, and the log-mel one."""
        latents = _encode(bundle, audio, rate)
        rows[f"{what}_style"].append((bundle.audio_style(latents) - prior.mean) / prior.std)
        if log_mel:
            rows[f"{what}_mel"].append(mel(audio, rate))
        if judge:
            rows[f"{what}_judge"].append(judge.embedding(latents))

    report: dict = {"data": str(build_dir), "split": split, "seconds": seconds, "steps": steps, "seed": seed,
                    "cfg_style": cfg_style if cfg_style is not None else bundle.contract.guidance["cfg_style"],
                    "models": bundle.versions, "prior": prior.metadata.get("version"),
                    "judge": judge.name if judge else None, "style_match": style_match}
    for instrument in ("bass", "drums"):
        pairs = _pairs(build_dir, instrument, split, seconds, count)
        if len(pairs) < 3:
            continue
        rows = {f"{what}_{space}": [] for what in ("ref", "gen", "real", "prompt", "gen_prompt")
                for space in ("style", "mel", "judge")}
        stems = {"real": [], "unsteered": [], "reference": [], "prompt": []}  # for coherence with the context
        for index, pair in enumerate(pairs):
            context, reference, rate = pair["context"], pair["reference"], pair["rate"]
            common = dict(context=context, sample_rate=rate, instrument=instrument, steps=steps, seed=seed + index,
                          cfg_style=cfg_style)
            by_reference = generate(bundle, GenerateRequest(**common, style_audio=reference, style_match=style_match)).audio
            prompt = pair["family"]
            by_prompt = generate(bundle, GenerateRequest(**common, style_prompt=prompt)).audio
            for what, audio in (("ref", reference), ("gen", by_reference), ("real", pair["real"])):
                embed(rows, what, audio, rate)
            embed(rows, "gen_prompt", by_prompt, rate, log_mel=False)  # a prompt has no audio to compare in log-mel
            rows["prompt_style"].append((bundle.prompts(prompt) - prior.mean) / prior.std)
            if judge:
                rows["prompt_judge"].append(judge.prompt(prompt))
            stems["real"].append(pair["real"])
            stems["unsteered"].append(generate(bundle, GenerateRequest(**common)).audio)  # the same seed, no style
            stems["reference"].append(by_reference)
            stems["prompt"].append(by_prompt)
        rows = {k: np.stack(v) for k, v in rows.items() if v}
        shuffle = derangement([p["record"]["piece_id"] for p in pairs], rng)
        families = [p["family"] for p in pairs]
        other_family = np.array([next((j for j in np.roll(np.arange(len(pairs)), -i - 1) if families[j] != families[i]), shuffle[i])
                                 for i in range(len(pairs))])
        def measures(reference: str, prompt: str) -> dict:  # the APAs of one set of stems: generated or real
            out = {"reference_apa_style_space": apa(rows[f"{reference}_style"], rows["ref_style"], shuffle),
                   "reference_apa_log_mel": apa(rows[f"{reference}_mel"], rows["ref_mel"], shuffle),
                   "prompt_apa_style_space": apa(rows[f"{prompt}_style"], rows["prompt_style"], other_family)}
            if judge:
                out |= {"reference_apa_judge": apa(rows[f"{reference}_judge"], rows["ref_judge"], shuffle),
                        "prompt_apa_judge": apa(rows[f"{prompt}_judge"], rows["prompt_judge"], other_family)}
            return out

        report[instrument] = {
            "pairs": len(pairs), "families": sorted(set(families)), **measures("gen", "gen_prompt"),
            "real_stems": measures("real", "real"),
            "silent_by_reference": int((~np.isfinite(rows["gen_mel"]).all(axis=1)).sum()),
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
             f"{report['steps']} steps, style guidance {report['cfg_style']}, style match "
             f"{'the engine default' if report.get('style_match') is None else report['style_match']}, models {report['models']}, "
             f"prompt prior {report['prior']}"
             + (f", judge {report['judge']['version']} (`{report['judge']['path']}`)." if report.get("judge") else ".") , "",
             "APA = 1/2 + (D(C,R') - D(C,R)) / (2 D(R,R')), clipped to [0,1]: 1 = as close to its own reference as "
             "references are to each other's, 0.5 = no closer to its own than to another's. Reference: a later segment "
             "of the pair's real stem. Prompt: the stem's GM family name, against another family's prompt. Style space: "
             "the denoiser's. Judge: a CLAP-style audio tower and prompt prior trained contrastively on the training "
             "split's stems and descriptions. Real stems: the real stem under each context, measured the same way "
             "(how far each measure can go).", ""]
    columns = [("reference_apa_style_space", "reference APA (style space)"), ("reference_apa_log_mel", "reference APA (log-mel)"),
               ("reference_apa_judge", "reference APA (judge)"), ("prompt_apa_style_space", "prompt APA (style space)"),
               ("prompt_apa_judge", "prompt APA (judge)")]
    columns = [(key, title) for key, title in columns if "judge" not in key or report.get("judge")]
    lines += ["| instrument | stems | pairs | " + " | ".join(t for _, t in columns) + " |",
              "|---|---|---|" + "---|" * len(columns)]
    for instrument in ("bass", "drums"):
        if instrument in report:
            r = report[instrument]
            for label, values in (("generated", r), ("real", r["real_stems"])):
                lines.append(f"| {instrument} | {label} | {r['pairs']} | " + " | ".join(f"{values[k]:.2f}" for k, _ in columns) + " |")
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
