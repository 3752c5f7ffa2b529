/*
 * backend_xpc.c - the Apple IPC backend: a thin layer over libxpc.
 *
 * Listeners are Mach service listeners (XPC_CONNECTION_MACH_SERVICE_
 * LISTENER); clients may set XPC_CONNECTION_MACH_SERVICE_PRIVILEGED to
 * look the name up in the system domain, as rama's Swift client does.
 * Code-signing style requirements are the libxpc calls of the same names,
 * applied before activation; uid/gid/predicate requirements are checked
 * on each new peer before it is resumed, so a refused peer is cancelled
 * before any of its messages is delivered.  libxpc itself does framing,
 * reply contexts and the first-send PeerRequirementFailed.
 *
 * Built only on Apple platforms (no machine here can compile it); keep it
 * to documented libxpc and dispatch calls.
 */
#if defined(__APPLE__)

#include "ipc/ipc_int.h"

#include <dispatch/dispatch.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xpc/xpc.h>

#include "common/alloc.h"

/* ---- values <-> xpc objects ------------------------------------------ */

static xpc_object_t to_xpc(const nectar_ipc_obj_t *o, int depth);

static xpc_object_t container_to_xpc(const nectar_ipc_obj_t *o, int depth)
{
    bool arr = o->type == NECTAR_IPC_ARRAY;
    xpc_object_t x =
        arr ? xpc_array_create(NULL, 0) : xpc_dictionary_create(NULL, NULL, 0);
    size_t n = nectar_ipc_count(o);
    for (size_t i = 0; x != NULL && i < n; i++) {
        const nectar_ipc_obj_t *child =
            arr ? o->v.arr.items[i] : o->v.dict.items[i].val;
        xpc_object_t cx = to_xpc(child, depth + 1);
        if (cx == NULL) {
            xpc_release(x);
            return NULL;
        }
        if (arr)
            xpc_array_append_value(x, cx);
        else
            xpc_dictionary_set_value(x, o->v.dict.items[i].key, cx);
        xpc_release(cx);
    }
    return x;
}

static xpc_object_t to_xpc(const nectar_ipc_obj_t *o, int depth)
{
    if (depth > NECTAR_IPC_MAX_DEPTH)
        return NULL;
    switch (o->type) {
    case NECTAR_IPC_NULL:
        return xpc_null_create();
    case NECTAR_IPC_BOOL:
        return xpc_bool_create(o->v.b);
    case NECTAR_IPC_INT64:
        return xpc_int64_create(o->v.i);
    case NECTAR_IPC_UINT64:
        return xpc_uint64_create(o->v.u);
    case NECTAR_IPC_DOUBLE:
        return xpc_double_create(o->v.d);
    case NECTAR_IPC_STRING:
        return xpc_string_create(o->v.bytes.p);
    case NECTAR_IPC_DATA:
        return xpc_data_create(o->v.bytes.p, o->v.bytes.len);
    case NECTAR_IPC_DATE:
        return xpc_date_create(o->v.i);
    case NECTAR_IPC_UUID:
        return xpc_uuid_create(o->v.uuid);
    case NECTAR_IPC_FD:
        return xpc_fd_create(o->v.fd);
    default:
        return container_to_xpc(o, depth);
    }
}

static nectar_ipc_obj_t *from_xpc(xpc_object_t x, int depth);

static nectar_ipc_obj_t *array_from_xpc(xpc_object_t x, int depth)
{
    nectar_ipc_obj_t *a = nectar_ipc_array();
    size_t n = xpc_array_get_count(x);
    for (size_t i = 0; a != NULL && i < n; i++) {
        nectar_ipc_obj_t *v = from_xpc(xpc_array_get_value(x, i), depth + 1);
        if (nectar_ipc_array_append(a, v, NULL) != 0) {
            nectar_ipc_release(a);
            a = NULL;
        }
    }
    return a;
}

