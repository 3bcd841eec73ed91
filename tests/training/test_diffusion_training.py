import csv
import json

import numpy as np
import pytest
import torch

from backline.cli import main
from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder, save_autoencoder
from backline.models.diffusion import CONFIGS, load_denoiser, resolve_config
from backline.training.diffusion import LatentPairs, TrainOptions, ship, train
from backline.training.latents import encode_build, timing_of


def test_latents_train_resume_ship_and_generate_end_to_end(synthetic_build, tmp_path):
    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = tmp_path / "latents"
    assert encode_build(ae_path, synthetic_build, latents) == 8  # 4 pieces x (bass, drums)
    assert encode_build(ae_path, synthetic_build, latents) == 0  # already there: kept
    index = [json.loads(line) for line in (latents / "index.jsonl").read_text().splitlines()]
    assert len(index) == 8 and {e["split"] for e in index} == {"train", "validation"}
    first = np.load(latents / index[0]["file"])
    assert first["context"].shape == first["target"].shape == (8, -(-3 * 44100 // 256))

    pairs = LatentPairs.load(latents, "train", ("bass", "drums"), 16)
    batch = pairs.batch(np.random.default_rng(0), 4, 16)
    assert batch["context"].shape == (4, 8, 16) and batch["style"].shape == (4, 16)

    config = resolve_config("tiny")
    run = tmp_path / "run"
    options = TrainOptions(steps=30, batch_size=4, learning_rate=3e-3, warmup_steps=5, validate_every=15,
                           checkpoint_every=10)
    callers_state = torch.get_rng_state()
    assert train(config, latents, run, options, progress=False)["step"] == 30
    assert torch.equal(torch.get_rng_state(), callers_state)  # the trainer's seed stays inside it
    resumed = train(config, latents, run, TrainOptions(**{**options.__dict__, "steps": 40}), resume=True, progress=False)
    assert resumed["step"] == 40
    rows = list(csv.DictReader((run / "train.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    validation = list(csv.DictReader((run / "validation.csv").open()))
    assert [int(r["step"]) for r in validation] == [15, 30, 40]
    assert (run / "curves.png").stat().st_size > 1000

    model_path = ship(run, tmp_path / "denoiser.safetensors", version="tiny-test", latent_dir=latents)
    model, meta = load_denoiser(model_path)
    assert meta["config"]["provenance"]["steps"] == 40
    assert meta["config"]["provenance"]["autoencoder"]["version"] == "tiny-test"

    bundle = load_bundle(ae_path, model_path)
    context = np.random.default_rng(0).standard_normal((2, 30_001)).astype(np.float32) * 0.1
    result = generate(bundle, GenerateRequest(context=context, sample_rate=48000, steps=3, seed=5))
    assert result.audio.shape == (2, 30_001) and np.isfinite(result.audio).all()
    assert result.info["models"] == {"autoencoder": "tiny-test", "denoiser": "tiny-test"}
    assert result.info["cfg_context"] == 1.25 and result.info["cfg_style"] == 1.25  # none recorded: Diff-A-Riff's

    # guidance measured for a model travels in its file, to both backends, and is the engine's default
    tuned = ship(run, tmp_path / "tuned.safetensors", version="tiny-tuned", latent_dir=latents,
                 guidance={"cfg_context": 2.5, "cfg_style": 1.5})
    # scales measured later are recorded in the same file (same weights and version), per instrument too
    before = load_denoiser(tuned)[0].state_dict()
    assert main(["ship", "diffusion", "--to", str(tuned), "--instrument-cfg", "drums:cfg_context=3.5"]) == 0
    after, after_meta = load_denoiser(tuned)
    assert after_meta["backline_version"] == "tiny-tuned"
    assert all(torch.equal(before[k], v) for k, v in after.state_dict().items())
    from backline.export.onnx import export_models

    export_models(ae_path, tuned, tmp_path / "onnx", seed=0)
    for engine in (load_bundle(ae_path, tuned), load_bundle(backend="onnx", onnx_dir=tmp_path / "onnx")):
        assert engine.contract.guidance == {"cfg_context": 2.5, "cfg_style": 1.5, "cfg_tempo": 1.0, "cfg_chords": 1.0,
                                            "instruments": {"drums": {"cfg_context": 3.5}}}
        info = generate(engine, GenerateRequest(context=context, sample_rate=48000, steps=2, seed=5)).info
        assert (info["cfg_context"], info["cfg_style"]) == (2.5, 1.5)
        info = generate(engine, GenerateRequest(context=context, sample_rate=48000, steps=2, seed=5,
                                                instrument="drums")).info
        assert (info["cfg_context"], info["cfg_style"]) == (3.5, 1.5)  # the drums' own default
        info = generate(engine, GenerateRequest(context=context, sample_rate=48000, steps=2, cfg_context=1.0)).info
        assert (info["cfg_context"], info["cfg_style"]) == (1.0, 1.5)  # a request's own scale wins
    with pytest.raises(SystemExit, match="INSTRUMENT:NAME=VALUE"):
        main(["ship", "diffusion", "--to", str(tuned), "--instrument-cfg", "drums=3"])
    with pytest.raises(SystemExit, match="one of bass, drums"):
        main(["ship", "diffusion", "--to", str(tuned), "--instrument-cfg", "tuba:cfg_context=3"])


def test_a_conditioned_denoiser_trains_on_the_true_grid_and_chords_and_the_context_harmony(synthetic_build, tmp_path):

    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = tmp_path / "latents"
    encode_build(ae_path, synthetic_build, latents)
    assert np.load(next(latents.glob("*.npz")))["context_harmony"].shape[0] == 12
    song = {"tempo_bpm": 120, "beats_per_bar": 4, "chords": [[0.0, "Am"], [4.0, "F"]]}
    assert timing_of({"mma": song}) == {"tempo_bpm": 120.0, "beats_per_bar": 4, "chords": [[0.0, "Am"], [4.0, "F"]]}
    assert timing_of({"source": "freedoom"}) is None
    index = latents / "index.jsonl"
    entries = [json.loads(line) for line in index.read_text().splitlines()]
    assert all(entry["timing"] is None for entry in entries)  # the synthetic build's source knows no chords
    for entry in entries[::2]:  # as an MMA song's would be
        entry["timing"] = timing_of({"mma": song})
    index.write_text("".join(json.dumps(entry) + "\n" for entry in entries))

    config = resolve_config("tiny-conditioned")
    pairs = LatentPairs.load(latents, "train", ("bass", "drums"), 16, frame_rate_hz=config.latent_rate_hz)
    batch = pairs.batch(np.random.default_rng(0), 32, 16)
    assert batch["grid"].shape == (32, 4, 16) and batch["harmony"].shape == (32, 12, 16)
    timed = torch.tensor([pairs.grid[i] is not None for i in range(len(pairs))])
    assert timed.any() and not timed.all()
    assert 0 < float(batch["grid_mask"].mean()) < 1 and float(batch["harmony_mask"].min()) == 1.0
    chords = batch["harmony"][batch["grid_mask"] > 0]  # true chords (0/1) or the estimate (weights up to 1)
    assert float(chords.max()) == pytest.approx(1.0)
    summary = train(config, latents, tmp_path / "run", TrainOptions(steps=6, batch_size=4, validate_every=3,
                                                                    checkpoint_every=3), progress=False)
    assert summary["step"] == 6
    losses = [float(line.split(",")[1]) for line in (tmp_path / "run" / "validation.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_the_encode_benchmark_times_the_first_variants_with_each_worker_count(synthetic_build, tmp_path):
    from backline.training.latents import bench_encode

    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-b")
    out = tmp_path / "encode.json"
    assert main(["bench", "latents", "--data", str(synthetic_build), "--autoencoder", str(ae_path), "--variants", "2",
                 "--jobs", "1", "2", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["autoencoder"] == "tiny-b" and [row["jobs"] for row in figures["results"]] == [1, 2]
    for row in figures["results"]:
        assert row["pairs"] == 4 and row["pair_seconds"] > 0 and row["x_realtime_wall"] > 0
    assert bench_encode(synthetic_build, ae_path, variants=1, jobs=[1])["results"][0]["pairs"] == 2


def test_a_conditioned_denoiser_starts_from_an_unconditioned_one_as_that_model_itself():
    from backline.models.diffusion import EDMPrecond
    from backline.training.diffusion import initial_weights

    torch.manual_seed(0)
    plain = EDMPrecond(CONFIGS["tiny"]).eval()
    for parameter in plain.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    config = resolve_config("tiny-conditioned")
    grown = EDMPrecond(config).eval()
    grown.load_state_dict(initial_weights(plain, config, "plain"))
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 8, 12, generator=g), torch.randn(2, 8, 12, generator=g)
    inputs = (x, torch.ones(2), context, torch.ones(2), torch.randn(2, 16, generator=g), torch.ones(2),
              torch.tensor([0, 1]))
    with torch.no_grad():
        want = plain(*inputs)
        got = grown(*inputs, grid=torch.randn(2, 4, 12, generator=g), harmony=torch.rand(2, 12, 12, generator=g))
    torch.testing.assert_close(got, want)  # the new inputs start silent
    with pytest.raises(ValueError, match="beyond the style space and the conditions"):
        initial_weights(plain, resolve_config("tiny", channels=(16, 48)), "plain")
