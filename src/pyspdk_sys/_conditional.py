"""Declarations that exist in only some supported SPDK releases, behind flags.

The cdefs are one set of files for every supported release. What a release
lacks is still declared there, next to a `static const long PYSPDK_HAS_X;`
flag. At build time the preamble sets each flag from a C preprocessor
condition and, when it is 0, defines a stand-in (a NULL function pointer, a
zero macro) so the extension compiles. At import, `_binding` removes the names
of every flag that is 0 from `lib`, so a missing function is an
AttributeError, never a call through NULL.

This module is read by `_cffi_build.py` at build time (by path: it imports
nothing from the package) and by `_binding.py` at import.
"""

from __future__ import annotations

from typing import NamedTuple


class Feature(NamedTuple):
    """One flag: when `condition` holds in C, `names` exist; else `fallback` stands in."""

    flag: str
    condition: str
    names: tuple[str, ...]
    fallback: str


_V26_05 = "SPDK_VERSION >= SPDK_VERSION_NUM(26, 5, 0)"

FEATURES: tuple[Feature, ...] = (
    # spdk/json.h, v26.05: writers that flatten JSON-RPC batches, array counting.
    Feature(
        "PYSPDK_HAS_JSON_BATCHES",
        "defined(SPDK_JSON_WRITE_FLAG_FLATTEN_BATCHES)",
        (
            "SPDK_JSON_WRITE_FLAG_FLATTEN_BATCHES",
            "spdk_json_write_add_flags",
            "spdk_json_write_batch_begin",
            "spdk_json_write_batch_end",
            "spdk_json_array_count",
        ),
        "#define SPDK_JSON_WRITE_FLAG_FLATTEN_BATCHES 0\n"
        "static void (*spdk_json_write_add_flags)(struct spdk_json_write_ctx *, uint32_t) = NULL;\n"
        "static int (*spdk_json_write_batch_begin)(struct spdk_json_write_ctx *) = NULL;\n"
        "static int (*spdk_json_write_batch_end)(struct spdk_json_write_ctx *) = NULL;\n"
        "static size_t (*spdk_json_array_count)(const struct spdk_json_val *) = NULL;\n",
    ),
    # spdk/jsonrpc.h, v26.05: the client builds batch requests (the server accepts them).
    Feature(
        "PYSPDK_HAS_JSONRPC_BATCH",
        _V26_05,
        ("spdk_jsonrpc_begin_batch", "spdk_jsonrpc_end_batch"),
        "static int (*spdk_jsonrpc_begin_batch)(struct spdk_jsonrpc_client_request *) = NULL;\n"
        "static void (*spdk_jsonrpc_end_batch)(struct spdk_jsonrpc_client_request *) = NULL;\n",
    ),
    # spdk/nvmf_transport.h: removed in v26.05.
    Feature(
        "PYSPDK_HAS_NVMF_CTRLR_CONNECT",
        f"!({_V26_05})",
        ("spdk_nvmf_ctrlr_connect",),
        "static int (*spdk_nvmf_ctrlr_connect)(struct spdk_nvmf_request *) = NULL;\n",
    ),
)

CONDITIONAL_NAMES: dict[str, tuple[str, ...]] = {f.flag: f.names for f in FEATURES}
"""Flag -> the names that `lib` loses when the flag is 0."""


def preamble() -> str:
    """C that sets every flag and defines the stand-ins (after the SPDK includes)."""
    parts = []
    for feature in FEATURES:
        parts.append(
            f"#if {feature.condition}\n"
            f"static const long {feature.flag} = 1;\n"
            "#else\n"
            f"static const long {feature.flag} = 0;\n"
            f"{feature.fallback}"
            "#endif\n"
        )
    return "".join(parts)
