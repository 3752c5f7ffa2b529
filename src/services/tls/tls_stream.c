/*
 * tls_stream.c - TLS over an svc_stream_t through OpenSSL memory BIOs.
 * Contract in tls.h.
 *
 * States:
 *   IDLE --svc_tls_handshake--> HANDSHAKE --done--> OPEN
 *                                         --error-> FAILED
 * The inner stream is read while in HANDSHAKE, and in OPEN while the user
 * reads.  Every entry point that may call back into user code (inner read
 * and write completions, the kick timer) holds `depth`, so a user close()
 * from inside a callback only marks the stream and the memory goes when
 * the outermost frame unwinds.
 */
#include "services/tls/tls.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TLS_READ_BATCH (64 * 1024)

enum tls_state { ST_IDLE, ST_HANDSHAKE, ST_OPEN, ST_FAILED };

struct tls_stream;

/* One ciphertext write handed to the inner stream. */
struct tls_chunk {
    struct tls_chunk *prev, *next;
    struct tls_stream *ts;
    svc_write_cb cb; /* the user's write callback, or an internal one */
    void *data;
    size_t len;
    uint8_t bytes[];
};

struct tls_stream {
    svc_stream_t base;
    svc_stream_t *inner;
    SSL *ssl;
    BIO *rbio, *wbio;
    uv_timer_t kick; /* runs pump() on the next loop turn */
    enum tls_state state;
    svc_tls_handshake_cb hs_cb;
    void *hs_data;
    svc_read_cb read_cb;
    void *read_data;
    bool reading;
    bool inner_reading;
    bool inner_eof;
    int inner_err;
    bool read_done; /* EOF or error delivered to the user */
    bool shut;
    bool flight_sent; /* handshake bytes went out */
    bool closed;
    int depth;
    struct tls_chunk *chunks; /* in flight, for cleanup on close */
    svc_tls_fail_t fail;
    char fail_text[160];
    uint64_t bytes_in, bytes_out;
};

static void pump(struct tls_stream *ts);
static void on_kick(uv_timer_t *t);

static struct tls_stream *to_ts(svc_stream_t *s)
{
    return (struct tls_stream *)s;
}

/* ---- lifetime ----------------------------------------------------------- */

static void on_kick_closed(uv_handle_t *h)
{
    nectar_free(h->data);
}

static void destroy(struct tls_stream *ts)
{
    svc_close(ts->inner); /* drops pending inner writes, no callbacks */
    struct tls_chunk *c = ts->chunks;
    while (c != NULL) {
        struct tls_chunk *next = c->next;
        nectar_free(c);
        c = next;
    }
    SSL_free(ts->ssl);
    uv_timer_stop(&ts->kick);
    uv_close((uv_handle_t *)&ts->kick, on_kick_closed);
}

static void leave(struct tls_stream *ts)
{
    if (--ts->depth == 0 && ts->closed)
        destroy(ts);
}

static void schedule(struct tls_stream *ts)
{
    uv_timer_start(&ts->kick, on_kick, 0, 0);
}

/* ---- ciphertext out ----------------------------------------------------- */

static void chunk_unlink(struct tls_stream *ts, struct tls_chunk *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        ts->chunks = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
}

static void on_inner_written(svc_stream_t *inner, int status, void *data)
{
    (void)inner;
    struct tls_chunk *c = data;
    struct tls_stream *ts = c->ts;
    svc_write_cb cb = c->cb;
    void *cb_data = c->data;
    chunk_unlink(ts, c);
    nectar_free(c);
    if (cb == NULL || ts->closed)
        return;
    ts->depth++;
    cb(&ts->base, status, cb_data);
    leave(ts);
}

/* Writes whatever OpenSSL produced to the inner stream; cb (may be NULL)
 * runs when the inner stream accepted it.  With `force` an empty write is
 * still issued so cb runs in order with earlier writes. */
