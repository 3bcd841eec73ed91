import argparse
import json
import subprocess
import sys

from backline.export import cli
from backline.export.debug_models import write_debug_models


def parse(argv):
    parser = argparse.ArgumentParser(prog="backline")
    cli.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_export_command_writes_checked_files_and_a_report(tmp_path, capsys):
    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=1)
    args = parse(["export", "--autoencoder", str(ae_path), "--denoiser", str(dn_path), "--out", str(tmp_path / "onnx"),
                  "--seed", "4", "--threads", "1", "--json", str(tmp_path / "report.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count(" ok\n") == 4 and "check inputs seed 4" in out
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [
        "autoencoder_decoder.onnx", "autoencoder_encoder.onnx", "denoiser.onnx", "guided_step.onnx"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["seed"] == 4 and all(check["passed"] for check in report["checks"].values())


def test_export_command_with_int8_writes_and_reports_the_int8_graphs(tmp_path, capsys):
    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=1)
    args = parse(["export", "--autoencoder", str(ae_path), "--denoiser", str(dn_path), "--out", str(tmp_path / "onnx"),
                  "--seed", "4", "--threads", "1", "--int8"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count(" ok\n") == 6 and "denoiser_int8 max rel error" in out and "against the float graph" in out
    assert {"denoiser.int8.onnx", "guided_step.int8.onnx"} <= {p.name for p in (tmp_path / "onnx").iterdir()}


def test_export_command_reports_a_missing_file(tmp_path, capsys):
    args = parse(["export", "--autoencoder", str(tmp_path / "nope.safetensors"), "--denoiser", str(tmp_path / "x"),
                  "--out", str(tmp_path / "onnx")])
    assert args.func(args) == 2
    assert "nope.safetensors: no such model file" in capsys.readouterr().err


def test_registration_and_help_need_no_torch():
    script = ("import sys; sys.modules['torch'] = None; from backline.cli import main; main(sys.argv[1:])")
    for command in (["export"], ["bench", "generate"]):
        done = subprocess.run([sys.executable, "-c", script, *command, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "examples:" in done.stdout


def test_bench_generate_measures_the_files_defaults_cold_warm_and_one_take(tmp_path, capsys):
    """`bench generate` with a distilled-style file: its recorded steps and sampler are what is timed."""
    from backline.cli import main

    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=1)
    assert main(["ship", "diffusion", "--to", str(dn_path), "--default-steps", "3", "--default-sampler", "euler"]) == 0
    report = tmp_path / "bench.json"
    assert main(["bench", "generate", "--autoencoder", str(ae_path), "--denoiser", str(dn_path), "--seconds", "1",
                 "--backends", "onnx", "--threads", "1", "--work", str(tmp_path / "work"), "--json", str(report)]) == 0
    (row,) = json.loads(report.read_text())["results"]
    assert (row["steps"], row["sampler"]) == (3, "euler")
    assert row["warm_generate_seconds"] > 0 and 0 < row["warm_one_take_seconds"] and row["torch_imported"] is False
    assert row["command_seconds"] > 0 and (tmp_path / "work" / "stem.wav").is_file()  # backline generate, cold


def test_bench_generate_times_the_few_step_sampler_beside_the_full_one(tmp_path):
    """With a distilled file beside the denoiser, the default bass is the few-step sampler's, on both backends."""
    import torch

    from backline.cli import main
    from backline.models.diffusion import load_denoiser, save_denoiser

    ae_path, dn_path = write_debug_models(tmp_path, "tiny", seed=1)
    model, metadata = load_denoiser(dn_path)
    provenance = metadata["config"]["provenance"] | {"distilled_from": metadata["backline_version"], "sampling": {
        "steps": 2, "sampler": "euler", "few_step_for": ["bass"]}}
    student = save_denoiser(tmp_path / "student.safetensors", model, version="student", extra=provenance,
                            dtype=torch.float32)
    report = tmp_path / "bench.json"
    assert main(["bench", "generate", "--autoencoder", str(ae_path), "--denoiser", str(dn_path), "--few-step",
                 str(student), "--seconds", "1", "--backends", "torch", "onnx", "--threads", "1", "--work",
                 str(tmp_path / "work"), "--json", str(report)]) == 0
    written = json.loads(report.read_text())
    assert written["models"]["few_step"] == str(student)
    assert [(row["backend"], row["steps"], row["sampler"]) for row in written["results"]] == [
        ("torch", 2, "few_step"), ("onnx", 2, "few_step")]
