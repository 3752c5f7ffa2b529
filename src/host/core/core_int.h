/*
 * core_int.h - private structures of the host core, shared by its files.
 *
 * Map of the core:
 *   core.c         host object, loop threads, event inbox, registry, stop
 *   wpump.c        the shared TCP write pump (byte budget, PAUSED, drain)
 *   tcp_flow.c     per-flow TCP state machine, read pumps, teardown
 *   tcp_forward.c  direct forwarder (promote cutover and passthrough)
 *   udp_flow.c     UDP sessions and the UDP write queue
 *   egress_opts.c  connect options -> socket options, address text
 *
 * Event hop (why an inbox and not one uv_async_t per flow): engine callbacks
 * run on engine threads and may only post work to the flow's loop.  Each
 * flow carries an atomic event mask; posting ORs a bit in and, if the flow
 * is not already queued, links it into its loop's inbox under the inbox
 * mutex and, when the inbox was empty, wakes the loop through the loop's
 * eventfd.  So a burst of callbacks costs one wake-up, and an idle flow
 * costs no handle.  (Not uv_async_t: libuv 1.44's async handle spins, then
 * sched_yield()s, whenever a sender is preempted mid-send, which on a
 * small machine showed up as ~8% of the relay's CPU.)
 */
#ifndef NECTAR_HOST_CORE_INT_H
#define NECTAR_HOST_CORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

#include "host/core/host.h"

struct core_loop;
struct core_obj;

typedef void (*core_dispatch_fn)(struct core_obj *o, unsigned events);
typedef void (*core_destroy_fn)(struct core_obj *o);

/* Common head of TCP and UDP flows: identity, refcount, inbox link. */
struct core_obj {
    struct core_loop *loop;
    atomic_uint events;     /* pending EV_* bits */
    atomic_int refs;        /* destroy runs at zero */
    bool queued;            /* in the inbox; guarded by loop->lock */
    struct core_obj *next;  /* inbox link; guarded by loop->lock */
    struct core_obj *rprev, *rnext; /* registry; guarded by host->lock */
    bool registered;        /* guarded by host->lock */
    core_dispatch_fn dispatch;
    core_destroy_fn destroy;
    uint64_t id;
    int protocol;           /* IPPROTO_TCP / IPPROTO_UDP */
};

struct core_loop {
    nectar_host_t *host;
    uv_loop_t loop;
    int efd;                /* eventfd: the inbox is not empty */
    uv_poll_t wake;
    pthread_t thread;
    bool inited, started;
    pthread_mutex_t lock;   /* guards inbox and the queued/next fields */
    struct core_obj *inbox_head, *inbox_tail;
    bool stopping;          /* guarded by lock */
};

/* TCP start admission and the latency breaker (ne-host §4.2), the
 * flow-pressure reaper (§5.5) and the maintenance tick (§5).  Guarded by
 * nectar_host.lock. */
#define ADM_WINDOW 128
#define APP_BUCKETS 64

/* One source app with live TCP flows (telemetry's top apps). */
struct app_entry {
    struct app_entry *next;
    uint64_t live;
    char name[];
};

struct admission {
    uint32_t hard_cap, soft_cap, open_p95_ms, close_p95_ms;
    uint32_t pressure_clamp_ms, breaker_clamp_ms;
    uint32_t in_flight;
    uint32_t window[ADM_WINDOW]; /* start-to-ready latencies, ms */
    unsigned wcount, wpos;
    uint64_t admissions, timeouts, sheds; /* since the last tick */
    bool breaker_open;
    /* pressure reaper */
    uint32_t soft_cap_flows, low_water, idle_floor_ms;
    bool scan_pending, no_headroom_logged;
    uint64_t peak;
    uint64_t tick;
    struct app_entry *apps[APP_BUCKETS]; /* live TCP flows per app */
};

struct nectar_host {
    RamaTransparentProxyEngine *engine; /* NULL after stop */
    pthread_rwlock_t engine_gate;  /* readers: engine calls; writer: stop */
    nectar_host_hooks_t hooks;
    nectar_host_options_t opts;    /* defaults resolved */
    size_t wp_cap;                 /* write pump cap */
    bool fail_open;                /* refusal => passthrough */
    unsigned nloops;
    struct core_loop *loops;
    atomic_uint next_loop;
    atomic_bool stopping;
    bool stopped;                  /* guarded by stop_lock */
    pthread_mutex_t stop_lock;
    pthread_mutex_t lock;          /* registry and stats */
    pthread_cond_t empty;          /* signalled when the registry empties */
    struct core_obj *reg_head;
    nectar_host_stats_t stats;
    atomic_uint_fast64_t pump_paused, engine_paused; /* lock-free counters */
    struct admission adm;          /* guarded by lock */
    uv_timer_t maint_timer;        /* on loops[0] */
    uv_async_t maint_wake;         /* on loops[0]: run a pressure scan */
    bool maint_started;
};

