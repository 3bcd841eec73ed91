"""Names of the style spaces a denoiser can be conditioned in (recorded in its weights' metadata)."""

STATISTICS_SPACE = "latent-statistics"  # per-channel mean and std of the stem's latents (engine/style.py)
TOWER_CONTEXT_FRAMES = 3  # the audio tower sees each latent frame with its neighbours: a 3-frame (about 0.14 s) window
