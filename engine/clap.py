"""LAION-CLAP embeddings from a checkpoint file the user has (the ``clap`` extra).

CLAP (Wu, Chen et al., ICASSP 2023; the embedding Diff-A-Riff conditions on) maps audio and text to
one 512-number space. Backline ships no CLAP weights and downloads none: the user points it at a
checkpoint released by LAION (``music_audioset_epoch_15_esc_90.14.pt`` is the usual choice for
music) with ``--clap-checkpoint`` or ``BACKLINE_CLAP_CHECKPOINT``. The network is laion_clap's own
``CLAP`` class (HTSAT audio tower, RoBERTa text tower), built from laion_clap's model configs and
filled from the checkpoint with a strict ``load_state_dict``, so a file that does not match the
architecture is refused rather than half loaded.

What it is for: the shipped denoiser is conditioned on Backline's own style space (latent
statistics, ``engine/style.py``), not on CLAP's, so a CLAP embedding cannot steer it. ``ClapEncoder``
gives CLAP embeddings of references, stems and prompts for retrieval and adherence measures, and for
a denoiser trained on CLAP embeddings. No such denoiser exists yet, so ``backline generate`` does
not take CLAP embeddings; ``require_clap_denoiser`` is the check a path that feeds them to a denoiser
makes first (the denoiser must record its style space as ``laion-clap`` and take 512 numbers).

Two things stand between laion_clap 1.1.7 and this machine, and each is handled in one place here:

* importing ``laion_clap`` runs its training code's imports (torchvision, webdataset, wandb's
  friends), and torchvision from PyPI does not load beside the CPU torch wheel Backline pins. The
  model files are imported on their own (``_laion_clap_model``); only ``clap_module/utils.py``
  touches torchvision, for the image towers (see ``_torchvision_for_utils_import``).
* ``CLAP()`` calls ``RobertaModel.from_pretrained('roberta-base')``, a download. Every text-tower
  weight is in the checkpoint, so the tower is built from a config read off the checkpoint's tensor
  shapes instead, then filled like the rest. Text also needs RoBERTa's tokenizer files
  (``vocab.json``, ``merges.txt``): ``--clap-tokenizer DIR``, ``BACKLINE_CLAP_TOKENIZER``, or a
  local Hugging Face cache of ``roberta-base``. Audio needs no tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import threading
import types
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backline.engine.audio import resample, to_mono
from backline.engine.style import StyleUnavailable, check_prompt

SAMPLE_RATE = 48_000  # what every LAION-CLAP audio tower is trained at
CLIP_SAMPLES = 480_000  # 10 s windows, as laion_clap's configs say
CONTEXT_LENGTH = 77  # tokens per prompt, as laion_clap's CLAP_Module tokenises
CHECKPOINT_ENV = "BACKLINE_CLAP_CHECKPOINT"
TOKENIZER_ENV = "BACKLINE_CLAP_TOKENIZER"
STYLE_SPACE = "laion-clap"  # what a denoiser trained on CLAP embeddings records as its style space
MAX_CACHED = 64
INSTALL_HINT = ("pip install 'backline[clap]' && pip install --no-deps laion-clap==1.1.7 "
                "(laion-clap's own requirements pin numpy<2 and pull torchvision; the model needs neither)")
# HTSAT's patch-embedding width -> laion_clap's audio config name (clap_module/model_configs/HTSAT-*.json)
HTSAT_SIZES = {96: "HTSAT-tiny", 128: "HTSAT-base", 256: "HTSAT-large"}

_PACKAGE = "_backline_laion_clap"  # laion_clap/clap_module's files, imported under a private name
_LOCK = threading.Lock()


class ClapUnavailable(StyleUnavailable):
    """The ``clap`` extra is not installed, or a prompt was given without RoBERTa's tokenizer files."""


class ClapCheckpointError(ValueError):
    """A CLAP checkpoint that is missing, unreadable, or not a LAION-CLAP model Backline can build."""


