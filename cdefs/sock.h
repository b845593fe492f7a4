/* spdk/sock.h: socket implementation (posix, uring, ssl) selection and per-implementation options. */

/* Get: pass *len = sizeof(struct spdk_sock_impl_opts); set: pass the same len. */
struct spdk_sock_impl_opts {
	uint32_t recv_buf_size;
	uint32_t send_buf_size;
	bool enable_recv_pipe;
	bool enable_zerocopy_send;
	bool enable_quickack;
	uint32_t enable_placement_id;
	bool enable_zerocopy_send_server;
	bool enable_zerocopy_send_client;
	uint32_t zerocopy_threshold;
	uint32_t tls_version;
	bool enable_ktls;
	uint8_t *psk_key;
	uint32_t psk_key_size;
	char *psk_identity;
	const char *tls_cipher_suites;
	...;
};

int spdk_sock_impl_get_opts(const char *impl_name, struct spdk_sock_impl_opts *opts, size_t *len);
int spdk_sock_impl_set_opts(const char *impl_name, const struct spdk_sock_impl_opts *opts,
			    size_t len);
int spdk_sock_set_default_impl(const char *impl_name);
const char *spdk_sock_get_default_impl(void);
