"""Every config under models/ exports and passes the exporter's own check (RAVE's config matrix test)."""

import pytest

from backline.engine.runtime import OnnxBackend
from backline.export.debug_models import write_debug_models
from backline.export.onnx import export_models
from backline.models.autoencoder import CONFIGS as AE_CONFIGS
from backline.models.diffusion import CONFIGS as DN_CONFIGS


@pytest.mark.parametrize("name", sorted(set(AE_CONFIGS) | set(DN_CONFIGS)))
def test_config_exports_and_loads(name, tmp_path):
    ae_path, dn_path = write_debug_models(tmp_path, name if name in DN_CONFIGS else "tiny", seed=0,
                                          autoencoder_config=name if name in AE_CONFIGS else "tiny")
    report = export_models(ae_path, dn_path, tmp_path / "onnx", seed=0, threads=1)
    assert all(check["passed"] for check in report.checks.values())
    backend = OnnxBackend(tmp_path / "onnx", intra_op_threads=1)
    assert backend.contract.latent_channels == AE_CONFIGS.get(name, AE_CONFIGS["tiny"]).latent_channels
