"""Every public name has a test that uses it.

The public API is each public module's __all__ (a module without one: every
class and function it defines whose name has no leading underscore). A name
counts as tested when some test file uses it as a name or an attribute, not
only imports it. A name added without a test fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

from conftest import PROJECT_DIR

PUBLIC_MODULES = (
    "pyspdk_sys",
    "pyspdk_sys.bdev",
    "pyspdk_sys.dma",
    "pyspdk_sys.errors",
    "pyspdk_sys.hugepages",
    "pyspdk_sys.nvme",
    "pyspdk_sys.nvmf",
    "pyspdk_sys.options",
    "pyspdk_sys.placement",
    "pyspdk_sys.process",
    "pyspdk_sys.pybdev",
    "pyspdk_sys.registry",
    "pyspdk_sys.rpc",
    "pyspdk_sys.runtime",
    "pyspdk_sys.target",
    "pyspdk_sys.ublk",
    "pyspdk_sys.vhost",
)


def public_names(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return set(declared)
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module_name
    }


def used_in_tests() -> set[str]:
    """Names and attributes the test files use (imports alone do not count)."""
    used: set[str] = set()
    for path in Path(PROJECT_DIR / "tests").rglob("*.py"):
        if path.name == Path(__file__).name:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                # Code that tests run in a fresh interpreter (run_python) is a string.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # most strings are not code
                    try:
                        inner = ast.parse(node.value)
                    except (SyntaxError, ValueError):
                        continue
                for sub in ast.walk(inner):
                    if isinstance(sub, ast.Name):
                        used.add(sub.id)
                    elif isinstance(sub, ast.Attribute):
                        used.add(sub.attr)
    return used


def test_every_public_name_has_a_test_that_uses_it(spdk: Any) -> None:
    used = used_in_tests()
    untested = {
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        for name in public_names(module)
        if name not in used
    }
    assert untested == set()


def test_the_check_sees_an_untested_name(spdk: Any) -> None:
    """The checker itself: a name no test uses is reported."""
    assert "a_name_no_test_uses_at_all" not in used_in_tests()
    assert "Runtime" in used_in_tests()
