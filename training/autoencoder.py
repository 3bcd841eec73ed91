"""Training the audio autoencoder on a data build, and shipping the result.

The recipe follows the bass-accompaniment paper (Pasini, Grachten, Lattner; arXiv 2402.01412):
the autoencoder is trained end to end with an L1 waveform loss plus multi-resolution STFT losses on
magnitude and phase. Here, per STFT resolution (256 to 8192 points): spectral convergence and
log-magnitude L1 for the magnitude; for the phase, an instantaneous-frequency term (the error of each
bin's phase advance from one frame to the next, weighted by loudness), and an L1 distance between
magnitude-compressed complex spectra (|S|^0.3 e^{i phase}). The decoder builds its phase as a running
sum of predicted advances (``models.autoencoder``), so the absolute-phase terms (waveform L1 and the
complex spectra) train only the magnitudes: a running sum started at an arbitrary phase cannot meet
them, and their gradients, summed over every later frame, drown the frequency signal. The 4096- and
8192-point magnitudes resolve bass semitones, which only a coherent phase reproduces. No
adversarial loss yet: on a CPU budget it does not pay for itself.

Validation also reports ``pitch_similarity`` on longer bass crops: how much of the bass's
pitch-class content the round trip keeps (the measure the harmonic fit is built on).

A run directory holds:

    config.json        the model config and the training arguments
    checkpoint.pt      latest model + optimiser + step + RNG states (tensors and numbers only;
                       read back with ``torch.load(weights_only=True)``)
    train.csv          one row per ``log_every`` steps
    validation.csv     one row per validation pass (fixed crops from the validation split)
    curves.png         the curves of both CSVs

Randomness comes from generators seeded by ``seed``; nothing global is touched.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from backline.engine.runtime import latent_space_of
from backline.models.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    count_parameters,
    latent_frames,
    load_autoencoder,
    save_autoencoder,
)
from backline.training import distributed
from backline.training.run import RunSettings

FREQUENCY_MAX_FFT = 4096  # the frequency term is measured at resolutions up to this n_fft (hop = n_fft / 4)
PITCH_CROP_SECONDS = 3.0  # validation bass crops for pitch_similarity (30 chroma frames)
SILENCE_RMS = 10 ** (-50 / 20)  # crops quieter than -50 dBFS RMS are skipped
LOSS_NAMES = ("loss", "waveform_l1", "stft_convergence", "stft_log_magnitude", "stft_phase",
              "stft_frequency", "latent_pitch", "latent_penalty")
PITCH_FFT = 8192  # 5.4 Hz bins at 44.1 kHz: bass semitones are 2-3 Hz apart around 40 Hz, 5 Hz at 80 Hz
PITCH_BAND_HZ = (30.0, 2000.0)


# -- losses --------------------------------------------------------------------------------------
def _spectrogram(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=audio.device)
    return torch.stft(audio, n_fft, n_fft // 4, window=window, pad_mode="constant", return_complex=True)


def _unit(z: torch.Tensor) -> torch.Tensor:
    return z / (z.abs() + 1e-7)


def stft_distances(
    prediction: torch.Tensor, target: torch.Tensor, resolutions=(256, 512, 1024, 2048), *,
    phase_prediction: torch.Tensor | None = None, frequency: bool = False, frequency_loudness: float = 0.3,
) -> dict[str, torch.Tensor]:
    """Multi-resolution STFT distances between (batch, samples) signals, averaged over resolutions.

    Every term is a mean over the batch's rows of a per-row distance, so a batch split over processes
    (training/distributed.py) averages to the whole batch's loss.

    Returns ``stft_convergence`` (Frobenius norm of the magnitude error over that of the target),
    ``stft_log_magnitude`` (mean |log magnitude difference|), ``stft_frequency`` (with ``frequency``,
    else 0: the instantaneous-frequency error: distance between the unit phase advances from one frame to the
    next, weighted by the target's magnitude^``frequency_loudness``, so loud partials must keep their
    frequency) and
    ``stft_phase`` (mean L1 between complex spectra compressed to magnitude^0.3, which carries the
    absolute phase), the last measured on ``phase_prediction`` when given (the same audio with
    another gradient path). The 4096- and 8192-point magnitudes resolve bass semitones, which only
    a phase coherent across the decoder's 512-sample frames reproduces.
    """
    convergence, log_magnitude, phase, frequency_terms = [], [], [], []
    for n_fft in resolutions:
        s_pred, s_true = _spectrogram(prediction, n_fft), _spectrogram(target, n_fft)
        m_pred, m_true = s_pred.abs(), s_true.abs()
        error_norm = torch.linalg.vector_norm(m_true - m_pred, dim=(-2, -1))
        convergence.append((error_norm / (torch.linalg.vector_norm(m_true, dim=(-2, -1)) + 1e-7)).mean())
        log_magnitude.append((torch.log(m_pred + 1e-5) - torch.log(m_true + 1e-5)).abs().mean())
        if frequency and n_fft <= FREQUENCY_MAX_FFT:
            advance_pred = _unit(s_pred[..., 1:] * s_pred[..., :-1].conj())
            advance_true = _unit(s_true[..., 1:] * s_true[..., :-1].conj())
            weight = (m_true[..., 1:] * m_true[..., :-1]).pow(frequency_loudness / 2)
            error = (weight * (advance_pred - advance_true).abs()).sum(dim=(-2, -1))
            frequency_terms.append((error / (weight.sum(dim=(-2, -1)) + 1e-7)).mean())
        if phase_prediction is not None:
            s_pred = _spectrogram(phase_prediction, n_fft)
            m_pred = s_pred.abs()
        c_pred = s_pred * (m_pred + 1e-7).pow(-0.7)
        c_true = s_true * (m_true + 1e-7).pow(-0.7)
        phase.append(torch.view_as_real(c_pred - c_true).abs().mean())
    return {
        "stft_convergence": torch.stack(convergence).mean(),
        "stft_log_magnitude": torch.stack(log_magnitude).mean(),
        "stft_phase": torch.stack(phase).mean(),
        "stft_frequency": torch.stack(frequency_terms).mean() if frequency_terms else s_true.real.new_zeros(()),
    }


def chroma_frames(audio: torch.Tensor, sample_rate: int, hop_length: int) -> torch.Tensor:
    """Pitch-class energy of (batch, samples) audio every ``hop_length`` samples: (batch, 12, frames).

    Power of an 8192-point STFT between 30 Hz and 2 kHz, each bin added to its nearest pitch class
    (C = 0); frame i is centred on sample i * hop_length.
    """
    window = torch.hann_window(PITCH_FFT, device=audio.device)
    power = torch.stft(audio, PITCH_FFT, hop_length, window=window, pad_mode="constant", return_complex=True).abs() ** 2
    freqs = torch.arange(PITCH_FFT // 2 + 1, device=audio.device) * sample_rate / PITCH_FFT
    band = (freqs >= PITCH_BAND_HZ[0]) & (freqs <= PITCH_BAND_HZ[1])
    pitch_class = (torch.round(12 * torch.log2(freqs.clamp_min(1.0) / 440.0)) + 69).long() % 12
    folding = F.one_hot(pitch_class, 12).T.to(power.dtype) * band.to(power.dtype)  # (12, bins)
    return torch.einsum("cb,nbt->nct", folding, power)


def pitch_loss(model: Autoencoder, latents: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """1 - cosine between the pitch head's classes and the input's, per latent frame, weighted by the
    frame's share of the crop's pitched energy (silent frames count for nothing)."""
    predicted = model.pitch_head(latents)
    target = chroma_frames(audio, model.config.sample_rate, model.config.hop_length)[..., : latents.shape[-1]]
    energy = target.sum(dim=1)
    cosine = F.cosine_similarity(predicted, target, dim=1, eps=1e-8)
    weight = energy / (energy.sum(dim=-1, keepdim=True) + 1e-12)
    return ((1 - cosine) * weight).sum(dim=-1).mean()


def autoencoder_losses(
    model: Autoencoder, audio: torch.Tensor, *, latent_noise: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """All training losses for a batch (batch, samples); ``loss`` is the weighted total.

    With ``latent_noise`` (training: unit Gaussian noise of the latents' shape, see ``draw_latent_noise``),
    a little noise is added to the latents and their mean square is penalised, so the decoder tolerates the
    imprecise latents a diffusion model produces and the encoder cannot escape the noise by growing its output.
    """
    config = model.config
    latents = model.encode_raw(audio)
    penalty = latents.pow(2).mean()
    pitch = pitch_loss(model, latents, audio) if config.train_pitch_weight > 0 else latents.new_zeros(())
    if latent_noise is not None and config.train_latent_noise_std > 0:
        latents = latents + config.train_latent_noise_std * latent_noise.to(latents.device)
    # One decoder pass, two gradient paths to the same audio: the spectral magnitude and frequency
    # terms train the phase advances; the absolute-phase terms (waveform L1, complex spectra) train
    # the magnitudes only (see Autoencoder.head_to_spectrum).
    head = model.decode_head(latents)
    frames = audio.shape[-1]
    reconstruction = model._istft(torch.complex(*model.head_to_spectrum(*head)))[..., :frames]
    absolute = None  # the same audio for every term when the phase is absolute
    if config.phase == "advance":
        absolute = model._istft(torch.complex(*model.head_to_spectrum(*head, phase_gradient=False)))[..., :frames]
    losses = {"waveform_l1": F.l1_loss(reconstruction if absolute is None else absolute, audio)}
    losses.update(stft_distances(reconstruction, audio, config.train_stft_resolutions, phase_prediction=absolute,
                                 frequency=config.train_frequency_weight > 0,
                                 frequency_loudness=config.train_frequency_loudness))
    losses["latent_penalty"] = penalty
    losses["latent_pitch"] = pitch
    losses["loss"] = (
        losses["waveform_l1"]
        + losses["stft_convergence"]
        + losses["stft_log_magnitude"]
        + losses["stft_phase"]
        + config.train_frequency_weight * losses["stft_frequency"]
        + config.train_pitch_weight * pitch
        + config.train_latent_penalty * penalty
    )
    return losses


def draw_latent_noise(config: AutoencoderConfig, batch: int, num_frames: int, generator: torch.Generator) -> torch.Tensor:
    """Unit Gaussian noise for the latents of a (batch, num_frames) audio batch."""
    shape = (batch, config.latent_channels, latent_frames(num_frames, config.hop_length))
    return torch.randn(shape, generator=generator)


# -- data ----------------------------------------------------------------------------------------
class CropSampler:
    """Random fixed-length crops from mono audio files, skipping near-silent ones.

    Reads only the crop from disk (FLAC seeks), so a large build needs little memory. Files shorter
    than the crop are zero-padded.
    """

    def __init__(self, files: list[Path], segment_frames: int, *, sample_rate: int, max_tries: int = 20):
        import soundfile as sf

        if not files:
            raise ValueError("no audio files to train on")
        self.files = list(files)
        self.segment_frames = segment_frames
        self.max_tries = max_tries
        self._frames: dict[Path, int] = {}
        self._sf = sf
        self.sample_rate = sample_rate

    def _length(self, path: Path) -> int:
        if path not in self._frames:
            info = self._sf.info(str(path))
            if info.samplerate != self.sample_rate or info.channels != 1:
                raise ValueError(
                    f"{path}: expected mono {self.sample_rate} Hz, got {info.channels} channels at {info.samplerate} Hz"
                )
            self._frames[path] = info.frames
        return self._frames[path]

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        """One crop (segment_frames,) float32; the loudest of ``max_tries`` if all are silent."""
        best, best_rms = None, -1.0
        for _ in range(self.max_tries):
            path = self.files[int(rng.integers(len(self.files)))]
            length = self._length(path)
            start = int(rng.integers(0, max(length - self.segment_frames, 0) + 1))
            audio, _ = self._sf.read(str(path), start=start, frames=self.segment_frames, dtype="float32")
            audio = np.pad(audio, (0, self.segment_frames - audio.shape[0]))
            rms = float(np.sqrt(np.mean(audio**2)))
            if rms >= SILENCE_RMS:
                return audio
            if rms > best_rms:
                best, best_rms = audio, rms
        return best

    def batch(self, batch_size: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.crop(rng) for _ in range(batch_size)]))


def split_files(build_dir: str | Path, split: str) -> list[Path]:
    """Audio files of ``split`` (validation/test fall back to train with a note when empty)."""
    from backline.data.dataset import audio_files

    return audio_files(build_dir, split=split)


# -- training ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainSettings(RunSettings):
    """An autoencoder run: the shared run settings (training/run.py) and its own (saved in config.json so a
    resume can check them)."""

    segment_seconds: float = 1.0
    log_every: int = 10
    validation_crops: int = 32
    pitch_crops: int = 8
    init_from: str | None = None  # a model file to start from (its config is the run's)
    freeze_encoder: bool = False  # train the decoder only (the latent space stays the init's)
    quiet_share: float = 0.0  # share of crops turned down by 20-80 dB


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at ``settings.steps``."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = min(1.0, (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps))
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def plot_curves(run_dir: str | Path) -> Path:
    """Draw train.csv and validation.csv of a run into curves.png; returns its path."""
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    train, validation = _read_csv(run_dir / "train.csv"), _read_csv(run_dir / "validation.csv")
    names = ("loss", "waveform_l1", "stft_log_magnitude", "stft_phase", "stft_frequency", "latent_pitch",
             "pitch_similarity", "latent_penalty")
    figure = Figure(figsize=(16, 6), dpi=80)
    for i, name in enumerate(names):
        axis = figure.add_subplot(2, 4, i + 1)
        plotted = False
        for rows, label in ((train, "train"), (validation, "validation")):
            rows = [r for r in rows if r.get(name) not in (None, "") and float(r[name]) > 0]  # 0: term not in use
            if rows:
                axis.plot([int(r["step"]) for r in rows], [float(r[name]) for r in rows], label=label)
                plotted = True
        axis.set_title(name)
        axis.set_xlabel("step")
        if plotted:
            axis.set_yscale("log")
            axis.legend()
    figure.tight_layout()
    path = run_dir / "curves.png"
    figure.savefig(path)
    return path


def _checkpoint_state(model, optimizer, step, rng, generator, elapsed_seconds) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "elapsed_seconds": elapsed_seconds,
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": generator.get_state(),
    }


def load_checkpoint(run_dir: str | Path) -> dict:
    """The latest checkpoint of a run (tensors and numbers only, read with weights_only=True)."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint.pt to resume from")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_run_config(run_dir: str | Path) -> tuple[AutoencoderConfig, dict]:
    """The model config and the saved training arguments of a run."""
    data = json.loads((Path(run_dir) / "config.json").read_text())
    return AutoencoderConfig.from_dict(data["model"]), data["training"]


