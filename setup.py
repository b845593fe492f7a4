"""setuptools needs this file to hand cffi_modules to cffi, and to shape the wheel.

The wheel carries the package and the compiled extension, never what only the
build reads (`_cffi_build.py`, the C shims). With PYSPDK_BUNDLE_LIBRARY=1
(`build.sh wheel`) it also carries the fat library and its manifest in
`pyspdk_sys/_lib/`, where the extension's run path points; `build.sh wheel`
then lets auditwheel move the system libraries in. The wheel is tagged abi3
(BdistWheel below).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent / "src" / "pyspdk_sys"))
import _cffi_build  # by path: the package is not importable while building

BUILD_ONLY = ("_cffi_build.py", "_shims")


class BuildPy(build_py):
    """build_py that leaves out build-only files and, when bundling, adds the library."""

    def run(self) -> None:
        super().run()
        package = Path(self.build_lib) / "pyspdk_sys"
        for name in BUILD_ONLY:
            path = package / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        bundle = package / _cffi_build.BUNDLE_DIR
        # A stale copy from an earlier bundled build must not reach this wheel.
        shutil.rmtree(bundle, ignore_errors=True)
        if _cffi_build.bundling():
            found = _cffi_build.find_library()
            bundle.mkdir(parents=True)
            shutil.copy2(found["file"], bundle / os.path.basename(found["file"]))
            if found["manifest"] and os.path.isfile(found["manifest"]):
                shutil.copy2(found["manifest"], bundle / "manifest.json")


class BuildExt(build_ext):
    """build_ext that, when bundling, keeps the build machine's run paths out of the wheel.

    Some interpreters (pyenv's, for one) link extensions with a run path to
    their own lib directory; a wheel for other machines finds its library
    through $ORIGIN only.
    """

    def build_extensions(self) -> None:
        if _cffi_build.bundling():
            linker = self.compiler.linker_so
            self.compiler.linker_so = [arg for arg in linker if not arg.startswith("-Wl,-rpath")]
        super().build_extensions()


# The oldest CPython the wheel claims: requires-python's floor in pyproject.toml
# (tests/test_packaging.py checks that the two agree).
ABI3_FLOOR = (3, 10)


class BdistWheel(bdist_wheel):
    """bdist_wheel that tags the wheel abi3 when its extension is built for the stable ABI.

    cffi builds the extension against Python's limited API (`_pyspdk_sys.abi3.so`)
    with no version given, i.e. the stable ABI every CPython 3 keeps, so the
    wheel's floor is the package's own: `cp310-abi3` from any build on 3.10 or
    later, and one wheel serves every CPython that `requires-python` admits.
    """

    def finalize_options(self) -> None:
        extensions = self.distribution.ext_modules or []
        if (
            not self.py_limited_api
            and sys.implementation.name == "cpython"
            and sys.version_info[:2] >= ABI3_FLOOR
            and extensions
            and all(getattr(ext, "py_limited_api", False) for ext in extensions)
        ):
            self.py_limited_api = "cp{}{}".format(*ABI3_FLOOR)
        super().finalize_options()


setup(
    cffi_modules=["src/pyspdk_sys/_cffi_build.py:make_ffibuilder"],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt, "bdist_wheel": BdistWheel},
)
