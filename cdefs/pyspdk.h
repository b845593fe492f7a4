/* pyspdk-sys's own symbols: what build.sh compiles into the fat library, and
 * the C shims compiled into this module (src/pyspdk_sys/_shims/). */

/* Fused into libspdk_fat.so by build.sh: SPDK has no run-time version call. */
const char *pyspdk_fat_spdk_version(void);
int pyspdk_fat_spdk_version_num(void);
const char *pyspdk_fat_build_info(void);

/* DPDK's run-time version, from the fused DPDK archives. */
const char *rte_version(void);

/* SPDK_VERSION of the headers this module was compiled against. */
static const int PYSPDK_HEADERS_VERSION_NUM;

/* Path of the loaded fat library, or NULL. */
const char *pyspdk_fat_library_path(void);
