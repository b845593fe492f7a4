/* _shims/version.h: versions and location of the fat library this module is
 * linked against (version.c), and the SPDK headers it was compiled with. */
#ifndef PYSPDK_SHIMS_VERSION_H
#define PYSPDK_SHIMS_VERSION_H

#include "spdk/stdinc.h"
#include "spdk/version.h"

/* cffi begin */
/* Fused into libspdk_fat.so by build.sh: SPDK has no run-time version call. */
const char *pyspdk_fat_spdk_version(void);
int pyspdk_fat_spdk_version_num(void);
const char *pyspdk_fat_build_info(void);

/* DPDK's run-time version, from the fused DPDK archives. */
const char *rte_version(void);

/* SPDK_VERSION of the headers this module was compiled against. */
#ifdef PYSPDK_CDEF
static const int PYSPDK_HEADERS_VERSION_NUM;
#else
static const int PYSPDK_HEADERS_VERSION_NUM = SPDK_VERSION;
#endif

/* Path of the loaded fat library, or NULL. */
const char *pyspdk_fat_library_path(void);
/* cffi end */

#endif /* PYSPDK_SHIMS_VERSION_H */
