"""The built-in default configuration: smaller pools, which the caller's config overrides.

The merging rules run anywhere (the module is loaded by path, without the
compiled binding); what SPDK makes of them runs in subprocesses, since each
Runtime needs a process of its own.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from conftest import PROJECT_DIR, run_python


def load_pools() -> Any:
    path = PROJECT_DIR / "src" / "pyspdk_sys" / "_pools.py"
    spec = importlib.util.spec_from_file_location("pools_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pools = load_pools()


def methods(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        entry["method"]: entry.get("params", {})
        for subsystem in config["subsystems"]
        for entry in subsystem.get("config") or []
    }


def test_no_config_gets_every_default() -> None:
    merged = pools.with_defaults(None, 1024)
    called = methods(merged)
    assert called["iscsi_set_options"]["max_sessions"] == 16
    assert called["bdev_set_options"]["bdev_io_pool_size"] == 16383
    assert "iobuf_set_options" not in called  # SPDK's own iobuf sizes fit in 1024 MiB


@pytest.mark.parametrize(("mem", "small", "large"), [(512, 2048, 256), (256, 1024, 128)])
def test_less_memory_shrinks_iobuf(mem: int, small: int, large: int) -> None:
    called = methods(pools.with_defaults(None, mem))
    assert called["iobuf_set_options"] == {"small_pool_count": small, "large_pool_count": large}


def test_a_method_the_caller_calls_replaces_the_default_whole() -> None:
    mine = {"method": "iscsi_set_options", "params": {"max_sessions": 64}}
    config = {
        "subsystems": [
            {"subsystem": "iscsi", "config": [mine]},
            {"subsystem": "bdev", "config": [{"method": "bdev_malloc_create", "params": {}}]},
        ]
    }
    merged = pools.with_defaults(config, 1024)
    called = methods(merged)
    # The caller's entry alone: no pool size of ours sized for 16 sessions.
    assert called["iscsi_set_options"] == {"max_sessions": 64}
    bdev = next(s for s in merged["subsystems"] if s["subsystem"] == "bdev")
    # Options first, then what the caller had, in its order.
    assert [e["method"] for e in bdev["config"]] == ["bdev_set_options", "bdev_malloc_create"]
    assert len(merged["subsystems"]) == 2
    # The caller's config is not changed.
    assert config["subsystems"][1]["config"] == [{"method": "bdev_malloc_create", "params": {}}]


START = """
import json, sys
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.errors import StartError
kwargs = json.loads(sys.argv[1])
try:
    rt = Runtime(cpu_mask=reactor_mask(), **kwargs).start()
except StartError as exc:
    print(json.dumps({"error": str(exc)}))
    raise SystemExit(0)
from pyspdk_sys.bdev import create_malloc
name = create_malloc(rt, "M0", 8 << 20, 4096)
dev = rt.open_bdev(name)
dev.write(4096, b"\\x5a" * 4096)
ok = dev.read(4096, 4096) == b"\\x5a" * 4096
dev.close()
bdev = {e["method"]: e.get("params") for e in rt.rpc("framework_get_config", {"name": "bdev"})}
report = {"ok": ok, "iscsi": rt.rpc("iscsi_get_options")["max_sessions"],
          "bdev_io": bdev["bdev_set_options"]["bdev_io_pool_size"]}
rt.stop()
print(json.dumps(report))
"""


def start(**kwargs: Any) -> dict[str, Any]:
    code = f"import sys; sys.argv = ['start', {json.dumps(json.dumps(kwargs))}]\n" + START
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_defaults_reach_spdk(spdk: Any) -> None:
    assert start() == {"ok": True, "iscsi": 16, "bdev_io": 16383}


def test_small_pools_off_keeps_spdks_sizes(spdk: Any) -> None:
    assert start(small_pools=False) == {"ok": True, "iscsi": 128, "bdev_io": 65535}


def test_callers_config_wins(spdk: Any) -> None:
    config = {
        "subsystems": [
            {
                "subsystem": "iscsi",
                "config": [{"method": "iscsi_set_options", "params": {"max_sessions": 32}}],
            }
        ]
    }
    assert start(config=config)["iscsi"] == 32


def test_smallest_memory_works_and_less_says_so(spdk: Any) -> None:
    smallest = pools.SMALLEST_MEM_SIZE_MB
    assert start(mem_size_mb=smallest)["ok"]
    # Less is refused at construction, before SPDK half-starts and can start no more.
    from pyspdk_sys.runtime import Runtime

    with pytest.raises(ValueError, match=f"mem_size_mb={smallest // 2} is too small") as caught:
        Runtime(mem_size_mb=smallest // 2)
    assert f"at least {smallest} MiB" in str(caught.value)
    Runtime(mem_size_mb=smallest // 2, small_pools=False)  # SPDK's own sizes: SPDK's call
