/* _shims/dma.c: bytes allocated in DPDK's heaps (every socket), or -1.
 * App running only. */
int64_t pyspdk_dma_allocated_bytes(void);
/* spdk_dma_malloc whose result is stored in *out before it returns. */
void *pyspdk_dma_alloc_into(size_t size, size_t align, void **out);
