/*
 * hostmock.h - a scripted TCP host for the engine tests: it records what
 * the engine writes to each side, can answer PAUSED by policy (and then
 * signals the drain from its own thread, never from inside a callback),
 * counts demand/close/promote callbacks and feeds bytes honouring
 * ACCEPTED/PAUSED/CLOSED exactly as the Swift provider does.
 */
#ifndef NECTAR_TESTS_ENGINE_HOSTMOCK_H
#define NECTAR_TESTS_ENGINE_HOSTMOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/ne_abi.h"

#define HM_MAGIC 0x600dcafeu

struct hm_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
};

struct hm {
    uint32_t magic;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    RamaTransparentProxyTcpSession *s;
    struct hm_buf app;    /* accepted on_server_bytes */
    struct hm_buf remote; /* accepted on_write_to_egress */
    int server_closed;
    int egress_closed;
    int client_demand;
    int egress_demand;
    int promote_requests;
    int paused_count;
    /* PAUSED policy: pause when (xorshift % 100) < pause_pct. */
    int pause_pct;
    uint32_t rng;
    bool pause_forever_app; /* on_server_bytes always PAUSED */
    /* Deterministic: PAUSED on exactly the n-th call (1-based; 0 = off). */
    int pause_at_app;
    int pause_at_remote;
    int app_calls;
    int remote_calls;
    uint8_t app_status_override; /* nonzero: return this raw byte */
    bool need_app_drain;
    bool need_remote_drain;
    /* Promote: confirm OK synchronously inside the callback. */
    int confirm_mode; /* 0 none, 1 OK sync, 2 FAILED sync, 3 OK async */
    bool confirm_pending;
    /* Drainer thread. */
    bool stop;
    bool drainer_up;
    pthread_t drainer;
};

void hm_init(struct hm *h);
/* Joins the drainer and frees buffers; poisons magic. */
void hm_destroy(struct hm *h);
void hm_start_drainer(struct hm *h);

RamaTransparentProxyTcpSessionCallbacks hm_session_cbs(struct hm *h);
RamaTransparentProxyTcpEgressCallbacks hm_egress_cbs(struct hm *h);
RamaTransparentProxyTcpPromoteCallbacks hm_promote_cbs(struct hm *h);

/* Feeds len bytes in chunks of `chunk` through on_client_bytes (dir 0) or
 * on_egress_bytes (dir 1), waiting for demand on PAUSED.  Returns bytes
 * accepted (stops at CLOSED; fails the test after 10 s without demand). */
size_t hm_feed(struct hm *h, int dir, const uint8_t *p, size_t len,
               size_t chunk);

/* Waits until *field (read under h->mu) >= want; false on timeout. */
bool hm_wait(struct hm *h, const int *field, int want, int timeout_ms);
bool hm_wait_len(struct hm *h, const struct hm_buf *b, size_t want,
                 int timeout_ms);

#endif