static nectar_ipc_obj_t *dict_from_xpc(xpc_object_t x, int depth)
{
    __block nectar_ipc_obj_t *d = nectar_ipc_dict();
    if (d == NULL)
        return NULL;
    /* Synchronous apply: a stack block is enough. */
    xpc_dictionary_apply(x, ^bool(const char *key, xpc_object_t value) {
      nectar_ipc_obj_t *v = from_xpc(value, depth + 1);
      if (nectar_ipc_dict_set(d, key, v, NULL) != 0) {
          nectar_ipc_release(d);
          d = NULL;
          return false;
      }
      return true;
    });
    return d;
}

/* NULL for types outside the model (endpoint, shmem, ...) and for nesting
 * deeper than the limit: rama's UnsupportedObjectType. */
static nectar_ipc_obj_t *from_xpc(xpc_object_t x, int depth)
{
    if (x == NULL || depth > NECTAR_IPC_MAX_DEPTH)
        return NULL;
    xpc_type_t t = xpc_get_type(x);
    if (t == XPC_TYPE_NULL)
        return nectar_ipc_null();
    if (t == XPC_TYPE_BOOL)
        return nectar_ipc_bool(xpc_bool_get_value(x));
    if (t == XPC_TYPE_INT64)
        return nectar_ipc_int64(xpc_int64_get_value(x));
    if (t == XPC_TYPE_UINT64)
        return nectar_ipc_uint64(xpc_uint64_get_value(x));
    if (t == XPC_TYPE_DOUBLE)
        return nectar_ipc_double(xpc_double_get_value(x));
    if (t == XPC_TYPE_STRING)
        return nectar_ipc_string_len(xpc_string_get_string_ptr(x),
                                     xpc_string_get_length(x));
    if (t == XPC_TYPE_DATA)
        return nectar_ipc_data(xpc_data_get_bytes_ptr(x),
                               xpc_data_get_length(x));
    if (t == XPC_TYPE_DATE)
        return nectar_ipc_date(xpc_date_get_value(x));
    if (t == XPC_TYPE_UUID)
        return nectar_ipc_uuid(xpc_uuid_get_bytes(x));
    if (t == XPC_TYPE_FD) {
        int fd = xpc_fd_dup(x);
        nectar_ipc_obj_t *o = fd >= 0 ? nectar__ipc_fd_adopt(fd) : NULL;
        if (o == NULL && fd >= 0)
            close(fd);
        return o;
    }
    if (t == XPC_TYPE_ARRAY)
        return array_from_xpc(x, depth);
    if (t == XPC_TYPE_DICTIONARY)
        return dict_from_xpc(x, depth);
    return NULL;
}

/* ---- connections ----------------------------------------------------- */

struct xb_pending {
    struct xb_pending *next;
    uint64_t id;
    bool done; /* replied, timed out or cancelled: callback at most once */
};

struct nectar_ipc_conn {
    atomic_uint refs;
    atomic_uint user_refs;
    bool is_client;
    xpc_connection_t xc;
    nectar_ipc_message_cb on_message;
    nectar_ipc_event_cb on_event;
    void *ctx;
    uint32_t call_timeout_ms;
    pthread_mutex_t lock; /* pending, user_ctx, next_id */
    struct xb_pending *pending;
    uint64_t next_id;
    void *user_ctx;
    atomic_bool cancelled;
    dispatch_semaphore_t final; /* signalled after the final event */
};

struct nectar_ipc_message {
    struct nectar_ipc_conn *conn;
    xpc_object_t event; /* retained, for xpc_dictionary_create_reply */
    nectar_ipc_obj_t *body;
};

struct nectar_ipc_listener {
    xpc_connection_t xc;
    struct nectar_ipc_conn proto; /* callbacks copied into each peer */
    nectar_ipc_requirement_t req;
    atomic_bool cancelled;
    /* Signalled by the handler's final invalidation: after it, libxpc
     * never calls the handler again, so the listener may be freed. */
    dispatch_semaphore_t done;
};

static void conn_unref(struct nectar_ipc_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    xpc_release(c->xc);
    dispatch_release(c->final);
    while (c->pending != NULL) {
        struct xb_pending *p = c->pending;
        c->pending = p->next;
        nectar_free(p);
    }
    pthread_mutex_destroy(&c->lock);
    nectar_free(c);
}

