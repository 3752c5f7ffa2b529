/*
 * tcp_flow.h - the per-flow TCP object shared by tcp_flow.c (state machine,
 * engine pumps, teardown) and tcp_forward.c (direct forwarder used after a
 * promote cutover and for passthrough flows).  Loop-thread only, except the
 * fields marked "slock" and the write pumps' own locks.
 */
#ifndef NECTAR_HOST_CORE_TCP_FLOW_H
#define NECTAR_HOST_CORE_TCP_FLOW_H

#include <netinet/in.h>

#include "host/core/core_int.h"
#include "host/core/wpump.h"

enum tcp_mode {
    MODE_ENGINE,   /* bytes go through the engine session */
    MODE_PROMOTED, /* the engine handed the flow back: direct forwarder */
    MODE_DIRECT,   /* passthrough: never saw the engine */
};

/* Engine-bound read pump (ne-host §4.6 client/egress read pump). */
enum rp_phase { RP_IDLE, RP_READING, RP_PAUSED, RP_CLOSED };

struct rpump {
    uv_tcp_t *tcp;
    enum rp_phase phase;
    struct wchunk *replay; /* PAUSED bytes, replayed first on demand */
    bool eof;              /* the socket reported EOF or an error */
    int error;             /* read error (not EOF), 0 if none */
};

/* One forwarder direction (ne-host §7.3). */
enum fwd_phase { FD_IDLE, FD_BUFFERING, FD_ACTIVE, FD_FINISHING, FD_FINISHED };

struct fwd_dir {
    enum fwd_phase phase;
    struct wchunk *head, *tail; /* carryover, flushed before direct bytes */
    bool eof_buffered;
    int error;                  /* S->C read error forwarded as a reset */
    bool reading;
};

/* Published state bits (tcp_flow.pub): written on the flow's loop, read
 * by the maintenance tick and the pressure reaper on another loop. */
enum {
    PS_READY = 1u << 0,    /* egress connected */
    PS_CLOSING = 1u << 1,  /* a graceful close was signalled */
    PS_DRAIN = 1u << 2,    /* ... and its drain has not finished */
    PS_PROMOTED = 1u << 3,
    PS_DONE = 1u << 4,
};

struct tcp_flow {
    struct core_obj obj;
    atomic_uint pub;      /* PS_* bits */
    /* guarded by host->lock: admission token, maintenance marks */
    bool token;
    uint64_t token_start_ms;
    /* live-flow count of its app (telemetry); atomic because
     * nectar__host_flows reads it from another thread (core.c) */
    struct app_entry *_Atomic app;
    uint64_t stale_tick, wedge_tick;
    nectar_host_t *host;
    nectar_host_decision_t decision;
    enum tcp_mode mode;
    int client_fd; /* until adopted by `client` on the loop */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } remote;             /* the original destination */

    pthread_mutex_t slock;                     /* every session call */
    RamaTransparentProxyTcpSession *session;   /* slock */
    bool cancelled;                            /* slock */

    uv_tcp_t client, egress;
    uv_timer_t timer; /* connect timeout, then the drain backstop */
    uv_connect_t *creq;   /* heap, only while connecting */
    int handles;      /* initialised uv handles not yet closed */

    struct wpump cwp; /* engine/forwarder -> client socket */
    struct wpump ewp; /* engine/forwarder -> egress socket */
    struct rpump crp; /* client socket -> engine */
    struct rpump erp; /* egress socket -> engine */
    struct fwd_dir c2s, s2c;

    bool egress_ready, activated, done;
    bool saw_bytes; /* a non-empty delivery was attempted either way */
    bool server_closed, close_egress; /* engine close callbacks seen */
    bool s2c_done, c2s_done;          /* engine mode: halves shut */
    bool backstop_armed;
    bool egress_released; /* linger/EOF grace closed the egress early */
    bool promoted;
    uint32_t connect_timeout_ms, linger_ms, eof_grace_ms;
    uint64_t deadline_at; /* when the backstop timer fires */
    uint64_t start_ms;
    atomic_uint_fast64_t last_activity; /* also bumped by direct writes */
    int end_error;
    const char *end_reason;
    /* source application, copied from the meta (NULL when unknown) */
    char *app_signing, *app_bundle;
    int32_t pid;

    /* Hand-off to the front (hooks.tcp_direct), tcp_forward.c. */
    bool front;          /* this flow's direct stretch goes to the front */
    bool handed;         /* hand-off done: our handles are closed */
    bool front_took;     /* ... and the hook accepted the flow */
    bool hand_wait[2];   /* waiting for the c2s / s2c destination pump */
    atomic_int direct_state; /* DIRECT_*: loop vs. the front's done */
    atomic_uint_fast64_t direct_c2s, direct_s2c;
    atomic_int direct_error;
};

enum { DIRECT_NONE, DIRECT_HANDED, DIRECT_FRONT_DONE, DIRECT_ORPHANED };

/* tcp_flow.c */
/* Recompute and publish f->pub from the loop-side fields. */
void nectar__tcp_publish(struct tcp_flow *f);
void nectar__tcp_finish(struct tcp_flow *f, int err, const char *reason);
/* (Re)arm the flow's deadline timer to fire within ms (never later than
 * an earlier arming); it checks the drain backstop, linger after FIN and
 * the egress EOF grace. */
void nectar__tcp_arm_backstop(struct tcp_flow *f, uint32_t ms);
void nectar__tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void nectar__tcp_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
void nectar__tcp_shutdown_write(uv_tcp_t *tcp);
/* Close one of the flow's handles (no RST); finalize follows the last. */
void nectar__tcp_close_handle(struct tcp_flow *f, uv_handle_t *h);

/* tcp_forward.c */
void nectar__fwd_promote(struct tcp_flow *f);
void nectar__fwd_start_direct(struct tcp_flow *f);
/* The engine finished its side of a direction (promoted mode). */
void nectar__fwd_activate(struct tcp_flow *f, struct fwd_dir *d);
void nectar__fwd_read(struct tcp_flow *f, bool from_client, struct wchunk *c);
void nectar__fwd_read_end(struct tcp_flow *f, bool from_client, int err);
void nectar__fwd_resume(struct tcp_flow *f, struct fwd_dir *d);
bool nectar__fwd_drain_pending(const struct tcp_flow *f);
void nectar__fwd_drop(struct tcp_flow *f);
/* EV_DIRECT_DONE / EV_TEARDOWN for a flow the front has. */
void nectar__fwd_front_done(struct tcp_flow *f);
void nectar__fwd_front_teardown(struct tcp_flow *f);

#endif
