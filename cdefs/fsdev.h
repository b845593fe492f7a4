/* spdk/fsdev_module.h: look up a registered filesystem-device module by name. */

struct spdk_fsdev_module {
	const char *name;
	...;
};

struct spdk_fsdev_module *spdk_fsdev_module_list_find(const char *name);
