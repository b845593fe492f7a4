/* Where the fat library this module is linked against was loaded from
 * (declared in version.h). */
#include "version.h"

#include <dlfcn.h>

const char *
pyspdk_fat_library_path(void)
{
	Dl_info info;

	if (dladdr((void *)pyspdk_fat_spdk_version, &info) == 0) {
		return NULL;
	}
	return info.dli_fname;
}