static int flush_out(struct tls_stream *ts, svc_write_cb cb, void *data,
                     bool force)
{
    size_t n = BIO_ctrl_pending(ts->wbio);
    if (n == 0 && !force)
        return 0;
    struct tls_chunk *c = nectar_malloc(sizeof(*c) + n);
    if (c == NULL)
        return NECTAR_ENOMEM;
    if (n > 0 && BIO_read(ts->wbio, c->bytes, (int)n) != (int)n) {
        nectar_free(c);
        return NECTAR_ECRYPTO;
    }
    c->ts = ts;
    c->cb = cb;
    c->data = data;
    c->len = n;
    c->prev = NULL;
    c->next = ts->chunks;
    if (ts->chunks != NULL)
        ts->chunks->prev = c;
    ts->chunks = c;
    int rc = svc_write(ts->inner, c->bytes, n, on_inner_written, c);
    if (rc < 0) {
        chunk_unlink(ts, c);
        nectar_free(c);
        return rc;
    }
    ts->bytes_out += n;
    if (ts->state == ST_HANDSHAKE && n > 0)
        ts->flight_sent = true;
    return 0;
}

/* ---- handshake ---------------------------------------------------------- */

static bool is_cert_rejection(int reason)
{
    switch (reason) {
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
        return true;
    default:
        return false;
    }
}

static void set_fail(struct tls_stream *ts, svc_tls_fail_t why,
                     const char *text)
{
    ts->fail = why;
    snprintf(ts->fail_text, sizeof(ts->fail_text), "%s", text ? text : "");
}

/* Decides why the handshake failed from the SSL error and the stream. */
static void classify_failure(struct tls_stream *ts, int ssl_err)
{
    unsigned long e = ERR_peek_last_error();
    long verify = SSL_get_verify_result(ts->ssl);
    bool verifying = (SSL_get_verify_mode(ts->ssl) & SSL_VERIFY_PEER) != 0;
    if (!SSL_is_server(ts->ssl) && verifying && verify != X509_V_OK) {
        set_fail(ts, SVC_TLS_VERIFY_FAILED,
                 X509_verify_cert_error_string(verify));
    } else if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
               is_cert_rejection(ERR_GET_REASON(e))) {
        set_fail(ts, SVC_TLS_PEER_REJECTED_CERT, ERR_reason_error_string(e));
    } else if (ssl_err == SSL_ERROR_WANT_READ || ssl_err == SSL_ERROR_SYSCALL ||
               ssl_err == SSL_ERROR_ZERO_RETURN) {
        bool early = SSL_is_server(ts->ssl) && ts->flight_sent;
        set_fail(ts, early ? SVC_TLS_EOF_AFTER_FLIGHT : SVC_TLS_IO,
                 ts->inner_err ? nectar_strerror(ts->inner_err)
                               : "peer closed during the handshake");
    } else {
        const char *r = e ? ERR_reason_error_string(e) : NULL;
        set_fail(ts, SVC_TLS_PROTOCOL, r ? r : "tls protocol error");
    }
    ERR_clear_error();
}

static void report_handshake(struct tls_stream *ts, int status)
{
    svc_tls_handshake_cb cb = ts->hs_cb;
    ts->hs_cb = NULL;
    if (cb != NULL && !ts->closed)
        cb(&ts->base, status, ts->hs_data);
}

/* The alert that ends a failed handshake reached the inner stream. */
static void on_alert_flushed(svc_stream_t *s, int status, void *data)
{
    (void)s;
    (void)status;
    struct tls_stream *ts = data;
    report_handshake(ts, NECTAR_ECRYPTO);
}

static void fail_handshake(struct tls_stream *ts, int ssl_err)
{
    classify_failure(ts, ssl_err);
    ts->state = ST_FAILED;
    /* Report only once the alert OpenSSL wrote (if any) was accepted by
     * the inner stream, so the caller may end the flow right away. */
    if (BIO_ctrl_pending(ts->wbio) > 0 && ts->inner_err == 0 &&
        flush_out(ts, on_alert_flushed, ts, false) == 0)
        return;
    report_handshake(ts, NECTAR_ECRYPTO);
}

static void pump_handshake(struct tls_stream *ts)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ts->ssl);
    int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ts->ssl, r);
    if (r == 1 || err == SSL_ERROR_WANT_READ) {
        if (flush_out(ts, NULL, NULL, false) < 0) {
            ts->inner_err = NECTAR_EIO;
            fail_handshake(ts, SSL_ERROR_SYSCALL);
            return;
        }
    }
    if (r == 1) {
        ts->state = ST_OPEN;
        report_handshake(ts, 0);
        return;
    }
    if (err == SSL_ERROR_WANT_READ && !ts->inner_eof && ts->inner_err == 0)
        return; /* wait for more ciphertext */
    fail_handshake(ts, err);
}

