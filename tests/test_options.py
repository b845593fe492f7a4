"""Options checked once, at construction, by the shared validators; starts that undo
themselves when refused; what a finished runtime leaves behind.

Scenarios that start SPDK run in a fresh interpreter (SPDK starts once per
process), so a crash or a hang fails the test instead of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_DIR, run_python

BAD_MASKS = ["[-]", "[ ]", "[1,,]", "[0-1-2]", "[3-1]", "0x0", "[]", "3", "0x", "[0-4294967295]"]


@pytest.mark.parametrize("mask", BAD_MASKS)
def test_malformed_masks_are_refused_at_construction_naming_cpu_mask(spdk: Any, mask: str) -> None:
    from pyspdk_sys.process import SpdkProcess
    from pyspdk_sys.runtime import Runtime

    for make in (Runtime, SpdkProcess):
        with pytest.raises(ValueError) as caught:
            make(cpu_mask=mask)
        assert "cpu_mask" in str(caught.value)
        assert repr(mask) in str(caught.value)


def test_a_huge_core_range_is_refused_before_it_is_expanded(spdk: Any) -> None:
    """Bounds first: '[0-4294967295]' would be a set of 4 G cores (past 1 GiB)."""
    import tracemalloc

    from pyspdk_sys._checks import MAX_CORE, parse_cpu_mask

    tracemalloc.start()
    with pytest.raises(ValueError, match=f"core 4294967295 is past SPDK's last, {MAX_CORE}"):
        parse_cpu_mask("cpu_mask", "[0-4294967295]")
    with pytest.raises(ValueError, match="must look like"):
        parse_cpu_mask("cpu_mask", "0x" + "f" * 257)  # 1028 cores
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20
    assert parse_cpu_mask("cpu_mask", f"[0-{MAX_CORE}]") == tuple(range(MAX_CORE + 1))
    assert parse_cpu_mask("cpu_mask", "[0, 2-3]") == (0, 2, 3)
    assert parse_cpu_mask("cpu_mask", "0x5") == (0, 2)


def test_one_mask_parser_serves_every_entry_point(spdk: Any) -> None:
    """Runtime, SpdkProcess, vhost, ublk and the placement helpers refuse alike."""
    from pyspdk_sys import placement, ublk, vhost

    for call in (
        lambda: placement.cores_of("[1,,]"),
        lambda: vhost.create_blk_controller(_NoTarget(), "/tmp/x.sock", "B", cpumask="[1,,]"),
        lambda: ublk.create_target(_NoTarget(), cpumask="[1,,]"),
    ):
        with pytest.raises(ValueError, match=r"'\[1,,\]': '' is not a core number"):
            call()


class _NoTarget:
    """A Target whose RPCs fail the test: the checks must refuse before any RPC."""

    def rpc(self, method: str, params: Any = None, timeout: float = 60.0) -> Any:
        raise AssertionError(f"{method} reached the target")


def test_timeouts_are_checked_by_one_rule_naming_the_parameter(spdk: Any) -> None:
    from pyspdk_sys._checks import check_seconds, check_timeout
    from pyspdk_sys.process import SpdkProcess
    from pyspdk_sys.runtime import Runtime

    for bad in (0, -1, float("nan"), float("inf"), 10**12):
        with pytest.raises(ValueError, match=f"timeout must be a positive number.*{bad!r}"):
            check_seconds("timeout", bad)
        with pytest.raises(ValueError, match="timeout"):
            Runtime().start(timeout=bad)
    for bad in ("1", True, [1]):
        with pytest.raises(TypeError, match="timeout must be a number of seconds"):
            check_timeout("timeout", bad)
    with pytest.raises(TypeError, match="not None"):
        check_seconds("timeout", None)
    assert check_timeout("timeout", None) is None
    with pytest.raises(ValueError, match="timeout"):
        SpdkProcess().start(timeout=0)


@pytest.mark.parametrize(
    ("nqn", "problem"),
    [
        ("nqn.2016-06.io.1spdk:x", "must start with a letter"),
        ("nqn.2016-06.io.spdk:", "needs a name after the domain"),
        ("nqn.2016-06.io-.spdk:x", "must end with a letter or digit"),
        ("nqn.2016-06.io_x.spdk:x", "hold only letters"),
        ("nqn.16-06.io.spdk:x", "must look like"),
        ("nqn.\uff12\uff10\uff11\uff16-06.io.spdk:x", "must look like"),  # not ASCII digits
        ("nqn.2014-08.org.nvmexpress:uuid:not-a-uuid", "must be a UUID"),
        ("nqn.2016-06.io.spdk:" + "x" * 210, "must be 11 to 223 bytes"),
    ],
)
def test_nqns_are_checked_as_spdk_checks_them(spdk: Any, nqn: str, problem: str) -> None:
    from pyspdk_sys._checks import check_nqn

    with pytest.raises(ValueError, match=problem):
        check_nqn("hostnqn", nqn)


def test_nqns_spdk_accepts_pass(spdk: Any) -> None:
    from pyspdk_sys._checks import check_nqn

    for nqn in (
        "nqn.2016-06.io.spdk:cnode1",
        "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555",
        "nqn.2014-08.org.nvmexpress.discovery",
        "nqn.2016-06.io.a-b.c2:host one",
    ):
        assert check_nqn("nqn", nqn) == nqn


def test_request_limits_of_each_release_match_the_library(spdk: Any) -> None:
    """The table SpdkProcess reads (for the release its process runs) agrees with the library."""
    from pyspdk_sys import SPDK_VERSION
    from pyspdk_sys._binding import JSONRPC_REQUEST_MAX_BYTES, JSONRPC_REQUEST_MAX_VALUES
    from pyspdk_sys._jsonrpc import LIMITS, RequestLimits, limits_for

    assert LIMITS[SPDK_VERSION] == RequestLimits(
        JSONRPC_REQUEST_MAX_BYTES, JSONRPC_REQUEST_MAX_VALUES
    )
    assert limits_for(f"SPDK v{SPDK_VERSION} git sha1 2ef883ef96") == LIMITS[SPDK_VERSION]


def test_spdk_process_checks_requests_against_its_own_release(spdk: Any) -> None:
    """40 KiB of params: past v26.01's 32 KiB, within v26.05's 256 KiB."""
    from processes import new_process

    from pyspdk_sys import SPDK_VERSION
    from pyspdk_sys.errors import RpcError

    from conftest import spdk_tool

    with new_process(spdk_tool("spdk_tgt")) as proc:
        params = {"name": "x" * 40 * 1024}
        if SPDK_VERSION == "26.01":
            with pytest.raises(ValueError, match="at most 32768 bytes"):
                proc.rpc("bdev_get_bdevs", params)
        else:
            with pytest.raises(RpcError):  # read and answered: no such bdev
                proc.rpc("bdev_get_bdevs", params)


def test_create_error_over_a_missing_base_returns_no_name(runtime: Any) -> None:
    from pyspdk_sys.bdev import create_error, list_bdevs
    from pyspdk_sys.errors import DeviceNotFoundError

    with pytest.raises(DeviceNotFoundError, match="NoSuchBase"):
        create_error(runtime, "NoSuchBase")
    assert "EE_NoSuchBase" not in [b.name for b in list_bdevs(runtime)]


START = """
import json, os
from pyspdk_sys import runtime as rt_module
from pyspdk_sys.runtime import Runtime
from cores import reactor_mask
from pyspdk_sys.options import dpdk_runtime_dir
report = {}
"""


def _run(body: str) -> dict[str, Any]:
    result = run_python(START + body, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_refused_starts_leave_the_process_able_to_start(spdk: Any) -> None:
    report = _run("""
