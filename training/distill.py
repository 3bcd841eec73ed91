"""Few-step generation by consistency distillation of a guided teacher (Song et al. 2023, "Consistency
Models", CD in the EDM parameterisation, with the improvements of Song & Dhariwal 2023, "Improved techniques
for training consistency models": a pseudo-Huber distance, weights 1 / (sigma_hi - sigma_lo), and by default no EMA
target network).

A training step takes the crop of a latent pair, two adjacent noise levels sigma_hi > sigma_lo of a Karras grid of
``grid_points`` levels, noises the crop to sigma_hi and runs one step of the *guided* teacher down to sigma_lo
(Heun, or Euler): the teacher's estimates use the engine's guidance formula at the scales its file records
(``engine.sampling.combine_guidance``, with the beat grid's and harmony's own scales for a conditioned
denoiser), with the training's condition dropout. The student's estimate at
(x_hi, sigma_hi) is pulled towards its own estimate at (x_lo, sigma_lo) (or its EMA's: ``--distill-target ema``),
the latter without gradient. So the
student learns, per noise level, where the guided teacher's ODE ends, and needs no guidance passes: it runs
at guidance 1 (one network evaluation per step) with a few Euler steps.

The student has the teacher's config and starts from its weights; ``train`` in training/diffusion.py runs it
(``TrainOptions.distill_from``), so torchrun, checkpoints and logs are the denoiser's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backline.engine.runtime import FRAME_GUIDANCE, guidance_for, guidance_of
from backline.engine.sampling import GUIDANCE_RESCALE, combine_guidance
from backline.models.diffusion import INSTRUMENTS, EDMPrecond, load_denoiser

TEACHER_SOLVERS = ("heun", "euler")
HUBER_C = 0.03  # the pseudo-Huber distance's scale, per latent value (sigma_data 1)


@dataclass
class Teacher:
    """A frozen denoiser and its default guidance scales per instrument (index into ``INSTRUMENTS``), by
    DEFAULT_GUIDANCE's names: context, style, and the beat grid's and harmony's of a conditioned denoiser."""

    model: EDMPrecond
    scales: dict[str, torch.Tensor]  # name -> (instruments,)

    @classmethod
    def load(cls, path, device: torch.device = torch.device("cpu")) -> "Teacher":
        model, metadata = load_denoiser(path)
        model.requires_grad_(False)
        guidance = guidance_of(metadata["config"])
        per_instrument = [guidance_for(guidance, name) for name in INSTRUMENTS]
        return cls(model.to(device), {key: torch.tensor([s[key] for s in per_instrument], device=device)
                                      for key in per_instrument[0]})

    @torch.no_grad()
    def denoise(self, x, sigma, conditions: dict) -> torch.Tensor:
        """The guided estimate as the engine makes it: full, context-only and unconditioned passes, and the full
        one without each frame condition whose scale is not 1 (``engine.sampling.guided``)."""
        instrument = conditions["instrument"]
        context_mask, style_mask = conditions["context_mask"], conditions["style_mask"]
        frame = {k: v for k, v in conditions.items() if k.startswith(("grid", "harmony"))}
        per_row = lambda key: self.scales[key][instrument][:, None, None]
        without = [name for name, key in FRAME_GUIDANCE.items()
                   if f"{name}_mask" in frame and bool((self.scales[key] != 1).any())]
        zeros = torch.zeros_like(context_mask)
        masks = {"context": [context_mask, context_mask, zeros] + [context_mask] * len(without),
                 "style": [style_mask, zeros, zeros] + [style_mask] * len(without)}
        for name in frame:
            if name.endswith("_mask"):
                condition = name.removesuffix("_mask")
                masks[name] = [frame[name], frame[name], zeros] + [zeros if other == condition else frame[name]
                                                                   for other in without]
        passes = 3 + len(without)
        rows = x.shape[0]
        repeat = lambda v: v.repeat(passes, *([1] * (v.ndim - 1)))
        stacked = self.model(repeat(x), repeat(sigma), repeat(conditions["context"]), torch.cat(masks["context"]),
                             repeat(conditions["style"]), torch.cat(masks["style"]), repeat(instrument),
                             **{k: torch.cat(masks[k]) if k.endswith("_mask") else repeat(v) for k, v in frame.items()})
        full, context, none = stacked[:rows], stacked[rows:2 * rows], stacked[2 * rows:3 * rows]
        return combine_guidance(none, context, full, per_row("cfg_context"), per_row("cfg_style"), GUIDANCE_RESCALE,
                                spread=_spread, floor=torch.clamp_min,
                                without=[(per_row(FRAME_GUIDANCE[name]), stacked[(3 + k) * rows:(4 + k) * rows])
                                         for k, name in enumerate(without)])

    def step(self, x_hi, sigma_hi, sigma_lo, conditions: dict, solver: str = "heun") -> torch.Tensor:
        """One step of the probability-flow ODE from sigma_hi down to sigma_lo (per row)."""
        s_hi, s_lo = sigma_hi[:, None, None], sigma_lo[:, None, None]
        slope = (x_hi - self.denoise(x_hi, sigma_hi, conditions)) / s_hi
        x_euler = x_hi + (s_lo - s_hi) * slope
        if solver == "euler":
            return x_euler
        slope_lo = (x_euler - self.denoise(x_euler, sigma_lo, conditions)) / s_lo
        return x_hi + (s_lo - s_hi) * 0.5 * (slope + slope_lo)