def pitch_similarity(reconstruction: np.ndarray, original: np.ndarray, sample_rate: int) -> float:
    """How much of the original's pitch-class content the reconstruction keeps (0..1).

    The energy-weighted mean over 100 ms frames of the cosine similarity between the two
    chromagrams of ``fit_metrics.chroma`` (spectral peaks, 30 Hz..2 kHz): the measure the harmonic
    fit is built on, so a bass that keeps its notes scores near 1 and one that loses them far less.
    """
    from backline.training.fit_metrics import chroma

    a, b = chroma(reconstruction, sample_rate), chroma(original, sample_rate)
    frames = min(len(a), len(b))
    a, b = a[:frames], b[:frames]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    weight = np.linalg.norm(b, axis=1)
    valid = norms > 0
    if not valid.any():
        return float("nan")
    cosine = (a * b).sum(axis=1)[valid] / norms[valid]
    return float((cosine * weight[valid]).sum() / weight[valid].sum())


@torch.no_grad()
def validate(model: Autoencoder, crops: torch.Tensor, batch_size: int,
             pitch_crops: torch.Tensor | None = None) -> dict[str, float]:
    """Mean of every loss over fixed validation crops (no latent noise), and the mean
    ``pitch_similarity`` over ``pitch_crops`` (longer bass crops) when given."""
    model.eval()
    device = next(model.parameters()).device
    totals = {name: 0.0 for name in LOSS_NAMES}
    for start in range(0, crops.shape[0], batch_size):
        batch = crops[start : start + batch_size].to(device)
        losses = autoencoder_losses(model, batch)
        for name in LOSS_NAMES:
            totals[name] += float(losses[name]) * batch.shape[0]
    result = {name: value / crops.shape[0] for name, value in totals.items()}
    if pitch_crops is not None:
        scores = [pitch_similarity(model(crop[None].to(device))[0].cpu().numpy(), crop.numpy(), model.config.sample_rate)
                  for crop in pitch_crops]
        result["pitch_similarity"] = float(np.nanmean(scores)) if not np.isnan(scores).all() else float("nan")
    model.train()
    return result


