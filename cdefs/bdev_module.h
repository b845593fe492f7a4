/* spdk/bdev_module.h: look up a registered bdev module by name (the rest is for module authors). */

struct spdk_bdev_module {
	const char *name;
	...;
};

struct spdk_bdev_module *spdk_bdev_module_list_find(const char *name);
