"""The shared validators at their edges: what each accepts, what it refuses, and the words."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest


def test_int_bounds_are_inclusive(spdk: Any) -> None:
    from pyspdk_sys._checks import INT64_MAX, check_int

    assert INT64_MAX == 2**63 - 1
    assert check_int("n", 1, 1, 3) == 1 and check_int("n", 3, 1, 3) == 3
    for bad in (0, 4):
        with pytest.raises(ValueError, match=f"n must be from 1 to 3, not {bad}"):
            check_int("n", bad, 1, 3)
    for bad in (True, 1.0, "1", None):
        with pytest.raises(TypeError, match="n must be an int"):
            check_int("n", bad, 0, 3)


def test_bool_and_float(spdk: Any) -> None:
    from pyspdk_sys._checks import check_bool, check_float

    assert check_bool("flag", False) is False
    with pytest.raises(TypeError, match=r"flag must be a bool, not int \(1\)"):
        check_bool("flag", 1)
    assert check_float("x", 2, 2.0, 3.0) == 2.0 and check_float("x", 3.0, 2.0, 3.0) == 3.0
    for bad in (1.999, 3.001, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"x must be a finite number from 2\.0 to 3\.0"):
            check_float("x", bad, 2.0, 3.0)
    for bad in (True, "2", None):
        with pytest.raises(TypeError, match="x must be a number"):
            check_float("x", bad, 0.0, 3.0)


def test_timeouts_up_to_a_year(spdk: Any) -> None:
    from pyspdk_sys._checks import MAX_SECONDS, check_seconds, check_timeout

    assert MAX_SECONDS == 365 * 24 * 3600.0
    assert check_timeout("t", MAX_SECONDS) == MAX_SECONDS
    assert check_timeout("t", 1e-9) == 1e-9
    with pytest.raises(ValueError, match=r"t must be a positive number of seconds or None"):
        check_timeout("t", MAX_SECONDS + 1)
    with pytest.raises(ValueError, match=r"t must be a positive number of seconds \(at most"):
        check_seconds("t", 0.0)
    assert check_seconds("t", 5) == 5.0 and isinstance(check_seconds("t", 5), float)


def test_powers_of_two(spdk: Any) -> None:
    from pyspdk_sys._checks import check_power_of_two

    assert check_power_of_two("align", 1, 1, 8) == 1
    assert check_power_of_two("align", 8, 1, 8) == 8
    for bad in (3, 6):
        with pytest.raises(ValueError, match=f"align must be a power of two, not {bad}"):
            check_power_of_two("align", bad, 1, 8)
    with pytest.raises(ValueError, match="align must be from 1 to 8"):
        check_power_of_two("align", 16, 1, 8)


def test_mask_edges(spdk: Any) -> None:
    from pyspdk_sys._checks import MAX_CORE, mask_of, parse_cpu_mask

    assert MAX_CORE == 1023
    assert parse_cpu_mask("m", "0x1") == (0,)
    assert parse_cpu_mask("m", f"[{MAX_CORE}]") == (MAX_CORE,)
    assert parse_cpu_mask("m", "0x" + "f" * 256) == tuple(range(1024))
    assert parse_cpu_mask("m", "[2-2,0]") == (0, 2)
    with pytest.raises(ValueError, match=f"core {MAX_CORE + 1} is past SPDK's last"):
        parse_cpu_mask("m", f"[{MAX_CORE + 1}]")
    with pytest.raises(ValueError, match=f"core {MAX_CORE + 1} is past"):
        parse_cpu_mask("m", f"[0-{MAX_CORE + 1}]")
    with pytest.raises(TypeError, match="m must be a str such as '0x3'"):
        parse_cpu_mask("m", 3)
    assert mask_of((0, 2, 2)) == "0x5"
    assert mask_of([MAX_CORE]) == hex(1 << MAX_CORE)


def test_online_cpus_are_this_machines(spdk: Any) -> None:
    from pyspdk_sys._checks import check_local_cpu_mask, online_cpus

    cores = online_cpus()
    assert cores == frozenset(range(os.cpu_count() or 1))
    last = max(cores)
    assert check_local_cpu_mask("cpu_mask", hex(1 << last)) == (last,)


def test_socket_paths(spdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspdk_sys._checks import SUN_PATH_MAX, check_socket_path

    assert SUN_PATH_MAX == 107
    fits = "/tmp/" + "s" * (SUN_PATH_MAX - len("/tmp/"))
    assert check_socket_path("sock", fits) == fits
    with pytest.raises(ValueError, match=f"is 108 bytes; a Unix socket path holds at most {107}"):
        check_socket_path("sock", fits + "x")
    assert check_socket_path("sock", Path("/tmp/a.sock")) == "/tmp/a.sock"
    monkeypatch.chdir(tmp_path)
    assert check_socket_path("sock", "rel.sock") == str(tmp_path / "rel.sock")
    with pytest.raises(ValueError, match="sock's directory '/nonexistent-dir' does not exist"):
        check_socket_path("sock", "/nonexistent-dir/x.sock")
    for bad in ("", "/tmp/a\0b"):
        with pytest.raises(ValueError, match="sock must be a non-empty path without NUL"):
            check_socket_path("sock", bad)
    with pytest.raises(TypeError, match="sock must be a path, not int"):
        check_socket_path("sock", 5)


def test_nqn_edges(spdk: Any) -> None:
    from pyspdk_sys._checks import DISCOVERY_NQN, NQN_MAX, NQN_MIN, check_nqn

    assert (NQN_MIN, NQN_MAX) == (11, 223)
    longest = "nqn.2016-06.io.spdk:" + "x" * (NQN_MAX - 20)
    assert check_nqn("nqn", longest) == longest
    with pytest.raises(ValueError, match="nqn must be 11 to 223 bytes, not 224"):
        check_nqn("nqn", longest + "x")
    with pytest.raises(ValueError, match="nqn must be 11 to 223 bytes, not 10"):
        check_nqn("nqn", "nqn.2016-0")
    assert check_nqn("nqn", DISCOVERY_NQN) == DISCOVERY_NQN
    with pytest.raises(ValueError, match="contains a NUL"):
        check_nqn("nqn", "nqn.2016-06.io.spdk:a\0b")
    with pytest.raises(ValueError, match="is not valid UTF-8"):
        check_nqn("nqn", "nqn.2016-06.io.spdk:\ud800")
    with pytest.raises(TypeError, match="nqn must be a str"):
        check_nqn("nqn", b"nqn.2016-06.io.spdk:x")
    # The domain as SPDK walks it: labels of 63 characters, '-' inside, '.' between.
    assert check_nqn("nqn", "nqn.2016-06.a" + "b" * 62 + ".c-d:x")
    with pytest.raises(ValueError, match="longer than 63"):
        check_nqn("nqn", "nqn.2016-06.a" + "b" * 64 + ":x")
    with pytest.raises(ValueError, match="must end with a letter or digit"):
        check_nqn("nqn", "nqn.2016-06.io-:x")
    with pytest.raises(ValueError, match="must end with a letter or digit"):
        check_nqn("nqn", "nqn.2016-06.a--.b:x")
    assert check_nqn("nqn", "nqn.2016-06.a--b.c:x")
    with pytest.raises(ValueError, match="must start with a letter, not '-'"):
        check_nqn("nqn", "nqn.2016-06.-a:x")
    with pytest.raises(ValueError, match="needs a name after the domain"):
        check_nqn("nqn", "nqn.2016-06.io.spdk")
    uuid = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
    assert check_nqn("nqn", uuid) == uuid
    with pytest.raises(ValueError, match="must be a UUID"):
        check_nqn("nqn", uuid + "5")


def test_addresses_and_ports(spdk: Any) -> None:
    from pyspdk_sys._checks import check_ip_address, check_port

    assert check_ip_address("address", "127.0.0.1") == ("127.0.0.1", "ipv4")
    assert check_ip_address("address", "::0001") == ("::1", "ipv6")
    with pytest.raises(ValueError, match="address must be an IPv4 or IPv6 address, not 'local'"):
        check_ip_address("address", "localhost"[:5])
    with pytest.raises(TypeError, match="address must be a str"):
        check_ip_address("address", 127)
    assert check_port("port", 1) == 1 and check_port("port", 65535) == 65535
    for bad in (0, 65536):
        with pytest.raises(ValueError, match="port must be from 1 to 65535"):
            check_port("port", bad)


def test_pci_addresses(spdk: Any) -> None:
    from pyspdk_sys._checks import check_pci_address

    assert check_pci_address("a", "0000:00:04.0") == "0000:00:04.0"
    assert check_pci_address("a", "00:04.0") == "0000:00:04.0"  # domain 0
    assert check_pci_address("a", "0000:AF:1F.7") == "0000:af:1f.7"
    assert check_pci_address("a", "10000:01:00.0") == "10000:01:00.0"  # a VMD domain
    assert check_pci_address("a", "0:0:4.0") == "0000:00:04.0"
    with pytest.raises(ValueError, match="device number is 00 to 1f, not 20"):
        check_pci_address("a", "0000:00:20.0")
    for bad in (
        "0000:00:04.8",
        "0000:00:04",
        "000000000:00:04.0",
        "0000:100:04.0",
        "",
        "x",
        "../../0000:00:04.0",
        "0000:00:04.0\n",
        "0000:00:04.0/remove",
    ):
        with pytest.raises(ValueError, match="traddr must be a PCI address"):
            check_pci_address("traddr", bad)
    with pytest.raises(TypeError, match="traddr must be a str"):
        check_pci_address("traddr", b"0000:00:04.0")


def test_reconnect_options_together(spdk: Any) -> None:
    from pyspdk_sys._checks import check_reconnect

    assert check_reconnect(0, 0, 0) == (0, 0, 0)
    assert check_reconnect(-1, 1, 0) == (-1, 1, 0)
    assert check_reconnect(10, 2, 5) == (10, 2, 5)
    for bad, words in (
        ((0, 1, 0), "must be 0 when ctrlr_loss_timeout_sec is 0"),
        ((5, 0, 0), "at least 1"),
        ((5, 6, 0), "must not exceed ctrlr_loss_timeout_sec"),
        ((10, 3, 2), "must not be less than reconnect_delay_sec"),
        ((10, 1, 11), "fast_io_fail_timeout_sec must not exceed"),
    ):
        with pytest.raises(ValueError, match=words):
            check_reconnect(*bad)
    with pytest.raises(ValueError, match="ctrlr_loss_timeout_sec must be from -1"):
        check_reconnect(-2, 1, 0)


def test_names(spdk: Any) -> None:
    from pyspdk_sys._checks import check_name

    assert check_name("Malloc0") == b"Malloc0"
    assert check_name("é") == "é".encode()
    for bad in ("", "a\0b"):
        with pytest.raises(ValueError, match="invalid a bdev name"):
            check_name(bad, "a bdev name")
    with pytest.raises(TypeError, match="a device name is a str, not bytes"):
        check_name(b"x")


def test_configs(spdk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyspdk_sys._checks import check_config

    assert check_config(None) is None
    config = {"subsystems": [{"subsystem": "bdev", "config": []}]}
    copied = check_config(config)
    assert copied == config and copied is not config
    assert check_config({}) == {}
    with pytest.raises(ValueError, match=r"config\['subsystems'\] must be a list"):
        check_config({"subsystems": {}})
    with pytest.raises(ValueError, match="config is not JSON-serialisable"):
        check_config({"subsystems": [], "x": math.nan})
    with pytest.raises(TypeError, match="config must be a mapping or a path, not int"):
        check_config(5)
    good = tmp_path / "c.json"
    good.write_text('{"subsystems": []}')
    assert check_config(str(good)) == good
    monkeypatch.chdir(tmp_path)
    assert check_config("c.json") == good
    with pytest.raises(ValueError, match="does not exist"):
        check_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        check_config(bad)
