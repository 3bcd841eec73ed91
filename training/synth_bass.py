"""Basses in sounds no soundfont of ours has, for the autoencoder's note head (issue 23).

The note head reads a bass's notes from its latents; trained on three General MIDI soundfonts it misreads
timbres it never heard (the unseen split's OPL3 FM basses come back at about 0.69 of the real bass's
harmonic fit). This renders the train split's bass lines again, from the notes they were written with
(``eval_suite.reference_notes``: the MMA song regenerated), through random synthesizer voices (two-operator FM,
sawtooth, square and pulse oscillators, a resonant low-pass with an envelope, drive), encodes them with the
autoencoder (frozen: the latent space does not change) and labels each STFT frame with the note that sounds
there. ``backline train notes --latents OUT --labels OUT/labels-synth.npz ...`` then trains on them beside the
real basses: OUT holds links to every latent file of the source directory, so the real basses' label files
(``backline train labels``) read from it unchanged. The unseen split's sounds stay held out: no soundfont is
involved here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SYNTH_LABELS = "labels-synth.npz"
WAVEFORMS = ("fm", "saw", "square", "pulse")


@dataclass(frozen=True)
class SynthVoice:
    """One synthesizer patch: an oscillator, a filter with its envelope, an amplitude envelope and drive."""

    waveform: str  # one of WAVEFORMS
    fm_ratio: float  # modulator frequency / carrier (fm)
    fm_index: float  # peak modulation index (fm), decaying with fm_decay_seconds
    fm_decay_seconds: float
    pulse_width: float  # duty cycle (pulse)
    cutoff_multiple: float  # low-pass cutoff at the note's start, as a multiple of its fundamental
    cutoff_decay_seconds: float  # the cutoff falls to the fundamental's 1.5x with this time constant
    resonance: float  # 0..0.9
    attack_seconds: float
    decay_seconds: float
    sustain: float  # 0..1 of the peak
    release_seconds: float
    drive: float  # tanh drive, 1 = clean


def random_voice(rng: np.random.Generator) -> SynthVoice:
    """A patch drawn from ranges that keep the pitch audible: a fundamental or its octave always sounds."""
    return SynthVoice(
        waveform=str(rng.choice(WAVEFORMS)),
        fm_ratio=float(rng.choice([0.5, 1.0, 1.0, 2.0, 3.0])),
        fm_index=float(rng.uniform(0.3, 6.0)),
        fm_decay_seconds=float(rng.uniform(0.05, 1.0)),
        pulse_width=float(rng.uniform(0.1, 0.5)),
        cutoff_multiple=float(rng.uniform(2.0, 30.0)),
        cutoff_decay_seconds=float(rng.uniform(0.03, 0.8)),
        resonance=float(rng.uniform(0.0, 0.85)),
        attack_seconds=float(rng.uniform(0.001, 0.03)),
        decay_seconds=float(rng.uniform(0.05, 0.6)),
        sustain=float(rng.uniform(0.2, 1.0)),
        release_seconds=float(rng.uniform(0.01, 0.15)),
        drive=float(rng.uniform(1.0, 4.0)),
    )


def _oscillator(voice: SynthVoice, f0_hz: float, t: np.ndarray) -> np.ndarray:
    phase = f0_hz * t  # cycles
    if voice.waveform == "fm":
        index = voice.fm_index * np.exp(-t / voice.fm_decay_seconds)
        return np.sin(2 * np.pi * phase + index * np.sin(2 * np.pi * voice.fm_ratio * phase))
    fraction = phase % 1.0
    if voice.waveform == "saw":
        return 2.0 * fraction - 1.0
    width = 0.5 if voice.waveform == "square" else voice.pulse_width
    return np.where(fraction < width, 1.0, -1.0) - (2.0 * width - 1.0)  # no DC


FILTER_BLOCK = 256  # samples the filter's cutoff holds still


def _lowpass(x: np.ndarray, cutoff_hz: np.ndarray, resonance: float, sample_rate: int) -> np.ndarray:
    """A resonant two-pole low-pass (RBJ biquad, Q from 0.7 to 6 with ``resonance``) whose cutoff follows
    ``cutoff_hz`` a block at a time, its state carried across blocks."""
    from scipy.signal import lfilter

    q = 0.707 + resonance * 6.0
    out = np.empty_like(x)
    state = np.zeros(2)
    for start in range(0, len(x), FILTER_BLOCK):
        w0 = 2 * np.pi * min(float(cutoff_hz[start]), 0.45 * sample_rate) / sample_rate
        alpha, cos = np.sin(w0) / (2 * q), np.cos(w0)
        b = np.array([(1 - cos) / 2, 1 - cos, (1 - cos) / 2])
        a = np.array([1 + alpha, -2 * cos, 1 - alpha])
        out[start:start + FILTER_BLOCK], state = lfilter(b / a[0], a / a[0], x[start:start + FILTER_BLOCK], zi=state)
    return out


def render_note(voice: SynthVoice, pitch: int, seconds: float, velocity: float, sample_rate: int) -> np.ndarray:
    """One note held ``seconds`` then released: the oscillator through the filter, shaped and driven."""
    f0_hz = 440.0 * 2 ** ((pitch - 69) / 12)
    total = seconds + voice.release_seconds
    t = np.arange(int(total * sample_rate)) / sample_rate
    x = _oscillator(voice, f0_hz, t)
    cutoff = f0_hz * (1.5 + (voice.cutoff_multiple - 1.5) * np.exp(-t / voice.cutoff_decay_seconds))
    x = _lowpass(x, cutoff, voice.resonance, sample_rate)
    held = np.where(t < voice.attack_seconds, t / voice.attack_seconds,
                    voice.sustain + (1 - voice.sustain) * np.exp(-(t - voice.attack_seconds) / voice.decay_seconds))
    released = np.clip(1.0 - (t - seconds) / voice.release_seconds, 0.0, 1.0)
    level = held * np.where(t < seconds, 1.0, released[np.minimum(np.searchsorted(t, seconds), len(t) - 1)] * released)
    return np.tanh(voice.drive * velocity * level * x) / np.tanh(voice.drive)


def render_bass(notes, frames: int, sample_rate: int, voice: SynthVoice) -> np.ndarray:
    """A bass line (``Note``s in seconds) through ``voice``: mono float32 ``(frames,)`` peaking at -6 dBFS."""
    out = np.zeros(frames, np.float64)
    for note in notes:
        start = int(note.start_seconds * sample_rate)
        if start >= frames:
            continue
        rendered = render_note(voice, note.pitch, max(note.end_seconds - note.start_seconds, 0.02),
                               note.velocity / 127, sample_rate)[: frames - start]
        out[start:start + len(rendered)] += rendered
    peak = np.abs(out).max()
    return (0.5 * out / peak if peak > 0 else out).astype(np.float32)


def _synth_variant(job: tuple) -> list[tuple[str, dict, np.ndarray]]:
    """One train bass's synthesized versions: (label key, entry, frame labels) each, latents written to out_dir."""
    import torch

    from backline.models.autoencoder import encode_audio
    from backline.training.eval_suite import reference_notes
    from backline.training.latents import _autoencoder
    from backline.training.notes import frame_labels

    autoencoder_path, build_dir, record, frames, out_dir, voices, seed, lowest_midi, count, threads = job
    torch.set_num_threads(threads)
    model = _autoencoder(autoencoder_path)
    config = model.config
    notes = reference_notes(record, "bass", build_dir=Path(build_dir))
    rng = np.random.default_rng([seed, *record["variant_id"].encode()])
    results = []
    for k in range(voices):
        voice = random_voice(rng)
        name = f"{record['variant_id']}__synth{k}.npz"
        audio = render_bass(notes, frames * config.hop_length, config.sample_rate, voice)
        latents = encode_audio(model, audio, config.sample_rate)[0].detach().numpy().astype(np.float16)
        partial = Path(out_dir) / (name[:-4] + ".partial.npz")
        np.savez(partial, target=latents, voice=json.dumps(asdict(voice)))
        partial.replace(Path(out_dir) / name)
        labels = frame_labels(notes, latents.shape[-1] * config.frames_per_latent, sample_rate=config.sample_rate,
                              hop=config.stft_hop_length, lowest_midi=lowest_midi, count=count)
        results.append((name[:-4], {"split": "train", "file": name}, labels))
    return results


