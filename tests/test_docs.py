"""The documentation site (docs/) stays true: its examples run, the names it gives exist.

- Every ``.. example::`` program runs as written, each in a fresh interpreter
  (SPDK starts once per process), and asserts its result. Python that needs
  no running SPDK sits in doctest blocks, which ``sphinx-build -b doctest``
  runs in CI; no other Python block may exist, so that nothing shown goes
  unchecked.
- Every command-line session (``.. code-block:: console``) is run, and its
  output must have the shape shown (numbers and paths aside).
- Every module and C file the architecture page names exists.
- Every public module has a page in the API reference.
- CI builds the site with warnings as errors and runs the doctests.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_DIR, skip_or_fail

DOCS = PROJECT_DIR / "docs"
PACKAGE = PROJECT_DIR / "src" / "pyspdk_sys"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)


@dataclass(frozen=True)
class Block:
    """One directive's body, where it starts (page:line) and its argument."""

    page: str
    line: int
    directive: str
    argument: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


_DIRECTIVE = re.compile(r"^(\s*)\.\. ([\w:-]+)::[ \t]*(.*)$")


def directive_blocks(text: str, page: str = "page.rst") -> list[Block]:
    """Every directive of a reST text with its body (options dropped, dedented)."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        body: list[str] = []
        index = number + 1
        # Options (:name: value) come first, right under the directive.
        while index < len(lines) and re.match(r"^\s+:[\w-]+:", lines[index]):
            index += 1
        while index < len(lines):
            current = lines[index]
            if current.strip() and len(current) - len(current.lstrip()) <= indent:
                break
            body.append(current)
            index += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        found.append(Block(page, number + 1, match.group(2), match.group(3).strip(), code))
    return found


def all_blocks() -> list[Block]:
    return [
        block
        for page in PAGES
        for block in directive_blocks(page.read_text(), str(page.relative_to(PROJECT_DIR)))
    ]


BLOCKS = all_blocks()
EXAMPLES = [b for b in BLOCKS if b.directive == "example"]
CONSOLES = [b for b in BLOCKS if b.directive in ("code-block", "code") and b.argument == "console"]
DOCTESTS = [b for b in BLOCKS if b.directive in ("doctest", "testcode")]


# ------------------------------------------------------------------ examples


def test_the_parser_finds_bodies_and_stops_at_the_text_after() -> None:
    text = "Intro\n\n.. example::\n   :caption: x\n\n   a = 1\n\n   assert a\n\nAfter.\n"
    (block,) = directive_blocks(text)
    assert (block.directive, block.line, block.body) == ("example", 3, "a = 1\n\nassert a\n")


def test_examples_are_found_and_compile() -> None:
    assert len(EXAMPLES) >= 15
    assert len(DOCTESTS) >= 5
    for block in EXAMPLES:
        compile(block.body, block.where, "exec")


def test_every_example_asserts_its_result() -> None:
    """An example that only prints would pass whatever it printed."""
    assert [b.where for b in EXAMPLES if "assert " not in b.body] == []


def test_no_python_is_shown_unchecked() -> None:
    """Python on a page is an example (the suite runs it) or a doctest (Sphinx runs it)."""
    unchecked = [
        b.where
        for b in BLOCKS
        if b.directive in ("code-block", "code", "sourcecode")
        and b.argument in ("python", "py", "python3", "pycon")
    ]
    literal_python = [
        f"{page.relative_to(PROJECT_DIR)}:{n + 1}"
        for page in PAGES
        for n, line in enumerate(page.read_text().splitlines())
        if line.strip().startswith(">>>")
        and not _inside(page, n, ("doctest", "testcode", "testoutput"))
    ]
    assert unchecked == [] and literal_python == []


def _inside(page: Path, line: int, directives: tuple[str, ...]) -> bool:
    """Whether 0-based `line` of `page` lies in the body of one of `directives`."""
    for block in directive_blocks(page.read_text()):
        if block.directive in directives:
            end = block.line + len(block.body.splitlines()) + 2
            if block.line <= line < end + 2:
                return True
    return False


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", EXAMPLES, ids=[b.where for b in EXAMPLES])
def test_example_runs(spdk: Any, block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.body)
    done = subprocess.run(
        [sys.executable, script],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{block.where}\n{done.stdout}\n{done.stderr[-4000:]}"


# ------------------------------------------------------------------ console sessions


def _shape(line: str) -> str:
    """A line with every number- or path-like word made '#': what must match."""
    return " ".join("#" if re.search(r"[\d/]", w) else w for w in line.split())


def console_sessions(block: Block) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) of each prompt in a console block; a root prompt
    (#) keeps its mark in front of the command."""
    sessions: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        elif line.startswith("# "):
            sessions.append((line, []))
        elif sessions:
            sessions[-1][1].append(line)
    return sessions


def test_console_blocks_show_commands_of_this_package() -> None:
    assert CONSOLES
    for block in CONSOLES:
        sessions = console_sessions(block)
        assert sessions, block.where
        for command, _ in sessions:
            assert command.removeprefix("# ").startswith("python3 -m pyspdk_sys"), block.where


