/*
 * internal.h - the engine's internal contract between its files.
 *
 * Map of src/engine (read in this order):
 *   list.h ring.[ch]   building blocks (intrusive list, bounded FIFO)
 *   gate.h             the per-session callback gate
 *   runtime.c          engine threads: one libuv loop each, scheduling of
 *                      session objects and jobs onto a loop, bounded stop
 *   meta.c             flow metadata decoding, flow ids, UTF-8 helpers
 *   config.c           proxy config (defaults, clamping, ABI encoding)
 *   decision.c         decisions and app-message replies with deadlines
 *   engine.c           engine object, handler registration, engine ABI
 *   abi_default.c      engine_new/_with_config (the registered handler)
 *   tcp_abi.c          TCP session: host-facing ABI (any thread)
 *   tcp_session.c      TCP session: loop side (service, teardown, timers)
 *   tcp_stream.c       nectar_stream_*: reads, writes, backpressure
 *   promote.c          promote (cutover) protocol
 *   udp_session.c      UDP session: ABI and loop side
 *   peer.c             UDP peer views <-> socket addresses
 *   audit_token_*.c    audit token -> pid (apple: libbsm; none: absent)
 *
 * Lock order (outermost first): session gate -> session mu -> loop mu.
 * Nothing calls a host callback while holding a session mu or a loop mu;
 * host callbacks run only under the session gate (spec §3.8).
 */
#ifndef NECTAR_ENGINE_INTERNAL_H
#define NECTAR_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "engine/gate.h"
#include "engine/list.h"
#include "engine/ring.h"
#include "nectar/handler.h"
#include "nectar/ne_abi.h"

#define NE_TAG "engine"

/* ---- runtime (runtime.c) ------------------------------------------------- */

struct ne_obj;
struct ne_loop;
struct ne_runtime;

/* What a schedulable object (TCP or UDP session) implements. */
struct ne_obj_ops {
    /* On the loop thread: do bounded pending work. */
    void (*process)(struct ne_obj *o);
    /* On the loop thread, at engine stop: tear the object down. */
    void (*shutdown)(struct ne_obj *o);
    /* Any thread, when the last reference is dropped: free memory. */
    void (*destroy)(struct ne_obj *o);
};

/*
 * Common head of a session.  refs: one held by the host handle (dropped by
 * _free), one by the loop until the loop side is finalised, one per queued
 * schedule.  ready_node/live_node/queued are guarded by loop->mu.
 */
struct ne_obj {
    const struct ne_obj_ops *ops;
    struct ne_loop *loop;
    atomic_int refs;
    bool queued;
    bool live;
    struct nectar_list ready_node;
    struct nectar_list live_node;
};

struct ne_loop {
    uv_loop_t uv;
    uv_poll_t wake;           /* watches efd; see runtime.c for why */
    int efd;                  /* eventfd; closed by rt_free, -1 if none */
    pthread_t thread;
    struct ne_runtime *rt;
    pthread_mutex_t mu;
    struct nectar_list ready; /* ne_obj.ready_node, under mu */
    struct nectar_list live;  /* ne_obj.live_node, under mu */
    struct nectar_list jobs;  /* ne_job.node, under mu */
    bool accepting;           /* under mu: false once the loop closes */
    bool wake_pending;        /* under mu: efd written, lists not taken */
    bool exited;              /* under rt->mu */
    bool thread_started;
    bool uv_inited;
};

struct ne_runtime {
    atomic_int refs;
    unsigned n;
    struct ne_loop *loops;
    atomic_uint next;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned live_objs; /* under mu: objects not yet finalised */
    bool leaked;        /* a loop thread did not exit in time */
};

int nectar__rt_new(unsigned threads, struct ne_runtime **out);
void nectar__rt_ref(struct ne_runtime *rt);
void nectar__rt_unref(struct ne_runtime *rt);
/* Picks a loop for a new session (round robin). */
struct ne_loop *nectar__rt_pick(struct ne_runtime *rt);
/* Bounded stop: shuts every live object down, runs `last` on loop 0's
 * thread, closes every handle and joins the threads (detaching a wedged
 * one after drain_ms + 2 s).  Returns true when every thread exited. */
bool nectar__rt_stop(struct ne_runtime *rt, uint32_t drain_ms,
                     void (*last)(void *arg), void *arg);

/* Registers o on loop (refs = 2: host + loop) and schedules it once. */
void nectar__obj_attach(struct ne_obj *o, const struct ne_obj_ops *ops,
                        struct ne_loop *loop);
