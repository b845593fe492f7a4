"""Every constructor-time registration is present once the fat library loads.

Each kind is observed through SPDK's own public lookup, with concrete module
names, and a name that is not registered as the control. Nothing here starts
SPDK: registration happens at load time.
"""

from __future__ import annotations

from typing import Any

import pytest

# What each supported SPDK release fuses: SPDK version -> DPDK version.
DPDK_OF = {"26.01": "25.11.0", "26.05": "26.03.0"}


@pytest.fixture(scope="module")
def lib(spdk: Any) -> Any:
    return spdk.lib


@pytest.fixture(scope="module")
def ffi(spdk: Any) -> Any:
    return spdk.ffi


def test_versions(spdk: Any) -> None:
    assert spdk.SPDK_VERSION in DPDK_OF
    assert DPDK_OF[spdk.SPDK_VERSION] == spdk.DPDK_VERSION
    assert spdk.LIBRARY_PATH.endswith(f"libspdk_fat.so.{spdk.SPDK_VERSION}.0")
    assert spdk.BUILD_INFO["spdk_version"] == f"{spdk.SPDK_VERSION}.0"
    assert spdk.lib.pyspdk_fat_spdk_version_num() == spdk.lib.PYSPDK_HEADERS_VERSION_NUM
    assert spdk.BUILT_AGAINST.startswith(f"spdk_fat {spdk.SPDK_VERSION}.0 ")


def is_26_05(spdk: Any) -> bool:
    return spdk.lib.PYSPDK_HEADERS_VERSION_NUM >= 260500


def test_feature_flags_follow_the_release(spdk: Any) -> None:
    newer = is_26_05(spdk)
    assert {
        "PYSPDK_HAS_JSON_BATCHES": newer,
        "PYSPDK_HAS_JSONRPC_BATCH": newer,
        "PYSPDK_HAS_NVMF_CTRLR_CONNECT": not newer,
    } == spdk.FEATURES
    assert (256 if newer else 32) * 1024 == spdk.lib.PYSPDK_JSONRPC_RECV_BUF_SIZE
    assert (8192 if newer else 1024) == spdk.lib.PYSPDK_JSONRPC_MAX_VALUES


def test_absent_names_leave_lib(spdk: Any) -> None:
    from pyspdk_sys import _binding, _conditional

    for feature in _conditional.FEATURES:
        present = bool(getattr(_binding.raw_lib, feature.flag))
        for name in feature.names:
            assert hasattr(spdk.lib, name) == present, name
            # The extension itself still has the stand-in: only lib hides it.
            assert hasattr(_binding.raw_lib, name), name
    # Everything else is the extension's own object.
    assert spdk.lib.spdk_bdev_get_by_name is _binding.raw_lib.spdk_bdev_get_by_name


def test_json_array_count_where_present(spdk: Any, ffi: Any, lib: Any) -> None:
    if not spdk.FEATURES["PYSPDK_HAS_JSON_BATCHES"]:
        with pytest.raises(AttributeError):
            lib.spdk_json_array_count  # noqa: B018
        return
    text = b'[1, [2, 3], {"a": 4}]'
    buf = ffi.new("char[]", text)
    values = ffi.new("struct spdk_json_val[16]")
    count = lib.spdk_json_parse(buf, len(text), values, 16, ffi.NULL, 0)
    assert count > 0
    assert lib.spdk_json_array_count(values) == 3


def test_env_opts_defaults(ffi: Any, lib: Any) -> None:
    opts = ffi.new("struct spdk_env_opts *")
    opts.opts_size = ffi.sizeof("struct spdk_env_opts")
    opts.mem_size = 12345  # overwritten by the defaults
    lib.spdk_env_opts_init(opts)
    assert ffi.string(opts.name) == b"spdk"
    assert opts.mem_size == -1
    assert opts.shm_id == -1
    assert opts.main_core == -1
    assert opts.mem_channel == -1
    assert not opts.no_huge
    assert not opts.no_pci
    assert opts.opts_size == ffi.sizeof("struct spdk_env_opts")


