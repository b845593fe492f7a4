/* extern "Python" trampolines: the C-to-Python entry points. Each runs on an
 * SPDK thread with the GIL taken by cffi; the Python side catches every
 * exception so none unwinds into C (src/pyspdk_sys/_callbacks.py). */

/* spdk_app_start's start function: subsystems are up, the app thread runs. */
extern "Python" void pyspdk_app_started(void *ctx);

/* Called by the work poller (pyspdk_work_poll) when Python queued work. */
extern "Python+C" void pyspdk_drain_work(void);
