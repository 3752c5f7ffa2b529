/*
 * keylog.h - TLS key logging in the NSS key log format (the format
 * SSLKEYLOGFILE uses and Wireshark reads), switchable at run time.
 *
 * One sink per application, shared by every TLS context that points at it
 * (tls_keylog_attach), and kept across CA rotations.  While disabled the
 * callback returns at once; when enabled each line is appended to the file
 * under a lock, opened on first use with mode 0600.
 *
 * Rotation (spec §5.6): a sink made with tls_keylog_new_rotating writes to
 * DIR/sslkeylog-YYYYMMDDHH.txt (UTC), starts a new file each hour and
 * deletes its files older than `keep_hours`.
 *
 * Threading: every function may be called from any thread.
 */
#ifndef NECTAR_SERVICES_TLS_KEYLOG_H
#define NECTAR_SERVICES_TLS_KEYLOG_H

#include <openssl/ssl.h>
#include <stdbool.h>

typedef struct tls_keylog tls_keylog_t;

/* path may be NULL: the toggle still works but nothing is written.
 * Returns NULL on ENOMEM. */
tls_keylog_t *tls_keylog_new(const char *path, bool enabled);
/* A rotating sink in dir (created 0700 when missing).  NULL on ENOMEM. */
tls_keylog_t *tls_keylog_new_rotating(const char *dir, unsigned keep_hours,
                                      bool enabled);
void tls_keylog_free(tls_keylog_t *k);

/* Test hook: the clock rotation uses (seconds since the epoch). */
void tls_keylog_set_clock(tls_keylog_t *k, long long (*now)(void));

void tls_keylog_set_enabled(tls_keylog_t *k, bool on);
bool tls_keylog_enabled(const tls_keylog_t *k);
/* The file path, or the directory of a rotating sink (borrowed) or
 * NULL. */
const char *tls_keylog_path(const tls_keylog_t *k);

/* Makes ctx log its session secrets into k (k must outlive ctx). */
void tls_keylog_attach(tls_keylog_t *k, SSL_CTX *ctx);

#endif
