import numpy as np
import pytest

from backline.engine.sampling import SAMPLERS, get_sampler, get_sigmas_karras, guided


def test_karras_schedule_endpoints_and_order():
    sigmas = get_sigmas_karras(30, 0.002, 80.0)
    assert len(sigmas) == 31 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.002)
    assert np.all(np.diff(sigmas) < 0)
    assert get_sigmas_karras(1, 0.002, 80.0).tolist() == [pytest.approx(80.0), 0.0]
    with pytest.raises(ValueError, match="steps must be at least 1"):
        get_sigmas_karras(0, 0.002, 80.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        get_sigmas_karras(10, 1.0, 0.5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_reach_a_point_mass_exactly(name):
    target = np.array([[0.5, -1.0, 2.0]])
    x = np.random.default_rng(0).standard_normal(target.shape) * 80.0
    out = get_sampler(name)(lambda x, sigma: target, x, get_sigmas_karras(10, 0.002, 80.0))
    np.testing.assert_allclose(out, target, atol=1e-9)


@pytest.mark.parametrize("name, tolerance", [("euler", 0.06), ("heun", 0.01), ("dpmpp_2m", 0.02)])
def test_samplers_transport_noise_to_a_gaussian(name, tolerance):
    # Data ~ N(mu, s^2): the ideal denoiser is known in closed form, so the sampled
    # distribution must come out with mean mu and standard deviation s.
    mu, s = 1.5, 0.4
    denoise = lambda x, sigma: (s**2 * x + sigma**2 * mu) / (s**2 + sigma**2)
    sigmas = get_sigmas_karras(40, 0.002, 80.0)
    x = np.random.default_rng(1).standard_normal(200_000) * np.sqrt(sigmas[0] ** 2 + s**2)
    out = get_sampler(name)(denoise, x, sigmas)
    assert out.mean() == pytest.approx(mu, abs=tolerance)
    assert out.std() == pytest.approx(s, rel=tolerance * 2)


def test_sampler_callback_sees_every_step_and_can_cancel():
    seen = []
    sigmas = get_sigmas_karras(5, 0.01, 10.0)
    get_sampler("heun")(lambda x, s: x * 0, np.ones(3), sigmas, callback=lambda i, n, x, x0: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(5)]

    class Stop(Exception):
        pass

    def stop_at_two(i, n, x, x0):
        if i == 2:
            raise Stop

    calls = []
    with pytest.raises(Stop):
        get_sampler("euler")(lambda x, s: calls.append(s) or x * 0, np.ones(3), sigmas, callback=stop_at_two)
    assert len(calls) == 3


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="unknown sampler 'ddim'; choose one of euler, heun, dpmpp_2m"):
        get_sampler("ddim")


def test_guidance_at_scale_one_is_the_conditional_prediction():
    rng = np.random.default_rng(0)
    p = {k: rng.standard_normal((1, 4, 9)) for k in ("none", "context", "full")}
    np.testing.assert_array_equal(guided(p, cfg_context=1, cfg_style=1), p["full"])
    unscaled = guided(p, cfg_context=2.0, cfg_style=0.5, rescale=0.0)
    expected = p["none"] + 2.0 * (p["context"] - p["none"]) + 0.5 * (p["full"] - p["context"])
    np.testing.assert_allclose(unscaled, expected)
    rescaled = guided(p, cfg_context=5.0, cfg_style=5.0, rescale=1.0)
    assert rescaled.std() == pytest.approx(p["full"].std(), rel=1e-6)
