"""Bass takes chosen by key: the note head's notes against the context's pitch classes (engine/harmony.py)."""

import numpy as np
import pytest
from backline.engine.harmony import CHROMA_HOP_SECONDS, in_key_share, note_chroma
from backline.engine.pipeline import GenerateRequest, generate, request_from_params
from tiny_bundle import make_bundle, song


def _logits(pitches: list[int], lowest_midi: int = 24, classes: int = 25) -> np.ndarray:
    """One frame per entry: certain of that MIDI note (None: no note)."""
    out = np.full((classes, len(pitches)), -30.0)
    for frame, pitch in enumerate(pitches):
        out[0 if pitch is None else pitch - lowest_midi + 1, frame] = 30.0
    return out


def test_note_chroma_counts_each_frames_pitch_class_and_skips_silence():
    frame_seconds = CHROMA_HOP_SECONDS / 2  # two note frames per chroma frame
    got = note_chroma(_logits([24, 36, None, 31]), lowest_midi=24, frame_seconds=frame_seconds)
    assert got.shape == (3, 12)  # frame centres 0.025, 0.075, 0.125, 0.175 s -> chroma frames 0, 1, 1, 2
    np.testing.assert_allclose(got[:, 0], [1, 1, 0], atol=1e-9)  # C1 and C2: pitch class 0
    np.testing.assert_allclose(got[2, 7], 1, atol=1e-9)  # G1
    np.testing.assert_allclose(got.sum(), 3, atol=1e-9)  # the silent frame adds nothing


def test_in_key_share_is_the_share_of_notes_in_the_contexts_pitch_classes():
    weights = np.zeros((5, 12))
    weights[:, [0, 4, 7]] = 1.0  # C major sounding throughout (note frames centred 0.05..0.35 s: chroma frames 1..4)
    kw = {"lowest_midi": 24, "frame_seconds": CHROMA_HOP_SECONDS}
    assert in_key_share(_logits([24, 28, 31, 36]), weights, **kw) == pytest.approx(1.0)
    assert in_key_share(_logits([25, 27, 30, 25]), weights, **kw) == pytest.approx(0.0)
    assert in_key_share(_logits([24, 25, 31, 30]), weights, **kw) == pytest.approx(0.5)
    assert np.isnan(in_key_share(_logits([None] * 4), weights, **kw))


@pytest.fixture(scope="module")
def noted():
    return make_bundle("tiny-notes")


def test_bass_keeps_the_most_in_key_of_its_takes(noted):
    context = song(seconds=1.5)
    steps = []
    result = generate(noted, GenerateRequest(context=context, sample_rate=48000, steps=3, seed=5),
                      progress=lambda i, total: steps.append((i, total)))
    takes = result.info["controls"]["candidates"]
    assert takes["takes"] == 4 and len(takes["in_key_share"]) == 4  # the default where the autoencoder reads notes
    assert takes["in_key_share"][takes["chosen"]] == max(takes["in_key_share"])
    assert steps == [(i, 3) for i in range(1, 4)]  # the takes run together: one batch per step
    again = generate(noted, GenerateRequest(context=context, sample_rate=48000, steps=3, seed=5))
    np.testing.assert_array_equal(again.audio, result.audio)  # deterministic
    # the chosen take is that take's own sample: candidates=1 gives take 0, the request's seed's own
    single = generate(noted, GenerateRequest(context=context, sample_rate=48000, steps=3, seed=5, candidates=1))
    assert "candidates" not in single.info["controls"]
    assert np.allclose(single.audio, result.audio, atol=1e-5) == (takes["chosen"] == 0)  # batched: float rounding


def test_drums_silence_and_note_less_autoencoders_take_one_sample(noted):
    drums = generate(noted, GenerateRequest(context=song(), sample_rate=48000, instrument="drums", steps=2))
    silent = generate(noted, GenerateRequest(context=np.zeros((2, 24000), np.float32), sample_rate=48000, steps=2))
    plain = generate(make_bundle(), GenerateRequest(context=song(), sample_rate=48000, steps=2))
    for result in (drums, silent, plain):
        assert "candidates" not in result.info["controls"]


