"""README's commands must stay true: every `backline ...` line parses with today's command line, every
Python example runs as written, and the two set-up commands exist as Makefile targets that CI runs."""

import re
import shlex
from pathlib import Path

import pytest

from backline.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands():
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("backline ")]


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line):
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert callable(getattr(args, "func", None)), line


def test_readme_names_the_two_setup_commands_and_ci_runs_one():
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert len(readme_commands()) >= 5


@pytest.mark.parametrize("code", re.findall(r"```python\n(.*?)```", README, flags=re.S))
def test_readme_python_runs_as_written(code, tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "out").is_dir() or "write_audio" not in code
