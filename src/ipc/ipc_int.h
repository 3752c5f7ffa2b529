/*
 * ipc_int.h - internal contract of the IPC module: the value layout, the
 * growable buffer, the CBOR codec, and the backend slot table that
 * backend_unix.c (Linux, with backend_unix_*.c) and backend_xpc.c (Apple)
 * each provide.
 */
#ifndef NECTAR_IPC_INT_H
#define NECTAR_IPC_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/ipc.h"

struct ipc_kv {
    char *key;
    nectar_ipc_obj_t *val;
};

struct nectar_ipc_obj {
    atomic_uint refs;
    atomic_bool frozen; /* set once inside a container or sent */
    uint8_t type;       /* nectar_ipc_type_t */
    uint16_t height;    /* 0 for scalars, 1 + tallest child otherwise */
    union {
        bool b;
        int64_t i;
        uint64_t u;
        double d;
        uint8_t uuid[16];
        int fd;
        struct {
            char *p; /* NUL-terminated for strings and data alike */
            size_t len;
        } bytes;
        struct {
            nectar_ipc_obj_t **items;
            size_t n, cap;
        } arr;
        struct {
            struct ipc_kv *items; /* sorted by key */
            size_t n, cap;
        } dict;
    } v;
};

/* Growable byte buffer; `oom` latches the first allocation failure so
 * callers check once at the end. */
struct ipc_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};
void nectar__ipc_buf_put(struct ipc_buf *b, const void *p, size_t n);
void nectar__ipc_buf_puts(struct ipc_buf *b, const char *s);
void nectar__ipc_buf_free(struct ipc_buf *b);
/* Appends standard base64 (with padding) of p[0..len). */
void nectar__ipc_base64(struct ipc_buf *b, const uint8_t *p, size_t len);

/* True when p[0..len) is UTF-8 without NUL bytes. */
bool nectar__ipc_utf8_ok(const char *p, size_t len);
/* Marks obj (and nothing below: children are frozen on insertion). */
void nectar__ipc_freeze(const nectar_ipc_obj_t *obj);
/* Decoder fast paths, for input already checked to be UTF-8 without
 * NUL: a string value, and a dict insert that takes ownership of key
 * (freed on failure too). */
nectar_ipc_obj_t *nectar__ipc_string_checked(const char *s, size_t len);
int nectar__ipc_dict_set_owned(nectar_ipc_obj_t *dict, char *key,
                               nectar_ipc_obj_t *val, nectar_error_t *err);
/* Takes ownership of fd (no dup). */
nectar_ipc_obj_t *nectar__ipc_fd_adopt(int fd);

/* CBOR codec (codec.c, format in docs/ipc-protocol.md).
 * encode: appends the encoding of obj to out; fds found in obj are listed
 *   (borrowed) in fds[], at most NECTAR_IPC_MAX_FDS.  Errors NECTAR_ELIMIT,
 *   NECTAR_ENOMEM.
 * decode: parses exactly len bytes into *out (new reference).  fds[] are
 *   the descriptors that came with the message; every one referenced is
 *   dup'd into the value, the caller still closes all of them.  Errors:
 *   NECTAR_EPARSE, NECTAR_ETYPE, NECTAR_ELIMIT, NECTAR_ENOMEM. */
int nectar__ipc_encode(const nectar_ipc_obj_t *obj, struct ipc_buf *out,
                       int *fds, size_t *nfds, nectar_error_t *err);
int nectar__ipc_decode(const uint8_t *p, size_t len, const int *fds,
                       size_t nfds, nectar_ipc_obj_t **out,
                       nectar_error_t *err);

/* Backend slot table (Redis ConnectionType style).  The front (conn.c)
 * validates arguments and freezes messages; a backend only does I/O.
 * Slots NULL mean NECTAR_ENOTSUP. */
struct nectar__ipc_backend {
    const char *name;
    unsigned req_supported; /* NECTAR_IPC_REQ_* bits it can enforce */
    int (*listen)(const nectar_ipc_listener_config_t *cfg,
                  nectar_ipc_listener_t **out, nectar_error_t *err);
    void (*listener_close)(nectar_ipc_listener_t *l);
    int (*connect)(const nectar_ipc_client_config_t *cfg,
                   nectar_ipc_conn_t **out, nectar_error_t *err);
    int (*send)(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                nectar_error_t *err);
    int (*send_with_reply)(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                           uint32_t timeout_ms, nectar_ipc_reply_cb cb,
                           void *ctx, uint64_t *id, nectar_error_t *err);
    int (*send_sync)(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *msg,
                     uint32_t timeout_ms, nectar_ipc_obj_t **reply,
                     nectar_error_t *err);
    int (*cancel_request)(nectar_ipc_conn_t *c, uint64_t id);
    void (*conn_cancel)(nectar_ipc_conn_t *c);
    nectar_ipc_conn_t *(*conn_retain)(nectar_ipc_conn_t *c);
    void (*conn_release)(nectar_ipc_conn_t *c);
    int (*conn_peer)(nectar_ipc_conn_t *c, nectar_ipc_peer_t *out);
    void (*conn_set_context)(nectar_ipc_conn_t *c, void *ctx);
    void *(*conn_get_context)(nectar_ipc_conn_t *c);
    nectar_ipc_obj_t *(*message_body)(const nectar_ipc_message_t *m);
    bool (*message_expects_reply)(const nectar_ipc_message_t *m);
    int (*message_reply)(nectar_ipc_message_t *m, const nectar_ipc_obj_t *r,
                         nectar_error_t *err);
    void (*message_release)(nectar_ipc_message_t *m);
};

#if defined(NECTAR_IPC_BACKEND_XPC)
extern const struct nectar__ipc_backend nectar__ipc_backend_xpc;
#else
extern const struct nectar__ipc_backend nectar__ipc_backend_unix;
#endif

#endif