/* ---- plaintext in ------------------------------------------------------- */

static void deliver_end(struct tls_stream *ts, ssize_t code)
{
    ts->read_done = true;
    ts->read_cb(&ts->base, code, NULL, ts->read_data);
}

static void pump_read(struct tls_stream *ts)
{
    uint8_t buf[TLS_READ_BATCH];
    while (ts->state == ST_OPEN && ts->reading && !ts->read_done &&
           !ts->closed) {
        /* Several records per delivery: fewer, larger writes below us.
         * An end found after some data is found again on the next pass. */
        size_t have = 0;
        int r = 0, err = SSL_ERROR_NONE;
        while (have < sizeof(buf)) {
            ERR_clear_error();
            r = SSL_read(ts->ssl, buf + have, (int)(sizeof(buf) - have));
            if (r <= 0) {
                err = SSL_get_error(ts->ssl, r);
                break;
            }
            have += (size_t)r;
        }
        /* Post-handshake messages (key updates, tickets) may need a
         * reply; send it whatever happens next. */
        flush_out(ts, NULL, NULL, false);
        if (have > 0) {
            ts->read_cb(&ts->base, (ssize_t)have, buf, ts->read_data);
            continue;
        }
        if (err == SSL_ERROR_WANT_READ) {
            /* A peer that closes without close_notify still ends the
             * stream with EOF: many servers do that after a response. */
            if (ts->inner_eof)
                deliver_end(ts, NECTAR_EOF);
            else if (ts->inner_err != 0)
                deliver_end(ts, ts->inner_err);
            break;
        }
        if (err == SSL_ERROR_ZERO_RETURN) {
            deliver_end(ts, NECTAR_EOF);
            break;
        }
        unsigned long e = ERR_peek_last_error();
        nectar_log(NECTAR_LOG_DEBUG, "tls", "read failed: %s",
                   e ? ERR_reason_error_string(e) : "protocol error");
        ERR_clear_error();
        deliver_end(ts, NECTAR_ECRYPTO);
    }
}

static void inner_read_cb(svc_stream_t *in, ssize_t n, const uint8_t *buf,
                          void *data);

static void update_inner_reading(struct tls_stream *ts)
{
    bool want = !ts->closed && !ts->inner_eof && ts->inner_err == 0 &&
                (ts->state == ST_HANDSHAKE ||
                 (ts->state == ST_OPEN && ts->reading && !ts->read_done));
    if (want == ts->inner_reading)
        return;
    ts->inner_reading = want;
    int rc = want ? svc_read_start(ts->inner, inner_read_cb, ts)
                  : svc_read_stop(ts->inner);
    if (rc < 0 && want) {
        ts->inner_reading = false;
        ts->inner_err = rc == NECTAR_ECLOSED ? 0 : rc;
        ts->inner_eof = rc == NECTAR_ECLOSED;
        schedule(ts);
    }
}

static void pump(struct tls_stream *ts)
{
    ts->depth++;
    if (ts->state == ST_HANDSHAKE && !ts->closed)
        pump_handshake(ts);
    if (ts->state == ST_OPEN && !ts->closed)
        pump_read(ts);
    update_inner_reading(ts);
    leave(ts);
}

static void inner_read_cb(svc_stream_t *in, ssize_t n, const uint8_t *buf,
                          void *data)
{
    (void)in;
    struct tls_stream *ts = data;
    if (ts->closed)
        return;
    if (n > 0) {
        BIO_write(ts->rbio, buf, (int)n);
        ts->bytes_in += (uint64_t)n;
    } else {
        ts->inner_reading = false; /* nothing follows EOF or an error */
        if (n == NECTAR_EOF)
            ts->inner_eof = true;
        else
            ts->inner_err = (int)n;
    }
    pump(ts);
}

static void on_kick(uv_timer_t *t)
{
    pump(t->data);
}

/* ---- svc_stream_ops ----------------------------------------------------- */

static int tls_read_start(svc_stream_t *s, svc_read_cb cb, void *data)
{
    struct tls_stream *ts = to_ts(s);
    if (ts->state != ST_OPEN)
        return NECTAR_ESTATE;
    if (ts->read_done)
        return NECTAR_ECLOSED;
    ts->read_cb = cb;
    ts->read_data = data;
    ts->reading = true;
    schedule(ts); /* hand over buffered plaintext on the next turn */
    return 0;
}

