/* _shims/dma.h: DMA memory accounting and allocation (dma.c). */
#ifndef PYSPDK_SHIMS_DMA_H
#define PYSPDK_SHIMS_DMA_H

#include "spdk/stdinc.h"

/* cffi begin */
/* Bytes allocated in DPDK's heaps (every socket), or -1. App running only. */
int64_t pyspdk_dma_allocated_bytes(void);
/* spdk_dma_malloc whose result is stored in *out before it returns. */
void *pyspdk_dma_alloc_into(size_t size, size_t align, void **out);
/* cffi end */

#endif /* PYSPDK_SHIMS_DMA_H */
