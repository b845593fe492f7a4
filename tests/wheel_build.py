"""Build what users install from a copy of the project, as a user would: the helpers
tests/test_packaging.py and tests/test_wheel.py share, and the manylinux wheel.

`build.sh wheel` takes about half a minute, so the suite builds the wheel once
(the `manylinux_wheel` fixture in conftest.py); PYSPDK_WHEEL names one already
built, as .ci/run does once per library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]


def run(
    *args: object, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command; a non-zero exit fails the test with its output."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def project_copy(tmp_path: Path) -> Path:
    """The project's tracked files (and untracked new ones), without build leftovers."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        cwd=PROJECT_DIR,
        check=True,
    ).stdout.split("\0")
    copy = tmp_path / "project"
    for name in filter(None, files):
        source = PROJECT_DIR / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def clean_env(**extra: str) -> dict[str, str]:
    """This environment less anything that points Python or the loader elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "PYTHONHOME")
    }
    env.update(extra)
    return env


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def build_wheel(tmp_path: Path) -> Path:
    """`build.sh wheel` from a copy of the project, with this test's python."""
    copy = project_copy(tmp_path)
    env = clean_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = run("bash", copy / "build.sh", "wheel", "-o", tmp_path / "dist", env=env)
    assert "pyspdk_sys-" in result.stdout
    (wheel,) = (tmp_path / "dist").glob("pyspdk_sys-*.whl")
    return wheel