static struct nectar_ipc_conn *conn_new(xpc_connection_t xc)
{
    struct nectar_ipc_conn *c = nectar_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    c->xc = xc;
    c->next_id = 1;
    c->final = dispatch_semaphore_create(0);
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

/* The reason text for an error event, as a nectar string (or NULL). */
static char *error_reason(struct nectar_ipc_conn *c, xpc_object_t err)
{
    char *r = xpc_connection_copy_invalidation_reason(c->xc);
    if (r != NULL) {
        char *copy = nectar_strdup(r);
        free(r); /* checksrc: allow (allocated by libxpc) */
        return copy;
    }
    const char *d = xpc_dictionary_get_string(err, XPC_ERROR_KEY_DESCRIPTION);
    return d ? nectar_strdup(d) : NULL;
}

/* Maps an error object by identity, as rama does: everything unknown
 * (termination imminent included) is "invalidated". */
static nectar_ipc_event_t map_error(xpc_object_t err)
{
    if (err == XPC_ERROR_CONNECTION_INTERRUPTED)
        return NECTAR_IPC_EVENT_INTERRUPTED;
    if (err == XPC_ERROR_PEER_CODE_SIGNING_REQUIREMENT)
        return NECTAR_IPC_EVENT_PEER_REQUIREMENT_FAILED;
    return NECTAR_IPC_EVENT_INVALIDATED;
}

static int event_status(nectar_ipc_event_t ev)
{
    if (ev == NECTAR_IPC_EVENT_INTERRUPTED)
        return NECTAR_ECONNRESET;
    if (ev == NECTAR_IPC_EVENT_PEER_REQUIREMENT_FAILED)
        return NECTAR_EPEER;
    return NECTAR_ECLOSED;
}

static void conn_event(struct nectar_ipc_conn *c, xpc_object_t ev)
{
    if (xpc_get_type(ev) == XPC_TYPE_ERROR) {
        nectar_ipc_event_t e = map_error(ev);
        char *reason = error_reason(c, ev);
        if (c->on_event != NULL)
            c->on_event(c, e, reason, c->ctx);
        nectar_free(reason);
        if (e != NECTAR_IPC_EVENT_INTERRUPTED)
            dispatch_semaphore_signal(c->final);
        return;
    }
    if (xpc_get_type(ev) != XPC_TYPE_DICTIONARY || c->on_message == NULL)
        return;
    nectar_ipc_obj_t *body = from_xpc(ev, 0);
    struct nectar_ipc_message *m = body ? nectar_calloc(1, sizeof(*m)) : NULL;
    if (m == NULL) {
        /* Undecodable (rama: Invalidated); the peer is dropped. */
        nectar_ipc_release(body);
        xpc_connection_cancel(c->xc);
        return;
    }
    nectar__ipc_freeze(body);
    atomic_fetch_add(&c->refs, 1);
    m->conn = c;
    m->event = xpc_retain(ev);
    m->body = body;
    c->on_message(c, m, c->ctx);
}

static void conn_start(struct nectar_ipc_conn *c, bool activate)
{
    atomic_fetch_add(&c->refs, 1); /* held by the handler until final */
    xpc_connection_set_event_handler(c->xc, ^(xpc_object_t ev) {
      conn_event(c, ev);
      if (ev == XPC_ERROR_CONNECTION_INVALID)
          conn_unref(c);
    });
    if (activate)
        xpc_connection_activate(c->xc);
    else
        xpc_connection_resume(c->xc);
}

/* ---- requirements ---------------------------------------------------- */

/* The libxpc requirement calls, before activation.  A non-zero status
 * is a configuration error (rama's XpcError::PeerRequirementFailed). */
static int apply_requirement(xpc_connection_t xc,
                             const nectar_ipc_requirement_t *r,
                             nectar_error_t *err)
{
    int st = 0;
    if (r == NULL)
        return 0;
    if (st == 0 && (r->flags & NECTAR_IPC_REQ_CODE_SIGNING))
        st = xpc_connection_set_peer_code_signing_requirement(
            xc, r->code_signing ? r->code_signing : "");
    if (st == 0 && (r->flags & NECTAR_IPC_REQ_TEAM_IDENTITY))
        st = xpc_connection_set_peer_team_identity_requirement(xc,
                                                               r->signing_id);
    if (st == 0 && (r->flags & NECTAR_IPC_REQ_PLATFORM_IDENTITY))
        st = xpc_connection_set_peer_platform_identity_requirement(
            xc, r->signing_id);
    if (st == 0 && (r->flags & NECTAR_IPC_REQ_ENTITLEMENT_EXISTS))
        st = xpc_connection_set_peer_entitlement_exists_requirement(
            xc, r->entitlement ? r->entitlement : "");
    if (st == 0 && (r->flags & (NECTAR_IPC_REQ_ENTITLEMENT_VALUE |
                                NECTAR_IPC_REQ_LIGHTWEIGHT))) {
        xpc_object_t v =
            r->entitlement_value ? to_xpc(r->entitlement_value, 0) : NULL;
        if (v == NULL)
            return nectar_error_set(err, NECTAR_EINVAL,
                                    "ipc: requirement value missing");
        if (r->flags & NECTAR_IPC_REQ_ENTITLEMENT_VALUE)
            st = xpc_connection_set_peer_entitlement_matches_value_requirement(
                xc, r->entitlement ? r->entitlement : "", v);
        if (st == 0 && (r->flags & NECTAR_IPC_REQ_LIGHTWEIGHT))
            st = xpc_connection_set_peer_lightweight_code_requirement(xc, v);
        xpc_release(v);
    }
    if (st != 0)
        return nectar_error_set(err, NECTAR_ECONFIG,
                                "ipc: apply xpc peer requirement: %d", st);
    return 0;
}

static bool peer_allowed(xpc_connection_t peer,
                         const nectar_ipc_requirement_t *r)
{
    nectar_ipc_peer_t p = {
        .uid = xpc_connection_get_euid(peer),
        .gid = xpc_connection_get_egid(peer),
        .pid = xpc_connection_get_pid(peer),
        .pidfd = -1,
    };
    return nectar_ipc_requirement_check(r, &p, NULL) == 0;
}

/* ---- listener -------------------------------------------------------- */

static void listener_peer(struct nectar_ipc_listener *ls, xpc_connection_t peer)
{
    if (!peer_allowed(peer, &ls->req)) {
        /* Never resumed: none of its messages is delivered. */
        xpc_connection_cancel(peer);
        return;
    }
    struct nectar_ipc_conn *c = conn_new((xpc_connection_t)xpc_retain(peer));
    if (c == NULL) {
        xpc_connection_cancel(peer);
        return;
    }
    c->on_message = ls->proto.on_message;
    c->on_event = ls->proto.on_event;
    c->ctx = ls->proto.ctx;
    conn_start(c, false);
    conn_unref(c); /* the handler keeps it until invalidation */
}

static int xb_listen(const nectar_ipc_listener_config_t *cfg,
                     nectar_ipc_listener_t **out, nectar_error_t *err)
{
    struct nectar_ipc_listener *ls = nectar_calloc(1, sizeof(*ls));
    if (ls == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "ipc: out of memory");
    ls->xc = xpc_connection_create_mach_service(
        cfg->service_name, NULL, XPC_CONNECTION_MACH_SERVICE_LISTENER);
    if (ls->xc == NULL) {
        nectar_free(ls);
        return nectar_error_set(err, NECTAR_ENOMEM,
                                "ipc: NULL listener connection");
    }
    if (cfg->requirement != NULL)
        ls->req = *cfg->requirement;
    int rc = apply_requirement(ls->xc, cfg->requirement, err);
    if (rc != 0) {
        xpc_release(ls->xc);
        nectar_free(ls);
        return rc;
    }
    ls->proto.on_message = cfg->on_message;
    ls->proto.on_event = cfg->on_event;
    ls->proto.ctx = cfg->ctx;
    ls->done = dispatch_semaphore_create(0);
    xpc_connection_set_event_handler(ls->xc, ^(xpc_object_t ev) {
      if (xpc_get_type(ev) == XPC_TYPE_CONNECTION)
          listener_peer(ls, (xpc_connection_t)ev);
      else if (ev == XPC_ERROR_CONNECTION_INVALID)
          dispatch_semaphore_signal(ls->done);
    });
    xpc_connection_activate(ls->xc);
    *out = ls;
    return 0;
}

static void xb_listener_close(nectar_ipc_listener_t *ls)
{
    atomic_store(&ls->cancelled, true);
    xpc_connection_cancel(ls->xc);
    /* Free only once the handler has seen its last event; if libxpc
     * never delivers it, leaking beats a use after free. */
    if (dispatch_semaphore_wait(
            ls->done, dispatch_time(DISPATCH_TIME_NOW, 2000000000LL)) != 0)
        return;
    dispatch_release(ls->done);
    xpc_release(ls->xc);
    nectar_free(ls);
}

/* ---- client and sending ---------------------------------------------- */

static int xb_connect(const nectar_ipc_client_config_t *cfg,
                      nectar_ipc_conn_t **out, nectar_error_t *err)
{
    uint64_t flags =
        cfg->privileged ? XPC_CONNECTION_MACH_SERVICE_PRIVILEGED : 0;
    xpc_connection_t xc =
        xpc_connection_create_mach_service(cfg->service_name, NULL, flags);
    if (xc == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM,
                                "ipc: NULL client connection");
    int rc = apply_requirement(xc, cfg->requirement, err);
    struct nectar_ipc_conn *c = rc == 0 ? conn_new(xc) : NULL;
    if (c == NULL) {
        xpc_release(xc);
        return rc != 0 ? rc
                       : nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    }
    c->is_client = true;
    atomic_store(&c->user_refs, 1);
    c->on_message = cfg->on_message;
    c->on_event = cfg->on_event;
    c->ctx = cfg->ctx;
    c->call_timeout_ms = cfg->call_timeout_ms;
    /* Lazy, like libxpc itself: no I/O until the first send. */
    conn_start(c, true);
    *out = c;
    return 0;
}

static int xb_send(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                   nectar_error_t *err)
{
    xpc_object_t x = to_xpc(msg, 0);
    if (x == NULL)
        return nectar_error_set(err, NECTAR_ETYPE,
                                "ipc: message cannot become an xpc object");
    xpc_connection_send_message(c->xc, x);
    xpc_release(x);
    return 0;
}

/* Takes the pending entry out if nobody finished it yet. */
static bool pending_claim(struct nectar_ipc_conn *c, struct xb_pending *p)
{
    pthread_mutex_lock(&c->lock);
    bool mine = !p->done;
    p->done = true;
    pthread_mutex_unlock(&c->lock);
    return mine;
}

static void deliver(struct nectar_ipc_conn *c, xpc_object_t reply,
                    nectar_ipc_reply_cb cb, void *ctx)
{
    nectar_error_t e = {0};
    if (xpc_get_type(reply) == XPC_TYPE_ERROR) {
        int st = event_status(map_error(reply));
        char *why = error_reason(c, reply);
        nectar_error_set(&e, st, "ipc: %s", why ? why : nectar_strerror(st));
        nectar_free(why);
        cb(st, NULL, &e, ctx);
        return;
    }
    nectar_ipc_obj_t *v = from_xpc(reply, 0);
    if (v == NULL) {
        nectar_error_set(&e, NECTAR_ETYPE, "ipc: unsupported reply type");
        cb(NECTAR_ETYPE, NULL, &e, ctx);
        return;
    }
    cb(0, v, NULL, ctx);
    nectar_ipc_release(v);
}

static int xb_send_with_reply(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                              uint32_t timeout_ms, nectar_ipc_reply_cb cb,
                              void *ctx, uint64_t *id, nectar_error_t *err)
{
    xpc_object_t x = to_xpc(msg, 0);
    struct xb_pending *p = x ? nectar_calloc(1, sizeof(*p)) : NULL;
    if (p == NULL) {
        if (x != NULL)
            xpc_release(x);
        return nectar_error_set(err, NECTAR_ETYPE,
                                "ipc: message cannot become an xpc object");
    }
    pthread_mutex_lock(&c->lock);
    p->id = c->next_id++;
    p->next = c->pending; /* kept until the connection is freed */
    c->pending = p;
    pthread_mutex_unlock(&c->lock);
    if (id != NULL)
        *id = p->id;
    if (timeout_ms == 0)
        timeout_ms = c->call_timeout_ms;
    atomic_fetch_add(&c->refs, 1);
    xpc_connection_send_message_with_reply(c->xc, x, NULL, ^(xpc_object_t r) {
      if (pending_claim(c, p))
          deliver(c, r, cb, ctx);
      conn_unref(c);
    });
    xpc_release(x);
    if (timeout_ms != 0) {
        atomic_fetch_add(&c->refs, 1);
        dispatch_after(
            dispatch_time(DISPATCH_TIME_NOW, (int64_t)timeout_ms * 1000000),
            dispatch_get_global_queue(QOS_CLASS_DEFAULT, 0), ^{
              if (pending_claim(c, p)) {
                  nectar_error_t e = {0};
                  nectar_error_set(&e, NECTAR_ETIMEDOUT, "ipc: call timed out");
                  cb(NECTAR_ETIMEDOUT, NULL, &e, ctx);
              }
              conn_unref(c);
            });
    }
    return 0;
}

struct sync_box {
    dispatch_semaphore_t sem;
    int status;
    nectar_ipc_obj_t *reply;
    nectar_error_t err;
};

static void sync_done(int status, nectar_ipc_obj_t *reply,
                      const nectar_error_t *err, void *ctx)
{
    struct sync_box *b = ctx;
    b->status = status;
    b->reply = nectar_ipc_retain(reply);
    if (err != NULL)
        b->err = *err;
    dispatch_semaphore_signal(b->sem);
}

static int xb_send_sync(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                        uint32_t timeout_ms, nectar_ipc_obj_t **reply,
                        nectar_error_t *err)
{
    /* The box lives on the heap: on timeout the reply block may still
     * run later and must find it. */
    struct sync_box *b = nectar_calloc(1, sizeof(*b));
    if (b == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    b->sem = dispatch_semaphore_create(0);
    uint32_t t = timeout_ms ? timeout_ms : c->call_timeout_ms;
    int rc = xb_send_with_reply(c, msg, t, sync_done, b, NULL, err);
    if (rc == 0) {
        /* The timeout path of send_with_reply signals too, so this wait
         * always ends; exactly one of the two runs. */
        dispatch_semaphore_wait(b->sem, DISPATCH_TIME_FOREVER);
        rc = b->status;
        if (rc != 0 && err != NULL)
            *err = b->err;
        *reply = b->reply;
    }
    dispatch_release(b->sem);
    nectar_free(b);
    return rc;
}

static int xb_cancel_request(nectar_ipc_conn_t *c, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    struct xb_pending *p = c->pending;
    while (p != NULL && p->id != id)
        p = p->next;
    bool was_pending = p != NULL && !p->done;
    if (p != NULL)
        p->done = true;
    pthread_mutex_unlock(&c->lock);
    return was_pending ? 0 : NECTAR_ENOENT;
}

static void xb_conn_cancel(nectar_ipc_conn_t *c)
{
    if (atomic_exchange(&c->cancelled, true))
        return;
    xpc_connection_cancel(c->xc);
    /* libxpc delivers one final invalidation to the handler; wait for it
     * so no callback runs after we return (unless we are that handler's
     * queue, where waiting would deadlock). */
    dispatch_semaphore_wait(c->final,
                            dispatch_time(DISPATCH_TIME_NOW, 2000000000LL));
}

static nectar_ipc_conn_t *xb_conn_retain(nectar_ipc_conn_t *c)
{
    atomic_fetch_add(&c->user_refs, 1);
    atomic_fetch_add(&c->refs, 1);
    return c;
}

static void xb_conn_release(nectar_ipc_conn_t *c)
{
    if (atomic_fetch_sub(&c->user_refs, 1) == 1 && c->is_client)
        xb_conn_cancel(c);
    conn_unref(c);
}

static int xb_conn_peer(nectar_ipc_conn_t *c, nectar_ipc_peer_t *out)
{
    memset(out, 0, sizeof(*out));
    out->uid = xpc_connection_get_euid(c->xc);
    out->gid = xpc_connection_get_egid(c->xc);
    out->pid = xpc_connection_get_pid(c->xc);
    out->pidfd = -1;
    return out->pid > 0 ? 0 : NECTAR_ENOTCONN;
}

static void xb_conn_set_context(nectar_ipc_conn_t *c, void *ctx)
{
    pthread_mutex_lock(&c->lock);
    c->user_ctx = ctx;
    pthread_mutex_unlock(&c->lock);
}

static void *xb_conn_get_context(nectar_ipc_conn_t *c)
{
    pthread_mutex_lock(&c->lock);
    void *ctx = c->user_ctx;
    pthread_mutex_unlock(&c->lock);
    return ctx;
}

/* ---- messages -------------------------------------------------------- */

static nectar_ipc_obj_t *xb_message_body(const nectar_ipc_message_t *m)
{
    return m->body;
}

static bool xb_message_expects_reply(const nectar_ipc_message_t *m)
{
    xpc_object_t r = xpc_dictionary_create_reply(m->event);
    if (r == NULL)
        return false;
    xpc_release(r);
    return true;
}

static void xb_message_release(nectar_ipc_message_t *m)
{
    xpc_release(m->event);
    nectar_ipc_release(m->body);
    conn_unref(m->conn);
    nectar_free(m);
}

static int xb_message_reply(nectar_ipc_message_t *m,
                            const nectar_ipc_obj_t *reply, nectar_error_t *err)
{
    int rc = 0;
    xpc_object_t r = xpc_dictionary_create_reply(m->event);
    xpc_object_t v = r ? to_xpc(reply, 0) : NULL;
    if (r == NULL) {
        rc = nectar_error_set(err, NECTAR_ESTATE, "ipc: reply not expected");
    } else if (v == NULL) {
        rc = nectar_error_set(err, NECTAR_ETYPE,
                              "ipc: reply cannot become an xpc object");
    } else {
        /* The reply context carries the routing; copy our keys in. */
        xpc_dictionary_apply(v, ^bool(const char *key, xpc_object_t value) {
          xpc_dictionary_set_value(r, key, value);
          return true;
        });
        xpc_connection_send_message(m->conn->xc, r);
    }
    if (v != NULL)
        xpc_release(v);
    if (r != NULL)
        xpc_release(r);
    xb_message_release(m);
    return rc;
}

const struct nectar__ipc_backend nectar__ipc_backend_xpc = {
    .name = "xpc",
    .req_supported =
        NECTAR_IPC_REQ_UID | NECTAR_IPC_REQ_GID | NECTAR_IPC_REQ_PREDICATE |
        NECTAR_IPC_REQ_OR_ROOT | NECTAR_IPC_REQ_CODE_SIGNING |
        NECTAR_IPC_REQ_TEAM_IDENTITY | NECTAR_IPC_REQ_PLATFORM_IDENTITY |
        NECTAR_IPC_REQ_ENTITLEMENT_EXISTS | NECTAR_IPC_REQ_ENTITLEMENT_VALUE |
        NECTAR_IPC_REQ_LIGHTWEIGHT,
    .listen = xb_listen,
    .listener_close = xb_listener_close,
    .connect = xb_connect,
    .send = xb_send,
    .send_with_reply = xb_send_with_reply,
    .send_sync = xb_send_sync,
    .cancel_request = xb_cancel_request,
    .conn_cancel = xb_conn_cancel,
    .conn_retain = xb_conn_retain,
    .conn_release = xb_conn_release,
    .conn_peer = xb_conn_peer,
    .conn_set_context = xb_conn_set_context,
    .conn_get_context = xb_conn_get_context,
    .message_body = xb_message_body,
    .message_expects_reply = xb_message_expects_reply,
    .message_reply = xb_message_reply,
    .message_release = xb_message_release,
};

#endif /* __APPLE__ */
