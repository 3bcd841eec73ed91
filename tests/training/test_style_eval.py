"""``backline eval style``: the APA measure itself, and a run over a small hand-made data build."""

import json
from dataclasses import replace

import numpy as np
import soundfile as sf

import pytest
import torch

from backline.engine.runtime import RuntimeModelError
from backline.engine.style import PromptPrior
from backline.training.style_eval import Judge, apa, coherence, run
from backline.models.style import AudioTower, Prior
from backline.training.style_prior import save_prior
from tiny_bundle import make_bundle, song


def _text(prompts: list[str]) -> np.ndarray:
    """A stand-in text tower: a fixed unit vector per prompt."""
    vectors = np.stack([np.random.default_rng(sum(map(ord, p))).standard_normal(384) for p in prompts])
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _judge(tmp_path, bundle, *, latent_space=None) -> Judge:
    torch.manual_seed(1)
    config = {"style_mean": [0.0] * 6, "style_std": [1.0] * 6, "text_dim": 384}
    if latent_space:
        config["autoencoder"] = {"latent_space": latent_space}
    path = save_prior(tmp_path / "judge.safetensors", Prior(384, 6, hidden=8), config, version="judge-test",
                      audio_tower=AudioTower(bundle.contract.latent_channels, dim=6, hidden=8))
    return Judge(PromptPrior.load(path), text=_text, path=str(path))


def test_apa_is_one_for_copies_half_for_strangers_and_clipped():
    rng = np.random.default_rng(0)
    references = rng.standard_normal((8, 4))
    shuffle = np.roll(np.arange(8), 1)
    assert apa(references, references, shuffle) == 1.0
    assert apa(np.full((8, 4), 100.0), references, shuffle) == 0.5  # one point for all: no closer to its own
    assert apa(references[shuffle], references, shuffle) == 0.0
    silent = references.copy()
    silent[3] = np.nan  # a silent stem: left out, the others still count
    assert apa(silent, references, shuffle) == 1.0
    assert np.isnan(apa(np.full((8, 4), np.nan), references, shuffle))


def test_style_eval_runs_over_a_build_and_writes_its_report(tmp_path):
    bundle = make_bundle()
    rate, seconds = 44_100, 1.0
    records = []
    for index, (instrument, programs) in enumerate([("bass", {"bass": 33, "drum_kit": None}), ("bass", {"bass": 38, "drum_kit": None}),
                                                    ("bass", {"bass": None, "drum_kit": None})]):
        folder = tmp_path / "build" / f"v{index}"
        folder.mkdir(parents=True)
        sf.write(folder / "context.flac", song(rate, 3.0, 1, seed=index)[0], rate)
        sf.write(folder / "target.flac", song(rate, 3.0, 1, seed=10 + index)[0] * (0.2 + 0.3 * index), rate)
        records.append({"variant_id": f"v{index}", "piece_id": f"piece{index}", "split": "test", "programs": programs,
                        "duration_seconds": 3.0, "pairs": {instrument: {"context": f"v{index}/context.flac",
                                                                        "target": f"v{index}/target.flac"}}})
        if programs["bass"] is None:  # an MMA arrangement: its bass program is the arrangement's
            records[-1]["mma"] = {"roles": {"9": "drums", "13": "bass"}, "programs": {"13": 36}}
    (tmp_path / "build" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    dim = bundle.contract.style_dim
    prior_path = save_prior(tmp_path / "prior.safetensors", Prior(384, dim, hidden=8),
                            {"style_mean": [0.0] * dim, "style_std": [1.0] * dim}, version="test")
    prompts = lambda text: np.full(dim, len(text) / 10, np.float32)
    report = run(replace(bundle, prompts=prompts), tmp_path / "build", tmp_path / "out", count=3, seconds=seconds,
                 steps=2, prior=PromptPrior.load(prior_path), judge=_judge(tmp_path, bundle))
    assert report["bass"]["pairs"] == 3 and "drums" not in report
    keys = ("reference_apa_style_space", "reference_apa_log_mel", "prompt_apa_style_space", "reference_apa_judge",
            "prompt_apa_judge")
    for key in keys:
        assert 0.0 <= report["bass"][key] <= 1.0, key  # NaN fails too
        assert 0.0 <= report["bass"]["real_stems"][key] <= 1.0, key
    assert report["judge"]["version"] == "judge-test" and report["judge"]["audio_space"].startswith("style-tower:")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| bass | generated | 3 |" in text and "| bass | real | 3 |" in text and "prompt APA (judge)" in text
    plain = run(replace(bundle, prompts=prompts), tmp_path / "build", tmp_path / "plain", count=3, seconds=seconds,
                steps=2, prior=PromptPrior.load(prior_path))
    assert "reference_apa_judge" not in plain["bass"] and plain["judge"] is None
    for key in keys[:3]:  # the same seeds: the judge adds measures, it changes none
        assert plain["bass"][key] == report["bass"][key], key
    assert set(report["bass"]["coherence"]) == {"unsteered", "reference", "prompt"}
    assert "rhythmic fit, by reference" in (tmp_path / "out" / "report.md").read_text()


def test_coherence_scores_the_real_stems_one_and_other_pieces_stems_zero():
    rate = 22_050
    contexts = [song(rate, 4.0, 1, seed=seed) for seed in range(3)]
    real = [0.5 * c for c in contexts]  # each stem is its own context's: the best fit there is
    shuffle = np.array([1, 2, 0])
    scores = coherence(contexts, {"real": real, "reference": list(real), "prompt": [real[j] for j in shuffle]},
                       shuffle, rate, "bass")
    for key in ("harmonic_fit", "rhythmic_fit"):
        assert abs(scores["reference"][key] - 1.0) < 1e-9 and abs(scores["prompt"][key]) < 1e-9, key
    drums = coherence(contexts, {"real": real, "reference": list(real), "prompt": list(real)}, shuffle, rate, "drums")
    assert np.isnan(drums["reference"]["harmonic_fit"]) and abs(drums["prompt"]["rhythmic_fit"] - 1.0) < 1e-9


def test_judge_embeds_audio_in_its_tower_space_and_refuses_what_it_cannot_judge(tmp_path):
    bundle = make_bundle()
    judge = _judge(tmp_path, bundle)
    audio = song(44_100, 2.0, 2, seed=3)
    first = judge.audio(bundle, audio, 44_100)
    assert first.shape == (6,) and np.isfinite(first).all()
    np.testing.assert_allclose(np.linalg.norm(first), 6 ** 0.5, rtol=1e-3)  # the tower's norm, standardised by 0 and 1
    np.testing.assert_array_equal(judge.audio(bundle, audio, 44_100), first)
    assert not np.allclose(judge.audio(bundle, song(44_100, 2.0, 2, seed=3) * 0.1 + audio[::-1].copy(), 44_100), first)
    assert judge.prompt("slap bass").shape == (6,) and not np.allclose(judge.prompt("slap bass"), judge.prompt("synth bass"))
    statistics = save_prior(tmp_path / "plain.safetensors", Prior(384, 6, hidden=8),
                            {"style_mean": [0.0] * 6, "style_std": [1.0] * 6}, version="plain")
    with pytest.raises(ValueError, match="needs a style file with an audio tower"):
        Judge(PromptPrior.load(statistics), text=_text)
    elsewhere = _judge(tmp_path, bundle, latent_space="another-autoencoder")
    with pytest.raises(RuntimeModelError, match="trained on the latents of autoencoder another-autoencoder"):
        elsewhere.audio(bundle, audio, 44_100)