@pytest.mark.parametrize("candidates, instrument, message", [
    (0, "bass", "from 1 to 8"), (9, "bass", "from 1 to 8"), (2.5, "bass", "whole number"), (True, "bass", "whole number"),
    (2, "drums", "drums have no key"),
])
def test_bad_candidates_are_refused(noted, candidates, instrument, message):
    with pytest.raises(ValueError, match=message):
        generate(noted, GenerateRequest(context=song(), sample_rate=48000, instrument=instrument, candidates=candidates))


def test_candidates_need_a_note_head_and_travel_as_a_parameter():
    with pytest.raises(ValueError, match="note head"):
        generate(make_bundle(), GenerateRequest(context=song(), sample_rate=48000, candidates=2))
    assert request_from_params({"candidates": 3}, song(), 48000).candidates == 3


def test_a_silent_take_over_a_sounding_region_is_sampled_again(monkeypatch):
    bundle = make_bundle()
    request = GenerateRequest(context=song(), sample_rate=48000, instrument="drums", steps=2, seed=3)
    plain = generate(bundle, request)
    assert "silent_retries" not in plain.info["controls"]
    real_decode, calls = bundle.backend.decode, []

    def decode(latents, instrument):  # the first take decodes to silence, as one drum stem by reference did
        calls.append(latents.copy())
        out = real_decode(latents, instrument)
        return out * 0 if len(calls) == 1 else out

    monkeypatch.setattr(bundle.backend, "decode", decode)
    result = generate(bundle, request)
    assert result.info["controls"]["silent_retries"] == 1 and len(calls) == 2
    assert not np.allclose(calls[0], calls[1])  # another seed's latents
    assert np.sqrt(np.mean(result.audio ** 2)) > 1e-3 and result.audio.shape == plain.audio.shape
    # silent whatever the seed: two more seeds, then the stem is returned as it is (no endless loop)
    monkeypatch.setattr(bundle.backend, "decode", lambda latents, instrument: real_decode(latents, instrument) * 0)
    assert generate(bundle, request).info["controls"]["silent_retries"] == 2
    # a silent region is generated from nothing and is never retried
    quiet = GenerateRequest(context=np.zeros((2, 24000), np.float32), sample_rate=48000, instrument="drums", steps=2)
    assert "silent_retries" not in generate(bundle, quiet).info["controls"]


def test_long_regions_sample_their_takes_in_smaller_batches(noted, monkeypatch):
    from backline.engine import pipeline

    context = song(seconds=1.5)
    whole = generate(noted, GenerateRequest(context=context, sample_rate=48000, steps=3, seed=5))
    monkeypatch.setattr(pipeline, "TAKE_BATCH_FRAMES", 1)  # one take per batch: as a very long region would
    steps = []
    one_by_one = generate(noted, GenerateRequest(context=context, sample_rate=48000, steps=3, seed=5),
                          progress=lambda i, total: steps.append((i, total)))
    assert steps == [(i, 12) for i in range(1, 13)]  # four batches of three steps, one progress
    assert one_by_one.info["controls"]["candidates"]["chosen"] == whole.info["controls"]["candidates"]["chosen"]
    np.testing.assert_allclose(one_by_one.audio, whole.audio, atol=1e-5)


def test_a_files_recorded_takes_are_a_basss_default(tmp_path):
    from backline.cli import main
    from backline.engine.pipeline import load_bundle
    from backline.export.debug_models import write_debug_models

    ae_path, dn_path = write_debug_models(tmp_path, "tiny", autoencoder_config="tiny-notes")
    assert load_bundle(ae_path, dn_path, backend="torch").contract.sampling["candidates"] == 4  # naming none
    with pytest.raises(SystemExit, match="at least 1"):
        main(["ship", "diffusion", "--to", str(dn_path), "--default-candidates", "0"])
    assert main(["ship", "diffusion", "--to", str(dn_path), "--default-candidates", "1"]) == 0
    bundle = load_bundle(ae_path, dn_path, backend="torch")
    one = generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=2, seed=1))
    assert "candidates" not in one.info["controls"]  # one take: nothing chosen
    asked = generate(bundle, GenerateRequest(context=song(), sample_rate=48000, steps=2, seed=1, candidates=3))
    assert asked.info["controls"]["candidates"]["takes"] == 3