/* Any thread: run o->ops->process soon on o's loop (coalesced). */
void nectar__obj_schedule(struct ne_obj *o);
void nectar__obj_ref(struct ne_obj *o);
void nectar__obj_unref(struct ne_obj *o);
/* Loop thread: the loop side is done with o (drops the loop reference). */
void nectar__obj_finalize(struct ne_obj *o);
/* Any thread: run fn(arg) on loop.  0, or NECTAR_ENOMEM / NECTAR_ECLOSED
 * (fn not run). */
int nectar__loop_post(struct ne_loop *loop, void (*fn)(void *), void *arg);

/* ---- metadata (meta.c) --------------------------------------------------- */

/* Refcounted decoded metadata; strings live in the same allocation. */
struct ne_meta {
    atomic_int refs;
    nectar_flow_meta_t m;
};

/* Decodes raw (may be NULL: only `fallback` protocol set).  *unknown_proto
 * is set when raw->protocol is neither TCP nor UDP.  NULL on ENOMEM. */
struct ne_meta *nectar__meta_decode(const RamaTransparentProxyFlowMeta *raw,
                                    nectar_protocol_t fallback,
                                    bool *unknown_proto);
void nectar__meta_ref(struct ne_meta *m);
void nectar__meta_unref(struct ne_meta *m);
uint64_t nectar__flow_id_next(void);
uint64_t nectar__now_ms(void);
/* Decodes a UTF-8 slice: NULL when absent, invalid or blank; else a
 * trimmed, NUL-terminated copy (caller frees). */
char *nectar__utf8_dup_trimmed(const char *p, size_t len);
bool nectar__utf8_valid(const uint8_t *p, size_t len);
int nectar__audit_token_pid(const uint8_t token[32], int32_t *pid);

/* ---- engine (engine.c) --------------------------------------------------- */

struct nectar_engine_ctx {
    struct RamaTransparentProxyEngine *engine;
};

struct RamaTransparentProxyEngine {
    const nectar_handler_vtable_t *vt;
    void *state;
    nectar_engine_options_t opts;
    struct nectar_engine_ctx ctx;
    uint8_t *config;
    size_t config_len;
    struct ne_runtime *rt;
    atomic_bool stopping;
};

/* Fills defaults and validates; returns 0 or NECTAR_EINVAL with *err. */
int nectar__options_resolve(const nectar_engine_options_t *in,
                            nectar_engine_options_t *out, nectar_error_t *err);

/* ---- decisions (decision.c) ---------------------------------------------- */

struct ne_verdict {
    nectar_action_t action;
    const nectar_tcp_service_t *tcp_vt;
    const nectar_udp_service_t *udp_vt;
    void *svc;
    bool timed_out;
};

/* Runs vt->decide_tcp/udp on this thread and waits up to the deadline. */
void nectar__decide(struct RamaTransparentProxyEngine *e, struct ne_meta *meta,
                    struct ne_verdict *out);
/* Runs vt->app_message and waits; returns the reply (maybe empty). */
RamaBytesOwned nectar__app_message(struct RamaTransparentProxyEngine *e,
                                   const uint8_t *msg, size_t len);

/* ---- proxy config (config.c) --------------------------------------------- */

RamaTransparentProxyConfig *
nectar__config_encode(const nectar_proxy_config_t *cfg);

/* ---- TCP (tcp_*.c, promote.c) -------------------------------------------- */

enum { NE_IN = 0, NE_EG = 1 }; /* stream index: ingress, egress */

enum tcp_state {
    TCP_PENDING, /* created, not activated */
    TCP_ACTIVE,  /* activated; the service runs once started */
    TCP_DONE,    /* torn down on the loop (service destroyed) */
};

/* One host -> service queue (spec §3.5).  All fields under session mu. */
struct ne_inq {
    struct nectar_ring q; /* struct ne_chunk * */
    bool exists;          /* egress: created at activate */
    bool open;            /* the host may still deliver (sender present) */
    bool rx_gone;         /* the service side is gone */
    bool paused;          /* a PAUSED was returned; demand owed */
};

struct ne_chunk {
    const uint8_t *ptr;
    size_t len;
    void *owner;
    void (*release)(void *owner);
};
void nectar__chunk_free(void *chunk);

struct ne_write {
    struct nectar_list node;
    const uint8_t *buf;
    size_t len;
    nectar_stream_write_cb cb;
    void *data;
};

