"""The autoencoder's note head: targets from the bass transcription, trained with the autoencoder frozen."""

import csv
import dataclasses
import shutil

import numpy as np
import pytest
import torch

from backline.engine.runtime import TorchBackend
from backline.engine.transcribe import Note
from backline.export.debug_models import write_debug_models
from backline.models.autoencoder import CONFIGS, Autoencoder, load_autoencoder, save_autoencoder
from backline.models.diffusion import resolve_config
from backline.training.diffusion import LatentPairs, TrainOptions, note_loss, read_note_labels, train
from backline.training.latents import encode_build
from backline.training.notes import NoteSettings, frame_labels, scores, train_notes


def test_frame_labels_follow_the_notes_by_frame_centre():
    notes = [Note(0.0, 0.05, 40), Note(0.05, 0.1, 23), Note(0.1, 0.2, 72), Note(0.2, 0.3, 73)]
    labels = frame_labels(notes, 10, sample_rate=1000, hop=30, lowest_midi=24, count=49)
    # frame t is centred at 30 t + 15 ms: 15, 45 | 75 (MIDI 23: out of range) | 105 ... 195 | 225 ... (74: out)
    assert labels.tolist() == [17, 17, 0, 49, 49, 49, 49, 0, 0, 0]


def test_scores_count_notes_pitch_classes_and_voicing():
    labels = np.array([0, 5, 5, 17, 9])
    logits = np.eye(50)[[0, 5, 17, 0, 10]].T  # right, right, octave off, missed, wrong
    got = scores(logits, labels)
    assert got["frame_accuracy"] == pytest.approx(0.4) and got["note_accuracy"] == pytest.approx(0.25)
    assert got["pitch_class_accuracy"] == pytest.approx(0.5) and got["voicing_accuracy"] == pytest.approx(0.8)


def test_note_head_trains_frozen_and_decodes_pitch_locked_bass(synthetic_build, tiny_latents, tmp_path):
    ae_path, latents = tiny_latents
    run, out = tmp_path / "run", tmp_path / "ae-notes.safetensors"
    settings = NoteSettings(steps=40, batch_size=4, crop_latent_frames=32, learning_rate=3e-3, validate_every=20)
    summary = train_notes(ae_path, synthetic_build, latents, run, out, settings, progress=False)
    assert summary["version"] == "tiny-test+notes40" and summary["train_stems"] == 3
    assert set(summary["validation"]) == {"frame_accuracy", "voicing_accuracy", "note_accuracy", "pitch_class_accuracy"}
    cached = np.load(run / "labels.npz")
    voiced = np.mean(np.concatenate([cached[k] for k in cached.files if k not in ("entries", "key")]) > 0)
    assert voiced > 0.5  # the synthetic sawtooth bass is transcribed into notes
    losses = [float(row["loss"]) for row in csv.DictReader((run / "train.csv").open())]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])

    model, metadata = load_autoencoder(out)
    assert metadata["backline_version"] == "tiny-test+notes40"
    assert model.config.note_count == 49 and model.config.latent_space == "tiny-space"
    for name, tensor in load_autoencoder(ae_path)[0].state_dict().items():  # the autoencoder itself is untouched
        assert torch.equal(model.state_dict()[name], tensor), name
    with pytest.raises(FileExistsError, match="--resume"):  # a finished run is continued, not overwritten
        train_notes(ae_path, synthetic_build, latents, run, out, settings, progress=False)
    # the same summary again in a new run from the cached targets (no second transcription needed)
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(run / "labels.npz", again / "labels.npz")
    assert train_notes(ae_path, synthetic_build, latents, again, tmp_path / "again.safetensors", settings,
                       progress=False)["validation"] == summary["validation"]
    # another build's train split added (here the same one again), validation still the first build's;
    # the head's size is a setting
    small = dataclasses.replace(settings, steps=2, note_dim=16, note_blocks=1)
    extra = train_notes(ae_path, synthetic_build, latents, tmp_path / "extra", tmp_path / "extra.safetensors", small,
                        extra=((synthetic_build, latents),), progress=False)
    assert extra["train_stems"] == 6 and extra["validation_stems"] == summary["validation_stems"]
    assert (tmp_path / "extra" / "labels-extra1.npz").is_file()
    assert load_autoencoder(tmp_path / "extra.safetensors")[0].config.note_dim == 16

    # the engine: a bass decode locks the low band's phase, a drum decode is the plain one
    debug_ae, debug_dn = write_debug_models(tmp_path / "debug", "tiny", trained_on="tiny-space")
    backend = TorchBackend.from_files(out, debug_dn)
    plain = TorchBackend.from_files(ae_path, debug_dn)
    assert backend.contract.note_lowest_midi == 24 and plain.contract.note_lowest_midi is None
    x = np.load(latents / "synthetic-003__bass.npz")["target"][None].astype(np.float32)
    drums, bass = backend.decode(x, "drums"), backend.decode(x, "bass")
    np.testing.assert_allclose(drums, plain.decode(x, "bass"), atol=1e-6)  # no head: never locked
    assert bass.shape == drums.shape and not np.allclose(bass, drums)
    np.testing.assert_allclose(np.sqrt(np.mean(bass**2)), np.sqrt(np.mean(drums**2)), rtol=0.2)


