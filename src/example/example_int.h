/*
 * example_int.h - state shared by the example's files: the handler state,
 * the live settings snapshot, and the per-flow TCP service.
 *
 * Live settings (badge, exclusions, the interception context with its CA)
 * form an immutable, reference-counted snapshot.  Each flow takes a
 * reference when it is decided and keeps it to the end, so an update or a
 * CA rotation applies to new flows while flows in progress keep theirs
 * (spec §2.4).  `mu` guards only the pointer swap.
 */
#ifndef NECTAR_EXAMPLE_INT_H
#define NECTAR_EXAMPLE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "app/stats.h"
#include "example/admission.h"
#include "example/config.h"
#include "example/domains.h"
#include "nectar/handler.h"
#include "services/tls/keylog.h"
#include "services/tls/mitm.h"

#define EX_TAG "example"

struct ex_live {
    atomic_int refs;
    bool badge_enabled;
    char *badge_label;
    ex_domains_t *exclude;
    tls_mitm_t *mitm; /* NULL: no CA, TLS flows are promoted */
    char *hijack_host;
    char observed_value[48];
};

struct ex_state {
    struct ex_config cfg; /* static part, as parsed at create */
    pthread_mutex_t mu;   /* guards live, ca_cert_pem, ca_key_pem */
    struct ex_live *live;
    char *ca_cert_pem, *ca_key_pem;
    ex_admission_t *adm;
    tls_keylog_t *keylog;
    struct app_stats stats;
    uint64_t created_ms;
    char *storage_dir;
    void *control;     /* nectar_control_t when the example bound IPC */
    void *keychain;    /* nectar_keychain_t holding the CA, or NULL */
    void *vault;       /* nectar_vault_t sealing the stored CA, or NULL */
    X509_STORE *trust; /* server verification, shared across rotations */
};

struct ex_live *ex_live_get(struct ex_state *ex);
void ex_live_put(struct ex_live *l);

/* The TCP service (tcp.c). */
extern const nectar_tcp_service_t ex_tcp_service;
/* A service object for an admitted flow; takes over `live` (a reference)
 * and `permit`.  NULL on ENOMEM (nothing taken). */
void *ex_tcp_new(struct ex_state *ex, struct ex_live *live,
                 const ex_permit_t *permit);

uint64_t ex_now_ms(void);

#endif
