"""The sampler as a graph: ``guided_step.onnx`` run once per evaluation gives the numpy samplers' result.

Tiny random models built in code; the reference is the pure numpy sampler over the same exported
denoiser (``denoiser.onnx``) with the guidance combined and the controls applied in numpy.
"""

import numpy as np
import pytest

from backline.engine import controls
from backline.engine.pipeline import (Cancelled, GenerateRequest, generate, guidance_passes, load_bundle,
                                      make_guided_denoiser, step_constants)
from backline.engine.runtime import StepGraphSampler
from backline.engine.sampling import SAMPLERS, get_sampler, get_sigmas_karras, solver_plan
from backline.export.debug_models import write_debug_models
from backline.export.onnx import export_models
from tiny_bundle import song

FRAMES = 37
# Whole samples agree to a few 1e-6 of their peak: every evaluation rounds in float32 in a different
# order (the numpy solvers keep float64 state); one graph evaluation alone agrees to 1e-7.
SAMPLE_TOLERANCE = 3e-5


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    ae_path, dn_path = write_debug_models(directory, "tiny", seed=3)
    export_models(ae_path, dn_path, directory / "onnx", seed=0, threads=1)
    return directory / "onnx"


@pytest.fixture(scope="module")
def bundle(onnx_dir):
    return load_bundle(backend="onnx", onnx_dir=onnx_dir, intra_op_threads=1)


def relative(got, want):
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def reference_euler(denoise, x, sigmas):  # the textbook forms, written here only as the tests' reference
    steps = []
    for i in range(len(sigmas) - 1):
        x = x + (x - denoise(x, sigmas[i])) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        steps.append(x)
    return steps


def reference_heun(denoise, x, sigmas):  # EDM Algorithm 1, deterministic; an Euler step to sigma 0
    steps = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = (x - denoise(x, sigma)) / sigma
        x_next = x + d * (sigma_next - sigma)
        if sigma_next > 0:
            d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x + 0.5 * (d + d_next) * (sigma_next - sigma)
        x = x_next
        steps.append(x)
    return steps


def reference_dpmpp_2m(denoise, x, sigmas):  # k-diffusion's sample_dpmpp_2m
    steps, previous = [], None
    t_of = lambda sigma: -np.log(sigma)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, sigma)
        if sigma_next == 0:
            x = x0
        else:
            h = t_of(sigma_next) - t_of(sigma)
            if previous is None:
                estimate = x0
            else:
                r = (t_of(sigma) - t_of(sigmas[i - 1])) / h
                estimate = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous
            x = (sigma_next / sigma) * x - np.expm1(-h) * estimate
        previous = x0
        steps.append(x)
    return steps


REFERENCES = {"euler": reference_euler, "heun": reference_heun, "dpmpp_2m": reference_dpmpp_2m}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("sigmas", [get_sigmas_karras(9, 0.002, 80.0), get_sigmas_karras(9, 0.002, 80.0)[4:],
                                    np.array([3.0, 0.0])])
def test_each_sampler_is_its_textbook_solver_step_for_step(name, sigmas):
    """The samplers are their solvers' linear plans (one definition, run by NumPy and by the step graph);
    here they meet the solvers as the papers write them."""
    rng = np.random.default_rng(0)
    target = rng.standard_normal((1, 4, 11))
    mixing = 0.2 * rng.standard_normal((11, 11))
    denoise = lambda x, sigma: target / (1 + sigma) + np.tanh(x @ mixing) * sigma / (1 + sigma**2)
    x = rng.standard_normal((1, 4, 11)) * sigmas[0]
    seen = []
    got = get_sampler(name)(denoise, x, sigmas, callback=lambda i, n, x, x0: seen.append((i, n, x)))
    want = REFERENCES[name](denoise, x, sigmas)
    assert [s[:2] for s in seen] == [(i, len(sigmas) - 1) for i in range(len(sigmas) - 1)]
    for (_, _, a), b in zip(seen, want):  # every step's state, not only the last
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
    np.testing.assert_allclose(got, want[-1], rtol=0, atol=1e-12 * np.abs(want[-1]).max())


def test_solver_plan_evaluations():
    sigmas = get_sigmas_karras(4, 0.002, 80.0)
    assert len(solver_plan("euler", sigmas)) == len(solver_plan("dpmpp_2m", sigmas)) == 4
    heun = solver_plan("heun", sigmas)
    assert [e.ends_step for e in heun] == [False, True] * 3 + [True]  # the last step is an Euler step
    assert solver_plan("dpmpp_2m", sigmas)[-1].coefficients == (0.0, 1.0, 0.0, 0.0)  # the last step is x0
    with pytest.raises(ValueError, match="unknown sampler 'ddim'"):
        solver_plan("ddim", sigmas)