def test_app_opts_defaults(ffi: Any, lib: Any) -> None:
    opts = ffi.new("struct spdk_app_opts *")
    lib.spdk_app_opts_init(opts, ffi.sizeof("struct spdk_app_opts"))
    assert ffi.sizeof("struct spdk_app_opts") == 253  # packed, as in v26.01
    assert ffi.string(opts.rpc_addr) == b"/var/tmp/spdk.sock"
    assert opts.print_level == lib.SPDK_LOG_INFO
    assert opts.opts_size == 253


def test_log_flags(ffi: Any, lib: Any) -> None:
    names = set()
    flag = lib.spdk_log_get_first_flag()
    while flag != ffi.NULL:
        names.add(ffi.string(flag.name).decode())
        flag = lib.spdk_log_get_next_flag(flag)
    assert {
        "bdev",
        "bdev_malloc",
        "bdev_null",
        "nvmf",
        "nvmf_tcp",
        "thread",
        "vhost",
        "virtio",
        "ublk",
        "iscsi",
        "uring",
        "sock_posix",
        "rpc",
    } <= names
    assert lib.spdk_log_set_flag(b"bdev_malloc") == 0
    assert lib.spdk_log_get_flag(b"bdev_malloc")
    assert lib.spdk_log_clear_flag(b"bdev_malloc") == 0
    assert not lib.spdk_log_get_flag(b"bdev_malloc")
    assert lib.spdk_log_set_flag(b"no_such_flag") != 0
    assert not lib.spdk_log_get_flag(b"no_such_flag")


@pytest.mark.parametrize(
    "method",
    [
        "bdev_malloc_create",
        "bdev_null_create",
        "bdev_aio_create",
        "bdev_error_create",
        "bdev_error_inject_error",
        "bdev_lvol_create_lvstore",
        "bdev_passthru_create",
        "bdev_raid_create",
        "bdev_virtio_attach_controller",
        "bdev_iscsi_create",
        "bdev_uring_create",
        "nvmf_create_transport",
        "nvmf_create_subsystem",
        "vhost_create_blk_controller",
        "ublk_create_target",
        "ublk_start_disk",
        "iobuf_set_options",
        "framework_get_subsystems",
        "rpc_get_methods",
        "accel_get_opc_assignments",
        "sock_impl_set_options",
        "iscsi_create_target_node",
        "fsdev_aio_create",
    ],
)
def test_rpc_method(ffi: Any, lib: Any, method: str) -> None:
    mask = ffi.new("uint32_t *")
    assert lib.spdk_rpc_get_method_state_mask(method.encode(), mask) == 0
    assert mask[0] & (lib.SPDK_RPC_STARTUP | lib.SPDK_RPC_RUNTIME)


def test_unknown_rpc_method(ffi: Any, lib: Any) -> None:
    mask = ffi.new("uint32_t *")
    assert lib.spdk_rpc_get_method_state_mask(b"bdev_no_such_create", mask) == -2  # -ENOENT


def test_rpc_methods_verify(lib: Any) -> None:
    assert lib.spdk_rpc_verify_methods()


@pytest.mark.parametrize(
    "module",
    [
        "malloc",
        "null",
        "aio",
        "error",
        "lvol",
        "passthru",
        "raid",
        "split",
        "delay",
        "gpt",
        "virtio_blk",
        "virtio_scsi",
        "iscsi",
        "uring",
        "nvme",
        "ftl",
        "bdev_zoned_block",
    ],
)
def test_bdev_module(ffi: Any, lib: Any, module: str) -> None:
    found = lib.spdk_bdev_module_list_find(module.encode())
    assert found != ffi.NULL
    assert ffi.string(found.name).decode() == module


@pytest.mark.parametrize("module", ["software", "error"])
def test_accel_module(ffi: Any, lib: Any, module: str) -> None:
    found = lib.spdk_accel_get_module(module.encode())
    assert found != ffi.NULL
    assert ffi.string(found.name).decode() == module


@pytest.mark.parametrize("impl", ["posix", "uring", "ssl"])
def test_sock_impl(ffi: Any, lib: Any, impl: str) -> None:
    opts = ffi.new("struct spdk_sock_impl_opts *")
    size = ffi.new("size_t *", ffi.sizeof("struct spdk_sock_impl_opts"))
    assert lib.spdk_sock_impl_get_opts(impl.encode(), opts, size) == 0
    assert opts.recv_buf_size > 0


