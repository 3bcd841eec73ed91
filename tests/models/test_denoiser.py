import numpy as np
import pytest
import torch

from backline.models.contract import ModelFileError
from backline.models.diffusion import CONFIGS, EDMPrecond, load_denoiser, resolve_config, save_denoiser


def inputs(config, batch=2, frames=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = config.latent_channels
    return dict(
        x=torch.randn(batch, c, frames, generator=g),
        sigma=torch.tensor([0.5, 20.0][:batch]),
        context=torch.randn(batch, c, frames, generator=g),
        context_mask=torch.ones(batch),
        style=torch.randn(batch, config.style_dim, generator=g),
        style_mask=torch.ones(batch),
        instrument=torch.tensor([0, 1][:batch]),
    )


def test_preconditioning_identities():
    config = CONFIGS["tiny"]
    model = EDMPrecond(config).eval()
    args = inputs(config)
    constant = 0.25
    model.net.forward = lambda *a, **k: torch.full_like(a[0], constant)
    out = model(**args)
    s = args["sigma"][:, None, None]
    c_skip = 1 / (s**2 + 1)
    c_out = s / (s**2 + 1).sqrt()
    torch.testing.assert_close(out, c_skip * args["x"] + c_out * constant)


@pytest.mark.parametrize("frames", [1, 2, 3, 16, 37])
def test_any_length_in_same_length_out(frames):
    model = EDMPrecond(CONFIGS["tiny"]).eval()
    args = inputs(model.config, frames=frames)
    assert model(**args).shape == args["x"].shape


def test_conditions_change_the_prediction_after_training_steps():
    torch.manual_seed(0)
    config = CONFIGS["tiny"]
    model = EDMPrecond(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(8, config.latent_channels, 16, generator=g)
    target = context.flip(1)  # a learnable function of the context
    style = torch.randn(8, config.style_dim, generator=g)
    instrument = torch.zeros(8, dtype=torch.long)

    def held_out_loss():  # fixed noise draws, averaged: the same measurement before and after
        return np.mean([model.loss(target, context, style, instrument, generator=torch.Generator().manual_seed(100 + k)).item()
                        for k in range(4)])

    first = held_out_loss()
    for step in range(80):
        loss = model.loss(target, context, style, instrument, generator=torch.Generator().manual_seed(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert held_out_loss() < 0.85 * first
    model.eval()
    args = inputs(config, frames=16)
    with_context = model(**args)
    without = model(**{**args, "context_mask": torch.zeros(2)})
    assert not torch.allclose(with_context, without)


def test_save_load_round_trip_keeps_config_and_weights(tmp_path):
    model = EDMPrecond(CONFIGS["tiny"]).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    path = save_denoiser(tmp_path / "d.safetensors", model, version="test-1", extra={"steps": 3})
    loaded, meta = load_denoiser(path)
    assert loaded.config == model.config and meta["backline_version"] == "test-1"
    assert meta["config"]["provenance"] == {"steps": 3} and meta["latent_channels"] == 8
    args = inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**args), model(**args), atol=2e-2, rtol=2e-2)
    with pytest.raises(ModelFileError, match="expected 'denoiser'"):
        from backline.models.contract import save_model

        save_model(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {}, kind="autoencoder", version="x")
        load_denoiser(tmp_path / "other.safetensors")


def test_config_resolution():
    assert resolve_config("tiny", segment_frames=8).segment_frames == 8
    with pytest.raises(ValueError, match="neither a config name"):
        resolve_config("huge")