CONTROLS = {
    "plain": {},
    "style": {"style": True},
    "one pass": {"cfg_context": 1.0, "cfg_style": 1.0},
    "no context": {"style": True, "use_context": False},
    "inpaint": {"inpaint": True},
    "loop half": {"loop": 5, "loop_strength": 0.5},
    "loop and inpaint": {"loop": 6, "loop_strength": 1.0, "inpaint": True, "style": True},
    "three takes": {"takes": 3, "style": True},
    "two takes looped and inpainted": {"takes": 2, "loop": 6, "loop_strength": 1.0, "inpaint": True},
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("case", sorted(CONTROLS))
def test_step_graph_sample_equals_the_numpy_sampler(bundle, name, case):
    spec = CONTROLS[case]
    contract = bundle.contract
    rng = np.random.default_rng(len(case))
    context = rng.standard_normal((contract.latent_channels, FRAMES)).astype(np.float32)
    style = rng.standard_normal(contract.style_dim).astype(np.float32) if spec.get("style") else None
    cfg = spec.get("cfg_context", 3.0), spec.get("cfg_style", 2.0)
    use_context = spec.get("use_context", True)
    sigmas = get_sigmas_karras(6, contract.sigma_min, contract.sigma_max)
    takes = spec.get("takes", 1)
    noise = rng.standard_normal((takes, contract.latent_channels, FRAMES)).astype(np.float32)
    denoise = make_guided_denoiser(bundle, context, style, "drums", *cfg, use_context=use_context)
    known = keep = period = None
    release = float("inf")
    x = noise * sigmas[0]
    if spec.get("loop"):
        period = spec["loop"]
        release = controls.release_sigma(sigmas, spec["loop_strength"])
        denoise = controls.looping(denoise, period, release)
    if spec.get("inpaint"):
        known = rng.standard_normal((1, contract.latent_channels, FRAMES)).astype(np.float32)
        rate = contract.latent_rate_hz
        keep = controls.keep_mask(FRAMES, rate, 10 / rate, 28 / rate, 2 / rate)  # frames 10..27 regenerated
        denoise = controls.inpainting(denoise, known, keep)
        x = known + x
    want = get_sampler(name)(denoise, x, sigmas)
    guidance = guidance_passes(contract, style, "drums", *cfg, use_context=use_context)
    sampler = bundle.backend.step_sampler(step_constants(guidance, context, known=known, keep=keep, loop_period=period))
    assert isinstance(sampler, StepGraphSampler)
    got = sampler(x, sigmas, name, release_sigma=release)
    assert got.shape == want.shape and got.dtype == np.float32
    assert relative(got, want) < SAMPLE_TOLERANCE
    if keep is not None:  # the kept frames end exactly on the known latents, as in numpy
        kept = keep == 1
        np.testing.assert_array_equal(got[..., kept], np.broadcast_to(known[..., kept], got[..., kept].shape))
    if period and spec["loop_strength"] == 1.0 and keep is None:  # exact repeats
        np.testing.assert_allclose(got[..., period:2 * period], got[..., :period], atol=1e-6 * np.abs(got).max())
    for take in range(takes if takes > 1 else 0):  # a take sampled with others is the take sampled alone
        alone = sampler(x[take:take + 1], sigmas, name, release_sigma=release)
        assert relative(got[take:take + 1], alone) < SAMPLE_TOLERANCE


def test_generate_samples_through_the_step_graph_by_default_with_the_same_stem(onnx_dir, bundle):
    calls = load_bundle(backend="onnx", onnx_dir=onnx_dir, intra_op_threads=1, step_graph=False)
    request = GenerateRequest(context=song(48000, 1.2), sample_rate=48000, steps=5, seed=4, sampler="heun",
                              stem=song(48000, 1.2, seed=8), regenerate_seconds=(0.3, 0.9), stereo_width=0.5)
    seen = []
    via_graph = generate(bundle, request, progress=lambda step, total: seen.append((step, total)))
    via_calls = generate(calls, request)
    assert (via_graph.info["step_graph"], via_calls.info["step_graph"]) == (True, False)
    assert seen == [(step, 5) for step in range(1, 6)]
    assert via_graph.audio.shape == (2, request.context.shape[1])
    assert relative(via_graph.audio, via_calls.audio) < 1e-3  # the decoder amplifies latent rounding a little


def test_step_graph_sampling_cancels_between_steps(bundle):
    def stop_after_two(step, total):
        if step == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        generate(bundle, GenerateRequest(context=song(48000, 0.5), sample_rate=48000, steps=6), progress=stop_after_two)


def test_step_graph_keeps_state_on_the_provider_device_through_io_binding(bundle):
    contract = bundle.contract
    guidance = guidance_passes(contract, None, "bass", 2.0, 1.0)
    context = np.zeros((contract.latent_channels, 9), np.float32)
    sampler = bundle.backend.step_sampler(step_constants(guidance, context))
    assert sampler.device == "cpu" and bundle.backend.providers == ["CPUExecutionProvider"]
    x = np.ones((1, contract.latent_channels, 9), np.float32)
    sigmas = get_sigmas_karras(3, contract.sigma_min, contract.sigma_max)
    np.testing.assert_array_equal(sampler(x, sigmas, "euler"), sampler(x, sigmas, "euler"))  # reusable binding
    np.testing.assert_array_equal(sampler(x, sigmas[-1:], "euler"), x)  # no step to take


def test_generate_command_chooses_provider_threads_and_sampling_path(onnx_dir, tmp_path, capsys):
    import soundfile as sf

    from backline.cli import main

    context = tmp_path / "context.wav"
    sf.write(context, song(44_100, 1.0, 1).T, 44_100)
    stems = {}
    for flags, uses_graph in (([], True), (["--no-step-graph"], False)):
        out = tmp_path / f"stem{len(flags)}.wav"
        assert main(["generate", "--context", str(context), "--out", str(out), "--onnx-dir", str(onnx_dir),
                     "--provider", "cpu", "--threads", "1", "--steps", "3", "--quiet", *flags]) == 0
        assert f'"step_graph": {str(uses_graph).lower()}' in capsys.readouterr().out
        stems[uses_graph] = sf.read(out)[0]
    np.testing.assert_allclose(stems[True], stems[False], atol=2e-4)  # 16-bit files