@pytest.mark.parametrize("block", CONSOLES, ids=[b.where for b in CONSOLES])
def test_console_output_has_the_shape_shown(spdk: Any, block: Block) -> None:
    for command, shown in console_sessions(block):
        if command.startswith("# ") and os.geteuid() != 0:
            skip_or_fail(f"{block.where}: {command!r} needs root")
        argv = shlex.split(command.removeprefix("# "))
        argv[0] = sys.executable
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert done.returncode == 0, f"{block.where}: {command}\n{done.stderr}"
        printed = [_shape(line) for line in done.stdout.splitlines()]
        missing = [line for line in shown if _shape(line) not in printed]
        assert missing == [], f"{block.where}: {command} printed\n{done.stdout}"


def test_shapes_ignore_numbers_and_paths_only() -> None:
    assert (
        _shape("  RPC methods   257   (SPDK_RPC_REGISTER)") == "RPC methods # (SPDK_RPC_REGISTER)"
    )
    assert _shape("library /usr/local/lib/x.so") == _shape("library /opt/lib/y.so")
    assert _shape("SPDK 26.01") != _shape("DPDK 26.01")


# ------------------------------------------------------------------ architecture


def architecture_names() -> tuple[set[str], set[str]]:
    """(dotted modules, C files) that docs/architecture.rst names."""
    text = (DOCS / "architecture.rst").read_text()
    modules = set(re.findall(r"\bpyspdk_sys(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text))
    c_files = set(re.findall(r"_shims/([A-Za-z0-9_]+\.[ch])\b", text))
    return modules, c_files


def _exists(dotted: str) -> bool:
    """A module or package of src/, or a name defined at the top of one."""
    parts = dotted.split(".")[1:]
    for cut in range(len(parts), 0, -1):
        base = PACKAGE.joinpath(*parts[:cut])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                rest = parts[cut:]
                return not rest or _defines(path, rest[0])
    return False


def _defines(path: Path, name: str) -> bool:
    source = path.read_text()
    return bool(
        re.search(rf"^(class|def|async def) {re.escape(name)}\b", source, re.M)
        or re.search(rf"^{re.escape(name)}\b.*=", source, re.M)
        or re.search(rf"\bimport\b.*\b{re.escape(name)}\b", source)
    )


def test_architecture_names_only_what_exists() -> None:
    modules, c_files = architecture_names()
    assert len(modules) >= 20 and len(c_files) >= 5
    assert sorted(m for m in modules if not _exists(m)) == []
    assert sorted(c for c in c_files if not (PACKAGE / "_shims" / c).is_file()) == []


def test_architecture_names_only_c_symbols_that_exist() -> None:
    """pyspdk_* functions and constants it names are in a shim or in cdefs/."""
    text = (DOCS / "architecture.rst").read_text()
    named = set(re.findall(r"\b(pyspdk_[a-z_]*[a-z]|PYSPDK_[A-Z_]*[A-Z])\b", text)) - {"pyspdk_sys"}
    sources = "".join(
        p.read_text()
        for p in [*(PACKAGE / "_shims").iterdir(), *(PROJECT_DIR / "cdefs").glob("*.h")]
    )
    assert len(named) >= 8
    assert sorted(n for n in named if not re.search(rf"\b{n}\b", sources)) == []


def test_the_architecture_check_sees_a_wrong_name() -> None:
    assert _exists("pyspdk_sys.bdev.device.BlockDevice")
    assert _exists("pyspdk_sys.runtime")
    assert not _exists("pyspdk_sys.bdev.engine")
    assert not _exists("pyspdk_sys.runtime.NoSuchThing")


def test_architecture_covers_every_layer_of_the_package() -> None:
    """A module added to the package is placed on the page."""
    modules, _ = architecture_names()
    named = {m for m in modules if _exists(m)}
    files = {
        "pyspdk_sys." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py", "_cffi_build.py")
    }
    unplaced = sorted(f for f in files if not any(n == f or n.startswith(f + ".") for n in named))
    assert unplaced == []


# ------------------------------------------------------------------ API reference


def public_modules() -> set[str]:
    """Top-level public modules and packages of pyspdk_sys, plus the package."""
    found = {"pyspdk_sys"}
    for path in PACKAGE.iterdir():
        if path.name.startswith("_"):
            continue
        if path.suffix == ".py" or (path / "__init__.py").is_file():
            found.add(f"pyspdk_sys.{path.stem}")
    return found


def test_every_public_module_has_an_api_page() -> None:
    documented = {
        b.argument for b in all_blocks() if b.directive == "automodule" and "api" in b.page
    }
    assert public_modules() - documented == set()
    assert documented - public_modules() == set()


def test_the_cli_has_a_page_built_from_its_parser() -> None:
    assert "cli-reference" in {b.directive for b in BLOCKS}


# ------------------------------------------------------------------ CI


def test_ci_builds_the_site_strictly_and_runs_the_doctests() -> None:
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert re.search(r"(sphinx-build|-m sphinx) -W\b.* -b html docs", ci)
    assert re.search(r"(sphinx-build|-m sphinx) -W\b.* -b doctest docs", ci)
    assert "docs" in _extras()


def _extras() -> dict[str, list[str]]:
    import tomllib

    with open(PROJECT_DIR / "pyproject.toml", "rb") as f:
        extras: dict[str, list[str]] = tomllib.load(f)["project"]["optional-dependencies"]
    return extras


def test_the_docs_extra_names_sphinx_and_the_theme() -> None:
    names = {re.split(r"[<>=!~ ]", r)[0].lower() for r in _extras()["docs"]}
    assert {"sphinx", "furo"} <= names
