/* Common types shared by several SPDK headers (sys/uio.h, spdk/uuid.h, opaque forward declarations). */

/* sys/uio.h (pulled in by spdk/stdinc.h) */
struct iovec {
	void *iov_base;
	size_t iov_len;
	...;
};

/* Opaque SPDK objects referenced by more than one header area. */
struct spdk_thread;
struct spdk_poller;
struct spdk_io_channel;
struct spdk_cpuset;
struct spdk_pci_addr;
struct spdk_json_val;
struct spdk_json_write_ctx;
struct spdk_jsonrpc_request;
struct spdk_bdev;
struct spdk_bdev_desc;
struct spdk_bdev_io;

/* spdk/uuid.h */
struct spdk_uuid {
	union {
		uint8_t raw[16];
	} u;
	...;
};

#define SPDK_UUID_STRING_LEN ...

int spdk_uuid_parse(struct spdk_uuid *uuid, const char *uuid_str);
int spdk_uuid_fmt_lower(char *uuid_str, size_t uuid_str_size, const struct spdk_uuid *uuid);
int spdk_uuid_compare(const struct spdk_uuid *u1, const struct spdk_uuid *u2);
void spdk_uuid_generate(struct spdk_uuid *uuid);
void spdk_uuid_copy(struct spdk_uuid *dst, const struct spdk_uuid *src);
bool spdk_uuid_is_null(const struct spdk_uuid *uuid);
void spdk_uuid_set_null(struct spdk_uuid *uuid);
