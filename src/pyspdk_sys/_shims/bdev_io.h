/* _shims/bdev_io.c: the block I/O engine. Python threads queue requests, a
 * poller on an SPDK thread (one per reactor core: a device's lanes) submits
 * them with the bdev API, completions finish in C without the GIL. */

#define PYSPDK_IO_READ ...
#define PYSPDK_IO_WRITE ...
#define PYSPDK_IO_READV ...
#define PYSPDK_IO_WRITEV ...
#define PYSPDK_IO_FLUSH ...
#define PYSPDK_IO_UNMAP ...
#define PYSPDK_IO_WRITE_ZEROES ...
#define PYSPDK_IO_RESET ...
#define PYSPDK_IO_DONE ...
#define PYSPDK_DEV_OPEN ...
#define PYSPDK_DEV_CLOSING ...
#define PYSPDK_DEV_CLOSED ...

struct pyspdk_cq;
struct pyspdk_dev;

/* One request. While state is not PYSPDK_IO_DONE the engine holds it and its
 * buffers; a new request must be set to PYSPDK_IO_DONE before first use. */
struct pyspdk_io {
	int op;
	uint64_t offset_blocks;
	uint64_t num_blocks;
	void *buf;
	struct iovec *iov;
	int iovcnt;
	struct pyspdk_cq *cq;
	uint64_t tag;
	int status;
	int nvme_sct;
	int nvme_sc;
	uint32_t cdw0;
	int aio_status;
	uint32_t state;
	...;
};

/* App thread only. lanes: at most this many SPDK threads (0: one per reactor
 * core); queue_depth: the most requests in flight per lane. */
struct pyspdk_dev *pyspdk_dev_open(const char *name, bool write, uint32_t queue_depth,
				   uint32_t lanes, int *rc);
void pyspdk_dev_close(struct pyspdk_dev *dev);
void pyspdk_io_engine_stop(void);
int pyspdk_io_open_count(void);
uint32_t pyspdk_io_engine_threads(void);

/* Any thread. Waits take at most timeout_ns: -ETIMEDOUT or -EINTR mean "not
 * yet", and the request is still the engine's. A spin_ns < 0 adapts the spin
 * to the latency the device's waiters have seen (wait.c, pyspdk_adapt). */
int pyspdk_dev_submit(struct pyspdk_dev *dev, struct pyspdk_io **ios, int count);
/* One read or write of [offset, offset + length) into or from io->buf,
 * completing to io->cq: -ERANGE (nothing queued) unless it is whole blocks
 * inside the device. */
int pyspdk_dev_submit_range(struct pyspdk_dev *dev, struct pyspdk_io *io, int op, uint64_t offset,
			    uint64_t length);
int pyspdk_io_run(struct pyspdk_dev *dev, struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns);
int pyspdk_io_wait(struct pyspdk_io *io, int64_t spin_ns, int64_t timeout_ns);
bool pyspdk_io_is_done(struct pyspdk_io *io);
int pyspdk_dev_wait_ready(struct pyspdk_dev *dev, int64_t timeout_ns);
int pyspdk_dev_wait_closed(struct pyspdk_dev *dev, int64_t timeout_ns);
uint32_t pyspdk_dev_lanes(struct pyspdk_dev *dev);
void pyspdk_dev_free(struct pyspdk_dev *dev);
uint32_t pyspdk_dev_inflight(struct pyspdk_dev *dev);
int64_t pyspdk_dev_latency_ns(struct pyspdk_dev *dev, bool jobs);
int64_t pyspdk_dev_adaptive_spin_ns(struct pyspdk_dev *dev, bool jobs);
#define PYSPDK_ADAPT_MIN_SPIN_NS ...
#define PYSPDK_ADAPT_MAX_SPIN_NS ...
