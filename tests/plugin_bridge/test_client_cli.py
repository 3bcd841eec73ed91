"""``backline client generate``: the reference client from the command line, against a real server."""

import numpy as np
import pytest
import soundfile as sf

from backline.cli import main


def test_client_generate_writes_the_stem_and_a_rerun_fetches_the_same_result(start_server, tmp_path, capsys):
    server = start_server()
    region = tmp_path / "region.wav"
    sf.write(region, (0.2 * np.sin(np.arange(22_050) * 0.05)).astype(np.float32), 22_050)
    args = ["client", "generate", "--context", str(region), "--connection-file", str(server.connection_file),
            "--param", "steps=3", "--out"]
    assert main([*args, str(tmp_path / "a.wav")]) == 0
    first_out = capsys.readouterr().out
    assert main([*args, str(tmp_path / "b.wav")]) == 0
    a, rate = sf.read(tmp_path / "a.wav")
    b, _ = sf.read(tmp_path / "b.wav")
    assert rate == 22_050 and len(a) == 22_050 and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, b)
    job = first_out.split("(job ")[1].split(")")[0]
    assert f"(job {job})" in capsys.readouterr().out  # same region and parameters: the same job


def test_client_errors_are_clear(start_server, tmp_path, capsys):
    region = tmp_path / "region.wav"
    sf.write(region, np.zeros(1000, np.float32) + 0.1, 22_050)
    missing = ["client", "generate", "--context", str(region), "--out", str(tmp_path / "x.wav"),
               "--connection-file", str(tmp_path / "nothing.json")]
    assert main(missing) == 2 and "engine is not running (no connection file" in capsys.readouterr().err
    server = start_server()
    bad = ["client", "generate", "--context", str(region), "--out", str(tmp_path / "x.wav"),
           "--connection-file", str(server.connection_file), "--param", "steps=100000"]
    assert main(bad) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "x.wav").exists()


def test_the_client_takes_the_same_flags_as_generate(start_server, tmp_path, capsys):
    from backline.engine.cli import CONTROL_PARAMS, SOUND_PARAMS, flag_of

    helps = []
    for command in (["generate", "--help"], ["client", "generate", "--help"]):
        with pytest.raises(SystemExit):
            main(command)
        helps.append(capsys.readouterr().out)
    for name in ("instrument",) + SOUND_PARAMS + CONTROL_PARAMS:
        assert all(flag_of(name) + " " in text for text in helps), name
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve_help = capsys.readouterr().out
    for flag in ("--autoencoder", "--denoiser", "--backend", "--onnx-dir", "--threads", "--provider", "--precision"):
        assert flag in serve_help and flag in helps[0], flag  # serve loads models as generate does
    region = tmp_path / "region.wav"
    sf.write(region, np.zeros(2000, np.float32) + 0.1, 22_050)
    server = start_server()
    out = tmp_path / "bass.wav"
    assert main(["client", "generate", "--context", str(region), "--out", str(out), "--instrument", "bass",
                 "--steps", "2", "--connection-file", str(server.connection_file)]) == 0
    assert out.is_file()
    job = next(iter(server.jobs.values()))
    assert job.params == {"instrument": "bass", "steps": 2}  # only what was given: the engine has the defaults


def test_a_style_reference_goes_up_once_as_its_own_job_and_the_stem_names_it(start_server, tmp_path):
    requests = []

    def recording(params, context, sample_rate, progress, cancelled):
        from backline.plugin_bridge.demo_generator import demo_generate

        requests.append(params)
        return demo_generate({k: v for k, v in params.items() if k == "steps"}, context, sample_rate, progress,
                             cancelled)

    server = start_server(recording)
    region, reference = tmp_path / "region.wav", tmp_path / "reference.wav"
    sf.write(region, (0.2 * np.sin(np.arange(22_050) * 0.05)).astype(np.float32), 22_050)
    sf.write(reference, (0.2 * np.sign(np.sin(np.arange(30_000) * 0.01))).astype(np.float32), 44_100)
    for seed in (1, 2):
        assert main(["client", "generate", "--context", str(region), "--connection-file", str(server.connection_file),
                     "--style", str(reference), "--seed", str(seed), "--param", "steps=2",
                     "--out", str(tmp_path / f"{seed}.wav")]) == 0
    assert [r["style_sample_rate"] for r in requests] == [44_100, 44_100]  # the reference's audio reached each job
    assert all(r["style_audio"].shape == (1, 30_000) for r in requests)
    import json

    jobs = [json.loads(meta.read_text())["job_id"] for meta in (tmp_path / "results").glob("*/meta.json")]
    assert len([job for job in jobs if job.startswith("ref-")]) == 1 and len(jobs) == 3  # one reference, two stems
