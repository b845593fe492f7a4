/* spdk/ublk.h: ublk (userspace block device) target init/teardown. */

typedef void (*spdk_ublk_fini_cb)(void *arg);

void spdk_ublk_init(void);
int spdk_ublk_fini(spdk_ublk_fini_cb cb_fn, void *cb_arg);
void spdk_ublk_write_config_json(struct spdk_json_write_ctx *w);
