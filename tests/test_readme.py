"""The README: its first program runs as written, its commands stay one line, its map is true.

SPDK starts once per process, so every example gets a fresh interpreter, as a
reader who pastes it into a file would. The set-up and test commands stay
one line each, and CI runs that test command. The guides' examples are
checked by tests/test_docs.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block in `language`."""
    found = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```$", README, re.S | re.M):
        found.append((README.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


EXAMPLES = blocks("python")


def test_examples_are_found_and_compile() -> None:
    assert len(EXAMPLES) >= 1
    for line, code in EXAMPLES:
        compile(code, f"README.md:{line}", "exec")


def test_every_example_asserts_its_result() -> None:
    """An example that only prints would pass whatever it printed."""
    silent = [line for line, code in EXAMPLES if "assert " not in code]
    assert silent == []


@pytest.mark.parametrize("line,code", EXAMPLES, ids=[f"line{line}" for line, _ in EXAMPLES])
def test_example_runs(spdk: Any, line: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, f"README.md:{line}\n{result.stdout}\n{result.stderr[-4000:]}"


def shell_commands() -> list[str]:
    return [code.strip() for _line, code in blocks("sh")]


def test_setup_is_one_line_ending_with_the_module_installed() -> None:
    setup = next(c for c in shell_commands() if "./build.sh --deps" in c)
    assert "\n" not in setup
    assert "python3 -m venv .venv && . .venv/bin/activate" in setup
    assert setup.endswith("pip install '.[test]'")


def test_test_command_is_one_line_and_ci_runs_it() -> None:
    assert "python3 -m pytest" in shell_commands()
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert re.search(r"^\s*python3 -m pytest\b", ci, re.M)


def test_the_map_links_to_pages_that_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)\)", README)
    assert len(links) >= 10
    assert [link for link in links if not (PROJECT_DIR / link).is_file()] == []


def test_the_map_covers_every_page_of_the_site() -> None:
    """A page added to docs/ is found from the README (API pages through their index)."""
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", README))
    pages = {
        str(page.relative_to(PROJECT_DIR))
        for page in (PROJECT_DIR / "docs").rglob("*.rst")
        if "_build" not in page.parts and page.parent.name != "api" and page.name != "index.rst"
    }
    assert pages - linked == set()


def test_no_development_notes() -> None:
    """Notes for the developers (issue numbers, profiles) belong elsewhere."""
    assert not re.search(r"\bissue \d+|\bperf\b", README, re.I)
