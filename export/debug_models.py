"""Models with random weights, written through the model contract, for tests and benchmarks (no training needed).

Timing does not depend on the weights, so the benchmark uses these when the shipped files are missing;
the tests use the ``tiny`` configs so every check runs on a CPU in seconds.
"""

from __future__ import annotations

from pathlib import Path


def write_debug_models(directory: str | Path, config: str = "tiny", *, seed: int = 0,
                       autoencoder_config: str | None = None, style_space: str | None = None,
                       trained_on: str | None = None) -> tuple[Path, Path]:
    """Write a random autoencoder and denoiser of the named configs; returns their two paths.

    Weights are drawn from a generator seeded with ``seed`` (the same files for the same seed). The
    denoiser's zero-initialised layers (output and residual convolutions) get small random weights,
    so its output depends on every input, as a trained one's does. Weights are stored as
    float32, so an export compares against exactly what was saved. ``style_space`` records the style
    space the denoiser claims (default: its config's, latent statistics). The denoiser records the
    autoencoder it was trained on as a trained one does: this one's version, or ``trained_on``.
    """
    import dataclasses

    import torch

    from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder, save_autoencoder
    from backline.models.diffusion import CONFIGS as DN_CONFIGS, EDMPrecond, save_denoiser

    generator = torch.Generator().manual_seed(seed)
    ae_config = AE_CONFIGS[autoencoder_config or config]
    dn_config = dataclasses.replace(DN_CONFIGS[config], latent_channels=ae_config.latent_channels,
                                    sample_rate=ae_config.sample_rate, latent_rate_hz=ae_config.latent_rate_hz)
    if style_space is not None:
        dn_config = dataclasses.replace(dn_config, style_space=style_space)
    autoencoder = Autoencoder(ae_config).eval()
    denoiser = EDMPrecond(dn_config).eval()
    with torch.no_grad():
        for module in (autoencoder, denoiser):
            for parameter in module.parameters():
                # redraw from our generator (no global seed): zeros get a small spread, constants
                # (norm gains, layer scales) stay, the rest keep their initial spread
                if not parameter.any():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
                elif parameter.numel() > 1 and float(parameter.std()) > 0:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * float(parameter.std()))
    directory = Path(directory)
    ae_version = f"debug-{ae_config.name}-{seed}"
    ae_path = save_autoencoder(directory / f"autoencoder_{ae_config.name}.safetensors", autoencoder,
                               version=ae_version, dtype=torch.float32)
    dn_path = save_denoiser(directory / f"denoiser_{dn_config.name}.safetensors", denoiser,
                            version=f"debug-{dn_config.name}-{seed}", dtype=torch.float32,
                            extra={"autoencoder": {"version": trained_on or ae_version}})
    return ae_path, dn_path
