"""Run by tests/test_wheel.py with the Python the wheel was installed into (in the clean root,
or another CPython's virtual environment): I/O through a Runtime, and what the process mapped.

Prints one JSON object on its last line: whether the data read back is the data written,
where pyspdk_sys and its library are, every ELF file mapped into this process, and the
ELF files the same interpreter maps when it imports the same standard-library extension
modules without pyspdk_sys (the interpreter's own libraries, which the test allows).
Standard library only, besides pyspdk_sys: the root has nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ELF_MAGIC = b"\x7fELF"


def mapped_elf_files() -> list[str]:
    """Every ELF file (executable or shared object) mapped into this process."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                paths.add(fields[5].strip())
    found = []
    for path in sorted(paths):
        try:
            with open(path, "rb") as file:
                if file.read(4) == ELF_MAGIC:
                    found.append(os.path.realpath(path))
        except OSError:
            continue  # a deleted or unreadable mapping: not a library on disk
    return sorted(set(found))


def stdlib_modules(files: list[str]) -> list[str]:
    """The standard library's extension modules among files, by module name."""
    # sys.path, not sysconfig: in a virtual environment sysconfig names the
    # environment's directories, and lib-dynload stays with the base interpreter.
    dynload = {os.path.realpath(p) for p in sys.path if os.path.basename(p) == "lib-dynload"}
    return sorted(
        os.path.basename(path).split(".", 1)[0]
        for path in files
        if os.path.dirname(path) in dynload
    )


def baseline(modules: list[str]) -> list[str]:
    """What this interpreter maps with only those standard-library modules imported."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--baseline", *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    files: list[str] = json.loads(result.stdout.splitlines()[-1])
    return files


def main() -> None:
    import pyspdk_sys
    from pyspdk_sys.runtime import Runtime

    config = {
        "subsystems": [
            {
                "subsystem": "bdev",
                "config": [
                    {
                        "method": "bdev_malloc_create",
                        "params": {"name": "Malloc0", "num_blocks": 8192, "block_size": 512},
                    }
                ],
            }
        ]
    }
    data = os.urandom(256 * 1024)
    with Runtime(config=config, mem_size_mb=256) as rt, rt.open_bdev("Malloc0") as dev:
        dev.write(8192, data)
        back = dev.read(8192, len(data))
        zeros = dev.read(0, 8192)  # untouched blocks of a fresh malloc bdev
        mapped = mapped_elf_files()
    print(
        json.dumps(
            {
                "same": back == data,
                "zeros": zeros == bytes(8192),
                "python": sys.version.split()[0],
                "executable": os.path.realpath(sys.executable),
                "package": os.path.dirname(os.path.realpath(pyspdk_sys.__file__)),
                "library": os.path.realpath(pyspdk_sys.LIBRARY_PATH),
                "spdk_version": pyspdk_sys.SPDK_VERSION,
                "mapped": mapped,
                "baseline": baseline(stdlib_modules(mapped)),
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--baseline"]:
        for name in sys.argv[2:]:
            __import__(name)
        print(json.dumps(mapped_elf_files()))
    else:
        main()
