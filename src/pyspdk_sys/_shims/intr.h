/* _shims/intr.h: what lets an interrupt-mode runtime sleep when idle (intr.c)
 * beyond this project's own pollers: SPDK's iSCSI target. */
#ifndef PYSPDK_SHIMS_INTR_H
#define PYSPDK_SHIMS_INTR_H

#include "spdk/stdinc.h"

/* cffi begin */
/* App thread, interrupt mode, once the app has started. The iSCSI target's
 * poll-group pollers have no event to wake on, so SPDK runs them as busy
 * pollers, which keeps every reactor awake. They have nothing to do while no
 * iSCSI portal listens (no connection can exist): they are set aside, and a
 * watcher (every PYSPDK_INTR_WATCH_US) puts the reactors in polling mode
 * while a portal exists, so that iSCSI works, and back in interrupt mode
 * when none is left. 0, or -errno. */
#define PYSPDK_INTR_WATCH_US 250000
int pyspdk_intr_quiet(void);
/* App thread: stop watching (the runtime stops). */
void pyspdk_intr_stop(void);
/* what: 0 iSCSI pollers set aside, 1 reactors polling for iSCSI (0 or 1). */
int pyspdk_intr_state(int what);
/* cffi end */

#endif /* PYSPDK_SHIMS_INTR_H */