def _spread(v: torch.Tensor) -> torch.Tensor:
    return v.std(dim=tuple(range(1, v.ndim)), keepdim=True, unbiased=False)


def karras_grid(points: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``points`` noise levels from sigma_max down to sigma_min (Karras et al. 2022, eq. 5)."""
    ramp = torch.linspace(0, 1, points, dtype=torch.float64)
    return ((sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho).float()


def consistency_loss(student: EDMPrecond, teacher: Teacher, batch: dict, draws: dict, *, grid_points: int = 40,
                     solver: str = "heun", target_network: EDMPrecond | None = None) -> torch.Tensor:
    """The distillation loss of one batch. ``draws``: ``EDMPrecond.loss_draws``'s (its normal sigma draw picks the
    grid step, its noise noises the crop, its uniforms drop conditions at the student's config's rates).
    ``target_network``: the network whose estimate at (x_lo, sigma_lo) the student is pulled towards (Song et al. 2023's
    EMA target network); None: the student itself (the improved techniques' choice)."""
    config = student.config
    grid = karras_grid(grid_points, config.sigma_min, config.sigma_max).to(batch["target"].device)
    step = (torch.special.ndtr(draws["sigma_normal"]) * (grid_points - 1)).long().clamp_(0, grid_points - 2)
    sigma_hi, sigma_lo = grid[step], grid[step + 1]
    target = batch["target"]
    x_hi = target + draws["noise_normal"] * sigma_hi[:, None, None]
    conditions = {"context": batch["context"], "style": batch["style"], "instrument": batch["instrument"]}
    conditions |= student.dropped_conditions(draws, **{k: batch.get(k) for k in ("grid", "grid_mask", "harmony",
                                                                               "harmony_mask")})
    x_lo = teacher.step(x_hi, sigma_hi, sigma_lo, conditions, solver)
    student_conditions = (conditions["context"], conditions["context_mask"], conditions["style"],
                          conditions["style_mask"], conditions["instrument"])
    frame = {k: v for k, v in conditions.items() if k.startswith(("grid", "harmony"))}
    estimate = student(x_hi, sigma_hi, *student_conditions, **frame)
    with torch.no_grad():
        aim = (student if target_network is None else target_network)(x_lo, sigma_lo, *student_conditions, **frame)
    distance = ((estimate - aim) ** 2).mean(dim=tuple(range(1, estimate.ndim)))
    huber = (distance + HUBER_C ** 2).sqrt() - HUBER_C
    return (huber / (sigma_hi - sigma_lo)).mean()
