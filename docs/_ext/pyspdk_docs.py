"""Two directives for this site: examples the test suite runs, and the CLI reference.

- ``.. example::`` shows a complete Python program. SPDK starts once per
  process, so these programs cannot share the doctest builder's interpreter:
  tests/test_docs.py finds every such block and runs each in a fresh one.
  Python that needs no running SPDK goes in ``.. testcode::`` / ``.. doctest::``
  blocks, which ``sphinx-build -b doctest`` runs.
- The docstrings are plain text that marks code with single backquotes;
  they are read as such (code shown literally, a ``*`` as a star), so that
  a docstring needs no reST to build without warnings.
- ``.. cli-reference::`` prints the help of ``python -m pyspdk_sys`` and of
  each of its commands, taken from the parser the program itself uses.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.directives.code import CodeBlock
from sphinx.util.docutils import SphinxDirective

HELP_WIDTH = 88

# A code span: ``double`` (kept) or `single` (made literal); outside them a
# star is only a star.
_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
# A word ending in _ (create_*) would be a link to a target named so.
_REFERENCE_END = re.compile(r"(\w)_(?!\w)")


def plain_docstring(line: str) -> str:
    """One docstring line as reST: `x` becomes ``x``; outside code, * | and a word's
    final _ are escaped."""
    parts = _SPAN.split(line)
    for i, part in enumerate(parts):
        if i % 2:
            if not part.startswith("``"):
                parts[i] = f"`{part}`"
        else:
            part = part.replace("*", r"\*").replace("|", r"\|")
            parts[i] = _REFERENCE_END.sub(r"\1\\_", part)
    return "".join(parts)


def _read_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    lines[:] = [plain_docstring(line) for line in lines]


class Example(CodeBlock):
    """A Python program shown as code; the suite runs it (tests/test_docs.py)."""

    required_arguments = 0
    optional_arguments = 0

    def run(self) -> list[nodes.Node]:
        self.arguments = ["python"]
        return super().run()


def _formatted(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=HELP_WIDTH)
    return parser.format_help()


class CliReference(SphinxDirective):
    """Every command's help, from pyspdk_sys.__main__.build_parser()."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from pyspdk_sys.__main__ import build_parser

        parser = build_parser()
        found: list[nodes.Node] = [nodes.literal_block(text=_formatted(parser), language="text")]
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, command in subparsers.choices.items():
            section = nodes.section(ids=[f"command-{name}"])
            section += nodes.title(text=name)
            section += nodes.paragraph(text=command.description or "")
            section += nodes.literal_block(text=_formatted(command), language="text")
            found.append(section)
        return found


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("example", Example)
    app.add_directive("cli-reference", CliReference)
    app.connect("autodoc-process-docstring", _read_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
