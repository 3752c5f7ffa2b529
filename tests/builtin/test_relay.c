/* test_relay.c - unit tests for svc_relay and svc_stream_prefix over an
 * in-memory svc_stream_t (no engine): bytes unchanged both ways, half-close
 * preserved, back-pressure, errors, prefix replay. */
#include <uv.h>

#include "common/alloc.h"
#include "harness/test.h"
#include "services/relay.h"
#include "services/stream.h"

/* ---- an in-memory stream driven by the loop ----------------------------- */

#define MOCK_MAX_CHUNKS 4096
#define MOCK_MAX_WRITES 4096

struct mock_write {
    svc_write_cb cb;
    void *data;
    const uint8_t *buf;
    size_t len;
};

struct mock {
    svc_stream_t base;
    uv_idle_t idle;
    svc_read_cb read_cb;
    void *read_data;
    bool reading;
    /* What the stream will deliver: chunks, then EOF or an error. */
    uint8_t *in[MOCK_MAX_CHUNKS];
    size_t in_len[MOCK_MAX_CHUNKS];
    size_t in_head, in_tail;
    int in_end; /* 0 = more may come, else NECTAR_EOF or an error */
    bool end_delivered;
    /* What was written to it. */
    uint8_t *out;
    size_t out_len;
    struct mock_write w[MOCK_MAX_WRITES];
    size_t w_head, w_tail;
    bool auto_complete;
    int fail_next_write; /* status for the next completion */
    int shutdowns;
    bool closed;
    int max_reads_per_turn;
};

static int mock_read_start(svc_stream_t *s, svc_read_cb cb, void *data)
{
    struct mock *m = (struct mock *)s;
    m->read_cb = cb;
    m->read_data = data;
    m->reading = true;
    return 0;
}

static int mock_read_stop(svc_stream_t *s)
{
    ((struct mock *)s)->reading = false;
    return 0;
}

static int mock_write(svc_stream_t *s, const uint8_t *buf, size_t len,
                      svc_write_cb cb, void *data)
{
    struct mock *m = (struct mock *)s;
    CHECK(!m->closed);
    CHECK(m->shutdowns == 0); /* never a write after shutdown */
    CHECK_LT(m->w_tail, MOCK_MAX_WRITES);
    m->w[m->w_tail++] = (struct mock_write){cb, data, buf, len};
    return 0;
}

static int mock_shutdown(svc_stream_t *s)
{
    struct mock *m = (struct mock *)s;
    m->shutdowns++;
    return 0;
}

static size_t mock_queue_size(const svc_stream_t *s)
{
    const struct mock *m = (const struct mock *)s;
    size_t n = 0;
    for (size_t i = m->w_head; i < m->w_tail; i++)
        n += m->w[i].len;
    return n;
}

static void mock_close(svc_stream_t *s)
{
    struct mock *m = (struct mock *)s;
    m->closed = true;
    m->reading = false;
}

static const svc_stream_ops_t mock_ops = {
    .name = "mock",
    .read_start = mock_read_start,
    .read_stop = mock_read_stop,
    .write = mock_write,
    .shutdown = mock_shutdown,
    .write_queue_size = mock_queue_size,
    .close = mock_close,
};

/* Complete the oldest pending write (the bytes land in m->out). */
static void mock_complete_one(struct mock *m)
{
    struct mock_write w = m->w[m->w_head++];
    int status = m->fail_next_write;

    m->fail_next_write = 0;
    if (status == 0) {
        m->out = realloc(m->out, m->out_len + w.len + 1);
        memcpy(m->out + m->out_len, w.buf, w.len);
        m->out_len += w.len;
    }
    if (!m->closed)
        w.cb(&m->base, status, w.data);
}

static void mock_on_idle(uv_idle_t *idle)
{
    struct mock *m = idle->data;
    int reads = 0;

    while (m->auto_complete && m->w_head < m->w_tail && !m->closed)
        mock_complete_one(m);
    while (m->reading && !m->closed && m->in_head < m->in_tail &&
           reads++ < m->max_reads_per_turn) {
        size_t i = m->in_head++;
        m->read_cb(&m->base, (ssize_t)m->in_len[i], m->in[i], m->read_data);
        free(m->in[i]);
        m->in[i] = NULL;
    }
    if (m->reading && !m->closed && m->in_head == m->in_tail &&
        m->in_end != 0 && !m->end_delivered) {
        m->end_delivered = true;
        m->read_cb(&m->base, m->in_end, NULL, m->read_data);
    }
}