/* Events (bits of core_obj.events). */
enum {
    EV_START = 1u << 0,
    EV_TEARDOWN = 1u << 1,   /* host stop */
    EV_CLIENT_FLUSH = 1u << 2,
    EV_EGRESS_FLUSH = 1u << 3,
    EV_CLIENT_DEMAND = 1u << 4,
    EV_EGRESS_DEMAND = 1u << 5,
    EV_SERVER_CLOSED = 1u << 6,
    EV_CLOSE_EGRESS = 1u << 7,
    EV_PROMOTE = 1u << 8,
    EV_UDP_FLUSH = 1u << 9,
    EV_UDP_CLOSE = 1u << 10, /* client went away */
    EV_KICK_STALE = 1u << 11,  /* maintenance: stuck before ready */
    EV_KICK_WEDGED = 1u << 12, /* maintenance: graceful close wedged */
    EV_KICK_IDLE = 1u << 13,   /* maintenance: promoted flow idle */
    EV_EVICT = 1u << 14,       /* pressure reaper victim */
    EV_DIRECT_DONE = 1u << 15, /* the front finished a handed-off flow */
};

/* ---- core.c ------------------------------------------------------------- */

uint64_t nectar__host_now_ms(void);
uint64_t nectar__host_next_id(void);
struct core_loop *nectar__host_pick_loop(nectar_host_t *h);
/* OR bits into o->events and wake its loop.  Any thread. */
void nectar__host_post(struct core_obj *o, unsigned events);
void nectar__host_ref(struct core_obj *o);
void nectar__host_unref(struct core_obj *o);
/* Registry (any thread); register fails when the host is stopping. */
bool nectar__host_register(nectar_host_t *h, struct core_obj *o);
void nectar__host_unregister(nectar_host_t *h, struct core_obj *o);
/* Count a finished flow and hand its report to the front. */
void nectar__host_report(nectar_host_t *h, const nectar_host_flow_report_t *r);
/* Engine reader gate: returns the engine (NULL when stopped) with the read
 * lock held; always pair with engine_leave. */
RamaTransparentProxyEngine *nectar__host_engine_enter(nectar_host_t *h);
void nectar__host_engine_leave(nectar_host_t *h);
/* Build the ABI metadata from the front's; text lives in `store`. */
struct meta_store {
    char remote[64], local[64];
    char remote_text[80];
};
int nectar__host_build_meta(const nectar_host_flow_meta_t *in, int protocol,
                            RamaTransparentProxyFlowMeta *out,
                            struct meta_store *store);

/* ---- maintenance.c ------------------------------------------------------ */

/* Read the admission/pressure knobs from the engine config (cfg may be
 * NULL: spec defaults). */
void nectar__host_adm_configure(nectar_host_t *h,
                                const RamaTransparentProxyConfig *cfg);
/* Try to take a start token; on refusal *why says why. */
bool nectar__host_admit(nectar_host_t *h, char *why, size_t n);
enum adm_outcome { ADM_READY, ADM_TIMEOUT, ADM_FAILED };
/* Give a token back with its start time; records latency, breaker. */
void nectar__host_admit_finish(nectar_host_t *h, uint64_t start_ms,
                               enum adm_outcome outcome);
/* Connect timeout after the pressure/breaker clamps. */
uint32_t nectar__host_connect_timeout(nectar_host_t *h, uint32_t base);
/* After a registration: trigger the (coalesced) pressure scan if the
 * combined flow count is at or over the soft cap. */
void nectar__host_pressure_check(nectar_host_t *h);
/* Count a live TCP flow for its app (bundle id, else signing id, else
 * "pid:N", else "pid:unknown"); returns the entry to drop later, or NULL
 * when out of memory.  Any thread. */
struct app_entry *nectar__host_app_hold(nectar_host_t *h,
                                        const nectar_host_flow_meta_t *meta);
void nectar__host_app_drop(nectar_host_t *h, struct app_entry *e);
/* Free what is left (host free). */
void nectar__host_app_clear(nectar_host_t *h);
/* Start/stop the maintenance timer and scan wake-up on loops[0]; start
 * runs on the creating thread before loops start, stop on loops[0]. */
int nectar__host_maint_init(nectar_host_t *h);

/* ---- tcp_flow.c / udp_flow.c -------------------------------------------- */

/* Snapshot of a registered UDP flow for nectar__host_flows; called with
 * host->lock held (the flow stays registered, so alive, meanwhile). */
void nectar__udp_flow_info(struct core_obj *o, nectar_host_flow_info_t *out);

int nectar__tcp_flow_start(nectar_host_t *h, int client_fd,
                           const nectar_host_flow_meta_t *meta,
                           nectar_host_decision_t *decision);

#endif
