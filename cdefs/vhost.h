/* spdk/vhost.h: vhost-user target (vhost-scsi / vhost-blk) setup and device lookup. */

typedef void (*spdk_vhost_init_cb)(int rc);
typedef void (*spdk_vhost_fini_cb)(void);

struct spdk_vhost_dev;

int spdk_vhost_set_socket_path(const char *basename);
void spdk_vhost_scsi_init(spdk_vhost_init_cb init_cb);
void spdk_vhost_scsi_fini(spdk_vhost_fini_cb fini_cb);
void spdk_vhost_scsi_config_json(struct spdk_json_write_ctx *w);
void spdk_vhost_blk_init(spdk_vhost_init_cb init_cb);
void spdk_vhost_blk_fini(spdk_vhost_fini_cb fini_cb);
void spdk_vhost_blk_config_json(struct spdk_json_write_ctx *w);

/* Hold spdk_vhost_lock() around spdk_vhost_dev_find/next and the returned device. */
void spdk_vhost_lock(void);
int spdk_vhost_trylock(void);
void spdk_vhost_unlock(void);
struct spdk_vhost_dev *spdk_vhost_dev_find(const char *name);
struct spdk_vhost_dev *spdk_vhost_dev_next(struct spdk_vhost_dev *vdev);
const char *spdk_vhost_dev_get_name(struct spdk_vhost_dev *vdev);
