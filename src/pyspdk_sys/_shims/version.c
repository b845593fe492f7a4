/* Versions and location of the fat library this module is linked against. */
#include <dlfcn.h>

const char *pyspdk_fat_spdk_version(void);
int pyspdk_fat_spdk_version_num(void);
const char *pyspdk_fat_build_info(void);
const char *rte_version(void);

static const int PYSPDK_HEADERS_VERSION_NUM = SPDK_VERSION;

static const char *
pyspdk_fat_library_path(void)
{
	Dl_info info;

	if (dladdr((void *)pyspdk_fat_spdk_version, &info) == 0) {
		return NULL;
	}
	return info.dli_fname;
}