static int tls_read_stop(svc_stream_t *s)
{
    struct tls_stream *ts = to_ts(s);
    ts->reading = false;
    update_inner_reading(ts);
    return 0;
}

static int tls_write(svc_stream_t *s, const uint8_t *buf, size_t len,
                     svc_write_cb cb, void *data)
{
    struct tls_stream *ts = to_ts(s);
    if (ts->state != ST_OPEN)
        return NECTAR_ESTATE;
    if (ts->shut)
        return NECTAR_ECLOSED;
    size_t done = 0;
    ERR_clear_error();
    while (done < len) {
        size_t step = len - done > (1u << 30) ? (1u << 30) : len - done;
        int r = SSL_write(ts->ssl, buf + done, (int)step);
        if (r <= 0) {
            ERR_clear_error();
            flush_out(ts, NULL, NULL, false);
            return NECTAR_ECRYPTO;
        }
        done += (size_t)r;
    }
    return flush_out(ts, cb, data, true);
}

static int tls_shutdown(svc_stream_t *s)
{
    struct tls_stream *ts = to_ts(s);
    if (ts->shut)
        return 0;
    ts->shut = true;
    if (ts->state == ST_OPEN) {
        ERR_clear_error();
        SSL_shutdown(ts->ssl); /* queues close_notify in the write BIO */
        ERR_clear_error();
        flush_out(ts, NULL, NULL, false);
    }
    return svc_shutdown(ts->inner);
}

static size_t tls_write_queue_size(const svc_stream_t *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    return svc_write_queue_size(ts->inner);
}

static void tls_close(svc_stream_t *s)
{
    struct tls_stream *ts = to_ts(s);
    if (ts->closed)
        return;
    ts->closed = true;
    if (ts->depth == 0)
        destroy(ts);
}

static const svc_stream_ops_t tls_ops = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .write_queue_size = tls_write_queue_size,
    .close = tls_close,
};

/* ---- public ------------------------------------------------------------- */

svc_stream_t *svc_tls_new(svc_stream_t *inner, SSL *ssl)
{
    struct tls_stream *ts = nectar_calloc(1, sizeof(*ts));
    BIO *rbio = BIO_new(BIO_s_mem());
    BIO *wbio = BIO_new(BIO_s_mem());
    if (ts == NULL || rbio == NULL || wbio == NULL) {
        nectar_free(ts);
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        svc_close(inner);
        return NULL;
    }
    ts->base.ops = &tls_ops;
    ts->base.loop = inner->loop;
    ts->inner = inner;
    ts->ssl = ssl;
    ts->rbio = rbio;
    ts->wbio = wbio;
    SSL_set_bio(ssl, rbio, wbio); /* the SSL owns both BIOs from here */
    uv_timer_init(inner->loop, &ts->kick);
    ts->kick.data = ts;
    return &ts->base;
}

int svc_tls_handshake(svc_stream_t *s, svc_tls_handshake_cb cb, void *data)
{
    struct tls_stream *ts = to_ts(s);
    if (ts->state != ST_IDLE)
        return NECTAR_ESTATE;
    ts->state = ST_HANDSHAKE;
    ts->hs_cb = cb;
    ts->hs_data = data;
    schedule(ts);
    return 0;
}

SSL *svc_tls_ssl(svc_stream_t *s)
{
    return to_ts(s)->ssl;
}

svc_tls_fail_t svc_tls_failure(const svc_stream_t *s)
{
    return ((const struct tls_stream *)s)->fail;
}

const char *svc_tls_failure_text(const svc_stream_t *s)
{
    return ((const struct tls_stream *)s)->fail_text;
}

bool svc_tls_awaiting_peer_verdict(const svc_stream_t *s)
{
    const struct tls_stream *ts = (const struct tls_stream *)s;
    return ts->state == ST_HANDSHAKE && ts->flight_sent;
}

uint64_t svc_tls_bytes_in(const svc_stream_t *s)
{
    return ((const struct tls_stream *)s)->bytes_in;
}

uint64_t svc_tls_bytes_out(const svc_stream_t *s)
{
    return ((const struct tls_stream *)s)->bytes_out;
}
