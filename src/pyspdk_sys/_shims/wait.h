/* _shims/wait.c: bounded waits. The Python layer waits in slices of at most
 * PYSPDK_WAIT_SLICE_NS nanoseconds, so signals and timeouts reach it. */
#define PYSPDK_WAIT_SLICE_NS ...
/* CPUs SPDK reactors busy-poll, where adaptive waits do not spin. */
void pyspdk_mark_polled_cpu(int cpu, bool polled);
bool pyspdk_on_polled_cpu(void);
