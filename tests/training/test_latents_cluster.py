"""Encoding a build's latents on a Dask cluster gives the files a single process gives."""

import json

import numpy as np
import pytest
import torch

from backline.models.autoencoder import CONFIGS as AE_CONFIGS, Autoencoder, save_autoencoder
from backline.training.latents import encode_build

pytest.importorskip("distributed")


def test_latents_on_a_local_dask_cluster_equal_one_process(synthetic_build, tmp_path):
    torch.manual_seed(0)
    ae_path = save_autoencoder(tmp_path / "ae.safetensors", Autoencoder(AE_CONFIGS["tiny"]).eval(), version="tiny-test")
    assert encode_build(ae_path, synthetic_build, tmp_path / "one") == 8
    assert encode_build(ae_path, synthetic_build, tmp_path / "dask", jobs=2, cluster="local") == 8
    index = (tmp_path / "one" / "index.jsonl").read_text()
    assert (tmp_path / "dask" / "index.jsonl").read_text() == index
    for entry in map(json.loads, index.splitlines()):
        one, dask = np.load(tmp_path / "one" / entry["file"]), np.load(tmp_path / "dask" / entry["file"])
        for role in ("context", "target"):
            np.testing.assert_allclose(one[role].astype(np.float32), dask[role].astype(np.float32), atol=2e-3)
    assert encode_build(ae_path, synthetic_build, tmp_path / "dask", jobs=2) == 0  # resumes: all kept
