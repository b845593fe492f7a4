"""Argument checks shared by every public entry point: run before anything reaches C.

Each raises TypeError or ValueError naming the parameter and the bad value,
so that C never sees a value it would truncate, wrap or abort on.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INT64_MAX = (1 << 63) - 1
MAX_SECONDS = 365 * 24 * 3600.0  # a year: far inside int64 nanoseconds


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """An int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, not {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__} ({value!r})")
    return value


def check_float(name: str, value: Any, low: float, high: float) -> float:
    """A finite real number (int or float, not bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} ({value!r})")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a finite number from {low} to {high}, not {value!r}")
    return number


def check_timeout(name: str, value: Any) -> float | None:
    """None (wait for ever) or a finite positive number of seconds."""
    if value is None:
        return None
    seconds = check_float(name, value, 0.0, MAX_SECONDS)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive or None, not {value!r}")
    return seconds


def check_power_of_two(name: str, value: Any, low: int, high: int) -> int:
    check_int(name, value, low, high)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")
    return int(value)


_CPU_MASK = re.compile(r"0x[0-9a-fA-F]+|\[[0-9,\-\s]+\]")


def check_cpu_mask(name: str, value: Any) -> str:
    """An SPDK CPU mask: '0x3' or a core list such as '[0,1]'."""
    if not isinstance(value, str) or not _CPU_MASK.fullmatch(value):
        raise ValueError(f"{name} must look like '0x3' or '[0,1]', not {value!r}")
    return value


def check_name(value: Any, what: str = "a device name") -> bytes:
    """A non-empty str without NUL, as the bytes C gets."""
    if not isinstance(value, str):
        raise TypeError(f"{what} is a str, not {type(value).__name__}")
    if not value or "\0" in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return value.encode()


def check_config(config: Any) -> Any:
    """None, a JSON-ready copy of a mapping, or the absolute Path of a JSON file.

    The one check of an SPDK JSON config, for a Runtime and an SpdkProcess alike.
    """
    if config is None:
        return None
    if isinstance(config, Mapping):
        if not isinstance(config.get("subsystems", []), list):
            raise ValueError("config['subsystems'] must be a list of subsystem configs")
        try:
            return json.loads(json.dumps(dict(config), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config is not JSON-serialisable: {exc}") from None
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be a mapping or a path, not {type(config).__name__}")
    path = Path(os.fspath(config)).absolute()
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid JSON: {exc}") from None
    return path
