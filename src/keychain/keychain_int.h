/*
 * keychain_int.h - the contract between the keychain front (keychain.c)
 * and its backends (backend_file.c, backend_apple.c).
 *
 * The front validates every argument (names non-empty and at most
 * NECTAR_KEYCHAIN_NAME_MAX bytes, data at most NECTAR_KEYCHAIN_DATA_MAX,
 * DER non-empty), maps "not found" on delete to success, and implements
 * PKCS#12 identities on top of plain secrets.  Backends only move bytes.
 */
#ifndef NECTAR_KEYCHAIN_INT_H
#define NECTAR_KEYCHAIN_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "nectar/keychain.h"

struct nectar__keychain_backend {
    const char *name;
    size_t state_size; /* zeroed bytes the front allocates for state */

    int (*open)(void *state, const nectar_keychain_options_t *opts,
                nectar_error_t *err);
    void (*close)(void *state); /* also after a failed open */
    const char *(*protection)(void *state);

    int (*store)(void *state, const char *service, const char *account,
                 const void *data, size_t len, nectar_error_t *err);
    /* NECTAR_ENOENT when absent; *data from nectar_secret_alloc. */
    int (*load)(void *state, const char *service, const char *account,
                uint8_t **data, size_t *len, nectar_error_t *err);
    /* NECTAR_ENOENT when absent (the front turns it into 0). */
    int (*remove)(void *state, const char *service, const char *account,
                  nectar_error_t *err);
    /* NULL slot: NECTAR_ENOTSUP.  Accounts via nectar_strdup. */
    int (*list)(void *state, const char *service, char ***accounts,
                size_t *count, nectar_error_t *err);

    int (*cert_install)(void *state, const uint8_t *der, size_t len,
                        nectar_error_t *err);
    int (*cert_uninstall)(void *state, const uint8_t *der, size_t len,
                          nectar_error_t *err);
    /* NULL slot: NECTAR_ENOTSUP. */
    int (*cert_installed)(void *state, const uint8_t *der, size_t len,
                          nectar_error_t *err);
};

extern const struct nectar__keychain_backend nectar__keychain_backend_file;
#ifdef NECTAR_HAVE_APPLE_KEYCHAIN
extern const struct nectar__keychain_backend nectar__keychain_backend_apple;
#endif

/*
 * The file backend's system calls, overridable for fault injection and
 * crash simulation (after SQLite's aSyscall).  Set only while no other
 * thread uses a file keychain; NULL restores the real calls.
 */
struct nectar__keychain_sysio {
    int (*open)(const char *path, int flags, mode_t mode);
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
};
void nectar__keychain_file_set_sysio(const struct nectar__keychain_sysio *io);

/* The file name (64 hex digits + ".item") an item lives in. */
void nectar__keychain_item_name(int kind, const char *service,
                                const char *account, char out[70]);

#endif