static void mock_init(struct mock *m, uv_loop_t *loop)
{
    memset(m, 0, sizeof(*m));
    m->base.ops = &mock_ops;
    m->base.loop = loop;
    m->auto_complete = true;
    m->max_reads_per_turn = 4;
    CHECK_EQ(uv_idle_init(loop, &m->idle), 0);
    m->idle.data = m;
    CHECK_EQ(uv_idle_start(&m->idle, mock_on_idle), 0);
}

static void mock_feed(struct mock *m, const void *bytes, size_t len)
{
    CHECK_LT(m->in_tail, MOCK_MAX_CHUNKS);
    m->in[m->in_tail] = malloc(len);
    memcpy(m->in[m->in_tail], bytes, len);
    m->in_len[m->in_tail++] = len;
}

static void mock_fini(struct mock *m)
{
    uv_close((uv_handle_t *)&m->idle, NULL);
    for (size_t i = m->in_head; i < m->in_tail; i++)
        free(m->in[i]);
    free(m->out);
}

/* ---- relay fixture ------------------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    struct mock a, b;
    svc_relay_t *relay;
    int done_calls;
    int status;
    uint64_t a_to_b, b_to_a;
};

static void on_done(svc_relay_t *r, int status, void *data)
{
    struct fixture *f = data;
    f->done_calls++;
    f->status = status;
    f->a_to_b = svc_relay_bytes(r, 1);
    f->b_to_a = svc_relay_bytes(r, 0);
    svc_relay_free(r);
    f->relay = NULL;
    svc_close(&f->a.base);
    svc_close(&f->b.base);
}

static void fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    CHECK_EQ(uv_loop_init(&f->loop), 0);
    mock_init(&f->a, &f->loop);
    mock_init(&f->b, &f->loop);
}

static void fixture_start(struct fixture *f, size_t max_pending)
{
    f->relay = svc_relay_start(&f->a.base, &f->b.base, max_pending, on_done, f);
    CHECK(f->relay != NULL);
}

/* Run loop turns until done or `turns` pass. */
static void fixture_run(struct fixture *f, int turns)
{
    for (int i = 0; i < turns && f->done_calls == 0; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void fixture_fini(struct fixture *f)
{
    if (f->relay != NULL) {
        svc_relay_free(f->relay);
        svc_close(&f->a.base);
        svc_close(&f->b.base);
    }
    mock_fini(&f->a);
    mock_fini(&f->b);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&f->loop), 0);
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((i * 31 + seed * 7) ^ (i >> 8));
}

static void test_bytes_unchanged(void)
{
    struct fixture f;
    uint8_t up[50000], down[70001];

    fixture_init(&f);
    fill_pattern(up, sizeof(up), 1);
    fill_pattern(down, sizeof(down), 2);
    for (size_t off = 0; off < sizeof(up); off += 1000)
        mock_feed(&f.a, up + off, 1000);
    for (size_t off = 0; off < sizeof(down); off += 7001)
        mock_feed(&f.b, down + off,
                  off + 7001 <= sizeof(down) ? 7001 : sizeof(down) - off);
    f.a.in_end = NECTAR_EOF;
    f.b.in_end = NECTAR_EOF;
    fixture_start(&f, 0);
    fixture_run(&f, 1000);
    CHECK_EQ(f.done_calls, 1);
    CHECK_EQ(f.status, 0);
    CHECK_EQ(f.b.out_len, sizeof(up));
    CHECK_MEM_EQ(f.b.out, up, sizeof(up));
    CHECK_EQ(f.a.out_len, sizeof(down));
    CHECK_MEM_EQ(f.a.out, down, sizeof(down));
    CHECK_EQ(f.a_to_b, sizeof(up));
    CHECK_EQ(f.b_to_a, sizeof(down));
    CHECK_EQ(f.a.shutdowns, 1);
    CHECK_EQ(f.b.shutdowns, 1);
    fixture_fini(&f);
}

/* a finishes first; b keeps talking, and a still gets every byte. */
static void test_half_close(void)
{
    struct fixture f;
    atomic_uint_least64_t to_b = 0, to_a = 0;

    fixture_init(&f);
    mock_feed(&f.a, "request", 7);
    f.a.in_end = NECTAR_EOF;
    fixture_start(&f, 0);
    svc_relay_set_counters(f.relay, &to_b, &to_a);
    fixture_run(&f, 20);
    CHECK_EQ(f.done_calls, 0);
    /* a's EOF became b's write-half shutdown, after the request. */
    CHECK_EQ(f.b.shutdowns, 1);
    CHECK_EQ(f.b.out_len, 7);
    CHECK_MEM_EQ(f.b.out, "request", 7);
    CHECK_EQ(f.a.shutdowns, 0);
    /* The other direction is still open. */
    mock_feed(&f.b, "response part 1,", 16);
    fixture_run(&f, 20);
    mock_feed(&f.b, " part 2", 7);
    f.b.in_end = NECTAR_EOF;
    fixture_run(&f, 50);
    CHECK_EQ(f.done_calls, 1);
    CHECK_EQ(f.status, 0);
    CHECK_EQ(f.a.out_len, 23);
    CHECK_MEM_EQ(f.a.out, "response part 1, part 2", 23);
    CHECK_EQ(f.a.shutdowns, 1);
    CHECK_EQ(atomic_load(&to_b), 7);
    CHECK_EQ(atomic_load(&to_a), 23);
    fixture_fini(&f);
}