def test_latents_of_another_autoencoder_are_refused(synthetic_build, tmp_path):
    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(CONFIGS["tiny"]).eval(), version="tiny-a")
    other = save_autoencoder(tmp_path / "other.safetensors", Autoencoder(CONFIGS["tiny"]).eval(), version="tiny-b")
    encode_build(other, synthetic_build, tmp_path / "latents")
    with pytest.raises(ValueError, match="precompute them with this autoencoder"):
        train_notes(ae_path, synthetic_build, tmp_path / "latents", tmp_path / "run", tmp_path / "out.safetensors",
                    NoteSettings(steps=1), progress=False)
    encode_build(ae_path, synthetic_build, tmp_path / "own")
    with pytest.raises(ValueError, match="precompute them with this autoencoder"):  # an extra build's too
        train_notes(ae_path, synthetic_build, tmp_path / "own", tmp_path / "run", tmp_path / "out.safetensors",
                    NoteSettings(steps=1), extra=((synthetic_build, tmp_path / "latents"),), progress=False)


def test_denoiser_batches_carry_each_crops_notes():
    # latent frame t of each pair holds t; its labels (4 STFT frames per latent frame) hold t too
    ramp = np.tile(np.arange(40, dtype=np.float32), (8, 1))
    pairs = LatentPairs([ramp, ramp], [ramp, ramp + 0], [0, 1], [np.repeat(np.arange(40), 4), None])
    batch = pairs.batch(np.random.default_rng(0), 12, 16)
    for target, instrument, notes in zip(batch["target"].numpy(), batch["instrument"].tolist(), batch["notes"].numpy()):
        expected = np.repeat(target[0].astype(np.int64), 4) if instrument == 0 else np.full(64, -1)
        np.testing.assert_array_equal(notes, expected)
    assert set(batch["instrument"].tolist()) == {0, 1}
    assert "notes" not in LatentPairs([ramp], [ramp], [1], [None]).batch(np.random.default_rng(0), 2, 16)


def test_note_loss_counts_only_kept_rows_with_notes():
    torch.manual_seed(0)
    denoised, notes = torch.randn(3, 5, 12), torch.randint(0, 5, (3, 12))
    notes[0, :4] = -1  # no labels there
    notes[2] = -1
    got = note_loss(lambda x: x, denoised, notes, torch.tensor([True, False, True]))
    want = torch.nn.functional.cross_entropy(denoised[:1, :, 4:], notes[:1, 4:])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert note_loss(lambda x: x, denoised, notes, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_denoiser_fine_tunes_with_the_note_loss(synthetic_build, tmp_path, tiny_latents):
    ae_path, latents = tiny_latents
    with_head = tmp_path / "ae-notes.safetensors"
    train_notes(ae_path, synthetic_build, latents, tmp_path / "notes", with_head,
                NoteSettings(steps=2, batch_size=2, crop_latent_frames=32, note_dim=16, note_blocks=1), progress=False)
    labels = (str(tmp_path / "notes" / "labels.npz"),)
    assert len(read_note_labels(labels)) == 4 and all(name.endswith("__bass.npz") for name in read_note_labels(labels))
    plain = TrainOptions(steps=3, batch_size=4, learning_rate=3e-3, warmup_steps=1, validate_every=3)
    noted = dataclasses.replace(plain, note_weight=1.0, note_autoencoder=str(with_head), note_labels=labels,
                                note_sigma_max=80.0)
    config = resolve_config("tiny")
    assert train(config, latents, tmp_path / "plain", plain, progress=False)["step"] == 3
    assert train(config, latents, tmp_path / "noted", noted, progress=False)["step"] == 3
    weights = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("plain", "noted")]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the note loss moved them
    with pytest.raises(ValueError, match="needs a note head"):
        train(config, latents, tmp_path / "headless", dataclasses.replace(noted, note_autoencoder=str(ae_path)),
              progress=False)


def test_train_labels_writes_the_note_losss_labels_in_parallel_as_in_one_process(synthetic_build, tiny_latents,
                                                                                 tmp_path):
    from backline.cli import main
    from backline.training.notes import read_label_cache

    ae_path, latents = tiny_latents
    command = ["train", "labels", "--data", str(synthetic_build), "--latents", str(latents), "--autoencoder",
               str(ae_path)]
    assert main(command + ["--out", str(tmp_path / "two.npz"), "--jobs", "2"]) == 0
    assert main(command + ["--out", str(tmp_path / "one.npz")]) == 0
    assert main(command + ["--out", str(tmp_path / "half.npz"), "--every", "2"]) == 0
    two, one, half = (read_label_cache(tmp_path / f"{name}.npz")[1] for name in ("two", "one", "half"))
    assert len(one) == 3 and {e["split"] for e in one.values()} == {"train"}  # the train basses
    assert set(two) == set(one) and len(half) == 2
    for variant, entry in one.items():
        np.testing.assert_array_equal(two[variant]["labels"], entry["labels"])
        assert np.mean(entry["labels"] > 0) > 0.5  # the synthetic bass is transcribed into notes
    # the diffusion trainer reads them by latent file
    assert set(read_note_labels([tmp_path / "two.npz"])) == {entry["file"] for entry in one.values()}


def test_the_note_head_trains_from_train_labels_files_without_transcribing(synthetic_build, tiny_latents, tmp_path,
                                                                          monkeypatch):
    from backline.cli import main
    from backline.training import notes

    ae_path, latents = tiny_latents
    files = []
    for split in ("train", "validation"):
        files.append(tmp_path / f"{split}.npz")
        assert main(["train", "labels", "--data", str(synthetic_build), "--latents", str(latents), "--autoencoder",
                     str(ae_path), "--split", split, "--out", str(files[-1])]) == 0
    monkeypatch.setattr(notes, "build_labels", lambda *a, **k: pytest.fail("transcribed although labels were given"))
    settings = NoteSettings(steps=4, batch_size=2, crop_latent_frames=32, validate_every=4)
    summary = train_notes(ae_path, synthetic_build, latents, tmp_path / "run", tmp_path / "ae.safetensors", settings,
                          progress=False, label_files=tuple(files))
    assert summary["train_stems"] == 3 and summary["validation_stems"] >= 1
    assert summary["label_files"] == [str(f) for f in files]
