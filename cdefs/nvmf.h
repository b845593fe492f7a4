/* spdk/nvmf.h (+ spdk/nvmf_transport.h): NVMe-oF transport default options. */

/* __attribute__((packed)) in C; layout is taken from the compiler: 82 bytes in
 * v26.01, 88 in v26.05, where buf_cache_size shares a union with
 * iobuf_small_cache_size and iobuf_large_cache_size follows kas (both left to
 * `...`). v26.05's TCP opts_init leaves io_unit_size and num_shared_buffers 0:
 * the transport derives them when it is created. */
struct spdk_nvmf_transport_opts {
	uint16_t max_queue_depth;
	uint16_t max_qpairs_per_ctrlr;
	uint32_t in_capsule_data_size;
	uint32_t max_io_size;
	uint32_t io_unit_size;
	uint32_t max_aq_depth;
	uint32_t num_shared_buffers;
	uint32_t buf_cache_size;
	bool dif_insert_or_strip;
	bool disable_command_passthru;
	uint32_t abort_timeout_sec;
	uint32_t association_timeout;
	const struct spdk_json_val *transport_specific;
	size_t opts_size;
	uint32_t acceptor_poll_rate;
	bool zcopy;
	uint32_t ack_timeout;
	uint32_t data_wr_pool_size;
	uint32_t min_kato;
	uint16_t kas;
	...;
};

bool spdk_nvmf_transport_opts_init(const char *transport_name,
				   struct spdk_nvmf_transport_opts *opts, size_t opts_size);

/* spdk/nvmf_transport.h, for custom transports; removed in v26.05, where
 * PYSPDK_HAS_NVMF_CTRLR_CONNECT is 0 and the name leaves lib. */
struct spdk_nvmf_request;
static const long PYSPDK_HAS_NVMF_CTRLR_CONNECT;
int spdk_nvmf_ctrlr_connect(struct spdk_nvmf_request *req);
