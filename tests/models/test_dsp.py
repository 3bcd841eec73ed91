"""The pitch-locked low band: a made-up phase that follows the notes rebuilds a tone's own phase."""

import numpy as np
import pytest

from backline.models.dsp import istft, note_frequencies, pitch_locked, stft

RATE, N_FFT, HOP = 44_100, 2048, 512


def _tone(f0_hz: float, seconds: float = 2.0, harmonics: int = 4) -> np.ndarray:
    t = np.arange(int(seconds * RATE) // HOP * HOP) / RATE
    return sum(0.3 / h * np.cos(2 * np.pi * h * f0_hz * t + h) for h in range(1, harmonics + 1)).astype(np.float32)


def _peak_share(audio: np.ndarray, f0_hz: float) -> float:
    """Share of the energy within 1 Hz of f0 in a 2**16-point spectrum of the middle of ``audio``."""
    middle = audio[len(audio) // 2 - 2**15:len(audio) // 2 + 2**15] * np.hanning(2**16)
    power = np.abs(np.fft.rfft(middle)) ** 2
    freqs = np.fft.rfftfreq(2**16, 1 / RATE)
    band = (freqs > 20) & (freqs < 1.5 * f0_hz)
    return float(power[band & (np.abs(freqs - f0_hz) < 1.0)].sum() / power[band].sum())


def test_locked_phase_rebuilds_a_tone_whose_phase_was_scrambled():
    f0 = 440.0 * 2 ** ((30 - 69) / 12)  # F#1, 46.2 Hz: about two bins of a 2048-point STFT
    tone = _tone(f0)
    real, imag = stft(tone[None], N_FFT, HOP)
    magnitude = np.hypot(real, imag)
    scrambled = np.random.default_rng(0).uniform(-np.pi, np.pi, real.shape)
    real_s, imag_s = magnitude * np.cos(scrambled), magnitude * np.sin(scrambled)
    f0_track = np.full((1, real.shape[2]), f0)
    real_l, imag_l = pitch_locked(real_s, imag_s, f0_track, sample_rate=RATE, n_fft=N_FFT, hop=HOP)
    np.testing.assert_allclose(np.hypot(real_l, imag_l), magnitude, rtol=1e-4, atol=1e-6)  # magnitudes kept
    # every locked bin's phase differs from the true one by one constant per harmonic
    locked, true = real_l + 1j * imag_l, real + 1j * imag
    bin_hz = RATE / N_FFT
    for h in (1, 2, 3):
        k = int(round(h * f0 / bin_hz))
        difference = np.angle(locked[0, k, 4:-4] * np.conj(true[0, k, 4:-4]))
        assert np.abs(np.exp(1j * difference).mean()) > 0.99, h  # circular spread ~ 0
    # and it is audible as the pitch: the rebuilt tone's fundamental is as sharp as the real one's
    rebuilt = istft(real_l, imag_l, N_FFT, HOP)[0]
    smeared = istft(real_s, imag_s, N_FFT, HOP)[0]
    assert _peak_share(rebuilt, f0) > 0.8 * _peak_share(tone, f0)
    assert _peak_share(smeared, f0) < 0.5 * _peak_share(tone, f0)


def test_only_low_bins_of_frames_with_a_note_change():
    rng = np.random.default_rng(1)
    real, imag = (rng.standard_normal((2, N_FFT // 2 + 1, 12)).astype(np.float32) for _ in range(2))
    f0 = np.zeros((2, 12))
    f0[0, 3:8] = 55.0
    real_l, imag_l = pitch_locked(real, imag, f0, sample_rate=RATE, n_fft=N_FFT, hop=HOP, below_hz=400.0)
    changed = (real_l != real) | (imag_l != imag)
    low = int(np.ceil(400.0 / (RATE / N_FFT)))
    assert changed[0, 1:low, 3:8].any()
    assert not changed[1].any() and not changed[0, :, :3].any() and not changed[0, :, 8:].any()
    assert not changed[:, low:].any() and not changed[:, 0].any()  # above the band, and DC, untouched
    np.testing.assert_allclose(np.hypot(real_l, imag_l), np.hypot(real, imag), rtol=1e-5)
    with pytest.raises(ValueError, match="f0"):
        pitch_locked(real, imag, f0[:, :5], sample_rate=RATE, n_fft=N_FFT, hop=HOP)


def test_note_frequencies_read_the_classes():
    logits = np.full((1, 50, 3), -5.0)
    logits[0, 0, 0] = 1.0  # no note
    logits[0, 46, 1] = 1.0  # MIDI 24 + 45 = 69: A4
    logits[0, 1, 2] = 1.0  # MIDI 24: C1
    np.testing.assert_allclose(note_frequencies(logits, 24), [[0.0, 440.0, 440.0 * 2 ** (-45 / 12)]])


def test_the_phase_restarts_with_each_note_so_repeated_notes_decode_alike():
    from backline.models.dsp import note_phase

    f0 = np.array([[55.0, 55.0, 55.0, 0.0, 0.0, 82.0, 82.0, 55.0, 55.0, 55.0]])
    theta = note_phase(f0, sample_rate=RATE, hop=HOP)
    step = lambda hz: 2 * np.pi * hz * HOP / RATE
    np.testing.assert_allclose(theta[0], [0, step(55), 2 * step(55), 0, 0, 0, step(82), 0, step(55), 2 * step(55)])
    # a spectrum whose frames repeat with a period gets a phase that repeats with it (a loop stays a loop)
    rng = np.random.default_rng(2)
    period = rng.standard_normal((1, N_FFT // 2 + 1, 6)).astype(np.float32)
    real, imag = np.tile(period, 3), np.tile(period[::-1], 3)
    notes = np.tile([[41.2, 41.2, 41.2, 61.7, 61.7, 0.0]], 3)
    real_l, imag_l = pitch_locked(real, imag, notes, sample_rate=RATE, n_fft=N_FFT, hop=HOP)
    np.testing.assert_array_equal(real_l[..., :6], real_l[..., 6:12])
    np.testing.assert_array_equal(imag_l[..., 6:12], imag_l[..., 12:])


@pytest.mark.parametrize("workers", [2, 3])
def test_the_stft_pair_on_threads_gives_the_same_arrays_as_on_one(workers):
    """Several chunks (the last one short) on a pool of threads: each chunk writes its own frames, and the
    inverse's overlapping chunks are summed in order, so the result is bit-identical to one thread's."""
    audio = np.random.default_rng(3).standard_normal((2, HOP * 75)).astype(np.float32)
    one = stft(audio, N_FFT, HOP, chunk_frames=16)
    threaded = stft(audio, N_FFT, HOP, chunk_frames=16, workers=workers)
    assert all(np.array_equal(a, b) for a, b in zip(one, threaded))
    back = istft(*one, N_FFT, HOP, chunk_frames=16)
    assert np.array_equal(back, istft(*one, N_FFT, HOP, chunk_frames=16, workers=workers))
    np.testing.assert_allclose(back, audio, atol=1e-5)