bad = {"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_no_such_method"}]}]}
try:
    Runtime(config=bad, mem_size_mb=256).start()
except ValueError as exc:
    report["config"] = str(exc)
real_run = rt_module._HOST.run
def refuse(runtime):
    raise MemoryError("no thread for you")
rt_module._HOST.run = refuse
try:
    Runtime(mem_size_mb=256).start()
except MemoryError:
    report["host"] = "refused"
rt_module._HOST.run = real_run
import glob, tempfile
pattern = f"{tempfile.gettempdir()}/pyspdk-config-*.json"
before_files = set(glob.glob(pattern))
real_opts = Runtime._app_opts
def opts_then_fail(self):
    real_opts(self)  # writes SPDK's config file
    raise OSError("no room")
Runtime._app_opts = opts_then_fail
try:
    Runtime(mem_size_mb=256).start()
except OSError:
    report["opts"] = sorted(set(glob.glob(pattern)) - before_files)
Runtime._app_opts = real_opts
with Runtime(cpu_mask=reactor_mask(), mem_size_mb=256) as rt:
    report["state"] = rt.state.value
    report["methods"] = "bdev_malloc_create" in rt.rpc("rpc_get_methods")
print(json.dumps(report))
""")
    assert "'bdev_no_such_method', which is not an SPDK RPC method" in report["config"]
    assert report["host"] == "refused"
    assert report["opts"] == []  # the config file written for the refused start is gone
    assert report["state"] == "running"
    assert report["methods"] is True


def test_a_stopped_runtime_leaves_no_dpdk_directory(spdk: Any) -> None:
    report = _run("""
with Runtime(cpu_mask=reactor_mask(), mem_size_mb=256):
    report["during"] = os.path.isdir(dpdk_runtime_dir(os.getpid()))
report["after"] = os.path.exists(dpdk_runtime_dir(os.getpid()))
print(json.dumps(report))
""")
    assert report == {"during": True, "after": False}


@pytest.mark.parametrize("command", [[], ["hugepages"]])
def test_cli_output_into_a_closed_pipe_is_quiet(spdk: Any, command: list[str]) -> None:
    """`python -m pyspdk_sys | head -1`: the reader goes, no traceback follows."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pyspdk_sys", *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT_DIR / "tests",
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before the first line
    errors = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141, errors
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors


def test_options_give_spdk_tgt_the_mask_in_one_form(spdk: Any, tmp_path: Path) -> None:
    from pyspdk_sys.options import AppOptions

    options = AppOptions.check(cpu_mask="[0, 1]", hugepages=True, hugedir=str(tmp_path))
    argv = options.argv("/run/x.sock", None)
    assert argv[:2] == ["-m", "[0,1]"]
    assert options.reactor_mask == "0x3" and options.core_list == "[0,1]"
    assert ["--huge-dir", str(tmp_path)] == argv[argv.index("--huge-dir") :][:2]
    assert "--no-huge" not in argv and "--no-pci" in argv
    # As a Runtime on hugepages: one file per segment list, for vhost-user initiators.
    assert "--single-file-segments" in argv
    assert "--single-file-segments" not in AppOptions.check().argv("/run/x.sock", None)
    with pytest.raises(ValueError, match="pci=True needs hugepages=True"):
        AppOptions.check(pci=True)
    with pytest.raises(TypeError, match="hugepages must be a bool"):
        AppOptions.check(hugepages=1)
