"""Consistency distillation (training/distill.py) on tiny models: the teacher's guidance is the engine's, its steps
are the ODE's, distillation lowers its loss, and the student ships and generates in a few unguided steps."""

import json

import numpy as np
import pytest
import torch

from backline.cli import main
from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.engine.sampling import guided
from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder, save_autoencoder
from backline.models.diffusion import EDMPrecond, load_denoiser, resolve_config, save_denoiser
from backline.training.diffusion import LatentPairs, TrainOptions, train
from backline.training.distill import Teacher, consistency_loss, karras_grid
from backline.training.latents import encode_build


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic_build):
    folder = tmp_path_factory.mktemp("distill")
    torch.manual_seed(0)
    ae_path = save_autoencoder(folder / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    latents = folder / "latents"
    encode_build(ae_path, synthetic_build, latents)
    teacher = EDMPrecond(resolve_config("tiny")).eval()
    for p in teacher.parameters():  # zero-initialised layers would hide the conditions: wake them
        if not p.data.any():
            p.data.normal_(0, 0.05)
    teacher_path = save_denoiser(folder / "teacher.safetensors", teacher, version="teacher",
                                 extra={"guidance": {"cfg_context": 2.0, "cfg_style": 3.0,
                                                     "instruments": {"drums": {"cfg_context": 4.0}}}}, dtype=None)
    return ae_path, latents, teacher_path, folder


def batch_and_draws(latents, model, seed=0, rows=6):
    pairs = LatentPairs.load(latents, "train", ("bass", "drums"), 16)
    batch = pairs.batch(np.random.default_rng(seed), rows, 16)
    return batch, model.loss_draws(tuple(batch["target"].shape), torch.Generator().manual_seed(seed))


def test_the_teacher_guides_as_the_engine_does_with_each_instruments_scales(tiny):
    _, latents, teacher_path, _ = tiny
    teacher = Teacher.load(teacher_path)
    batch, _ = batch_and_draws(latents, teacher.model)
    rows = batch["target"].shape[0]
    x, sigma = batch["target"] + 0.7 * torch.randn_like(batch["target"]), torch.full((rows,), 0.7)
    ones, zeros = torch.ones(rows), torch.zeros(rows)
    conditions = {"context": batch["context"], "style": batch["style"], "instrument": batch["instrument"],
                  "context_mask": ones, "style_mask": ones}
    got = teacher.denoise(x, sigma, conditions).numpy()
    with torch.no_grad():
        run = lambda c, s: teacher.model(x, sigma, batch["context"], c, batch["style"], s, batch["instrument"]).numpy()
        predictions = {"full": run(ones, ones), "context": run(ones, zeros), "none": run(zeros, zeros)}
    for row, instrument in enumerate(batch["instrument"].tolist()):
        scales = {"cfg_context": 4.0 if instrument == 1 else 2.0, "cfg_style": 3.0}
        want = guided({k: v[row:row + 1] for k, v in predictions.items()}, **scales)
        np.testing.assert_allclose(got[row:row + 1], want, atol=1e-5)


def test_the_teachers_steps_are_the_engines_heun_and_euler_on_the_guided_estimate(tiny):
    from backline.engine.sampling import SAMPLERS

    _, latents, teacher_path, _ = tiny
    teacher = Teacher.load(teacher_path)
    batch, _ = batch_and_draws(latents, teacher.model, rows=1)
    ones = torch.ones(1)
    conditions = {"context": batch["context"], "style": batch["style"], "instrument": batch["instrument"],
                  "context_mask": ones, "style_mask": ones}
    x = batch["target"] + 2.0 * torch.randn_like(batch["target"])
    denoise = lambda y, sigma: teacher.denoise(torch.from_numpy(y), torch.full((1,), float(sigma)), conditions).numpy()
    for solver in ("heun", "euler"):
        got = teacher.step(x, torch.tensor([2.0]), torch.tensor([0.5]), conditions, solver).numpy()
        want = SAMPLERS[solver](denoise, x.numpy(), np.array([2.0, 0.5]))
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_grid_runs_from_the_highest_noise_to_the_lowest():
    grid = karras_grid(40, 0.002, 80.0)
    assert grid.shape == (40,) and float(grid[0]) == pytest.approx(80.0) and float(grid[-1]) == pytest.approx(0.002)
    assert bool((grid[1:] < grid[:-1]).all())


def test_distillation_lowers_its_loss_and_the_student_generates_in_two_unguided_steps(tiny):
    ae_path, latents, teacher_path, folder = tiny
    run = folder / "student"
    before_model = load_denoiser(teacher_path)[0]
    teacher = Teacher.load(teacher_path)
    fixed = [batch_and_draws(latents, before_model, seed=s, rows=16) for s in (11, 12)]

    def measured(model):
        with torch.no_grad():
            return float(np.mean([consistency_loss(model, teacher, b, d).item() for b, d in fixed]))

    options = TrainOptions(steps=120, batch_size=8, learning_rate=2e-3, warmup_steps=5, validate_every=60,
                           checkpoint_every=60, distill_from=str(teacher_path), grid_points=18)
    summary = train(before_model.config, latents, run, options, progress=False)
    assert summary["step"] == 120
    after = EDMPrecond(before_model.config)
    after.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    assert measured(after.eval()) < 0.85 * measured(before_model)

    student = folder / "student.safetensors"
    assert main(["ship", "diffusion", "--run", str(run), "--to", str(student), "--version", "student",
                 "--cfg-context", "1", "--cfg-style", "1", "--default-steps", "2", "--default-sampler", "euler"]) == 0
    from backline.export.onnx import export_models

    export_models(ae_path, student, folder / "onnx", seed=0)
    context = np.random.default_rng(0).standard_normal((2, 20_000)).astype(np.float32) * 0.1
    for bundle in (load_bundle(ae_path, student), load_bundle(backend="onnx", onnx_dir=folder / "onnx")):
        result = generate(bundle, GenerateRequest(context=context, sample_rate=44_100))  # the student's defaults
        assert result.audio.shape == (2, 20_000) and np.isfinite(result.audio).all()
        assert (result.info["cfg_context"], result.info["cfg_style"]) == (1.0, 1.0)
        assert (result.info["steps"], result.info["sampler"]) == (2, "euler")
        asked = generate(bundle, GenerateRequest(context=context, sample_rate=44_100, steps=5, sampler="heun")).info
        assert (asked["steps"], asked["sampler"]) == (5, "heun")  # a request's own wins
    teacher_info = generate(load_bundle(ae_path, teacher_path), GenerateRequest(context=context, sample_rate=44_100,
                                                                                 steps=None)).info
    assert (teacher_info["steps"], teacher_info["sampler"]) == (30, "dpmpp_2m")  # a file that names none

    # shipped as the bass's few-step sampler beside its teacher: the file names its teacher, and the engine pairs them
    assert main(["ship", "diffusion", "--to", str(student), "--few-step-for", "bass"]) == 0
    recorded = load_denoiser(student)[1]["config"]["provenance"]
    assert recorded["distilled_from"] == load_denoiser(teacher_path)[1]["backline_version"]
    export_models(ae_path, teacher_path, folder / "paired", seed=0, few_step_path=student)
    for bundle in (load_bundle(ae_path, teacher_path, few_step_path=student),
                   load_bundle(backend="onnx", onnx_dir=folder / "paired")):
        bass, drums = (generate(bundle, GenerateRequest(context=context, sample_rate=44_100, instrument=name)).info
                       for name in ("bass", "drums"))
        assert (bass["sampler"], bass["steps"], bass["models"]["few_step"]) == ("few_step", 2, "student")
        assert (drums["sampler"], drums["steps"]) == ("dpmpp_2m", 30)


def test_the_target_network_is_the_student_itself_unless_another_is_given(tiny):
    """``target_network``: whose estimate at the lower noise level the student is pulled towards (its EMA, as Song et
    al. 2023's target network); the student itself by default."""
    _, latents, teacher_path, _ = tiny
    student = load_denoiser(teacher_path)[0]
    teacher = Teacher.load(teacher_path)
    batch, draws = batch_and_draws(latents, student, seed=3)
    with torch.no_grad():
        itself = consistency_loss(student, teacher, batch, draws, grid_points=18)
        same = consistency_loss(student, teacher, batch, draws, grid_points=18, target_network=student)
        other_network = load_denoiser(teacher_path)[0]
        for parameter in other_network.parameters():
            parameter.mul_(0.5)
        other = consistency_loss(student, teacher, batch, draws, grid_points=18, target_network=other_network)
    assert torch.equal(itself, same) and not torch.isclose(itself, other)
    run = tiny[3] / "ema-target"
    summary = train(student.config, latents, run, TrainOptions(steps=3, batch_size=4, distill_from=str(teacher_path),
                                                               distill_target="ema", grid_points=18), progress=False)
    assert summary["step"] == 3
    assert json.loads((run / "training.json").read_text())["settings"]["distill_target"] == "ema"


def test_a_student_must_have_its_teachers_config(tiny):
    _, latents, teacher_path, folder = tiny
    with pytest.raises(ValueError, match="a student has its teacher's config"):
        train(resolve_config("tiny-conditioned"), latents, folder / "wrong", TrainOptions(
            steps=1, distill_from=str(teacher_path)), progress=False)


def test_a_conditioned_teacher_guides_the_beat_and_the_chords_with_its_files_scales(tmp_path):
    """A teacher told the beat and the chords runs the engine's extra passes (the full one without each condition
    whose recorded scale is not 1) and adds their terms as ``guided`` does."""
    torch.manual_seed(1)
    model = EDMPrecond(resolve_config("tiny-conditioned")).eval()
    for p in model.parameters():
        if not p.data.any():
            p.data.normal_(0, 0.05)
    path = save_denoiser(tmp_path / "conditioned.safetensors", model, version="teacher", dtype=None,
                         extra={"guidance": {"cfg_context": 2.0, "cfg_style": 1.5, "cfg_chords": 3.0,
                                             "instruments": {"drums": {"cfg_tempo": 2.5, "cfg_chords": 1.0}}}})
    teacher = Teacher.load(path)
    config, rows, frames = model.config, 4, 16
    x = torch.randn(rows, config.latent_channels, frames)
    sigma, ones, zeros = torch.full((rows,), 0.9), torch.ones(rows), torch.zeros(rows)
    given = {"context": torch.randn(rows, config.latent_channels, frames), "style": torch.randn(rows, config.style_dim),
             "instrument": torch.tensor([0, 1, 0, 1]), "grid": torch.randn(rows, config.grid_channels, frames),
             "harmony": torch.rand(rows, config.harmony_channels, frames)}
    conditions = given | {"context_mask": ones, "style_mask": ones, "grid_mask": ones, "harmony_mask": ones}
    got = teacher.denoise(x, sigma, conditions).numpy()

    def run(context, style, grid, harmony):
        with torch.no_grad():
            return model(x, sigma, given["context"], context, given["style"], style, given["instrument"],
                         grid=given["grid"], grid_mask=grid, harmony=given["harmony"], harmony_mask=harmony).numpy()

    predictions = {"full": run(ones, ones, ones, ones), "context": run(ones, zeros, ones, ones),
                   "none": run(zeros, zeros, zeros, zeros), "without_grid": run(ones, ones, zeros, ones),
                   "without_harmony": run(ones, ones, ones, zeros)}
    for row, instrument in enumerate(given["instrument"].tolist()):
        scales = {"grid": 2.5, "harmony": 1.0} if instrument == 1 else {"grid": 1.0, "harmony": 3.0}
        want = guided({k: v[row:row + 1] for k, v in predictions.items()}, cfg_context=2.0, cfg_style=1.5,
                      frame_scales=scales)
        np.testing.assert_allclose(got[row:row + 1], want, atol=1e-5)
    assert not np.allclose(got[0], guided({k: v[:1] for k, v in predictions.items()}, cfg_context=2.0, cfg_style=1.5))
