"""Diffusion sampling in the EDM framework (Karras et al. 2022), as pure functions over NumPy arrays.

A sampler takes a ``denoise(x, sigma) -> x0_estimate`` callable, a starting array already scaled by
the first sigma, and a schedule of sigmas ending in 0, and returns the final sample. Progress and
cancellation go through ``callback(step_index, total_steps, x, x0)``; a callback raises to cancel.
Nothing here knows about models, backends or guidance: the engine composes those into ``denoise``.
NumPy keeps the runtime free of torch; a torch or onnxruntime denoiser is wrapped to take arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

Denoise = Callable[[np.ndarray, float], np.ndarray]
Callback = Callable[[int, int, np.ndarray, np.ndarray], None]


def get_sigmas_karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) eq. 5 noise levels, descending from sigma_max to sigma_min, plus a final 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = np.linspace(0, 1, steps) if steps > 1 else np.zeros(1)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return np.append(sigmas, 0.0).astype(np.float64)


# -- the solvers, each written once as linear updates: the NumPy samplers run them, and so does the exported
# step graph (a denoiser and its update compiled into one graph) --------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """One network evaluation of a solver and the update that follows it.

    The denoiser runs at ``(x, sigma)`` and estimates ``x0``; the solver's next point is
    ``a x + b x0 + c previous_x0 + e step_start`` with ``(a, b, c, e) = coefficients``, where
    ``previous_x0`` is the previous evaluation's estimate and ``step_start`` the point the current step
    started from. ``ends_step`` marks the last evaluation of a step (where progress is reported).
    """

    sigma: float
    coefficients: tuple[float, float, float, float]
    ends_step: bool = True


def _euler_evaluation(sigma: float, sigma_next: float) -> Evaluation:
    ratio = sigma_next / sigma  # x + (x - x0) / sigma * (sigma_next - sigma)
    return Evaluation(sigma, (ratio, 1.0 - ratio, 0.0, 0.0))


def _plan_euler(sigmas: np.ndarray) -> list[Evaluation]:
    """First-order probability-flow ODE solver (EDM Algorithm 1 without the correction)."""
    return [_euler_evaluation(float(sigmas[i]), float(sigmas[i + 1])) for i in range(len(sigmas) - 1)]


def _plan_heun(sigmas: np.ndarray) -> list[Evaluation]:
    """EDM Algorithm 1 (deterministic Heun, 2nd order); the last step to sigma 0 is an Euler step."""
    plan = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if sigma_next == 0:
            plan.append(_euler_evaluation(sigma, sigma_next))
            continue
        # x_s + (sigma_next - sigma) / 2 * ((x_s - x0_1) / sigma + (x_euler - x0_2) / sigma_next), evaluated at x_euler
        half = 0.5 * (sigma_next - sigma)
        plan.append(replace(_euler_evaluation(sigma, sigma_next), ends_step=False))
        plan.append(Evaluation(sigma_next, (half / sigma_next, -half / sigma_next, -half / sigma, 1.0 + half / sigma)))
    return plan


def _plan_dpmpp_2m(sigmas: np.ndarray) -> list[Evaluation]:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep, one network call per step (k-diffusion's form)."""
    plan = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if sigma_next == 0:
            plan.append(Evaluation(sigma, (0.0, 1.0, 0.0, 0.0)))
            continue
        h = np.log(sigma) - np.log(sigma_next)
        growth = -float(np.expm1(-h))
        if i == 0:
            plan.append(Evaluation(sigma, (sigma_next / sigma, growth, 0.0, 0.0)))
        else:
            half_inverse_r = 0.5 * h / (np.log(sigmas[i - 1]) - np.log(sigma))  # 1 / (2 r)
            plan.append(Evaluation(sigma, (sigma_next / sigma, growth * (1 + half_inverse_r), -growth * half_inverse_r, 0.0)))
    return plan


SOLVER_PLANS = {"euler": _plan_euler, "heun": _plan_heun, "dpmpp_2m": _plan_dpmpp_2m}


def solver_plan(name: str, sigmas: np.ndarray) -> list[Evaluation]:
    """The evaluations and linear updates that sampler ``name`` performs over ``sigmas``.

    Each sampler here updates linearly in the evaluation point, its estimate, the previous estimate and
    the step's start, with coefficients that depend on the schedule only; so a graph that runs the
    guided denoiser and that update runs every sampler, one call per network evaluation, and
    ``sample_plan`` with these gives what ``SAMPLERS[name]`` gives.
    """
    get_sampler(name)
    return SOLVER_PLANS[name](np.asarray(sigmas, np.float64))


def linear_update(coefficients, x, x0, previous_x0, step_start):
    """A solver's next point, ``a x + b x0 + c previous_x0 + e step_start``: NumPy arrays or torch tensors
    (the exported step graph calls it with tensors)."""
    a, b, c, e = coefficients[0], coefficients[1], coefficients[2], coefficients[3]
    return a * x + b * x0 + c * previous_x0 + e * step_start