def test_default_sock_impl(ffi: Any, lib: Any) -> None:
    assert ffi.string(lib.spdk_sock_get_default_impl()) in (b"posix", b"uring")


def test_nvme_transports(lib: Any) -> None:
    assert lib.spdk_nvme_transport_available_by_name(b"PCIE")
    assert lib.spdk_nvme_transport_available_by_name(b"TCP")
    assert not lib.spdk_nvme_transport_available_by_name(b"NO_SUCH")


def test_nvmf_tcp_transport(spdk: Any, ffi: Any, lib: Any) -> None:
    opts = ffi.new("struct spdk_nvmf_transport_opts *")
    assert lib.spdk_nvmf_transport_opts_init(b"TCP", opts, ffi.sizeof(opts[0]))
    assert opts.max_queue_depth > 0
    assert opts.max_io_size > 0
    assert opts.opts_size == ffi.sizeof(opts[0])
    if is_26_05(spdk):
        # buf_cache_size shares a union with iobuf_small_cache_size, and
        # iobuf_large_cache_size follows; io_unit_size and num_shared_buffers
        # are left 0 for the transport to derive when it is created.
        assert ffi.sizeof(opts[0]) == 88
        assert opts.io_unit_size == 0
        assert opts.num_shared_buffers == 0
        assert opts.buf_cache_size > 0
    else:
        assert ffi.sizeof(opts[0]) == 82
        assert opts.io_unit_size > 0
        assert opts.num_shared_buffers > 0


@pytest.mark.parametrize("driver", ["nvme", "virtio", "vmd", "ioat", "idxd"])
def test_pci_driver(ffi: Any, lib: Any, driver: str) -> None:
    assert lib.spdk_pci_get_driver(driver.encode()) != ffi.NULL


def test_unknown_pci_driver(ffi: Any, lib: Any) -> None:
    assert lib.spdk_pci_get_driver(b"no_such_driver") == ffi.NULL


def test_fsdev_module(ffi: Any, lib: Any) -> None:
    assert lib.spdk_fsdev_module_list_find(b"aio") != ffi.NULL
    assert lib.spdk_fsdev_module_list_find(b"no_such") == ffi.NULL


@pytest.mark.parametrize("group", ["bdev", "nvmf_tcp", "thread", "scsi", "sock", "blob"])
def test_trace_group(lib: Any, group: str) -> None:
    assert lib.spdk_trace_create_tpoint_group_mask(group.encode()) != 0


@pytest.mark.parametrize(
    "subsystem",
    [
        "bdev",
        "accel",
        "iobuf",
        "sock",
        "nvmf",
        "vhost_blk",
        "vhost_scsi",
        "ublk",
        "iscsi",
        "scsi",
        "nbd",
        "keyring",
        "fsdev",
        "vmd",
        "scheduler",
    ],
)
def test_subsystem(lib: Any, subsystem: str) -> None:
    assert lib.spdk_subsystem_exists(subsystem.encode())


def test_unknown_subsystem(lib: Any) -> None:
    assert not lib.spdk_subsystem_exists(b"no_such")


def test_registry_lists_agree_with_lookups(spdk: Any, lib: Any) -> None:
    from pyspdk_sys import registry

    found = registry.snapshot()
    assert set(found) == set(registry.KIND_KEYS)
    assert {"malloc", "null", "aio", "error", "virtio_blk"} <= set(found["bdev_modules"])
    assert found["nvmf_transports"] == ["TCP"]
    assert {"posix", "uring"} <= set(found["sock_impls"])
    mask = spdk.ffi.new("uint32_t *")
    for method in found["rpc_methods"]:
        assert lib.spdk_rpc_get_method_state_mask(method.encode(), mask) == 0, method
    assert len(found["rpc_methods"]) > 200


def test_registry_unknown_kind(spdk: Any) -> None:
    from pyspdk_sys import registry

    with pytest.raises(ValueError, match="unknown registration kind 'widgets'"):
        registry.registered("widgets")
