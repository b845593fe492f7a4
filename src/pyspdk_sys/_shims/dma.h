/* _shims/dma.c: bytes allocated in DPDK's heaps (every socket), or -1.
 * App running only. */
int64_t pyspdk_dma_allocated_bytes(void);
