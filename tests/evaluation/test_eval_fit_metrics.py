import numpy as np
import pytest

from backline.training import fit_metrics as fm
from eval_synthetic import SAMPLE_RATE, bass, context, pieces

SECONDS = 6.0


def test_a_stem_in_the_contexts_key_fits_better_than_one_a_tritone_away():
    ctx = context(key=0, bpm=120, seconds=SECONDS)
    in_key = fm.harmonic_fit(bass(0, 120, SECONDS), ctx, SAMPLE_RATE)
    tritone = fm.harmonic_fit(bass(0, 120, SECONDS, transpose=6), ctx, SAMPLE_RATE)
    assert in_key > 0.6
    assert tritone < 0.35
    assert in_key - tritone > 0.4


def test_onsets_on_the_grid_fit_better_than_onsets_100_ms_off():
    ctx = context(key=0, bpm=120, seconds=SECONDS)
    on = fm.rhythm_scores(bass(0, 120, SECONDS), ctx, SAMPLE_RATE)
    off = fm.rhythm_scores(bass(0, 120, SECONDS, shift_seconds=0.1), ctx, SAMPLE_RATE)
    assert on.onset_agreement > 0.4 and on.grid_agreement > 0.4
    assert off.onset_agreement < 0.5 * on.onset_agreement
    assert off.grid_agreement < 0.5 * on.grid_agreement
    assert on.rhythmic_fit - off.rhythmic_fit > 0.25


@pytest.mark.parametrize("bpm", [95.0, 120.0, 140.0])
def test_grid_estimate_finds_the_tempo(bpm):
    grid = fm.estimate_grid(fm.onset_envelope(context(0, bpm, SECONDS, phase_seconds=0.2), SAMPLE_RATE))
    assert grid.bpm == pytest.approx(bpm, rel=0.02)
    assert fm.estimate_grid(np.zeros(500)) is None


def _set_scores(stems, contexts):
    rows = [fm.fit_scores(fm.stem_features(s, SAMPLE_RATE), fm.context_features(c, SAMPLE_RATE))
            for s, c in zip(stems, contexts)]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("harmonic_fit", "rhythmic_fit")}


def test_normalisation_gives_one_for_real_pairs_and_about_zero_for_shuffled_ones():
    # calibrate on one set of pieces, then score a second, independent set of real and shuffled pairs
    rng = np.random.default_rng(0)
    calibration, held_out = pieces(6, SECONDS, seed=1), pieces(6, SECONDS, seed=2)

    def real_and_shuffled(set_):
        order = fm.derangement([str(i) for i in range(len(set_))], rng)
        contexts = [p["context"] for p in set_]
        return (_set_scores([p["bass"] for p in set_], contexts),
                _set_scores([set_[j]["bass"] for j in order], contexts))

    real, shuffled = real_and_shuffled(calibration)
    real2, shuffled2 = real_and_shuffled(held_out)
    for key in ("harmonic_fit", "rhythmic_fit"):
        assert real[key] - shuffled[key] > 0.2, key
        assert fm.normalise(real[key], real[key], shuffled[key]) == 1.0
        assert fm.normalise(real2[key], real[key], shuffled[key]) == pytest.approx(1.0, abs=0.3), key
        assert fm.normalise(shuffled2[key], real[key], shuffled[key]) == pytest.approx(0.0, abs=0.35), key


def test_derangement_never_keeps_a_stem_with_its_own_piece():
    groups = ["a", "a", "b", "b", "c", "d"]
    for seed in range(20):
        order = fm.derangement(groups, np.random.default_rng(seed))
        assert sorted(order) == list(range(len(groups)))
        assert all(groups[i] != groups[j] for i, j in enumerate(order))
    with pytest.raises(ValueError, match="at least two different pieces"):
        fm.derangement(["a", "a"], np.random.default_rng(0))


def test_sanity_flags():
    ctx = context(0, 120, 3.0)
    stem = bass(0, 120, 3.0)
    assert not any(fm.sanity(stem, ctx, SAMPLE_RATE, expected_frames=len(ctx)).values())
    assert fm.sanity(0.5 * ctx, ctx, SAMPLE_RATE)["copy_of_context"]
    assert fm.sanity(ctx + 0.3 * stem, ctx, SAMPLE_RATE)["copy_of_context"]
    assert fm.sanity(np.zeros_like(ctx), ctx, SAMPLE_RATE)["silent"]
    assert fm.sanity(np.sign(stem), ctx, SAMPLE_RATE)["clipped"]
    assert fm.sanity(stem[:-10], ctx, SAMPLE_RATE, expected_frames=len(ctx))["wrong_length"]
    broken = stem.copy()
    broken[5] = np.nan
    assert fm.sanity(broken, ctx, SAMPLE_RATE)["non_finite"]
    shares = fm.sanity_shares([fm.sanity(stem, ctx, SAMPLE_RATE), fm.sanity(0.5 * ctx, ctx, SAMPLE_RATE)])
    assert shares["copy_of_context"] == 0.5 and shares["any"] == 0.5 and shares["silent"] == 0.0


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    x = rng.standard_normal((n, d))
    y = 2.0 * rng.standard_normal((n, d)) + 1.0
    # ||mu||² + tr(I + 4I - 2 * 2I) = d + d
    assert fm.frechet_distance(x, y) == pytest.approx(2 * d, rel=0.02)
    assert fm.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_mmd_density_and_coverage_tell_same_from_shifted_distributions():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((300, 8))
    same = rng.standard_normal((300, 8))
    shifted = rng.standard_normal((300, 8)) + 3.0
    assert abs(fm.mmd2_polynomial(real, same)) < 0.05
    assert fm.mmd2_polynomial(real, shifted) > 1.0
    density, coverage = fm.density_coverage(real, same)
    assert 0.8 < density < 1.2 and coverage > 0.9
    density, coverage = fm.density_coverage(real, shifted)
    assert density < 0.05 and coverage < 0.1


def test_embedding_is_128_numbers_per_5_second_segment_and_skips_silence():
    audio = np.concatenate([bass(0, 120, 10.0), np.zeros(5 * SAMPLE_RATE, np.float32)])
    assert fm.embed(audio, SAMPLE_RATE).shape == (2, 128)


def test_spectral_balance_reads_a_lean_not_a_level():
    """A quieter copy has the real stems' balance; the same stems with their bass band cut lean away from it."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(10 * SAMPLE_RATE).astype(np.float32)
    reference = fm.embed(noise, SAMPLE_RATE)
    assert all(abs(v) < 0.01 for v in fm.spectral_balance_db(reference, fm.embed(0.1 * noise, SAMPLE_RATE)).values())
    spectrum = np.fft.rfft(noise)
    spectrum[np.fft.rfftfreq(len(noise), 1 / SAMPLE_RATE) < 250.0] *= 0.1  # 20 dB less below 250 Hz
    thin = fm.spectral_balance_db(reference, fm.embed(np.fft.irfft(spectrum, len(noise)).astype(np.float32),
                                                      SAMPLE_RATE))
    assert thin["low"] < -12.0 and thin["mid"] > 0.0 and thin["high"] > 0.0
    assert fm.realism(reference, reference)["balance_db"] == pytest.approx({"low": 0.0, "mid": 0.0, "high": 0.0})
