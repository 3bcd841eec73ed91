"""A denoiser told the beat and the chords, in the engine: the host's tempo or the tracked beats become its grid,
the producer's chords or the context's harmony its harmony, each with its own guidance scale; a model that was not
trained with them refuses chords with a sentence, and the ONNX graphs take them as torch does."""

from __future__ import annotations

import numpy as np
import pytest

from backline.engine.pipeline import generate, guidance_passes, load_bundle, request_from_params
from backline.engine.sampling import guided
from backline.export.debug_models import write_debug_models

SAMPLE_RATE = 44_100


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory):
    ae, dn = write_debug_models(tmp_path_factory.mktemp("conditioned"), "tiny-conditioned", autoencoder_config="tiny")
    return ae, dn, load_bundle(ae, dn, backend="torch")


def _clicks(bpm: float = 120.0, seconds: float = 6.0) -> np.ndarray:
    """A context with a kick on every beat and a held A minor chord."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.05 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 261.63, 329.63))
    for beat in np.arange(0, seconds, 60.0 / bpm):
        start = int(beat * SAMPLE_RATE)
        n = min(2000, len(t) - start)
        audio[start:start + n] += 0.8 * np.exp(-np.arange(n) / 300.0) * np.sin(2 * np.pi * 60 * np.arange(n) / SAMPLE_RATE)
    return audio[None].astype(np.float32)


def test_the_tempo_and_the_chords_reach_the_denoiser_and_change_the_stem(conditioned):
    _, _, bundle = conditioned
    context = _clicks()
    base = dict(instrument="bass", steps=4, candidates=1, seed=3)
    heard = generate(bundle, request_from_params(base, context, SAMPLE_RATE))
    assert heard.info["controls"]["harmony"] == "heard in the context" and "beats tracked" in heard.info["controls"]["beat_grid"]
    told = generate(bundle, request_from_params({**base, "tempo_bpm": 120.0, "chords": "Am F C G7"}, context, SAMPLE_RATE))
    assert told.info["controls"]["harmony"] == "the chords given" and told.info["controls"]["beat_grid"] == "the host's tempo"
    assert told.audio.shape == heard.audio.shape and not np.allclose(told.audio, heard.audio)
    again = generate(bundle, request_from_params({**base, "tempo_bpm": 120.0, "chords": "Am F C G7"}, context, SAMPLE_RATE))
    np.testing.assert_array_equal(again.audio, told.audio)  # deterministic
    firmer = generate(bundle, request_from_params({**base, "tempo_bpm": 120.0, "chords": "Am F C G7", "cfg_chords": 3.0},
                                                  context, SAMPLE_RATE))
    assert not np.allclose(firmer.audio, told.audio)


def test_each_lock_has_its_own_pass_and_scale():
    from backline.engine.runtime import ModelContract

    contract = ModelContract(sample_rate=SAMPLE_RATE, hop_length=2048, latent_channels=8, latent_rate_hz=21.5,
                             latent_scale=1.0, style_dim=16, sigma_min=0.002, sigma_max=80.0, sigma_data=1.0,
                             instruments=("bass", "drums"), n_fft=2048, stft_hop_length=512,
                             frame_inputs=(("grid", 4), ("harmony", 12)))
    frame = {"grid": np.ones((4, 10), np.float32), "harmony": np.ones((12, 10), np.float32)}
    plain = guidance_passes(contract, None, "bass", 1.0, 1.0, frame=frame)
    assert plain.passes == ("full",) and plain.frame_inputs(10)["harmony_mask"].tolist() == [1.0]
    locked = guidance_passes(contract, np.zeros(16), "bass", 1.5, 1.25, frame=frame, frame_scales={"harmony": 2.0})
    assert locked.passes == ("none", "context", "full", "without_harmony")
    inputs = locked.frame_inputs(10)
    assert inputs["harmony_mask"].tolist() == [0.0, 1.0, 1.0, 0.0] and inputs["grid_mask"].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert locked.style_mask.tolist() == [0.0, 0.0, 1.0, 1.0] and inputs["harmony"].shape == (1, 12, 10)
    assert locked.frame_step_inputs()["frame_pass_index"].tolist() == [0, 3]
    assert locked.frame_step_inputs()["frame_guidance"].tolist() == [1.0, 2.0]
    rng = np.random.default_rng(0)
    predictions = {name: rng.standard_normal((1, 8, 10)) for name in ("none", "context", "full", "without_harmony")}
    expected = (predictions["none"] + 1.5 * (predictions["context"] - predictions["none"])
                + 1.25 * (predictions["full"] - predictions["context"])
                + 1.0 * (predictions["full"] - predictions["without_harmony"]))
    np.testing.assert_allclose(guided(predictions, cfg_context=1.5, cfg_style=1.25, rescale=0.0,
                                      frame_scales={"harmony": 2.0}), expected)


def test_chords_are_refused_with_a_reason(conditioned, tmp_path):
    _, _, bundle = conditioned
    context = _clicks(seconds=2.0)
    with pytest.raises(ValueError, match="need the tempo"):
        request_from_params({"chords": "Am F"}, context, SAMPLE_RATE)
    with pytest.raises(ValueError, match="unknown chord quality"):
        generate(bundle, request_from_params({"tempo_bpm": 100.0, "chords": "Am Fblah"}, context, SAMPLE_RATE))
    ae, dn = write_debug_models(tmp_path, "tiny")
    plain = load_bundle(ae, dn, backend="torch")
    with pytest.raises(ValueError, match="takes no chords"):
        generate(plain, request_from_params({"tempo_bpm": 100.0, "chords": "Am F"}, context, SAMPLE_RATE))


def test_the_onnx_graphs_take_the_grid_and_the_harmony_as_torch_does(conditioned, tmp_path):
    from backline.export.onnx import export_models

    ae, dn, torch_bundle = conditioned
    report = export_models(ae, dn, tmp_path / "onnx", seed=0)
    assert report.checks["denoiser"]["passed"] and report.checks["step"]["passed"]
    params = {"instrument": "bass", "steps": 4, "candidates": 1, "seed": 3, "tempo_bpm": 120.0, "chords": "Am F C G7",
              "cfg_chords": 2.0, "cfg_tempo": 1.5, "cfg_context": 1.5}
    context = _clicks(seconds=4.0)
    want = generate(torch_bundle, request_from_params(params, context, SAMPLE_RATE)).audio
    for step_graph in (True, False):
        bundle = load_bundle(onnx_dir=tmp_path / "onnx", backend="onnx", step_graph=step_graph)
        assert bundle.contract.frame_inputs == (("grid", 4), ("harmony", 12))
        got = generate(bundle, request_from_params(params, context, SAMPLE_RATE))
        assert got.info["step_graph"] is step_graph
        np.testing.assert_allclose(got.audio, want, atol=2e-3 * float(np.abs(want).max()))


def test_the_default_chord_and_tempo_guidance_come_from_the_model_file(tmp_path):
    """`ship diffusion --cfg-chords/--cfg-tempo` records the defaults (per instrument too); a request that names
    none takes them, one that names its own wins."""
    import shutil

    from backline.cli import main

    ae, dn = write_debug_models(tmp_path, "tiny-conditioned", autoencoder_config="tiny")
    recorded = tmp_path / "recorded.safetensors"
    shutil.copy(dn, recorded)
    assert main(["ship", "diffusion", "--to", str(recorded), "--cfg-chords", "3", "--cfg-tempo", "1.5",
                 "--instrument-cfg", "drums:cfg_chords=1"]) == 0
    bundle = load_bundle(ae, recorded, backend="torch")
    context = _clicks(seconds=3.0)
    base = dict(instrument="bass", steps=3, candidates=1, seed=2, tempo_bpm=120.0)
    default = generate(bundle, request_from_params(base, context, SAMPLE_RATE))
    assert (default.info["cfg_chords"], default.info["cfg_tempo"]) == (3.0, 1.5)
    named = generate(bundle, request_from_params({**base, "cfg_chords": 3.0, "cfg_tempo": 1.5}, context, SAMPLE_RATE))
    np.testing.assert_array_equal(default.audio, named.audio)
    own = generate(bundle, request_from_params({**base, "cfg_chords": 1.0}, context, SAMPLE_RATE))
    assert own.info["cfg_chords"] == 1.0 and not np.allclose(own.audio, default.audio)
    drums = generate(bundle, request_from_params({**base, "instrument": "drums"}, context, SAMPLE_RATE))
    assert (drums.info["cfg_chords"], drums.info["cfg_tempo"]) == (1.0, 1.5)
    plain = generate(load_bundle(ae, dn, backend="torch"), request_from_params(base, context, SAMPLE_RATE))
    assert (plain.info["cfg_chords"], plain.info["cfg_tempo"]) == (1.0, 1.0)  # a file that records none: as trained
