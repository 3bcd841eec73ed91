"""LAION-CLAP from a checkpoint file (engine/clap.py): a randomly initialised CLAP of laion_clap's own
architecture (HTSAT-tiny audio tower, a one-layer RoBERTa text tower 768 wide) is saved in the
release format and loaded back through the same path a user's checkpoint takes. Nothing is downloaded."""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("laion_clap") is None or importlib.util.find_spec("torchlibrosa") is None:
    if os.environ.get("CI"):
        raise RuntimeError(".ci/setup installs the clap extra and laion-clap; they are missing")
    pytest.skip("the clap extra is not installed", allow_module_level=True)

import torch

from backline.engine import clap
from backline.engine.clap import ClapCheckpointError, ClapEncoder, ClapUnavailable

# a made-up byte-level BPE vocabulary: enough for the prompts below, small enough to build in a blink
SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>", *"abcdefghijklmnopqrstuvwxyz", "Ġ", "Ġs", "la", "Ġb", "as", "ss", "<mask>"]
MERGES = ["Ġ s", "l a", "Ġ b", "a s", "s s"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(SYMBOLS)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return folder


def tiny_architecture(vocab_size=len(SYMBOLS)) -> clap.ClapArchitecture:
    text = dict(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                intermediate_size=64, max_position_embeddings=80, type_vocab_size=1, layer_norm_eps=1e-5,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return clap.ClapArchitecture("HTSAT-tiny", text, 512)


def save_release(path, state_dict, **extra):
    """The layout of LAION's released .pt files: DistributedDataParallel names, epoch and run name,
    and the position_ids buffer transformers < 4.31 saved."""
    state = {f"module.{k}": v for k, v in state_dict.items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(80)[None]
    torch.save({"epoch": 15, "name": "test-run", "state_dict": state, **extra}, path)
    return path


@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    return clap.build_clap(tiny_architecture())


@pytest.fixture(scope="module")
def checkpoint(original, tmp_path_factory):
    return save_release(tmp_path_factory.mktemp("clap") / "tiny_clap.pt", original.state_dict())


@pytest.fixture(scope="module")
def encoder(checkpoint, tokenizer_dir):
    return ClapEncoder.load(checkpoint, tokenizer=tokenizer_dir)


def noise(seconds, rate, channels=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(seconds * rate)))).astype(np.float32)


# -- the import ---------------------------------------------------------------------------------------
def test_torchvision_is_only_for_laion_clap_image_towers():
    """The stand-in for torchvision during utils.py's import is sound only while this holds."""
    folder = clap.laion_clap_folder()
    callers = {path.name for path in folder.glob("*.py")
               if re.search(r"freeze_batch_norm_2d\(", path.read_text()) and path.name != "utils.py"}
    assert callers == {"model.py", "timm_model.py"}
    model_source = (folder / "model.py").read_text()
    assert re.findall(r"class (\w+)\(nn\.Module\):(?:(?!\nclass ).)*freeze_batch_norm_2d\(", model_source, re.S) == ["ModifiedResNet"]
    for name in ("htsat.py", "feature_fusion.py", "model.py"):
        assert "torchvision" not in re.sub(r"#.*|\"\"\".*?\"\"\"", "", (folder / name).read_text(), flags=re.S)
    utils = (folder / "utils.py").read_text()
    assert utils.count("FrozenBatchNorm2d(") == 1 and "def freeze_batch_norm_2d" in utils


def test_loading_imports_neither_torchvision_nor_laion_clap_package(checkpoint):
    code = ("import sys; from backline.engine.clap import ClapEncoder; ClapEncoder.load(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'laion_clap', 'wandb')))")
    out = subprocess.run([sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.stdout.strip() == "[]"


# -- loading ------------------------------------------------------------------------------------------
def test_release_checkpoint_loads_into_the_same_network(encoder, original):
    assert encoder.architecture == tiny_architecture()
    assert encoder.embed_dim == 512
    loaded, saved = encoder.model.state_dict(), original.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not encoder.model.training


def test_a_bare_state_dict_loads_too(original, tmp_path):
    torch.save(original.state_dict(), tmp_path / "bare.pt")
    model, arch = clap.load_clap(tmp_path / "bare.pt")
    assert arch == tiny_architecture()


# -- audio --------------------------------------------------------------------------------------------
def test_audio_embeddings_are_unit_512_and_deterministic(encoder, original):
    audio = noise(3.0, 44_100)
    first = encoder.embed_audio(audio, 44_100)
    assert first.shape == (512,) and first.dtype == np.float32
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    encoder._memory.clear()
    np.testing.assert_array_equal(encoder.embed_audio(audio, 44_100), first)
    # the same numbers laion_clap's own model gives for the window (the original, not the loaded copy)
    window = torch.from_numpy(encoder.windows(audio, 44_100))
    with torch.inference_mode():
        reference = original.get_audio_embedding([{"waveform": window[0], "longer": torch.tensor([False])}])[0]
    np.testing.assert_allclose(first, reference.numpy(), atol=1e-5)
    assert np.abs(first - encoder.embed_audio(noise(3.0, 44_100, seed=1), 44_100)).max() > 1e-4


def test_windows_are_48k_mono_repeat_padded_or_covering(encoder):
    rate = clap.SAMPLE_RATE
    short = np.linspace(-0.5, 0.5, int(0.7 * rate), dtype=np.float32)
    windows = encoder.windows(np.stack([short, short]), rate)
    quantised = (short * 32767.0).astype(np.int16).astype(np.float32) / 32767.0  # laion_clap's 16-bit round trip
    assert windows.shape == (1, clap.CLIP_SAMPLES)
    repeats = clap.CLIP_SAMPLES // len(short)
    np.testing.assert_array_equal(windows[0, :repeats * len(short)], np.tile(quantised, repeats))
    assert not windows[0, repeats * len(short):].any()
    assert encoder.windows(noise(1.0, 44_100), 44_100).shape == (1, clap.CLIP_SAMPLES)  # resampled: 48,000 samples
    long = noise(25.0, rate, channels=1)[0]
    windows = encoder.windows(long, rate)
    assert windows.shape == (3, clap.CLIP_SAMPLES)
    np.testing.assert_allclose(windows[2], long[-clap.CLIP_SAMPLES:], atol=1 / 32767)
    np.testing.assert_allclose(windows[1], long[clap.CLIP_SAMPLES:2 * clap.CLIP_SAMPLES], atol=1 / 32767)
    for bad in (np.zeros((1, 0), np.float32), np.full((1, 10), np.nan, np.float32)):
        with pytest.raises(ValueError):
            encoder.windows(bad, rate)


# -- text ---------------------------------------------------------------------------------------------
def test_text_embeddings_are_unit_512_and_match_laion_clap(encoder, original):
    vectors = encoder.embed_text(["slap bass", "brushed jazz kit"])
    assert vectors.shape == (2, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-4
    tokens = encoder._tokenizer("slap bass", padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    assert tokens["input_ids"].shape == (1, 77) and int(tokens["attention_mask"].sum()) < 77
    with torch.inference_mode():
        reference = original.get_text_embedding(dict(tokens))[0]
    np.testing.assert_allclose(vectors[0], reference.numpy(), atol=1e-5)
    np.testing.assert_array_equal(encoder("  slap   bass "), vectors[0])


def test_prompts_without_a_tokenizer_or_with_the_wrong_one_are_refused(checkpoint, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(clap.TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    bare = ClapEncoder.load(checkpoint)
    assert bare.embed_audio(noise(1.0, 48_000), 48_000).shape == (512,)  # audio needs no tokenizer
    with pytest.raises(ClapUnavailable, match="--clap-tokenizer DIR or set BACKLINE_CLAP_TOKENIZER"):
        bare.embed_text(["slap bass"])
    with pytest.raises(ClapUnavailable, match="no RoBERTa tokenizer here"):
        ClapEncoder.load(checkpoint, tokenizer=tmp_path).embed_text(["slap bass"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(SYMBOLS[:-3] + ["<mask>"])}))
    (other / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ClapUnavailable, match="35 tokens, but the checkpoint's text tower has 37"):
        ClapEncoder.load(checkpoint, tokenizer=other).embed_text(["slap bass"])
    monkeypatch.setenv(clap.TOKENIZER_ENV, str(tokenizer_dir))
    assert ClapEncoder.load(checkpoint).embed_text(["slap bass"]).shape == (1, 512)


# -- caching ------------------------------------------------------------------------------------------
def test_embeddings_are_cached_by_content_in_memory_and_on_disk(checkpoint, tokenizer_dir, tmp_path, monkeypatch):
    first = ClapEncoder.load(checkpoint, tokenizer=tokenizer_dir, cache_dir=tmp_path)
    calls = []
    compute = first._embed_windows
    monkeypatch.setattr(first, "_embed_windows", lambda w: calls.append(1) or compute(w))
    audio = noise(2.0, 44_100)
    vector = first.embed_audio(audio, 44_100)
    np.testing.assert_array_equal(first.embed_audio(audio.copy(), 44_100), vector)
    assert len(calls) == 1
    first.embed_audio(audio, 48_000)  # the same samples at another rate are another recording
    assert len(calls) == 2
    prompt = first.embed_text(["slap bass"])
    assert len(list(tmp_path.glob("clap-*.npy"))) == 3

    second = ClapEncoder.load(checkpoint, tokenizer=tokenizer_dir, cache_dir=tmp_path)
    for name in ("_embed_windows", "_embed_text"):
        monkeypatch.setattr(second, name, lambda *a: pytest.fail("recomputed a cached embedding"))
    np.testing.assert_array_equal(second.embed_audio(audio, 44_100), vector)
    np.testing.assert_array_equal(second.embed_text(["slap bass"]), prompt)


def test_the_cache_key_names_the_checkpoint(original, checkpoint, tmp_path):
    first = ClapEncoder.load(checkpoint, cache_dir=tmp_path)
    state = {k: v.clone() for k, v in original.state_dict().items()}
    state["audio_projection.2.bias"] += 1.0
    second = ClapEncoder.load(save_release(tmp_path / "other.pt", state), cache_dir=tmp_path)
    audio = noise(1.0, 48_000)
    assert np.abs(first.embed_audio(audio, 48_000) - second.embed_audio(audio, 48_000)).max() > 1e-4


# -- errors -------------------------------------------------------------------------------------------
def test_missing_and_foreign_files_are_refused_in_words(tmp_path, monkeypatch):
    with pytest.raises(ClapCheckpointError, match="no CLAP checkpoint here"):
        ClapEncoder.load(tmp_path / "music_audioset_epoch_15_esc_90.14.pt")
    monkeypatch.delenv(clap.CHECKPOINT_ENV, raising=False)
    with pytest.raises(ClapCheckpointError, match="pass --clap-checkpoint FILE or set BACKLINE_CLAP_CHECKPOINT"):
        ClapEncoder.load()
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ClapCheckpointError, match="not a readable PyTorch checkpoint"):
        ClapEncoder.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, tmp_path / "other_model.pt")
    with pytest.raises(ClapCheckpointError, match="not a LAION-CLAP checkpoint"):
        ClapEncoder.load(tmp_path / "other_model.pt")
    torch.save({"epoch": 3, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pt")
    with pytest.raises(ClapCheckpointError, match="not a readable PyTorch checkpoint"):  # weights_only: no code runs
        ClapEncoder.load(tmp_path / "pickled.pt")


def test_a_checkpoint_of_another_shape_is_refused(original, tmp_path):
    state = dict(original.state_dict())
    del state["audio_branch.layers.0.blocks.0.attn.qkv.weight"]
    with pytest.raises(ClapCheckpointError, match=r"does not match laion_clap's HTSAT-tiny \+ RoBERTa CLAP \(missing 1"):
        ClapEncoder.load(save_release(tmp_path / "cut.pt", state))
    with pytest.raises(ClapCheckpointError, match="feature-fusion CLAP checkpoint"):
        clap.architecture(dict(state, **{"audio_branch.fusion_model.local_att.0.weight": torch.zeros(1)}))
    with pytest.raises(ClapCheckpointError, match="HTSAT audio tower 64 wide"):
        clap.architecture(dict(state, **{"audio_branch.patch_embed.proj.weight": torch.zeros(64, 1, 4, 4)}))


def test_the_env_var_names_the_checkpoint(checkpoint, monkeypatch):
    monkeypatch.setenv(clap.CHECKPOINT_ENV, str(checkpoint))
    assert ClapEncoder.load().checkpoint == checkpoint


def test_a_missing_extra_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "laion_clap" else real(name, *a))
    with pytest.raises(ClapUnavailable, match=r"pip install 'backline\[clap\]'"):
        clap.laion_clap_folder()


def test_only_a_denoiser_trained_on_clap_takes_clap_embeddings(encoder):
    with pytest.raises(ClapUnavailable, match="conditioned on Backline's own style space \\(64 numbers\\), not on CLAP"):
        clap.require_clap_denoiser(None, 64, encoder, "models/diffusion/default.safetensors")
    with pytest.raises(ClapUnavailable, match="not on CLAP"):
        clap.require_clap_denoiser("latent-statistics", 512, encoder, "d.safetensors")
    clap.require_clap_denoiser(clap.STYLE_SPACE, 512, encoder, "d.safetensors")


# -- the command --------------------------------------------------------------------------------------
def test_clap_embed_command_prints_similarities_and_saves_vectors(checkpoint, tokenizer_dir, tmp_path, capsys):
    from backline.cli import main
    from backline.engine.audio import write_audio

    write_audio(tmp_path / "a.wav", noise(2.0, 44_100), 44_100)
    out = tmp_path / "e.npz"
    assert main(["clap", "embed", str(tmp_path / "a.wav"), "--prompt", "slap bass", "--clap-checkpoint", str(checkpoint),
                 "--clap-tokenizer", str(tokenizer_dir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2] == "+1.000" and lines[1].startswith('"slap bass"')
    saved = np.load(out)
    assert saved["embeddings"].shape == (2, 512) and list(saved["names"]) == [str(tmp_path / "a.wav"), '"slap bass"']
    assert main(["clap", "embed", str(tmp_path / "a.wav"), "--clap-checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "no CLAP checkpoint here" in capsys.readouterr().err
