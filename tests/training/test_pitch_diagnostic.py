"""The phase-vocoder phase of the pitch diagnostic rebuilds a low bass note's pitch from magnitude alone."""

import numpy as np

from backline.models.dsp import istft, stft
from backline.training.pitch_diagnostic import HOP, N_FFT, phase_vocoder_phase

RATE = 44_100


def peak_hz(audio):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * RATE / len(audio)


def test_a_41_hz_note_keeps_its_pitch_with_the_phase_vocoder_and_loses_it_with_random_phase():
    t = np.arange(RATE * 4 // HOP * HOP) / RATE
    note = (0.5 * np.sin(2 * np.pi * 41.2 * t)).astype(np.float32)  # E1, a bin is 21.5 Hz wide
    real, imag = stft(note[None], N_FFT, HOP)
    magnitude = np.hypot(real, imag)[0]
    coherent = phase_vocoder_phase(magnitude)
    rebuilt = istft((magnitude * np.cos(coherent))[None], (magnitude * np.sin(coherent))[None], N_FFT, HOP)[0]
    middle = slice(RATE // 2, len(note) - RATE // 2)
    assert abs(peak_hz(rebuilt[middle]) - 41.2) < 0.5
    random = np.random.default_rng(0).uniform(-np.pi, np.pi, magnitude.shape)
    smeared = istft((magnitude * np.cos(random))[None], (magnitude * np.sin(random))[None], N_FFT, HOP)[0]
    tone = lambda audio: np.abs(np.fft.rfft(audio[middle]))
    assert tone(rebuilt).max() / tone(rebuilt).sum() > 3 * tone(smeared).max() / tone(smeared).sum()
