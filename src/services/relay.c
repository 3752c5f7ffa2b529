/*
 * relay.c - bidirectional byte relay between two svc_stream_t
 * (svc_relay_*), and the plain TCP relay service built on it.
 *
 * Each direction reads from one stream and writes every chunk, unchanged,
 * to the other.  Flow control: once more than max_pending bytes are
 * written and not yet completed, the direction stops reading, which lets
 * the engine's queue fill and the host see PAUSED; it reads again when
 * completions bring the backlog under the bound.  EOF on a source shuts
 * down the other stream's write half (after its queued writes), so a
 * half-closed TCP connection stays half-closed through the relay.
 *
 * Direction state:  READING <-> STOPPED (backlog) -> EOF -> ENDED (backlog
 * drained).  The relay is done when both directions ended (status 0), at
 * the first write error, or when a source failed and the bytes read from
 * it before the failure were written out (the read error's status): a
 * reset connection still gets the data that preceded the reset.
 */
#include "services/relay.h"

#include <string.h>

#include "common/alloc.h"

struct relay_write {
    struct relay_write *prev, *next;
    struct relay_dir *dir;
    size_t len;
    uint8_t bytes[]; /* the copy, unless the target copies by itself */
};

struct relay_dir {
    svc_relay_t *relay;
    svc_stream_t *from, *to;
    uint64_t bytes; /* completed writes */
    size_t pending; /* written, not yet completed */
    bool reading;
    bool eof;
    int error; /* the source failed: finish once the backlog is out */
    atomic_uint_least64_t *counter;
};

struct svc_relay {
    struct relay_dir dir[2]; /* [0] a -> b, [1] b -> a */
    size_t max_pending;
    svc_relay_done_cb done_cb;
    void *data;
    bool done;
    struct relay_write *writes; /* in flight, freed by svc_relay_free */
};

static void relay_finish(svc_relay_t *r, int status)
{
    if (r->done)
        return;
    r->done = true;
    for (int i = 0; i < 2; i++) {
        if (r->dir[i].reading)
            svc_read_stop(r->dir[i].from);
        r->dir[i].reading = false;
    }
    /* done_cb usually frees the relay: nothing may touch r afterwards. */
    r->done_cb(r, status, r->data);
}

static bool dir_ended(const struct relay_dir *d)
{
    return d->eof && d->pending == 0;
}

static void relay_check_done(svc_relay_t *r)
{
    for (int i = 0; i < 2; i++) {
        if (r->dir[i].error != 0 && dir_ended(&r->dir[i])) {
            relay_finish(r, r->dir[i].error);
            return;
        }
    }
    if (dir_ended(&r->dir[0]) && dir_ended(&r->dir[1]))
        relay_finish(r, 0);
}

static void relay_unlink(svc_relay_t *r, struct relay_write *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        r->writes = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
}

static void relay_on_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                          void *data);

static void relay_on_write(svc_stream_t *s, int status, void *data)
{
    struct relay_write *w = data;
    struct relay_dir *d = w->dir;
    svc_relay_t *r = d->relay;

    (void)s;
    relay_unlink(r, w);
    d->pending -= w->len;
    if (status == 0) {
        d->bytes += w->len;
        if (d->counter != NULL)
            atomic_fetch_add_explicit(d->counter, w->len, memory_order_relaxed);
    }
    nectar_free(w);
    if (r->done)
        return;
    if (status < 0) {
        relay_finish(r, status);
        return;
    }
    if (!d->reading && !d->eof && d->pending <= r->max_pending) {
        int rc = svc_read_start(d->from, relay_on_read, d);
        if (rc != 0) {
            relay_finish(r, rc);
            return;
        }
        d->reading = true;
    }
    relay_check_done(r);
}

static int relay_forward(struct relay_dir *d, const uint8_t *buf, size_t len)
{
    svc_relay_t *r = d->relay;
    bool copy = !svc_stream_copies_writes(d->to);
    struct relay_write *w = nectar_malloc(sizeof(*w) + (copy ? len : 0));
    int rc;

    if (w == NULL)
        return NECTAR_ENOMEM;
    w->dir = d;
    w->len = len;
    if (copy)
        memcpy(w->bytes, buf, len);
    /* Linked before the write so a completion always finds it listed. */
    w->prev = NULL;
    w->next = r->writes;
    if (r->writes != NULL)
        r->writes->prev = w;
    r->writes = w;
    d->pending += len;
    rc = svc_write(d->to, copy ? w->bytes : buf, len, relay_on_write, w);
    if (rc != 0) {
        d->pending -= len;
        relay_unlink(r, w);
        nectar_free(w);
        return rc;
    }
    if (d->pending > r->max_pending) {
        svc_read_stop(d->from);
        d->reading = false;
    }
    return 0;
}

