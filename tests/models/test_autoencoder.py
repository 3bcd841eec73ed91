"""The autoencoder's contract: shapes and exact lengths, determinism, weights round trip, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from backline.engine.audio import AudioError
from backline.models.autoencoder import (
    CONFIGS,
    Autoencoder,
    AutoencoderConfig,
    decode_audio,
    encode_audio,
    load_autoencoder,
    reconstruct,
    resolve_config,
    save_autoencoder,
)
from backline.models.contract import ModelFileError, load_model, save_model

SAMPLE_RATE = 44_100


def tiny_model(seed: int = 0) -> Autoencoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Autoencoder(CONFIGS["tiny"]).eval()


def noise(frames: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(frames)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> Autoencoder:
    return tiny_model()


def test_default_config_meets_the_latent_targets():
    config = CONFIGS["default"]
    assert config.sample_rate == 44_100
    assert config.latent_rate_hz <= 25
    assert config.compression_ratio >= 32
    assert config.to_dict()["latent_rate_hz"] == pytest.approx(44_100 / 2048)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_registered_config_builds_and_round_trips_length(name):
    model = Autoencoder(CONFIGS[name]).eval()
    hop = model.config.hop_length
    audio = noise(2 * hop + 5)
    assert reconstruct(model, audio, SAMPLE_RATE).shape == audio.shape


@pytest.mark.parametrize("offset", ["1", "hop-1", "hop", "hop+1", "3*hop+7"])
def test_output_length_equals_input_length(model, offset):
    hop = model.config.hop_length
    frames = eval(offset, {"hop": hop})
    audio = noise(frames)
    latents = encode_audio(model, audio, SAMPLE_RATE)
    assert latents.shape == (1, model.config.latent_channels, math.ceil(frames / hop))
    assert decode_audio(model, latents).shape == (latents.shape[-1] * hop,)
    out = reconstruct(model, audio, SAMPLE_RATE)
    assert out.shape == (frames,)
    assert out.dtype == np.float32


def test_batched_tensor_contract(model):
    hop = model.config.hop_length
    with torch.inference_mode():
        latents = model.encode(torch.zeros(3, 5 * hop - 1))
        assert latents.shape == (3, model.config.latent_channels, 5)
        assert model.decode(latents).shape == (3, 5 * hop)
        assert model(torch.zeros(3, 5 * hop - 1)).shape == (3, 5 * hop - 1)


def test_latent_rate_is_one_frame_per_hop(model):
    seconds = 2.0
    latents = encode_audio(model, noise(int(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    assert latents.shape[-1] == math.ceil(seconds * model.config.latent_rate_hz)


def test_encode_is_deterministic_and_batch_independent(model):
    audio = noise(4 * model.config.hop_length)
    first = encode_audio(model, audio, SAMPLE_RATE)
    second = encode_audio(model, audio, SAMPLE_RATE)
    assert torch.equal(first, second)
    with torch.inference_mode():
        batched = model.encode(torch.stack([torch.from_numpy(audio), torch.zeros(len(audio))]))
    torch.testing.assert_close(batched[:1], first, atol=1e-5, rtol=1e-4)


def test_stft_and_inverse_stft_are_exact_inverses(model):
    audio = torch.from_numpy(noise(6 * model.config.hop_length))[None]
    restored = model._istft(model._stft(audio))
    torch.testing.assert_close(restored, audio, atol=1e-5, rtol=0)


@pytest.mark.parametrize("deviation_rad", [0.0, 0.3, -0.5])
def test_decoder_integrates_the_phase_advance_into_a_steady_partial(deviation_rad):
    """phase="advance": one bin with a constant predicted advance decodes to one sinusoid at that sub-bin frequency."""
    torch.manual_seed(0)
    model = Autoencoder(CONFIGS["tiny-advance"]).eval()
    c = model.config
    bins, k = c.n_fft // 2 + 1, 3
    with torch.no_grad():
        model.dec_head.weight.zero_()
        model.dec_head.bias.fill_(-30.0)  # log magnitude: silence everywhere ...
        model.dec_head.bias[k] = 0.0  # ... except bin k
        model.dec_head.bias[bins:] = deviation_rad  # the advance's deviation from the bin's nominal one
        audio = model.decode_raw(torch.zeros(1, c.latent_channels, 64))[0].numpy()
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum) * c.sample_rate / len(audio)
    expected_hz = (k / c.n_fft + deviation_rad / (2 * np.pi * c.stft_hop_length)) * c.sample_rate
    assert abs(peak_hz - expected_hz) <= c.sample_rate / len(audio)
    # A steady partial: the level is constant once past the first frame (no beating from incoherent frames).
    envelope = np.abs(audio[c.n_fft:-c.n_fft]).reshape(-1, c.hop_length).max(axis=1)
    assert envelope.std() / envelope.mean() < 0.02


def test_latent_scale_is_applied_inside_encode_and_decode():
    model = tiny_model()
    scaled = tiny_model()
    scaled.config = AutoencoderConfig.from_dict({**model.config.to_dict(), "latent_scale": 4.0})
    audio = torch.from_numpy(noise(3 * model.config.hop_length))[None]
    with torch.inference_mode():
        torch.testing.assert_close(scaled.encode(audio), 4.0 * model.encode(audio))
        torch.testing.assert_close(scaled.decode(scaled.encode(audio)), model.decode(model.encode(audio)))


def test_save_and_load_round_trip_keeps_config_and_weights(tmp_path):
    model = tiny_model(seed=3)
    model.config = AutoencoderConfig.from_dict({**model.config.to_dict(), "latent_scale": 0.5})
    path = save_autoencoder(tmp_path / "ae.safetensors", model, version="test-1")
    loaded, metadata = load_autoencoder(path)
    assert loaded.config == model.config
    assert metadata["backline_kind"] == "autoencoder"
    assert metadata["backline_version"] == "test-1"
    assert metadata["sample_rate"] == 44_100
    assert metadata["latent_channels"] == 8
    assert metadata["latent_scale"] == 0.5
    assert metadata["latent_rate_hz"] == pytest.approx(44_100 / 256)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor.half().float(), atol=0, rtol=0)
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=1e-3, rtol=1e-3)
    audio = noise(3 * model.config.hop_length)
    np.testing.assert_allclose(reconstruct(loaded, audio, SAMPLE_RATE), reconstruct(model, audio, SAMPLE_RATE),
                               atol=2e-2)


def test_contract_stores_fp16_and_json_metadata(tmp_path):
    state = {"weight": torch.randn(3, 4), "count": torch.tensor([7], dtype=torch.int64)}
    config = {"sample_rate": 44_100, "latent_scale": 1.5, "name": "x"}
    path = save_model(tmp_path / "m.safetensors", state, config, kind="thing", version="2")
    loaded, metadata = load_model(path, kind="thing")
    assert loaded["weight"].dtype == torch.float16
    assert loaded["count"].dtype == torch.int64 and loaded["count"].item() == 7
    assert metadata["config"] == config
    assert metadata["sample_rate"] == 44_100 and metadata["latent_scale"] == 1.5
    assert "latent_channels" not in metadata
    with pytest.raises(ModelFileError, match="holds a 'thing' model, expected 'autoencoder'"):
        load_model(path, kind="autoencoder")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")


def test_config_from_dict_refuses_unknown_keys_and_resolves_json(tmp_path):
    with pytest.raises(ValueError, match="unknown autoencoder config keys: \\['colour'\\]"):
        AutoencoderConfig.from_dict({"colour": "red"})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(CONFIGS["tiny"].to_dict()))
    assert resolve_config(str(path)) == CONFIGS["tiny"]
    assert resolve_config("tiny") is CONFIGS["tiny"]
    with pytest.raises(ValueError, match="unknown autoencoder config 'huge'"):
        resolve_config("huge")


def test_nan_input_is_refused(model):
    audio = noise(1000)
    audio[10] = np.nan
    with pytest.raises(AudioError, match="autoencoder input: contains NaN or infinite samples"):
        reconstruct(model, audio, SAMPLE_RATE)


def test_empty_input_is_refused(model):
    with pytest.raises(AudioError, match="autoencoder input: the audio is empty \\(0 frames\\)"):
        encode_audio(model, np.zeros(0, dtype=np.float32), SAMPLE_RATE)


def test_wrong_sample_rate_is_refused(model):
    with pytest.raises(AudioError, match="the model takes 44100 Hz audio, got 48000 Hz; resample it first"):
        reconstruct(model, noise(1000), 48_000)


def test_stereo_input_is_refused(model):
    with pytest.raises(AudioError, match="the model takes mono audio, got 2 channels"):
        reconstruct(model, np.zeros((2, 1000), dtype=np.float32), SAMPLE_RATE)


def test_decode_refuses_latents_of_the_wrong_shape(model):
    with pytest.raises(ValueError, match="decode expects latents shaped \\(batch, 8, n\\)"):
        model.decode(torch.zeros(1, 5, 3))