/* Loop-thread-only except drain_gen. */
struct nectar_stream {
    struct nectar_tcp_flow *flow;
    int dir;
    nectar_stream_read_cb read_cb;
    void *read_data;
    bool reading;
    bool read_done;
    struct nectar_list writes; /* ne_write, FIFO */
    size_t write_bytes;
    bool shutdown_req;
    bool write_dead;
    bool close_fired;
    bool parked;
    unsigned parked_gen;
    bool backstop_armed;
    unsigned backstop_gen;
    uv_timer_t backstop;
    uint64_t bytes_read;
    uint64_t bytes_written;
    const char *close_reason; /* first terminal reason seen (spec §3.11) */
    atomic_uint drain_gen;    /* bumped by signal_*_drain */
};

enum promote_state {
    PROMOTE_NONE,      /* never requested */
    PROMOTE_REQUESTED, /* the service asked; the loop will dispatch */
    PROMOTE_WAIT_ACK,  /* on_promote_request ran; waiting for confirm */
    PROMOTE_RESOLVED,  /* result cached in promote_result */
};

struct ne_promote_waiter {
    struct nectar_list node;
    nectar_promote_cb cb;
    void *data;
};

struct nectar_tcp_flow {
    struct ne_obj obj;
    struct ne_meta *meta;
    uint32_t capacity;
    uint32_t paused_drain_ms;
    uint32_t idle_ms;

    /* The callback gate (spec §3.8): held across every host callback. */
    struct ne_gate gate;
    RamaTransparentProxyTcpSessionCallbacks cbs;  /* immutable */
    RamaTransparentProxyTcpEgressCallbacks ecbs;  /* set at activate */
    RamaTransparentProxyTcpPromoteCallbacks pcbs; /* under gate */

    /* Host-shared state, under mu. */
    pthread_mutex_t mu;
    enum tcp_state state;
    bool cancelled;
    bool service_gone; /* engine stop tore a pending session down */
    bool saw_client;
    bool saw_server;
    bool egress_error;
    bool has_opts;
    RamaTcpEgressConnectOptions opts;
    struct ne_inq in[2];
    enum promote_state promote;
    int promote_result;

    /* Loop-thread-only state. */
    struct nectar_stream st[2];
    const nectar_tcp_service_t *svc_vt;
    void *svc;
    bool timers_up;
    bool started;
    bool finishing;
    bool torn;
    bool in_process;    /* tcp_process is running (re-entrant calls) */
    bool svc_destroyed; /* destroy ran (exactly once) */
    bool dirty;         /* a service call asked for another round */
    unsigned open_handles;
    uv_timer_t idle;
    uint64_t idle_last;
    struct nectar_list promote_waiters;
};

struct nectar_tcp_flow *
nectar__tcp_new(struct RamaTransparentProxyEngine *e, struct ne_meta *meta,
                const struct ne_verdict *v,
                RamaTransparentProxyTcpSessionCallbacks cbs,
                const RamaTcpEgressConnectOptions *opts);
extern const struct ne_obj_ops nectar__tcp_ops;

/* Loop thread: more work for this flow (same turn when inside process). */
void nectar__tcp_kick(struct nectar_tcp_flow *f);

/* "peer_eof_left", "idle_timeout", "shutdown", ... for a teardown reason. */
const char *nectar__close_reason(int reason);

/* tcp_stream.c (loop thread) */
void nectar__stream_init(struct nectar_stream *st, struct nectar_tcp_flow *f,
                         int dir);
/* Moves bytes and completions; returns true when work is left over. */
bool nectar__stream_pump(struct nectar_stream *st);
/* Fails every queued write with status. */
void nectar__stream_fail_writes(struct nectar_stream *st, int status);
/* Fires the direction's close callback once (gated). */
void nectar__stream_fire_close(struct nectar_stream *st);
/* Gated host callbacks. */
void nectar__tcp_fire_demand(struct nectar_tcp_flow *f, int dir);

/* promote.c (loop thread) */
void nectar__promote_process(struct nectar_tcp_flow *f);
void nectar__promote_cancel_waiters(struct nectar_tcp_flow *f);

/* ---- UDP (udp_session.c) ------------------------------------------------- */

struct nectar_udp_flow;
struct nectar_udp_flow *
nectar__udp_new(struct RamaTransparentProxyEngine *e, struct ne_meta *meta,
                const struct ne_verdict *v,
                RamaTransparentProxyUdpSessionCallbacks cbs);

/* Decoding of a raw peer view into a socket address (false: no peer), and
 * back into a view whose text lives in scratch (64 bytes). */
bool nectar__peer_decode(const RamaUdpPeerView *v, struct sockaddr_storage *ss);
RamaUdpPeerView nectar__peer_encode(const struct sockaddr *sa, char *scratch,
                                    size_t scratch_len);

#endif