static void relay_on_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                          void *data)
{
    struct relay_dir *d = data;
    svc_relay_t *r = d->relay;
    int rc;

    (void)s;
    if (r->done)
        return;
    if (nread > 0) {
        rc = relay_forward(d, buf, (size_t)nread);
        if (rc != 0)
            relay_finish(r, rc);
        return;
    }
    if (nread == 0)
        return;
    d->reading = false;
    d->eof = true;
    if (nread != NECTAR_EOF) {
        d->error = (int)nread;
        relay_check_done(r);
        return;
    }
    /* Half-close: the source finished, so finish the target's write half
     * once what we queued has gone out. */
    rc = svc_shutdown(d->to);
    if (rc != 0 && rc != NECTAR_ECLOSED) {
        relay_finish(r, rc);
        return;
    }
    relay_check_done(r);
}

svc_relay_t *svc_relay_start(svc_stream_t *a, svc_stream_t *b,
                             size_t max_pending, svc_relay_done_cb done_cb,
                             void *data)
{
    svc_relay_t *r;

    if (a == NULL || b == NULL || done_cb == NULL)
        return NULL;
    r = nectar_calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->max_pending = max_pending > 0 ? max_pending : SVC_RELAY_MAX_PENDING;
    r->done_cb = done_cb;
    r->data = data;
    r->dir[0] = (struct relay_dir){.relay = r, .from = a, .to = b};
    r->dir[1] = (struct relay_dir){.relay = r, .from = b, .to = a};
    for (int i = 0; i < 2; i++) {
        if (svc_read_start(r->dir[i].from, relay_on_read, &r->dir[i]) != 0) {
            if (i == 1)
                svc_read_stop(a);
            nectar_free(r);
            return NULL;
        }
        r->dir[i].reading = true;
    }
    return r;
}

/*
 * Stops reading (when not done yet: a and b must still be open) and frees
 * the relay.  Completions of writes still in flight must not arrive
 * afterwards: close a and b before returning to the loop (svc_close drops
 * them), as every caller does from done_cb or its cancel path.
 */
void svc_relay_free(svc_relay_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        if (!r->done && r->dir[i].reading)
            svc_read_stop(r->dir[i].from);
    }
    while (r->writes != NULL) {
        struct relay_write *w = r->writes;
        r->writes = w->next;
        nectar_free(w);
    }
    nectar_free(r);
}

uint64_t svc_relay_bytes(const svc_relay_t *r, int a_to_b)
{
    return r->dir[a_to_b ? 0 : 1].bytes;
}

void svc_relay_set_counters(svc_relay_t *r, atomic_uint_least64_t *a_to_b,
                            atomic_uint_least64_t *b_to_a)
{
    r->dir[0].counter = a_to_b;
    r->dir[1].counter = b_to_a;
}

/* ---- the TCP relay service ---------------------------------------------- */

struct tcp_relay {
    struct svc_counters *counters;
    nectar_tcp_flow_t *flow;
    svc_stream_t *app;    /* ingress */
    svc_stream_t *remote; /* egress */
    svc_relay_t *relay;
};

static void tcp_relay_teardown(struct tcp_relay *t)
{
    svc_relay_free(t->relay);
    t->relay = NULL;
    if (t->app != NULL)
        svc_close(t->app);
    if (t->remote != NULL)
        svc_close(t->remote);
    t->app = t->remote = NULL;
}

static void tcp_relay_done(svc_relay_t *r, int status, void *data)
{
    struct tcp_relay *t = data;

    (void)r;
    (void)status;
    tcp_relay_teardown(t);
    /* Shuts down whichever write half is still open and schedules
     * destroy. */
    nectar_tcp_flow_finish(t->flow);
}

static void tcp_relay_start(void *svc, nectar_tcp_flow_t *flow)
{
    struct tcp_relay *t = svc;

    t->flow = flow;
    t->app = svc_stream_wrap(nectar_tcp_flow_ingress(flow));
    t->remote = svc_stream_wrap(nectar_tcp_flow_egress(flow));
    if (t->app != NULL && t->remote != NULL)
        t->relay = svc_relay_start(t->app, t->remote, SVC_RELAY_MAX_PENDING,
                                   tcp_relay_done, t);
    if (t->relay == NULL) {
        tcp_relay_teardown(t);
        nectar_tcp_flow_finish(flow);
        return;
    }
    if (t->counters != NULL)
        svc_relay_set_counters(t->relay, &t->counters->bytes_to_remote,
                               &t->counters->bytes_to_app);
}

static void tcp_relay_cancel(void *svc, nectar_tcp_flow_t *flow, int reason)
{
    (void)flow;
    (void)reason;
    tcp_relay_teardown(svc);
}

static void tcp_relay_destroy(void *svc)
{
    struct tcp_relay *t = svc;

    tcp_relay_teardown(t);
    svc_counters_close(t->counters);
    nectar_free(t);
}

const nectar_tcp_service_t svc_tcp_relay_service = {
    .start = tcp_relay_start,
    .cancel = tcp_relay_cancel,
    .destroy = tcp_relay_destroy,
};

void *svc_tcp_relay_new(struct svc_counters *counters)
{
    struct tcp_relay *t = nectar_calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->counters = counters;
    svc_counters_open(counters);
    return t;
}
