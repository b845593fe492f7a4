/* _shims/runtime.h: the runtime's work queue (runtime.c). Python threads
 * queue work in Python and bump a counter; one poller on the app thread sees
 * the counter and drains the whole queue in one call. Python threads never
 * call spdk_thread_send_msg, which aborts when the thread exited or the
 * message pool is empty. */
#ifndef PYSPDK_SHIMS_RUNTIME_H
#define PYSPDK_SHIMS_RUNTIME_H

#include "spdk/stdinc.h"
#include "spdk/thread.h"

/* cffi begin */
void pyspdk_work_notify(void);
struct spdk_poller *pyspdk_work_poller_register(void);
void pyspdk_work_poller_unregister(struct spdk_poller **poller);
/* cffi end */

/* Python's side of the queue: the extern "Python+C" trampoline the poller
 * calls (cdefs/callbacks.h), defined in the module cffi generates. */
void pyspdk_drain_work(void);

#endif /* PYSPDK_SHIMS_RUNTIME_H */