def sample_plan(denoise: Denoise, x: np.ndarray, plan: list[Evaluation], *, callback: Callback | None = None) -> np.ndarray:
    """Run ``plan`` (from ``solver_plan``) with ``denoise``: the reference for a compiled step graph."""
    total = sum(e.ends_step for e in plan)
    previous_x0, step_start, step = np.zeros_like(x), x, 0
    for evaluation in plan:
        x0 = denoise(x, evaluation.sigma)
        x = linear_update(evaluation.coefficients, x, x0, previous_x0, step_start)
        previous_x0 = x0
        if evaluation.ends_step:
            step_start = x
            if callback:
                callback(step, total, x, x0)
            step += 1
    return x


def _sampler(name: str):
    def sample(denoise: Denoise, x: np.ndarray, sigmas: np.ndarray, *, callback: Callback | None = None) -> np.ndarray:
        return sample_plan(denoise, x, SOLVER_PLANS[name](np.asarray(sigmas, np.float64)), callback=callback)

    sample.__name__ = sample.__qualname__ = f"sample_{name}"
    sample.__doc__ = SOLVER_PLANS[name].__doc__
    return sample


# Pure samplers ``sample(denoise, x, sigmas, *, callback=None)``, each its solver's plan run by ``sample_plan``.
SAMPLERS = {name: _sampler(name) for name in SOLVER_PLANS}
sample_euler, sample_heun, sample_dpmpp_2m = SAMPLERS["euler"], SAMPLERS["heun"], SAMPLERS["dpmpp_2m"]


def get_sampler(name: str):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None


GUIDANCE_RESCALE = 0.7  # how far a guided prediction's spread is pulled back to the conditional one's


def guided(
    predictions: dict[str, np.ndarray], *, cfg_context: float, cfg_style: float, rescale: float = GUIDANCE_RESCALE,
    frame_scales: dict[str, float] | None = None,
) -> np.ndarray:
    """Combine denoised predictions with one guidance scale per condition (Diff-A-Riff's nesting).

    ``predictions`` holds ``none`` (no condition), ``context`` (context only) and ``full`` (context and
    style). D = D_none + s_c (D_context - D_none) + s_s (D_full - D_context): both scales 1 give
    D_full exactly. A conditioned denoiser's beat grid and harmony have their own scales (``frame_scales``,
    by name): each adds (s_k - 1) (D_full - D_without_k), ``without_<name>`` being the full prediction
    without that condition. Guidance in an unbounded latent space over-saturates at high scales, so the guided
    prediction's standard deviation is pulled back towards the conditional one's by ``rescale``
    (Lin et al. 2023, "Common diffusion noise schedules are flawed", eq. 15-16). A pass whose scale is 1
    may be left out (``context`` stands in for ``full``, and ``none`` for ``context``, as the formula allows).
    """
    full = predictions["full"]
    context = predictions.get("context", full)
    none = predictions.get("none", context)
    without = [(scale, predictions[f"without_{name}"]) for name, scale in (frame_scales or {}).items() if scale != 1]
    if cfg_context == 1 and cfg_style == 1 and not without:
        return full  # the formula's value, without its rounding
    if rescale > 0:
        return combine_guidance(none, context, full, cfg_context, cfg_style, rescale, spread=_spread, floor=np.maximum,
                                without=without)
    return guidance_estimate(none, context, full, cfg_context, cfg_style, without)


def _spread(v: np.ndarray) -> np.ndarray:
    """Standard deviation over all but the batch axis (population), kept as broadcastable axes."""
    return v.std(axis=tuple(range(1, v.ndim)), keepdims=True)


def guidance_estimate(none, context, full, cfg_context, cfg_style, without=()):
    """The guidance formula, written once for NumPy arrays and torch tensors (the engine, the exported step graph,
    the distillation's teacher): D_none + s_c (D_context - D_none) + s_s (D_full - D_context), plus
    (s_k - 1) (D_full - D_without_k) for each frame condition's ``(s_k, D_without_k)`` in ``without``."""
    estimate = none + cfg_context * (context - none) + cfg_style * (full - context)
    for scale, prediction in without:
        estimate = estimate + (scale - 1) * (full - prediction)
    return estimate


def combine_guidance(none, context, full, cfg_context, cfg_style, rescale, *, spread, floor, without=()):
    """``guidance_estimate`` with its spread pulled ``rescale`` of the way to D_full's. ``spread(v)``: the per-item
    standard deviation; ``floor(v, m)``: elementwise max with m."""
    estimate = guidance_estimate(none, context, full, cfg_context, cfg_style, without)
    ratio = spread(full) / floor(spread(estimate), 1e-8)
    return rescale * (estimate * ratio) + (1 - rescale) * estimate
