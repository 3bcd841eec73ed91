import numpy as np
import pytest
import soundfile as sf

from backline.engine.audio import AudioError, read_audio, resample, validate_audio, write_audio


@pytest.mark.parametrize(
    "audio, sample_rate, message",
    [
        (np.zeros((1, 0)), 44100, "the audio is empty"),
        (np.array([[0.0, np.nan]]), 44100, "NaN or infinite"),
        (np.array([[0.0, np.inf]]), 44100, "NaN or infinite"),
        (np.zeros((1, 10)), 1_600_000_000, "sample rate 1600000000 Hz is not supported"),
        (np.zeros((1, 10)), 0, "sample rate 0 Hz is not supported"),
        (np.zeros((1, 10)), 44100.5, "whole number of Hz"),
        (np.zeros((6, 10)), 44100, "6 channels; Backline takes mono or stereo"),
        (np.zeros((1, 2, 3)), 44100, "expected (channels, frames)"),
        (np.array([["a"]]), 44100, "samples must be numbers"),
    ],
)
def test_bad_audio_is_refused_with_a_clear_message(audio, sample_rate, message):
    with pytest.raises(AudioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_audio(audio, sample_rate)


def test_mono_becomes_one_channel_float32():
    out = validate_audio(np.arange(4, dtype=np.int16), 44100)
    assert out.shape == (1, 4) and out.dtype == np.float32


def test_oversize_audio_is_refused():
    with pytest.raises(AudioError, match="longer than the limit of 1.0 s"):
        validate_audio(np.zeros((2, 44101)), 44100, max_duration_seconds=1.0)


def test_files_round_trip_and_bad_files_are_refused(tmp_path):
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, 1000))).astype(np.float32)
    write_audio(tmp_path / "a.wav", audio, 48000, subtype="FLOAT")
    back, sample_rate = read_audio(tmp_path / "a.wav")
    assert sample_rate == 48000
    np.testing.assert_array_equal(back, audio)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnope")
    with pytest.raises(AudioError, match="bad.wav: not an audio file Backline can read: WAV, AIFF, FLAC or OGG"):
        read_audio(tmp_path / "bad.wav")
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "missing.wav")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 44100)
    with pytest.raises(AudioError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([[0.0], [np.nan]]), 44100, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


def test_resample_keeps_duration_and_pitch():
    sample_rate = 48000
    t = np.arange(sample_rate) / sample_rate
    audio = np.sin(2 * np.pi * 1000 * t)[None].astype(np.float32)
    out = resample(audio, sample_rate, 44100)
    assert out.shape == (1, 44100) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) - 1000) <= 1