def bass_files(files: list[Path]) -> list[Path]:
    """The bass stems among a split's files (``stems/bass.flac`` in a data build)."""
    return [path for path in files if path.parent.name == "stems" and path.stem == "bass"]


def train(
    config: AutoencoderConfig,
    build_dir: str | Path,
    run_dir: str | Path,
    settings: TrainSettings,
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or resume) an autoencoder; returns a summary dict (steps, wall time, last losses).

    Under ``torchrun`` every process draws each global batch of ``settings.batch_size`` crops (and its latent
    noise) from the run's seeded generators and keeps its rows (training/distributed.py); rank 0 validates and
    writes the logs and checkpoints, and a build still being rendered is picked up only by a single process."""
    from tqdm import tqdm

    processes = distributed.start()
    main = processes.main
    run_dir = Path(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"
    init = None
    if settings.init_from:
        init, init_metadata = load_autoencoder(settings.init_from)
        if settings.freeze_encoder:  # the init's encoder, hence its latent space: recorded with the run
            config = dataclasses.replace(config, latent_space=latent_space_of(
                init.config.latent_space, init_metadata.get("backline_version")))
    if resume:
        saved_config, _ = read_run_config(run_dir)
        if saved_config != config:
            raise ValueError(f"{run_dir}: --resume with a different model config than the run's config.json")
    elif (run_dir / "checkpoint.pt").exists():
        raise FileExistsError(f"{run_dir} already holds a checkpoint; pass --resume or pick a new run directory")
    rows = processes.rows(settings.batch_size)
    if main:
        config_path.write_text(json.dumps(
            {"model": config.to_dict(), "training": dataclasses.asdict(settings), "data": str(build_dir)}, indent=2
        ))

    segment_frames = int(round(settings.segment_seconds * config.sample_rate))
    train_files = split_files(build_dir, "train")
    sampler = CropSampler(train_files, segment_frames, sample_rate=config.sample_rate)
    validation_files = split_files(build_dir, "validation") or train_files
    validation_rng = np.random.default_rng(settings.seed + 1)
    validation_crops = CropSampler(validation_files, segment_frames, sample_rate=config.sample_rate).batch(
        settings.validation_crops, validation_rng
    )
    validation_basses = bass_files(validation_files)
    pitch_crops = None
    if validation_basses and settings.pitch_crops:
        pitch_frames = int(round(PITCH_CROP_SECONDS * config.sample_rate))
        pitch_crops = CropSampler(validation_basses, pitch_frames, sample_rate=config.sample_rate).batch(
            settings.pitch_crops, validation_rng
        )

    torch_generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(settings.seed)
        model = Autoencoder(config)
    if init is not None:
        missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
        other = [key for key in [*missing, *unexpected] if not key.startswith("pitch_head.")]
        if other:  # only the training-time pitch head may differ (--pitch-weight); the network itself may not
            raise ValueError(f"{settings.init_from} does not fit this config: {', '.join(other[:5])}")
    frozen = ("note_head", *(("enc_", "pitch_head") if settings.freeze_encoder else ()))  # the note head: training/notes.py
    for name, parameter in model.named_parameters():
        if name.startswith(frozen):
            parameter.requires_grad_(False)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, betas=(0.8, 0.99), weight_decay=0.01)
    step, elapsed_before = 0, 0.0
    if resume:
        state = load_checkpoint(run_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed_before = int(state["step"]), float(state["elapsed_seconds"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch_generator.set_state(state["torch_rng"])

    losses_module = processes.wrap(distributed.LossModule(
        model, lambda m, audio, noise: autoencoder_losses(m, audio, latent_noise=noise)))
    if main:
        distributed.record_run(run_dir, settings, processes, step)

    def save_checkpoint() -> None:
        state = _checkpoint_state(model, optimizer, step, rng, torch_generator, elapsed_before + time.monotonic() - started)
        distributed.save_checkpoint(processes, state, run_dir / "checkpoint.pt")

    started = time.monotonic()
    model.train()
    bar = tqdm(total=settings.steps, initial=step, desc="autoencoder", disable=not (progress and main), dynamic_ncols=True)
    last: dict[str, float] = {}
    validation: dict[str, float] = {}
    stopped_early = False
    while step < settings.steps:
        learning_rate = learning_rate_at(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        batch = sampler.batch(settings.batch_size, rng)
        if settings.quiet_share > 0:
            quiet = torch.from_numpy(rng.random(settings.batch_size) < settings.quiet_share)
            gain_db = torch.from_numpy(rng.uniform(-80.0, -20.0, settings.batch_size)).float()
            batch = batch * torch.where(quiet, 10 ** (gain_db / 20), torch.ones(()))[:, None]
        noise = draw_latent_noise(config, settings.batch_size, segment_frames, torch_generator)
        # fp32 on every device: the losses' FFTs have no bf16 kernels
        losses = losses_module(batch[rows].to(processes.device), noise[rows].to(processes.device))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        step += 1
        last = {name: processes.mean(float(value.detach())) for name, value in losses.items()}  # the global batch's
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.3f}", l1=f"{last['waveform_l1']:.4f}",
                        logmag=f"{last['stft_log_magnitude']:.3f}", phase=f"{last['stft_phase']:.3f}",
                        freq=f"{last['stft_frequency']:.3f}")
        elapsed = elapsed_before + time.monotonic() - started
        out_of_time = processes.any(settings.time_limit_minutes is not None
                                    and (time.monotonic() - started) > 60 * settings.time_limit_minutes)
        final = step >= settings.steps or out_of_time
        if main and (step % settings.log_every == 0 or final):
            _append_csv(run_dir / "train.csv", {"step": step, "elapsed_seconds": round(elapsed, 1),
                                                "learning_rate": learning_rate, **last})
        if main and (step % settings.validate_every == 0 or final):
            # A build still being rendered grows its manifest: one process picks up the new pieces as they land
            # (several would have to agree on when).
            train_files = split_files(build_dir, "train")
            if processes.world == 1 and len(train_files) != len(sampler.files):
                bar.write(f"step {step}: training on {len(train_files)} files (was {len(sampler.files)})")
                sampler.files = train_files
            validation = validate(model, validation_crops, settings.batch_size, pitch_crops)
            _append_csv(run_dir / "validation.csv", {"step": step, "elapsed_seconds": round(elapsed, 1),
                                                     "train_files": len(sampler.files), **validation})
            bar.write(f"step {step}: validation loss {validation['loss']:.4f} "
                      f"(log-magnitude {validation['stft_log_magnitude']:.3f}, phase {validation['stft_phase']:.3f}, "
                      f"frequency {validation['stft_frequency']:.3f}, "
                      f"bass pitch similarity {validation.get('pitch_similarity', float('nan')):.3f})")
            plot_curves(run_dir)
        if step % settings.checkpoint_every == 0 or final:
            save_checkpoint()
        if out_of_time:
            stopped_early = True
            bar.write(f"time limit of {settings.time_limit_minutes} minutes reached at step {step}")
            break
    bar.close()
    if not (run_dir / "checkpoint.pt").exists() or step % settings.checkpoint_every:
        save_checkpoint()
    distributed.finish(processes)
    return {
        "step": step,
        "wall_seconds": elapsed_before + time.monotonic() - started,
        "parameters": count_parameters(model),
        "stopped_early": stopped_early,
        "processes": processes.world,
        "rank": processes.rank,
        "train": last,
        "validation": validation,
    }


# -- shipping ------------------------------------------------------------------------------------
@torch.no_grad()
def measure_latent_std(model: Autoencoder, sampler: CropSampler, *, crops: int, seed: int, batch_size: int = 8) -> float:
    """Standard deviation of the raw latents over random training crops."""
    rng = np.random.default_rng(seed)
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, crops, batch_size):
        latents = model.encode_raw(sampler.batch(min(batch_size, crops - start), rng)).double()
        total += float(latents.sum())
        total_sq += float((latents**2).sum())
        count += latents.numel()
    mean = total / count
    return math.sqrt(max(total_sq / count - mean**2, 1e-12))


def ship(run_dir: str | Path, to: str | Path, *, build_dir: str | Path | None = None, crops: int = 64,
         seed: int = 0, version: str | None = None) -> dict:
    """Write the run's latest checkpoint as an fp16 model file with a measured ``latent_scale``.

    The scale is 1 / (std of raw latents over ``crops`` random training crops), so the shipped model's
    latents have unit variance; a run that froze the encoder keeps its init's scale. Returns what was written (path, step, latent std, file size).
    """
    config, training = read_run_config(run_dir)
    state = load_checkpoint(run_dir)
    model = Autoencoder(config)
    model.load_state_dict(state["model"])
    model.eval()
    if build_dir is None:
        build_dir = json.loads((Path(run_dir) / "config.json").read_text())["data"]
    segment_frames = int(round(training["segment_seconds"] * config.sample_rate))
    sampler = CropSampler(split_files(build_dir, "train"), segment_frames, sample_rate=config.sample_rate)
    step = int(state["step"])
    from backline import __version__

    version = version or f"{__version__}+step{step}"
    if training.get("freeze_encoder"):  # the init's encoder, hence its latent space and scale, unchanged
        latent_std = 1.0 / config.latent_scale
        latent_space = config.latent_space  # recorded by train from the init
        if not latent_space:
            raise ValueError(f"{run_dir}: a frozen-encoder run whose config.json does not name its init's latent "
                             "space (started before runs recorded it); train it again to ship it")
    else:
        latent_std = measure_latent_std(model, sampler, crops=crops, seed=seed)
        latent_space = version
    model.config = dataclasses.replace(config, latent_scale=1.0 / latent_std, latent_space=latent_space)
    path = save_autoencoder(to, model, version=version)
    return {"path": str(path), "step": step, "latent_std": latent_std, "latent_scale": 1.0 / latent_std,
            "version": version, "size_bytes": Path(path).stat().st_size,
            "wall_seconds": float(state["elapsed_seconds"])}
