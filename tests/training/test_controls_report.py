"""``backline eval controls`` on a tiny random model: the report's measures behave as their controls promise."""

import json

from backline.training.controls_report import run
from tiny_bundle import make_bundle


def test_controls_report_measures_each_control(tmp_path):
    report = run(make_bundle(), tmp_path, steps=2)
    assert json.loads((tmp_path / "report.json").read_text())["steps"] == 2
    assert "## Loops" in (tmp_path / "report.md").read_text()
    assert report["regenerate"]["kept_max_abs_difference"] == 0.0
    variation = {v["strength"]: v["mel_distance_db"] for v in report["variation"]}
    assert variation[0.0] == 0.0 and variation[1.0] > 0.1
    loops = {v["strength"]: v["periodicity_error"] for v in report["loop"]}
    assert loops[1.0] < 0.05 < loops[0.0]
    stereo = {v["width"]: v for v in report["stereo"]}
    assert stereo[0.0]["lr_correlation"] > 0.9999 and stereo[1.0]["channels"] == 2
    assert stereo[1.0]["mono_sum_max_error"] < 1e-4
    blend = {v["ratio"]: v for v in report["blend"]}
    assert blend[0.0]["distance_to_a"] != blend[1.0]["distance_to_a"]
    assert {"drums", "bass"} == set(report["arrangement"]["sanity"])
    assert sorted(p.name for p in tmp_path.glob("*.flac")) == [
        "arrangement_mix.flac", "loop_2s_cycle.flac", "regenerate_6-10s.flac", "stereo_width_1.flac", "variation_0.5.flac"]
