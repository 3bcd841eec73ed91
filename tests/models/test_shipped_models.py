"""The models shipped in models/: their contract, determinism and sanity on the bundled example.

Unlike the rest of the suite (tiny models built in code), these load the real weights files.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from backline.engine.audio import read_audio
from backline.models import autoencoder as ae
from backline.models import diffusion

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ultima_context.flac"


def log_spectrum(audio, n_fft=2048, hop=512):
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    return np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-5)


def log_spectral_distance(a, b):
    return float(np.mean(np.abs(log_spectrum(a) - log_spectrum(b))))


def lowpass(audio, sample_rate, cutoff_hz):
    spectrum = np.fft.rfft(audio)
    spectrum[np.fft.rfftfreq(len(audio), 1 / sample_rate) > cutoff_hz] = 0
    return np.fft.irfft(spectrum, len(audio)).astype(np.float32)


@pytest.fixture(scope="module")
def example():
    audio, sample_rate = read_audio(EXAMPLE)
    return audio[0], sample_rate


@pytest.fixture(scope="module")
def shipped_autoencoder():
    return ae.load_autoencoder(ae.DEFAULT_MODEL_PATH)


def test_autoencoder_file_carries_its_contract(shipped_autoencoder):
    model, meta = shipped_autoencoder
    assert ae.DEFAULT_MODEL_PATH.stat().st_size < 25 * 2**20
    assert meta["backline_kind"] == "autoencoder" and meta["backline_version"]
    assert meta["sample_rate"] == 44100 == model.config.sample_rate
    assert meta["latent_rate_hz"] <= 25 and model.config.compression_ratio >= 32
    assert meta["latent_scale"] == model.config.latent_scale != 1.0
    state, _ = __import__("backline.models.contract", fromlist=["load_model"]).load_model(ae.DEFAULT_MODEL_PATH)
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float16}


def test_autoencoder_is_deterministic_with_unit_scale_latents(shipped_autoencoder, example):
    model, _ = shipped_autoencoder
    audio, sample_rate = example
    first = ae.encode_audio(model, audio, sample_rate)
    second = ae.encode_audio(model, audio, sample_rate)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.shape == (1, 32, -(-len(audio) // 2048))
    assert 0.5 < float(first.std()) < 2.0


def test_autoencoder_reconstructs_the_example_far_better_than_a_4khz_lowpass(shipped_autoencoder, example):
    model, _ = shipped_autoencoder
    audio, sample_rate = example
    out = ae.reconstruct(model, audio, sample_rate)
    assert out.shape == audio.shape and np.isfinite(out).all()
    ours = log_spectral_distance(audio, out)
    reference = log_spectral_distance(audio, lowpass(audio, sample_rate, 4000))
    assert ours < 1.0 and ours < 0.5 * reference, (ours, reference)


def test_shipped_denoiser_generates_a_deterministic_sane_stem(example):
    from backline.engine.pipeline import GenerateRequest, generate, load_bundle

    audio, sample_rate = example
    context = audio[: 4 * sample_rate]
    bundle = load_bundle()
    meta = diffusion.load_denoiser()[1]
    assert meta["backline_kind"] == "denoiser" and meta["latent_channels"] == 32
    assert bundle.contract.guidance == {"cfg_context": 4.5, "cfg_style": 16.0, "cfg_tempo": 1.0,  # measured: its card
                                        "cfg_chords": 1.0, "instruments": {
                                            "bass": {"cfg_context": 1.5, "cfg_tempo": 3.0, "cfg_chords": 2.0},
                                            "drums": {"cfg_context": 4.5}}}
    assert bundle.contract.sampling == {"steps": 30, "sampler": "dpmpp_2m", "candidates": 1}  # one bass take
    assert bundle.contract.frame_inputs == (("grid", 4), ("harmony", 12))  # told the beat and the chords
    request = GenerateRequest(context=context, sample_rate=sample_rate, instrument="bass", steps=6, seed=1)
    first = generate(bundle, request).audio
    second = generate(bundle, request).audio
    np.testing.assert_array_equal(first, second)
    stem = first[0]
    assert stem.shape == context.shape and np.isfinite(stem).all()
    assert np.sqrt(np.mean(stem**2)) > 1e-3  # not silent
    assert np.abs(stem).max() <= 0.8913  # no clipping
    assert abs(np.corrcoef(stem, context)[0, 1]) < 0.9  # not a copy of the context


def test_shipped_prompt_prior_maps_prompts_into_the_denoisers_style_space():
    from backline.engine.style import DEFAULT_PRIOR_PATH, PromptEncoder, PromptPrior

    prior = PromptPrior.load(DEFAULT_PRIOR_PATH)
    denoiser_config = diffusion.load_denoiser()[0].config
    assert prior.audio_space == denoiser_config.style_space == "latent-statistics"
    assert prior.style_dim == denoiser_config.style_dim
    encode = PromptEncoder(style_space=denoiser_config.style_space)
    slap, funky, orchestra = (encode(p) for p in ("slap bass", "funky slap bass", "orchestral percussion"))
    np.testing.assert_array_equal(slap, encode("slap bass"))  # deterministic
    assert slap.shape == (prior.style_dim,) and np.isfinite(slap).all()
    assert np.linalg.norm(slap - funky) < np.linalg.norm(slap - orchestra)
    # the embeddings sit where audio embeddings sit: within a few standard deviations of their mean
    assert np.all(np.abs((slap - prior.mean) / prior.std) < 6)


def test_shipped_onnx_graphs_are_the_shipped_weights_and_agree_with_torch(example):
    """models/onnx is what `backline export` wrote from the shipped safetensors: same versions, same stem."""
    from backline.engine.pipeline import GenerateRequest, generate, load_bundle
    from backline.engine.runtime import ONNX_FILES, default_onnx_dir

    assert all((default_onnx_dir() / name).is_file() for name in ONNX_FILES.values()), "run backline export"
    audio, sample_rate = example
    onnx_bundle, torch_bundle = load_bundle(backend="onnx", intra_op_threads=1), load_bundle(backend="torch")
    assert onnx_bundle.versions == torch_bundle.versions
    assert onnx_bundle.contract.latent_scale == pytest.approx(torch_bundle.contract.latent_scale)
    request = GenerateRequest(context=audio[: 3 * sample_rate], sample_rate=sample_rate, steps=4, seed=2)
    a, b = generate(onnx_bundle, request).audio, generate(torch_bundle, request).audio
    assert np.abs(a - b).max() <= 1e-3 * max(np.abs(b).max(), 1e-3)


def test_shipped_reference_embeddings_agree_across_backends_and_tell_stems_apart(example):
    """Both backends embed a style reference in the denoiser's space alike; a stem sits nearer another
    stretch of itself than a very different sound does."""
    from backline.engine.pipeline import load_bundle

    audio, sample_rate = example
    onnx_bundle, torch_bundle = load_bundle(backend="onnx", intra_op_threads=1), load_bundle(backend="torch")
    first, second = audio[None, : 4 * sample_rate], audio[None, 4 * sample_rate: 8 * sample_rate]
    a = onnx_bundle.reference_embedding(first, sample_rate, "reference", 60.0)
    b = torch_bundle.reference_embedding(first, sample_rate, "reference", 60.0)
    assert a.shape == (torch_bundle.contract.style_dim,)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    later = torch_bundle.reference_embedding(second, sample_rate, "reference", 60.0)
    t = np.arange(4 * sample_rate) / sample_rate
    tone = (0.3 * np.sign(np.sin(2 * np.pi * 1760 * t)))[None].astype(np.float32)  # a shrill square wave
    other = torch_bundle.reference_embedding(tone, sample_rate, "reference", 60.0)
    assert np.linalg.norm(b - later) < np.linalg.norm(b - other)



def test_shipped_autoencoder_reads_the_example_basss_notes_and_locks_their_phase(shipped_autoencoder):
    """The note head names the notes of the example's real bass (a held-out piece) as the bass transcription
    does on most frames, and the pitch-locked decode keeps more of its pitch than the plain one."""
    from backline.engine.audio import read_audio, to_mono
    from backline.engine.runtime import TorchBackend
    from backline.engine.transcribe import transcribe_bass
    from backline.models.diffusion import load_denoiser
    from backline.training.autoencoder import pitch_similarity
    from backline.training.notes import frame_labels, scores

    model, meta = shipped_autoencoder
    c = model.config
    assert c.note_count == 49 and c.latent_space == "0.2.0+step16462"  # the denoiser's latent space, unchanged
    audio, rate = read_audio(ROOT / "examples" / "ultima_bass.flac")
    bass = to_mono(audio)[0]
    latents = ae.encode_audio(model, bass, rate)
    with torch.inference_mode():
        logits = model.decode_notes(latents / c.latent_scale)[0].numpy()
    labels = frame_labels(transcribe_bass(bass, rate), logits.shape[1], sample_rate=rate, hop=c.stft_hop_length,
                          lowest_midi=c.note_lowest_midi, count=c.note_count)
    measured = scores(logits, labels)  # 0.92 note accuracy when written
    assert measured["note_accuracy"] > 0.8 and measured["voicing_accuracy"] > 0.8, measured
    backend = TorchBackend(model, load_denoiser()[0], {"autoencoder": meta["backline_version"]})
    locked, plain = (backend.decode(latents.numpy(), instrument)[0, :len(bass)] for instrument in ("bass", "drums"))
    assert pitch_similarity(locked, bass, rate) > pitch_similarity(plain, bass, rate) + 0.05  # 0.92 against 0.80


def test_shipped_few_step_sampler_is_the_defaults_student_on_request_and_agrees_across_backends(example):
    """models/diffusion/few_step.safetensors: distilled from the shipped denoiser, its graphs beside the others; the
    default for no instrument (it did not hold the teacher's quality: training/reports/few-step), so it runs only
    when asked for, deterministic, sane, and the same stem on both backends."""
    from backline.engine.pipeline import GenerateRequest, generate, load_bundle

    audio, sample_rate = example
    context = audio[: 4 * sample_rate]
    onnx_bundle, torch_bundle = load_bundle(backend="onnx", intra_op_threads=1), load_bundle(backend="torch")
    few_step = torch_bundle.contract.few_step
    assert few_step is not None and onnx_bundle.contract.few_step == few_step
    assert (few_step.steps, few_step.solver, few_step.default_for) == (4, "euler", ())
    assert generate(torch_bundle, GenerateRequest(context=context, sample_rate=sample_rate, steps=2)).info[
        "sampler"] == "dpmpp_2m"
    for instrument in ("bass", "drums"):
        request = GenerateRequest(context=context, sample_rate=sample_rate, instrument=instrument, sampler="few_step",
                                  seed=3)
        first = generate(torch_bundle, request)
        assert (first.info["sampler"], first.info["steps"]) == ("few_step", 4)
        np.testing.assert_array_equal(first.audio, generate(torch_bundle, request).audio)
        stem = first.audio[0]
        assert stem.shape == context.shape and np.isfinite(stem).all()
        assert np.sqrt(np.mean(stem**2)) > 1e-3 and np.abs(stem).max() <= 0.8913
        assert abs(np.corrcoef(stem, context)[0, 1]) < 0.9
        b = generate(onnx_bundle, request).audio
        assert np.abs(first.audio - b).max() <= 1e-3 * max(np.abs(first.audio).max(), 1e-3)