# -- importing laion_clap's model code --------------------------------------------------------------------
@contextmanager
def _torchvision_for_utils_import():
    """Lets laion_clap's ``clap_module/utils.py`` import without torchvision, and only that import.

    utils.py imports ``torchvision.ops.misc.FrozenBatchNorm2d`` at its top for ``freeze_batch_norm_2d``,
    whose only callers are the image towers (``ModifiedResNet.lock`` in model.py, ``TimmModel.lock``
    in timm_model.py); the HTSAT audio tower and the RoBERTa text tower never call it (checked by
    ``tests/engine/test_clap.py`` against the installed source). PyPI's torchvision cannot load beside
    the CPU torch wheel Backline pins, so while utils.py is imported ``torchvision.ops.misc`` is a
    stand-in whose ``FrozenBatchNorm2d`` refuses to be built, and it leaves ``sys.modules`` right after.
    A torchvision already imported in this process is used as it is.
    """
    if "torchvision" in sys.modules:
        yield
        return

    class FrozenBatchNorm2d:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("laion_clap's image towers need torchvision; Backline uses only the audio and text towers")

    names = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    modules = {name: types.ModuleType(name) for name in names}
    modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]


def laion_clap_folder() -> Path:
    """The installed ``laion_clap/clap_module`` folder, found without importing ``laion_clap``."""
    try:
        spec = importlib.util.find_spec("laion_clap")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ClapUnavailable(f"CLAP checkpoints need the laion-clap package: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "clap_module"


def _laion_clap_model() -> types.ModuleType:
    """laion_clap's ``clap_module/model.py`` (the ``CLAP`` class), imported without running the
    ``laion_clap`` or ``clap_module`` package ``__init__`` (which import the training and image code)."""
    with _LOCK:
        if f"{_PACKAGE}.model" in sys.modules:
            return sys.modules[f"{_PACKAGE}.model"]
        folder = laion_clap_folder()
        try:
            import torch  # noqa: F401
            import torchlibrosa  # noqa: F401  (HTSAT's spectrogram front end)
            from transformers import BartModel, BertModel, RobertaModel  # noqa: F401  (before the stand-in)
        except ImportError as error:
            raise ClapUnavailable(f"CLAP checkpoints need {error.name}: {INSTALL_HINT}") from None
        package = types.ModuleType(_PACKAGE)
        package.__path__ = [str(folder)]
        package.__package__ = _PACKAGE
        sys.modules[_PACKAGE] = package
        try:
            with _torchvision_for_utils_import():
                importlib.import_module(f"{_PACKAGE}.utils")
            return importlib.import_module(f"{_PACKAGE}.model")
        except ImportError as error:
            for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".")]:
                del sys.modules[name]
            raise ClapUnavailable(f"laion_clap's model code did not import ({error}): {INSTALL_HINT}") from None


def model_config(name: str) -> dict:
    """laion_clap's architecture config ``name`` (e.g. ``HTSAT-base``): embed_dim, audio_cfg, text_cfg."""
    path = laion_clap_folder() / "model_configs" / f"{name}.json"
    return json.loads(path.read_text())


# -- the checkpoint ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClapArchitecture:
    """What a checkpoint's tensor shapes say about the network that wrote it."""

    audio_model: str  # laion_clap config name, e.g. "HTSAT-base"
    text: dict  # transformers.RobertaConfig arguments
    joint_dim: int  # the shared embedding's size (512 in every LAION release)


