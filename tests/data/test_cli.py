import json
import subprocess
import sys

from backline.cli import main

from pieces import make_midi


def test_data_build_and_stats_from_the_command_line(tmp_path, capsys):
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    (midi_dir / "groove.mid").write_bytes(make_midi({1: 33, 9: 0, 0: 0}))
    (midi_dir / "broken.mid").write_bytes(b"not midi")
    out = tmp_path / "build"
    assert main(["data", "build", "--midi-dir", str(midi_dir), "--midi-licence", "CC0", "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "1 variants rendered" in printed and "skipped user_broken__FluidR3_GM__v0: MidiError: corrupt MIDI" in printed
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["variants"] == 1 and stats["skipped"] == 1
    assert set(stats["hours"]["instrument"]) == {"bass", "drums"}
    assert stats["hours"]["source"]["user"] > 0 and stats["render_speed_x_realtime_per_worker"] > 1
    assert main(["data", "stats", str(out)]) == 0
    assert "hours by split:" in capsys.readouterr().out


def test_help_reads_like_a_manual():
    result = subprocess.run([sys.executable, "-m", "backline", "data", "build", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "FluidSynth" in result.stdout and "--preset" in result.stdout
    result = subprocess.run([sys.executable, "-m", "backline", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "data" in result.stdout


def test_build_without_destination_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("BACKLINE_DATA", raising=False)
    try:
        main(["data", "build"])
    except SystemExit as exit:
        assert "--out DIR, or set BACKLINE_DATA" in str(exit)
    else:
        raise AssertionError("expected the build to refuse")


def test_broad_small_preset_builds_with_stats_and_histogram(tmp_path, capsys):
    out = tmp_path / "broad"
    assert main(["data", "build", "--preset", "broad-small", "--max-pieces", "3", "--out", str(out), "--jobs", "2"]) == 0
    assert "3 variants rendered" in capsys.readouterr().out
    png = tmp_path / "histogram.png"
    assert main(["data", "stats", str(out), "--json", "--histogram", str(png)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["grooves"] == 3 and stats["style_families"] == 3 and stats["hours"]["source"] == {"mma": stats["total_hours"]}
    assert set(stats["hours"]) >= {"style_family", "kit", "tempo_band", "key", "pair_licences"}
    assert stats["pair_hours"] > stats["total_hours"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["held_out"]["families"] and "mma" in report["sources"]