/* EOF waits for the writes in flight: done only after they complete. */
static void test_eof_waits_for_pending(void)
{
    struct fixture f;

    fixture_init(&f);
    f.b.auto_complete = false;
    mock_feed(&f.a, "abc", 3);
    f.a.in_end = NECTAR_EOF;
    f.b.in_end = NECTAR_EOF;
    fixture_start(&f, 0);
    fixture_run(&f, 20);
    CHECK_EQ(f.done_calls, 0);
    CHECK_EQ(f.b.w_tail - f.b.w_head, 1);
    mock_complete_one(&f.b);
    CHECK_EQ(f.done_calls, 1);
    CHECK_EQ(f.status, 0);
    CHECK_MEM_EQ(f.b.out, "abc", 3);
    fixture_fini(&f);
}

static void test_backpressure(void)
{
    struct fixture f;
    uint8_t data[64 * 1024];

    fixture_init(&f);
    fill_pattern(data, sizeof(data), 3);
    f.b.auto_complete = false;
    for (size_t off = 0; off < sizeof(data); off += 4096)
        mock_feed(&f.a, data + off, 4096);
    f.a.in_end = NECTAR_EOF;
    f.b.in_end = NECTAR_EOF;
    fixture_start(&f, 10000);
    fixture_run(&f, 50);
    /* 3 chunks (12288 bytes) exceed 10000: reading stopped there. */
    CHECK(!f.a.reading);
    CHECK_EQ(f.b.w_tail - f.b.w_head, 3);
    CHECK_EQ(mock_queue_size(&f.b.base), 12288);
    /* One completion brings the backlog to 8192 <= 10000: reading
     * resumes; the stream stays bounded while the writer is slow. */
    mock_complete_one(&f.b);
    CHECK(f.a.reading);
    while (f.done_calls == 0) {
        uv_run(&f.loop, UV_RUN_NOWAIT);
        CHECK_LE(mock_queue_size(&f.b.base), 12288);
        if (f.b.w_head < f.b.w_tail)
            mock_complete_one(&f.b);
    }
    CHECK_EQ(f.status, 0);
    CHECK_EQ(f.b.out_len, sizeof(data));
    CHECK_MEM_EQ(f.b.out, data, sizeof(data));
    fixture_fini(&f);
}

/* With the write still pending, the read error waits for it. */
static void test_read_error_waits(void)
{
    struct fixture f;

    fixture_init(&f);
    f.a.auto_complete = false;
    mock_feed(&f.b, "tail", 4);
    f.b.in_end = NECTAR_ECONNRESET;
    fixture_start(&f, 0);
    fixture_run(&f, 20);
    CHECK_EQ(f.done_calls, 0);
    CHECK_EQ(f.a.w_tail, 1);
    mock_complete_one(&f.a);
    CHECK_EQ(f.done_calls, 1);
    CHECK_EQ(f.status, NECTAR_ECONNRESET);
    CHECK_MEM_EQ(f.a.out, "tail", 4);
    fixture_fini(&f);
}

static void test_write_error(void)
{
    struct fixture f;

    fixture_init(&f);
    f.b.fail_next_write = NECTAR_EPIPE;
    mock_feed(&f.a, "x", 1);
    fixture_start(&f, 0);
    fixture_run(&f, 20);
    CHECK_EQ(f.done_calls, 1);
    CHECK_EQ(f.status, NECTAR_EPIPE);
    CHECK_EQ(f.a_to_b, 0);
    fixture_fini(&f);
}

static void test_read_error(void)
{
    struct fixture f;

    fixture_init(&f);
    mock_feed(&f.b, "partial", 7);
    f.b.in_end = NECTAR_ECONNRESET;
    fixture_start(&f, 0);
    fixture_run(&f, 20);
    CHECK_EQ(f.done_calls, 1);
    CHECK_EQ(f.status, NECTAR_ECONNRESET);
    /* Bytes read before the error were delivered before the relay ended. */
    CHECK_EQ(f.a.out_len, 7);
    CHECK_MEM_EQ(f.a.out, "partial", 7);
    CHECK_EQ(f.a.shutdowns, 0); /* an error is not a half-close */
    fixture_fini(&f);
}

