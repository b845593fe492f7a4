/* spdk/nvme.h: NVMe transport availability queries (the NVMe driver itself is not bound). */

enum spdk_nvme_transport_type {
	SPDK_NVME_TRANSPORT_PCIE,
	SPDK_NVME_TRANSPORT_RDMA,
	SPDK_NVME_TRANSPORT_FC,
	SPDK_NVME_TRANSPORT_TCP,
	SPDK_NVME_TRANSPORT_VFIOUSER,
	SPDK_NVME_TRANSPORT_CUSTOM,
	SPDK_NVME_TRANSPORT_CUSTOM_FABRICS,
	...
};

bool spdk_nvme_transport_available(enum spdk_nvme_transport_type trtype);
bool spdk_nvme_transport_available_by_name(const char *transport_name);
const char *spdk_nvme_transport_id_trtype_str(enum spdk_nvme_transport_type trtype);
