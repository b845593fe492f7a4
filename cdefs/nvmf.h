/* spdk/nvmf.h: NVMe-oF transport default options. */

/* __attribute__((packed)) in C; layout is taken from the compiler. */
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