/* Freeing a running relay (the cancel path) stops it cleanly. */
static void test_free_while_running(void)
{
    struct fixture f;

    fixture_init(&f);
    f.b.auto_complete = false;
    mock_feed(&f.a, "pending", 7);
    fixture_start(&f, 0);
    fixture_run(&f, 10);
    CHECK_EQ(f.b.w_tail - f.b.w_head, 1);
    svc_relay_free(f.relay);
    f.relay = NULL;
    CHECK(!f.a.reading);
    CHECK(!f.b.reading);
    svc_close(&f.a.base);
    svc_close(&f.b.base);
    fixture_run(&f, 10);
    CHECK_EQ(f.done_calls, 0);
    fixture_fini(&f);
}

/* ---- prefix ---------------------------------------------------------------
 */

struct prefix_reader {
    uint8_t got[256];
    size_t len;
    int eof;
    int writes_done;
    svc_stream_t *seen;
};

static void prefix_read(svc_stream_t *s, ssize_t nread, const uint8_t *buf,
                        void *data)
{
    struct prefix_reader *r = data;
    r->seen = s;
    if (nread < 0) {
        r->eof = (int)nread;
        return;
    }
    memcpy(r->got + r->len, buf, (size_t)nread);
    r->len += (size_t)nread;
}

static void prefix_written(svc_stream_t *s, int status, void *data)
{
    struct prefix_reader *r = data;
    CHECK_EQ(status, 0);
    r->seen = s;
    r->writes_done++;
}

static void test_prefix(void)
{
    uv_loop_t loop;
    struct mock m;
    struct prefix_reader r = {0};

    CHECK_EQ(uv_loop_init(&loop), 0);
    mock_init(&m, &loop);
    mock_feed(&m, " world", 6);
    m.in_end = NECTAR_EOF;
    svc_stream_t *p = svc_stream_prefix(&m.base, (const uint8_t *)"hello", 5);
    CHECK(p != NULL);
    CHECK(p->loop == &loop);
    CHECK(!svc_stream_copies_writes(p));
    CHECK_EQ(svc_read_start(p, prefix_read, &r), 0);
    CHECK_EQ(r.len, 0); /* never delivered inside read_start */
    for (int i = 0; i < 10; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ(r.len, 11);
    CHECK_MEM_EQ(r.got, "hello world", 11);
    CHECK_EQ(r.eof, NECTAR_EOF);
    CHECK(r.seen == p);

    /* Writes and shutdown go to the inner stream; completions name p. */
    CHECK_EQ(svc_write(p, (const uint8_t *)"out", 3, prefix_written, &r), 0);
    r.seen = NULL;
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ(r.writes_done, 1);
    CHECK(r.seen == p);
    CHECK_MEM_EQ(m.out, "out", 3);

    /* Close with a write pending: no callback, inner closed, no leak. */
    m.auto_complete = false;
    CHECK_EQ(svc_write(p, (const uint8_t *)"zz", 2, prefix_written, &r), 0);
    CHECK_EQ(svc_shutdown(p), 0);
    CHECK_EQ(m.shutdowns, 1);
    svc_close(p);
    CHECK(m.closed);
    mock_fini(&m);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(r.writes_done, 1);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* Stopping reads while the replay is pending holds it back. */
static void test_prefix_stop(void)
{
    uv_loop_t loop;
    struct mock m;
    struct prefix_reader r = {0};

    CHECK_EQ(uv_loop_init(&loop), 0);
    mock_init(&m, &loop);
    svc_stream_t *p = svc_stream_prefix(&m.base, (const uint8_t *)"abc", 3);
    CHECK_EQ(svc_read_start(p, prefix_read, &r), 0);
    CHECK_EQ(svc_read_stop(p), 0);
    for (int i = 0; i < 5; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ(r.len, 0);
    CHECK_EQ(svc_read_start(p, prefix_read, &r), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_EQ(r.len, 3);
    CHECK(m.reading); /* replay done: the inner stream reads now */
    svc_close(p);
    mock_fini(&m);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

static const nectar_test_t tests[] = {
    {"bytes_unchanged", test_bytes_unchanged},
    {"half_close", test_half_close},
    {"eof_waits_for_pending", test_eof_waits_for_pending},
    {"backpressure", test_backpressure},
    {"write_error", test_write_error},
    {"read_error", test_read_error},
    {"read_error_waits", test_read_error_waits},
    {"free_while_running", test_free_while_running},
    {"prefix", test_prefix},
    {"prefix_stop", test_prefix_stop},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
