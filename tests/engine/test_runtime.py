import os
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch

from backline.engine.pipeline import GenerateRequest, generate, load_bundle
from backline.engine.runtime import OnnxBackend, RuntimeModelError, choose_providers
from backline.models.dsp import istft, stft
from backline.export.debug_models import write_debug_models
from backline.export.onnx import export_models
from backline.models.autoencoder import CONFIGS, Autoencoder, AutoencoderConfig


# Whole generations agree to about 1e-3 of the peak: the encoder's log-magnitude features amplify
# float32 rounding in near-silent STFT bins of tonal audio (torch float32 is as far from float64
# there, see test_onnx_encoder_is_as_close_to_exact_as_torch_float32); the graphs alone agree to 1e-6.
PARITY = 5e-3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    ae_path, dn_path = write_debug_models(directory, "tiny", seed=5)
    export_models(ae_path, dn_path, directory / "onnx", seed=0, threads=1)
    return ae_path, dn_path, directory / "onnx"


def song(sample_rate=48000, seconds=0.7, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + 0.5 * np.sign(np.sin(2 * np.pi * 2 * t)))
    return np.stack([mono + 0.01 * rng.standard_normal(len(t)) for _ in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("config, chunk_frames", [
    (CONFIGS["tiny"], 256), (CONFIGS["default"], 256), (CONFIGS["tiny"], 7),
    (AutoencoderConfig(name="odd", n_fft=320, stft_hop_length=128, hop_length=256), 5),  # n_fft not a multiple of the hop
])
def test_numpy_stft_pair_matches_the_autoencoders(config, chunk_frames):
    model = Autoencoder(config)
    c = model.config
    audio = np.random.default_rng(0).standard_normal((2, 23 * c.hop_length)).astype(np.float32)
    want = model._stft(torch.from_numpy(audio)).numpy()
    real, imag = stft(audio, c.n_fft, c.stft_hop_length, chunk_frames=chunk_frames)
    np.testing.assert_allclose(real + 1j * imag, want, atol=2e-4 * np.abs(want).max())
    back = istft(real, imag, c.n_fft, c.stft_hop_length, chunk_frames=chunk_frames)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, model._istft(torch.from_numpy(want)).numpy(), atol=1e-5)
    np.testing.assert_allclose(back, audio, atol=1e-5)  # a perfect-reconstruction pair


def test_onnx_encoder_is_as_close_to_exact_as_torch_float32(files):
    ae_path, _, onnx_dir = files
    from backline.models.autoencoder import load_autoencoder

    model, _ = load_autoencoder(ae_path)
    tone = (0.3 * np.sin(2 * np.pi * 110 * np.arange(33_536) / 44100))[None].astype(np.float32)
    with torch.inference_mode():
        torch32 = model.encode(torch.from_numpy(tone)).numpy()
        exact = model.double().encode(torch.from_numpy(tone).double()).numpy()
    got = OnnxBackend(onnx_dir, intra_op_threads=1).encode(tone)
    error = lambda a: np.abs(a - exact).max() / np.abs(exact).max()
    assert error(got) <= max(2 * error(torch32), 1e-4)


@pytest.mark.parametrize("changes", [{}, {"style_audio": song(44100, 0.5, 1, seed=3), "style_sample_rate": 44100,
                                         "instrument": "drums", "sampler": "heun"}, {"cfg_context": 1.0}])
def test_onnx_and_torch_backends_generate_the_same_stem(files, changes):
    ae_path, dn_path, onnx_dir = files
    request = GenerateRequest(context=song(), sample_rate=48000, steps=5, seed=7, **changes)
    via_torch = generate(load_bundle(ae_path, dn_path, backend="torch"), request)
    via_onnx = generate(load_bundle(backend="onnx", onnx_dir=onnx_dir, intra_op_threads=1), request)
    assert (via_torch.info["backend"], via_onnx.info["backend"]) == ("torch", "onnx")
    assert (via_torch.info["runtime"], via_onnx.info["runtime"]) == ("torch cpu", "onnxruntime CPUExecutionProvider")
    assert via_onnx.info["models"] == via_torch.info["models"] == {"autoencoder": "debug-tiny-5", "denoiser": "debug-tiny-5"}
    assert via_onnx.audio.shape == via_torch.audio.shape == request.context.shape
    assert np.abs(via_torch.audio).max() > 0.01
    np.testing.assert_allclose(via_onnx.audio, via_torch.audio, atol=PARITY * np.abs(via_torch.audio).max())


def test_onnx_runtime_needs_no_torch(files, tmp_path):
    ae_path, dn_path, onnx_dir = files
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from backline.engine.pipeline import GenerateRequest, generate, load_bundle
        bundle = load_bundle(onnx_dir={str(onnx_dir)!r}, intra_op_threads=1)  # backend "auto" picks onnx
        t = np.arange(33_600) / 48000
        context = np.stack([0.3 * np.sin(2 * np.pi * 110 * t)] * 2).astype(np.float32)
        result = generate(bundle, GenerateRequest(context=context, sample_rate=48000, steps=4, seed=3))
        np.save({str(tmp_path / "stem.npy")!r}, result.audio)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors") and sys.modules[m] is not None)
        print(result.info["backend"], loaded)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "onnx []"
    t = np.arange(33_600) / 48000
    context = np.stack([0.3 * np.sin(2 * np.pi * 110 * t)] * 2).astype(np.float32)
    want = generate(load_bundle(ae_path, dn_path, backend="torch"),
                    GenerateRequest(context=context, sample_rate=48000, steps=4, seed=3)).audio
    np.testing.assert_allclose(np.load(tmp_path / "stem.npy"), want, atol=PARITY * np.abs(want).max())


def test_backend_choice(files, monkeypatch, tmp_path):
    ae_path, dn_path, onnx_dir = files
    monkeypatch.setenv("BACKLINE_ONNX_DIR", str(onnx_dir))
    assert load_bundle(intra_op_threads=1).backend.name == "onnx"
    assert load_bundle(ae_path, dn_path).backend.name == "torch"  # explicit weights files mean torch
    monkeypatch.setenv("BACKLINE_ONNX_DIR", str(tmp_path))
    with pytest.raises(RuntimeModelError, match="missing ONNX model files"):
        load_bundle(backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of auto, onnx, torch, got 'tensorrt'"):
        load_bundle(backend="tensorrt")


def test_a_denoiser_of_another_latent_space_is_refused_by_both_backends(files, tmp_path):
    ae_path, _, _ = files  # the debug autoencoder of seed 5, which the fixture's denoiser records
    other_dn = write_debug_models(tmp_path, "tiny", seed=5, trained_on="an-older-autoencoder")[1]
    with pytest.raises(RuntimeModelError, match="latents of autoencoder an-older-autoencoder, but the autoencoder "
                                                "loaded beside it makes those of debug-tiny-5"):
        load_bundle(ae_path, other_dn, backend="torch")
    export_models(ae_path, other_dn, tmp_path / "onnx", seed=0, threads=1)
    with pytest.raises(RuntimeModelError, match="an-older-autoencoder"):
        OnnxBackend(tmp_path / "onnx", intra_op_threads=1)


def test_providers_default_to_cuda_then_cpu_and_can_be_overridden(files):
    available = ort.get_available_providers()
    assert choose_providers() == [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    backend = OnnxBackend(files[2], providers=["CPUExecutionProvider"], intra_op_threads=1)
    assert backend.sessions["denoiser"].get_providers() == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        with pytest.raises(RuntimeModelError, match="not CUDAExecutionProvider"):
            OnnxBackend(files[2], providers=["CUDAExecutionProvider"])


@pytest.fixture(scope="module")
def note_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("note-models")
    ae_path, dn_path = write_debug_models(directory, "tiny", seed=3, autoencoder_config="tiny-notes")
    export_models(ae_path, dn_path, directory / "onnx", seed=0, threads=1)
    return directory / "onnx"


@pytest.mark.parametrize("instrument", ["drums", "bass"])  # bass: the pitch-locked decode, its phase across windows
def test_the_autoencoder_runs_in_windows_with_seamless_joins(note_files, instrument):
    """A long region's encode, decode and notes in windows of 6 latent frames equal one run over all of it."""
    whole = OnnxBackend(note_files, intra_op_threads=1, chunk_frames=10_000)
    windows = OnnxBackend(note_files, intra_op_threads=1, chunk_frames=6)
    hop = whole.contract.hop_length
    audio = song(44100, 41 * hop / 44100, channels=2)
    latents = whole.encode(audio)
    assert latents.shape[-1] == 41
    np.testing.assert_allclose(windows.encode(audio), latents, atol=1e-5 * np.abs(latents).max())
    np.testing.assert_array_equal(windows.notes(latents).argmax(1), whole.notes(latents).argmax(1))
    decoded = whole.decode(latents, instrument)
    assert decoded.shape == (2, 41 * hop)
    np.testing.assert_allclose(windows.decode(latents, instrument), decoded, atol=1e-5 * np.abs(decoded).max())
