"""The README's journeys run on a fresh checkout with no network and no ../shared: every ```bash run and ```python
block of README.md, in order, in one empty folder, with the tiny settings its `# test:` lines give (the conventions
of tests/test_walkthrough.py). `python tests/test_walkthrough.py --update README` regenerates the shown outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_walkthrough import REPO, parse, run_page

README = REPO / "README.md"


def test_readme_first_screen_has_install_and_map():
    head = README.read_text().splitlines()[:40]
    text = "\n".join(head)
    assert "pip install -e ." in text and "make test" in text and "make demo" in text
    assert sum(line.lstrip().startswith(("- [", "* [", "| [")) for line in head) >= 4  # the map: links to the parts


def test_readme_runs_every_journey_block():
    blocks = [b for b in parse(README.read_text().splitlines(keepends=True)) if b.info in ("bash run", "python")]
    assert len(blocks) >= 6  # classify, detect, deploy journeys


@pytest.mark.slow
def test_readme_journeys_run_without_shared_data_or_network(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CSPNET_SHARED", str(tmp_path / "no_shared"))  # as on a fresh clone without ../shared
    monkeypatch.setenv("CSPNET_HOME", str(tmp_path / "cache"))  # no cached downloads
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for block, printed in run_page(README, tmp_path, test=True):
        out = block.output
        if out is not None and out.info == "output":
            assert printed.rstrip() == out.text.rstrip(), f"README.md:{block.start + 1}: shown output is stale"
