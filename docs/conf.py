"""Sphinx configuration of the pyspdk-sys site.

Build it with the package installed (autodoc imports pyspdk_sys, which loads
the fat library): ``pip install '.[docs]'`` then
``sphinx-build -W -b html docs docs/_build/html`` and
``sphinx-build -W -b doctest docs docs/_build/doctest``.
"""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import pyspdk_sys

project = "pyspdk-sys"
author = "the pyspdk-sys authors"
release = pyspdk_sys.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "pyspdk_docs",
]

html_theme = "furo"
html_title = f"pyspdk-sys {release}"
exclude_patterns = ["_build"]

# `name` in a docstring links to that object when Sphinx knows it, else it is
# shown as code.
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Doctest blocks never start SPDK (it starts once per process); the programs
# that do are `.. example::` blocks, which the test suite runs one per process.
doctest_global_setup = "import pyspdk_sys"

# A method without a docstring of its own shows none, rather than its base
# class's (concurrent.futures.Future's are written for another layout).
autodoc_inherit_docstrings = False

# Exception messages are compared too (Sphinx ignores their detail by default):
# a doctest that shows a message checks it.
doctest_default_flags = doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1
smartquotes_action = "qe"  # "--reserve" stays two hyphens
