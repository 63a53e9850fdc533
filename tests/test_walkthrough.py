"""The walkthrough (docs/walkthrough/*.md) and docs/custom_blocks.md run: every code block, in order, one namespace
per page.

Markdown conventions:
- ```python blocks run. A line ending in `# test: CODE` runs CODE instead under the test (tiny settings).
- ```bash run blocks run too (`cspnet ...` lines in this process, through cspnet.cli.main); plain ```bash blocks do not.
- An ```output block right after a code block is what that code printed: the test compares it exactly (keep it to
  structure: channels, params, MACs). ```output varies (timings, losses) is shown but not compared.
- Code writes files under its working folder (a temporary one); `figures/*.png` it writes are the page's figures.

Regenerate every shown output and figure with the full (non-test) settings:
    python tests/test_walkthrough.py --update [PAGE ...]
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WALK = REPO / "docs" / "walkthrough"
PAGES = sorted(WALK.glob("*.md")) + [REPO / "docs" / "custom_blocks.md", REPO / "docs" / "torchvision.md"]
FENCE = re.compile(r"^```(.*)$")
TEST_SUB = re.compile(r"^(\s*).*#\s*test:\s*(.+)$")


@dataclass
class Block:
    info: str  # the fence's info string: "python", "bash run", "output", "output varies", ...
    start: int  # line index of the first content line
    end: int  # line index of the closing fence
    text: str
    output: Block | None = None


def parse(lines: list[str]) -> list[Block]:
    """Fenced blocks of a page; each output block is attached to the code block just before it."""
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        block = Block(m[1].strip(), i + 1, j, "".join(lines[i + 1 : j]))
        prev = blocks[-1] if blocks else None
        between = "".join(lines[prev.end + 1 : i]).strip() if prev else "x"
        if block.info.startswith("output") and prev and not between and not prev.info.startswith("output"):
            prev.output = block
        else:
            blocks.append(block)
        i = j + 1
    return blocks


def _code(text: str, test: bool) -> str:
    if not test:
        return text
    return "".join(TEST_SUB.sub(r"\1\2", line) for line in text.splitlines(keepends=True))


def _cspnet(argv: list[str]) -> tuple[int, str, str]:
    """`cspnet ARGS` in this process (no interpreter start-up per command): exit code, stdout, stderr."""
    from cspnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _shell(text: str, test: bool) -> str:
    out = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for line in _code(text, test).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("cspnet "):
            rc, stdout, stderr = _cspnet(shlex.split(line, comments=True)[1:])
        else:
            r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=600)
            rc, stdout, stderr = r.returncode, r.stdout, r.stderr
        assert rc == 0, f"`{line}` failed ({rc}):\n{stderr[-2000:]}"
        shown = line.split("  # test:")[0].rstrip()
        out.append(f"$ {shown}\n{stdout}")
    return "".join(out)


def run_page(page: Path, workdir: Path, test: bool) -> list[tuple[Block, str]]:
    """Run a page's blocks in order in `workdir`; returns (code block, what it printed)."""
    from cspnet.models.registry import _REGISTRY
    from cspnet.nn.blocks import BLOCKS

    saved = dict(BLOCKS), dict(_REGISTRY)
    ns: dict = {"__name__": f"walkthrough_{page.stem}"}
    results = []
    old = Path.cwd()
    os.chdir(workdir)
    try:
        for block in parse(page.read_text().splitlines(keepends=True)):
            if block.info not in ("python", "bash run"):
                continue
            where = f"{page.name}:{block.start + 1}"
            if block.info == "python":
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    exec(compile(_code(block.text, test), where, "exec"), ns)
                printed = buf.getvalue()
            else:
                printed = _shell(block.text, test)
            results.append((block, printed))
    finally:
        os.chdir(old)
        BLOCKS.clear(), BLOCKS.update(saved[0])
        _REGISTRY.clear(), _REGISTRY.update(saved[1])
    return results


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs(page: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for block, printed in run_page(page, tmp_path, test=True):
        out = block.output
        if out is not None and out.info == "output":
            assert printed.rstrip() == out.text.rstrip(), (
                f"{page.name}:{block.start + 1}: shown output is stale; run `python tests/test_walkthrough.py --update`"
            )


def test_parser_pairs_outputs_and_substitutes():
    lines = [
        "```python\n",
        "x = 1  # test: x = 2\n",
        "```\n",
        "\n",
        "```output\n",
        "1\n",
        "```\n",
        "```bash\n",
        "```\n",
    ]
    blocks = parse(lines)
    assert [b.info for b in blocks] == ["python", "bash"] and blocks[0].output.text == "1\n"
    assert (
        _code(blocks[0].text, test=True) == "x = 2\n" and _code(blocks[0].text, test=False) == "x = 1  # test: x = 2\n"
    )


def update(pages: list[Path]) -> None:
    """Rewrite each page's output blocks and figures from a full run."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for page in pages:
        work = Path(tempfile.mkdtemp(prefix="walkthrough_"))
        print(f"running {page.relative_to(REPO)} in {work}", file=sys.stderr)
        results = run_page(page, work, test=False)
        lines = page.read_text().splitlines(keepends=True)
        for block, printed in sorted(results, key=lambda r: -r[0].start):  # bottom up: line numbers stay valid
            if block.output is not None:
                text = printed.rstrip() + "\n" if printed.strip() else ""
                lines[block.output.start : block.output.end] = [text] if text else []
        page.write_text("".join(lines))
        figs = sorted((work / "figures").glob("*.png")) if (work / "figures").is_dir() else []
        for fig in figs:
            (page.parent / "figures").mkdir(exist_ok=True)
            shutil.copy(fig, page.parent / "figures" / fig.name)
            print(f"  figure {fig.name}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    args = sys.argv[1:]
    if not args or args[0] != "--update":
        raise SystemExit(__doc__)
    pages = [*PAGES, REPO / "README.md"]  # the README's journeys run in tests/test_readme.py
    chosen = [p for p in pages if not args[1:] or any(a in p.name for a in args[1:])]
    update(chosen)