def synth_basses(build_dir: str | Path, latents_dir: str | Path, autoencoder_path: str | Path, out_dir: str | Path,
                 *, voices: int = 2, every: int = 1, seed: int = 0, jobs: int = 1, lowest_midi: int, count: int,
                 progress=print) -> Path:
    """Write ``out_dir``: links to ``latents_dir``'s files and record, ``voices`` synthesized versions of every
    ``every``-th train bass (latents by ``autoencoder_path``, in its latent space), and their labels
    (``SYNTH_LABELS``). Returns the labels file."""
    from backline.data.dataset import read_manifest
    from backline.data.scheduling import tasks
    from backline.engine.runtime import latent_space_of
    from backline.models.autoencoder import load_autoencoder
    from backline.training.latents import require_latent_space
    from backline.training.notes import write_label_cache

    build_dir, latents_dir, out_dir = Path(build_dir), Path(latents_dir), Path(out_dir)
    model, metadata = load_autoencoder(autoencoder_path)  # the real basses' latents must share its latent space
    require_latent_space(latents_dir, latent_space_of(model.config.latent_space, metadata.get("backline_version")),
                         autoencoder_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source in latents_dir.iterdir():
        link = out_dir / source.name
        if not link.exists():
            os.symlink(source.resolve(), link)
    records = {r["variant_id"]: r for r in read_manifest(build_dir)}
    entries = [json.loads(line) for line in (latents_dir / "index.jsonl").read_text().splitlines() if line.strip()]
    entries = [e for e in entries if e["instrument"] == "bass" and e["split"] == "train"
               and e["variant_id"] in records][::every]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    work = [(str(autoencoder_path), str(build_dir), records[e["variant_id"]], e["frames"], str(out_dir), voices, seed, lowest_midi,
             count, threads) for e in entries]
    labels = {}
    with tasks(jobs) as run:
        for index, results in enumerate(run(_synth_variant, work)):
            for key, entry, frame_labels_ in results:
                labels[key] = {**entry, "labels": frame_labels_}
            if progress and (index + 1) % 25 == 0:
                progress(f"synthesized basses: {index + 1}/{len(work)} stems")
    key = json.dumps({"build": str(build_dir.resolve()), "latents": str(latents_dir.resolve()), "voices": voices,
                      "every": every, "seed": seed})
    return write_label_cache(out_dir / SYNTH_LABELS, key, labels)
