"""STATUS.md is generated from the committed reports and must stay equal to them."""

from pathlib import Path

from backline.training.status import render

ROOT = Path(__file__).resolve().parent.parent


def test_status_page_equals_what_the_reports_say():
    assert (ROOT / "STATUS.md").read_text() == render(ROOT), "run: python -m backline.training.status"
