"""The model contract: how every Backline network is written to and read from disk.

A shipped model is one safetensors file. Its weights are plain tensors (no pickles), and its
metadata carries everything needed to rebuild and use it without guessing:

    backline_kind      which network this is ("autoencoder", "denoiser", "style_encoder", ...)
    backline_version   the model's own version string
    config             the model's full config as a JSON string (parsed back into a dict on load)
    sample_rate, latent_rate_hz, latent_channels, latent_scale
                       copied to the top level when the config has them, so tools that only read
                       metadata (the engine, the ONNX exporter, a person with ``safetensors``) see
                       the numbers that matter without parsing the config

safetensors metadata values are strings; the top-level numbers are stored as JSON and decoded back
into numbers by ``load_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Config keys that are mirrored at the top level of the metadata.
TOP_LEVEL_KEYS = ("sample_rate", "latent_rate_hz", "latent_channels", "latent_scale")
RESERVED_KEYS = ("backline_kind", "backline_version", "config")


class ModelFileError(ValueError):
    """A model file that is missing, not a Backline model, or not the kind that was asked for."""


def save_model(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    *,
    kind: str,
    version: str,
    dtype: torch.dtype | None = torch.float16,
) -> Path:
    """Write ``state_dict`` and ``config`` to a safetensors file at ``path``; returns the path.

    Floating-point tensors are cast to ``dtype`` (fp16 by default, to keep shipped files small;
    ``None`` keeps them as they are). Integer buffers are stored unchanged.
    """
    if not kind:
        raise ValueError("save_model: kind must be a non-empty string")
    from safetensors.torch import save_file

    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[name] = tensor.contiguous()
    metadata = {
        "backline_kind": kind,
        "backline_version": str(version),
        "config": json.dumps(config, sort_keys=True),
    }
    for key in TOP_LEVEL_KEYS:
        if key in config:
            metadata[key] = json.dumps(config[key])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_model(path: str | Path, *, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a model file; returns ``(state_dict, metadata)``.

    ``metadata["config"]`` is the config dict, the top-level numbers (sample_rate, ...) are numbers,
    and ``backline_kind`` / ``backline_version`` are strings. Tensors keep their stored dtype. When
    ``kind`` is given, a file of another kind is refused with ``ModelFileError``.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            state_dict = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors' own errors do not name the file
        raise ModelFileError(f"{path}: not a safetensors model file ({error})") from error
    if "backline_kind" not in raw or "config" not in raw:
        raise ModelFileError(f"{path}: not a Backline model (no backline_kind/config metadata)")
    if kind is not None and raw["backline_kind"] != kind:
        raise ModelFileError(f"{path}: holds a {raw['backline_kind']!r} model, expected {kind!r}")
    metadata: dict = {}
    for key, value in raw.items():
        if key in ("backline_kind", "backline_version"):
            metadata[key] = value
        else:
            try:
                metadata[key] = json.loads(value)
            except json.JSONDecodeError:
                metadata[key] = value
    return state_dict, metadata
