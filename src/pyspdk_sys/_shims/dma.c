/* DMA memory accounting (declared in dma.h): free bytes in DPDK's heaps, so
 * tests can show that every error path gives back what it took. The struct
 * mirrors rte_malloc.h, unchanged from DPDK 25.11 to 26.03; the installed
 * headers are SPDK's only. */
#include "dma.h"

#include "spdk/env.h"

struct rte_malloc_socket_stats {
	size_t heap_totalsz_bytes;
	size_t heap_freesz_bytes;
	size_t greatest_free_size;
	unsigned free_count;
	unsigned alloc_count;
	size_t heap_allocsz_bytes;
};
int rte_malloc_get_socket_stats(int socket, struct rte_malloc_socket_stats *stats);
unsigned int rte_socket_count(void);
int rte_socket_id_by_idx(unsigned int idx);

/* Allocated bytes over every NUMA socket's heap; -1 when DPDK cannot say. */
int64_t
pyspdk_dma_allocated_bytes(void)
{
	struct rte_malloc_socket_stats stats;
	unsigned int i, sockets = rte_socket_count();
	int64_t total = 0;

	for (i = 0; i < sockets; i++) {
		if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(i), &stats) != 0) {
			return -1;
		}
		total += (int64_t)stats.heap_allocsz_bytes;
	}
	return total;
}

/* Allocate DMA memory and store the pointer in *out before returning, so a
 * Python owner interrupted right after the call still finds it. */
void *
pyspdk_dma_alloc_into(size_t size, size_t align, void **out)
{
	*out = spdk_dma_malloc(size, align, NULL);
	return *out;
}
