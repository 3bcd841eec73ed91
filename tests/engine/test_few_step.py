"""The few-step sampler: a denoiser distilled from the full one, loaded beside it, runs a request that leaves the
sampler, steps and guidance to the engine, for the instruments its file names; everything else runs the full one.

Tiny random models built in code: the "student" is the teacher's config with other weights, recorded as distilled
from it, so which of the two ran shows in the stem.
"""

import numpy as np
import pytest
import torch

from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.engine.runtime import FEW_STEP_FILES, RuntimeModelError
from backline.export.debug_models import write_debug_models
from backline.export.onnx import export_models
from backline.models.diffusion import load_denoiser, save_denoiser
from tiny_bundle import song

RATE = 44_100


def _student(teacher_path, path, *, distilled_from, few_step_for=("bass",), steps=2, seed=5):
    """The teacher's config with fresh weights, recorded as its distillation, run in ``steps`` Euler steps."""
    model, metadata = load_denoiser(teacher_path)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    sampling = {"steps": steps, "sampler": "euler", "candidates": 1, "few_step_for": list(few_step_for)}
    provenance = {**metadata["config"]["provenance"], "distilled_from": distilled_from, "sampling": sampling}
    return save_denoiser(path, model, version="student", extra=provenance, dtype=torch.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("few_step")
    ae_path, dn_path = write_debug_models(folder, "tiny", seed=3)
    teacher_version = load_denoiser(dn_path)[1]["backline_version"]
    student_path = _student(dn_path, folder / "student.safetensors", distilled_from=teacher_version)
    export_models(ae_path, dn_path, folder / "onnx", seed=0, threads=1, few_step_path=student_path)
    return ae_path, dn_path, student_path, folder / "onnx"


def _request(**overrides):
    return GenerateRequest(context=song(RATE, seconds=0.8), sample_rate=RATE, seed=4, **overrides)


def test_the_few_step_sampler_is_the_default_only_where_its_file_says_and_nothing_else_is_asked(files):
    ae_path, dn_path, student_path, _ = files
    bundle = load_bundle(ae_path, dn_path, few_step_path=student_path)
    assert bundle.contract.few_step.steps == 2 and bundle.contract.few_step.default_for == ("bass",)
    assert bundle.versions["few_step"] == "student"
    default = generate(bundle, _request(instrument="bass"))
    assert (default.info["sampler"], default.info["steps"], default.info["cfg_context"]) == ("few_step", 2, 1.0)
    full_sampling = bundle.contract.sampling
    for asked in ({"instrument": "drums"}, {"steps": 3}, {"cfg_context": 2.0}, {"sampler": "euler"}):
        info = generate(bundle, _request(**({"instrument": "bass"} | asked))).info
        assert info["sampler"] == asked.get("sampler", full_sampling["sampler"]), asked
    explicit = generate(bundle, _request(instrument="drums", sampler="few_step", steps=2))
    assert explicit.info["sampler"] == "few_step"
    # the student is what ran: the same request through the teacher in the same steps and solver differs
    teacher = generate(bundle, _request(instrument="bass", sampler="euler", steps=2, cfg_context=1.0, cfg_style=1.0,
                                        cfg_tempo=1.0, cfg_chords=1.0))
    assert np.abs(default.audio - teacher.audio).max() > 1e-3
    # without a student the same request runs the full sampler as before
    alone = generate(load_bundle(ae_path, dn_path), _request(instrument="bass"))
    assert alone.info["sampler"] == full_sampling["sampler"]


def test_the_few_step_sampler_is_refused_with_guidance_or_without_a_student(files):
    ae_path, dn_path, student_path, _ = files
    with pytest.raises(ValueError, match="guidance built in; leave cfg_context out"):
        generate(load_bundle(ae_path, dn_path, few_step_path=student_path), _request(sampler="few_step",
                                                                                    cfg_context=2.0))
    with pytest.raises(ValueError, match="no few-step sampler"):
        generate(load_bundle(ae_path, dn_path), _request(sampler="few_step"))


def test_a_student_of_another_teacher_is_refused(files, tmp_path):
    ae_path, dn_path, _, _ = files
    stranger = _student(dn_path, tmp_path / "stranger.safetensors", distilled_from="another-teacher")
    with pytest.raises(RuntimeModelError, match="distilled from denoiser another-teacher"):
        load_bundle(ae_path, dn_path, few_step_path=stranger)
    with pytest.raises(RuntimeModelError, match="distilled from denoiser another-teacher"):
        export_models(ae_path, dn_path, tmp_path / "onnx", seed=0, threads=1, few_step_path=stranger)
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())


def test_onnx_runs_the_exported_student_as_torch_does(files):
    ae_path, dn_path, student_path, onnx_dir = files
    onnx = load_bundle(onnx_dir=onnx_dir)
    assert onnx.contract.few_step == load_bundle(ae_path, dn_path, few_step_path=student_path).contract.few_step
    torch_result = generate(load_bundle(ae_path, dn_path, few_step_path=student_path), _request(instrument="bass"))
    for step_graph in (True, False):
        result = generate(load_bundle(onnx_dir=onnx_dir, step_graph=step_graph), _request(instrument="bass"))
        assert result.info["sampler"] == "few_step"
        np.testing.assert_allclose(result.audio, torch_result.audio, atol=2e-4 * np.abs(torch_result.audio).max())


def test_a_folder_with_half_the_student_is_refused(files, tmp_path):
    _, _, _, onnx_dir = files
    half = tmp_path / "onnx"
    half.mkdir()
    for path in onnx_dir.iterdir():
        if path.name != FEW_STEP_FILES["few_step_step"]:
            (half / path.name).write_bytes(path.read_bytes())
    with pytest.raises(RuntimeModelError, match="come as a pair"):
        load_bundle(onnx_dir=half)


def test_ship_records_a_files_teacher_and_the_instruments_it_is_the_default_for(files, tmp_path):
    """A student shipped before its file named its teacher gets it recorded (``ship diffusion --distilled-from``)."""
    from backline.cli import main

    ae_path, dn_path, _, _ = files
    unnamed = tmp_path / "unnamed.safetensors"
    unnamed.write_bytes(dn_path.read_bytes())  # the teacher's config and weights, naming no teacher
    with pytest.raises(RuntimeModelError, match="distilled from denoiser None"):
        load_bundle(ae_path, dn_path, few_step_path=unnamed)
    assert main(["ship", "diffusion", "--to", str(unnamed), "--distilled-from", str(dn_path), "--few-step-for", "drums",
                 "--default-steps", "3", "--default-sampler", "euler"]) == 0
    few_step = load_bundle(ae_path, dn_path, few_step_path=unnamed).contract.few_step
    assert (few_step.steps, few_step.solver, few_step.default_for) == (3, "euler", ("drums",))
    assert main(["ship", "diffusion", "--to", str(unnamed), "--few-step-for", "none"]) == 0
    assert load_bundle(ae_path, dn_path, few_step_path=unnamed).contract.few_step.default_for == ()