def read_checkpoint(path: str | Path) -> dict:
    """The model weights of a LAION-CLAP checkpoint file, keys as ``CLAP.state_dict()`` names them.

    Accepts the release format (``{"epoch", "name", "state_dict", ...}`` with DistributedDataParallel's
    ``module.`` prefix) and a bare state dict. Read with ``weights_only=True``: no pickled code runs.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClapCheckpointError(f"{path}: no CLAP checkpoint here (LAION-CLAP releases are .pt files, e.g. "
                                  "music_audioset_epoch_15_esc_90.14.pt)")
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or one that needs pickled code
        raise ClapCheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0] if str(error) else ''})") from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClapCheckpointError(f"{path}: a PyTorch file, but not a model checkpoint (no state_dict of tensors)")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if not any(k.startswith("audio_branch.") for k in state) or not any(k.startswith("text_branch.") for k in state):
        raise ClapCheckpointError(f"{path}: not a LAION-CLAP checkpoint (it has no audio_branch and text_branch weights)")
    return state


def architecture(state: dict, source: str = "the checkpoint") -> ClapArchitecture:
    """Reads the audio config name, the RoBERTa config and the joint size off the tensor shapes."""
    if any(k.startswith(("audio_branch.fusion_model.", "audio_branch.mel_conv2d.")) for k in state):
        raise ClapCheckpointError(f"{source}: a feature-fusion CLAP checkpoint; Backline loads the non-fusion ones "
                                  "(the music checkpoints, 630k-audioset-best.pt)")
    patch = state.get("audio_branch.patch_embed.proj.weight")
    if patch is None:
        raise ClapCheckpointError(f"{source}: the audio tower is not HTSAT (PANN CLAP checkpoints are not supported)")
    width = int(patch.shape[0])
    if width not in HTSAT_SIZES:
        raise ClapCheckpointError(f"{source}: an HTSAT audio tower {width} wide, none of laion_clap's "
                                  f"({', '.join(f'{w}: {n}' for w, n in HTSAT_SIZES.items())})")
    words = state.get("text_branch.embeddings.word_embeddings.weight")
    if words is None or "text_branch.pooler.dense.weight" not in state:
        raise ClapCheckpointError(f"{source}: the text tower is not RoBERTa (only RoBERTa CLAP checkpoints are supported)")
    hidden = int(words.shape[1])
    if hidden != 768:  # laion_clap's text projection is Linear(768, ...) for RoBERTa
        raise ClapCheckpointError(f"{source}: a RoBERTa text tower {hidden} wide; laion_clap's CLAP takes 768")
    layers = {int(k.split(".")[3]) for k in state if k.startswith("text_branch.encoder.layer.")}
    text = dict(
        vocab_size=int(words.shape[0]), hidden_size=hidden, num_hidden_layers=max(layers) + 1 if layers else 0,
        num_attention_heads=hidden // 64,  # not in the weights; roberta-base's 12 heads of 64
        intermediate_size=int(state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0]) if layers else 3072,
        max_position_embeddings=int(state["text_branch.embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state["text_branch.embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)  # roberta-base's constants
    return ClapArchitecture(HTSAT_SIZES[width], text, int(state["audio_projection.2.weight"].shape[0]))


class _RobertaFromConfig:
    """Stands in for ``transformers.RobertaModel`` inside Backline's private copy of laion_clap's model
    module while ``CLAP()`` runs: its ``from_pretrained('roberta-base')`` would download weights the
    checkpoint is about to overwrite; this builds the same network from ``config`` instead."""

    def __init__(self, config: dict):
        self.config = config

    def from_pretrained(self, name: str, *args, **kwargs):
        from transformers import RobertaConfig, RobertaModel

        return RobertaModel(RobertaConfig(**self.config))


def build_clap(arch: ClapArchitecture):
    """An untrained laion_clap ``CLAP`` of ``arch``, on the CPU, in eval mode."""
    clap_model = _laion_clap_model()
    config = model_config(arch.audio_model)
    text_cfg = dict(config["text_cfg"], model_type="roberta")
    with _LOCK:
        real = clap_model.RobertaModel
        clap_model.RobertaModel = _RobertaFromConfig(arch.text)
        try:
            with warnings.catch_warnings():  # HTSAT's torch.meshgrid call without indexing=, laion_clap's to fix
                warnings.filterwarnings("ignore", message="torch.meshgrid")
                model = clap_model.CLAP(embed_dim=config["embed_dim"], audio_cfg=config["audio_cfg"], text_cfg=text_cfg,
                                        quick_gelu=False, enable_fusion=False, joint_embed_shape=arch.joint_dim)
        finally:
            clap_model.RobertaModel = real
    return model.eval()


def load_clap(path: str | Path):
    """A laion_clap ``CLAP`` filled from the checkpoint at ``path``; returns ``(model, architecture)``."""
    state = read_checkpoint(path)
    arch = architecture(state, str(path))
    model = build_clap(arch)
    expected = model.state_dict()
    # buffers older transformers saved and newer ones rebuild (laion_clap's own loader drops position_ids)
    for name in ("text_branch.embeddings.position_ids", "text_branch.embeddings.token_type_ids"):
        if name in state and name not in expected:
            del state[name]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what} {len(keys)} (e.g. {keys[0]})" for what, keys in
                           (("missing", missing), ("unexpected", unexpected), ("misshapen", wrong)) if keys)
        raise ClapCheckpointError(f"{path}: does not match laion_clap's {arch.audio_model} + RoBERTa CLAP ({detail})")
    model.load_state_dict(state, strict=True)
    return model, arch


# -- the encoder ------------------------------------------------------------------------------------------
def default_checkpoint() -> Path | None:
    """``BACKLINE_CLAP_CHECKPOINT`` when set, else None."""
    value = os.environ.get(CHECKPOINT_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ClapEncoder:
    """Audio and text -> L2-normalised CLAP embeddings, ``(embed_dim,)`` float32 (512 for LAION's).

    Audio at any rate is averaged to mono, resampled to 48 kHz, quantised to 16 bits as
    laion_clap's ``CLAP_Module`` does, then cut in 10 s windows: a shorter one is repeated and
    zero-padded to 10 s (laion_clap's ``repeatpad``); a longer one is covered by consecutive windows,
    the last ending at the end, whose embeddings are averaged and renormalised (laion_clap takes one
    random window instead; this keeps an embedding a function of its audio). Embeddings are cached
    by content hash, in memory and, with ``cache_dir``, on disk (keyed by the checkpoint's hash too).
    """

    def __init__(self, model, arch: ClapArchitecture, checkpoint: Path, *, digest: str,
                 tokenizer: str | Path | None = None, cache_dir: Path | None = None):
        self.model, self.architecture, self.checkpoint = model, arch, checkpoint
        self.digest, self.tokenizer_path, self.cache_dir = digest, tokenizer, cache_dir
        self._tokenizer = None
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, *, tokenizer: str | Path | None = None,
             cache_dir: Path | None = None) -> "ClapEncoder":
        """Load ``checkpoint`` (default ``BACKLINE_CLAP_CHECKPOINT``); ``tokenizer`` a folder with
        RoBERTa's ``vocab.json`` and ``merges.txt`` (default ``BACKLINE_CLAP_TOKENIZER``)."""
        checkpoint = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
        if checkpoint is None:
            raise ClapCheckpointError(f"no CLAP checkpoint given: pass --clap-checkpoint FILE or set {CHECKPOINT_ENV}")
        model, arch = load_clap(checkpoint)
        tokenizer = tokenizer or os.environ.get(TOKENIZER_ENV, "").strip() or None
        return cls(model, arch, checkpoint, digest=_file_digest(checkpoint), tokenizer=tokenizer, cache_dir=cache_dir)

    @property
    def embed_dim(self) -> int:
        return self.architecture.joint_dim

    # caching ------------------------------------------------------------------------------------------
    def _cached(self, key: str, compute) -> np.ndarray:
        key = hashlib.sha256(f"{self.digest}:{key}".encode()).hexdigest()[:32]
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        path = self.cache_dir / f"clap-{key}.npy" if self.cache_dir else None
        if path is not None and path.is_file():
            vector = np.load(path)
        else:
            vector = np.asarray(compute(), np.float32)
            if path is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                np.save(path, vector)
        self._memory[key] = vector
        if len(self._memory) > MAX_CACHED:
            self._memory.popitem(last=False)
        return vector

    # audio --------------------------------------------------------------------------------------------
    def windows(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(channels, frames) or (frames,) audio -> (windows, 480000) float32 at 48 kHz, as the tower takes it."""
        audio = np.asarray(audio, np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        if audio.ndim != 2 or audio.shape[1] == 0:
            raise ValueError(f"expected (channels, frames) audio with frames > 0, got shape {audio.shape}")
        if not np.isfinite(audio).all():
            raise ValueError("the audio holds NaN or infinite samples")
        mono = resample(to_mono(audio), int(sample_rate), SAMPLE_RATE)[0]
        mono = (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
        if len(mono) <= CLIP_SAMPLES:
            repeated = np.tile(mono, CLIP_SAMPLES // len(mono))
            return np.pad(repeated, (0, CLIP_SAMPLES - len(repeated)))[None]
        starts = list(range(0, len(mono) - CLIP_SAMPLES, CLIP_SAMPLES)) + [len(mono) - CLIP_SAMPLES]
        return np.stack([mono[s:s + CLIP_SAMPLES] for s in starts])

    def embed_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The CLAP embedding of a recording: (embed_dim,) float32, unit length; cached by content."""
        audio = np.ascontiguousarray(audio, np.float32)
        key = f"audio:{sample_rate}:{audio.shape}:" + hashlib.sha256(audio.tobytes()).hexdigest()
        return self._cached(key, lambda: self._embed_windows(self.windows(audio, sample_rate)))

    def _embed_windows(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            waveform = torch.from_numpy(windows)
            batch = [{"waveform": w, "longer": torch.tensor([False])} for w in waveform]
            vectors = self.model.get_audio_embedding(batch).numpy()
        mean = vectors.mean(axis=0)
        return mean / np.linalg.norm(mean)

    # text ---------------------------------------------------------------------------------------------
    def _tokenizer_folder(self) -> Path:
        if self.tokenizer_path is not None:
            return Path(self.tokenizer_path).expanduser()
        try:  # a local Hugging Face cache of roberta-base, if the user has one; nothing is fetched
            from huggingface_hub import try_to_load_from_cache

            for repo in ("FacebookAI/roberta-base", "roberta-base"):
                found = try_to_load_from_cache(repo, "vocab.json")
                if isinstance(found, str):
                    return Path(found).parent
        except ImportError:
            pass
        raise ClapUnavailable(
            f"CLAP prompts need RoBERTa's tokenizer files (vocab.json and merges.txt of roberta-base): pass "
            f"--clap-tokenizer DIR or set {TOKENIZER_ENV}. Audio references need no tokenizer.")

    def _load_tokenizer(self):
        """RoBERTa's byte-level BPE tokenizer from a folder, checked against the checkpoint's vocabulary
        (transformers 5 silently builds an empty tokenizer when the files are not where it looks)."""
        from transformers import RobertaTokenizer

        folder = self._tokenizer_folder()
        if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
            raise ClapUnavailable(f"{folder}: no RoBERTa tokenizer here (vocab.json and merges.txt of roberta-base); "
                                  f"pass --clap-tokenizer DIR or set {TOKENIZER_ENV}")
        tokenizer = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)
        expected = self.architecture.text["vocab_size"]
        if len(tokenizer) != expected:
            raise ClapUnavailable(f"{folder}: a tokenizer of {len(tokenizer)} tokens, but the checkpoint's text tower "
                                  f"has {expected}: not the tokenizer this CLAP was trained with (roberta-base's)")
        return tokenizer

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        """(n, embed_dim) float32 unit CLAP embeddings of ``prompts``; each cached by its text."""
        texts = [check_prompt(p) for p in prompts]
        return np.stack([self._cached(f"text:{t}", lambda t=t: self._embed_text(t)) for t in texts])

    def _embed_text(self, text: str) -> np.ndarray:
        import torch

        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        tokens = self._tokenizer(text, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH,
                                 return_tensors="pt")
        with torch.inference_mode():
            vector = self.model.get_text_embedding({"input_ids": tokens["input_ids"],
                                                    "attention_mask": tokens["attention_mask"]})[0].numpy()
        return vector

    def __call__(self, prompt: str) -> np.ndarray:
        """A prompt's embedding, so the encoder can stand where ``Bundle.prompts`` does."""
        return self.embed_text([prompt])[0]


def require_clap_denoiser(style_space: str | None, style_dim: int, encoder: ClapEncoder, denoiser: str) -> None:
    """Refuses a denoiser that was not trained on this encoder's embeddings, in words a producer reads."""
    if style_space != STYLE_SPACE or style_dim != encoder.embed_dim:
        space = style_space or "Backline's own style space"
        raise ClapUnavailable(
            f"{denoiser} is conditioned on {space} ({style_dim} numbers), not on "
            f"CLAP embeddings ({encoder.embed_dim}): a CLAP reference or prompt cannot steer it. Drop --clap-checkpoint "
            f"(unset {CHECKPOINT_ENV}) to use Backline's own style encoder, or use a denoiser trained on CLAP embeddings.")
