/*
 * ipc.h - nectar's XPC-style IPC: values, connections, listeners, the
 * `$selector` router convention, and the daemon's control service.
 *
 * Backends: libxpc on Apple (backend_xpc.c), SOCK_SEQPACKET Unix sockets on
 * Linux (backend_unix.c, wire format in docs/ipc-protocol.md).  Contracts
 * are repeated in docs/ipc.md under the same headings.
 *
 * Module-wide rules
 * - Values (nectar_ipc_obj_t) are reference counted.  A function returning
 *   `nectar_ipc_obj_t *` hands the caller one reference; release it with
 *   nectar_ipc_release.  Getters marked "borrowed" return a pointer valid
 *   while the parent value is alive.
 * - Container setters (array_append, dict_set) *consume* the value passed
 *   in, on success and on failure, so builders nest without temporaries.
 * - A value becomes read-only ("frozen") once it is placed in a container
 *   or sent; mutating a frozen container gives NECTAR_ESTATE.  This is what
 *   rules out cycles and keeps the nesting check exact.
 * - Values may be read from any thread; a non-frozen container must not be
 *   mutated from two threads at once.
 * - Connections, listeners and messages may be used from any thread.
 *   Callbacks run on the connection's (or listener's) own event thread,
 *   one at a time per connection; they may call any function here except
 *   the blocking nectar_ipc_send_sync / nectar_ipc_call on the same
 *   connection (that would wait for the thread that is running them).
 * - After nectar_ipc_conn_cancel / nectar_ipc_listener_close return, none of
 *   that object's callbacks fires any more.
 * - Errors: 0 on success or a negative NECTAR_* code, with a message in the
 *   optional `nectar_error_t *err`.  Mapping of the spec's error kinds:
 *     InvalidCString -> NECTAR_EINVAL, UnsupportedObjectType -> NECTAR_ETYPE
 *     (nesting or size -> NECTAR_ELIMIT), ReplyNotExpected -> NECTAR_ESTATE,
 *     ReplyCanceled -> NECTAR_ECANCELED, CallTimedOut -> NECTAR_ETIMEDOUT,
 *     Connection(Interrupted) -> NECTAR_ECONNRESET,
 *     Connection(Invalidated) -> NECTAR_ECLOSED,
 *     Connection(PeerRequirementFailed) -> NECTAR_EPEER,
 *     PeerRequirementFailed at configuration -> NECTAR_ECONFIG,
 *     InvalidMessage -> NECTAR_EPARSE, Remote -> NECTAR_IPC_EREMOTE.
 */
#ifndef NECTAR_IPC_H
#define NECTAR_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "nectar/error.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The peer answered with a `$error` envelope; code and text are in the
 * call's nectar_ipc_remote_t.  Outside the common table on purpose: it is
 * only produced by nectar_ipc_call / nectar_ipc_extract_result. */
#define NECTAR_IPC_EREMOTE NECTAR_EREMOTE

/* Limits, enforced when building and when decoding. */
#define NECTAR_IPC_MAX_DEPTH    256        /* top level is depth 0 */
#define NECTAR_IPC_MAX_MESSAGE  (4u << 20) /* encoded bytes per message */
#define NECTAR_IPC_MAX_ELEMENTS (1u << 20) /* items per array or dict */
#define NECTAR_IPC_MAX_FDS      64         /* descriptors per message */
/* Messages of one connection a handler may hold unfinished (neither
 * replied nor released); newer ones are dropped, as rama's bounded event
 * channel drops the newest. */
#define NECTAR_IPC_MAX_PENDING_MESSAGES 10000u

/* ------------------------------------------------------------------ */
/* Values                                                              */
/* ------------------------------------------------------------------ */

typedef struct nectar_ipc_obj nectar_ipc_obj_t;

typedef enum nectar_ipc_type {
    NECTAR_IPC_NULL = 0,
    NECTAR_IPC_BOOL,
    NECTAR_IPC_INT64,
    NECTAR_IPC_UINT64,
    NECTAR_IPC_DOUBLE,
    NECTAR_IPC_STRING,
    NECTAR_IPC_DATA,
    NECTAR_IPC_DATE, /* int64 nanoseconds since the Unix epoch */
    NECTAR_IPC_UUID, /* 16 bytes, RFC 4122 byte order */
    NECTAR_IPC_FD,
    NECTAR_IPC_ARRAY,
    NECTAR_IPC_DICT,
} nectar_ipc_type_t;

/* Builders: a new value (one reference), or NULL when out of memory or
 * the input is invalid (a string with a NUL or bad UTF-8, data over the
 * size limit, a bad fd).  Any thread. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_null(void);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_bool(bool v);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_int64(int64_t v);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_uint64(uint64_t v);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_double(double v);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_date(int64_t ns_since_epoch);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_uuid(const uint8_t bytes[16]);
/* s is copied; must be valid UTF-8. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_string(const char *s);
/* len bytes of s are copied; an interior NUL is rejected (NULL). */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_string_len(const char *s, size_t len);
/* bytes are copied; p may be NULL when len is 0. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_data(const void *p, size_t len);
/* fd is borrowed: the value holds its own dup (closed on release). */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_fd(int fd);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_array(void);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_dict(void);

/* Adds val (consumed, even on failure) at the end of arr.  Errors:
 * NECTAR_EINVAL (arr not an array, val NULL), NECTAR_ESTATE (arr frozen),
 * NECTAR_ELIMIT (element count or nesting over the limit). */
NECTAR_API int nectar_ipc_array_append(nectar_ipc_obj_t *arr,
                                       nectar_ipc_obj_t *val,
                                       nectar_error_t *err);
/* Sets key (copied, UTF-8 without NUL) to val (consumed, even on
 * failure); a later set of the same key replaces the earlier value.
 * Errors as for array_append. */
NECTAR_API int nectar_ipc_dict_set(nectar_ipc_obj_t *dict, const char *key,
                                   nectar_ipc_obj_t *val, nectar_error_t *err);

/* One more reference (returns obj; NULL-safe). */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_retain(nectar_ipc_obj_t *obj);
/* Drops one reference; the last one frees the value (and closes an fd it
 * holds).  NULL-safe. */
NECTAR_API void nectar_ipc_release(nectar_ipc_obj_t *obj);
/* Deep, unfrozen copy (fds are dup'd); NULL on out of memory. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_copy(const nectar_ipc_obj_t *obj);
/* True when both have the same type and value.  Doubles compare by value
 * with NaN equal to NaN; fds compare by the open file they refer to. */
NECTAR_API bool nectar_ipc_equal(const nectar_ipc_obj_t *a,
                                 const nectar_ipc_obj_t *b);

/* Readers.  Each returns a zero value when obj has another type. */
NECTAR_API nectar_ipc_type_t nectar_ipc_type(const nectar_ipc_obj_t *obj);
NECTAR_API const char *nectar_ipc_type_name(nectar_ipc_type_t type);
NECTAR_API bool nectar_ipc_bool_value(const nectar_ipc_obj_t *obj);
NECTAR_API int64_t nectar_ipc_int64_value(const nectar_ipc_obj_t *obj);
NECTAR_API uint64_t nectar_ipc_uint64_value(const nectar_ipc_obj_t *obj);
NECTAR_API double nectar_ipc_double_value(const nectar_ipc_obj_t *obj);
NECTAR_API int64_t nectar_ipc_date_value(const nectar_ipc_obj_t *obj);
/* Borrowed; NULL when not a uuid. */
NECTAR_API const uint8_t *nectar_ipc_uuid_bytes(const nectar_ipc_obj_t *obj);
/* Borrowed NUL-terminated string; NULL when not a string.  len may be
 * NULL. */
NECTAR_API const char *nectar_ipc_string_ptr(const nectar_ipc_obj_t *obj,
                                             size_t *len);
/* Borrowed bytes (NULL for empty data or another type); len may be NULL. */
NECTAR_API const void *nectar_ipc_data_ptr(const nectar_ipc_obj_t *obj,
                                           size_t *len);
/* A new descriptor the caller owns (always a dup), or a negative code. */
NECTAR_API int nectar_ipc_fd_dup(const nectar_ipc_obj_t *obj);
/* Elements of an array or entries of a dict; 0 for other types. */
NECTAR_API size_t nectar_ipc_count(const nectar_ipc_obj_t *obj);
/* Borrowed element, NULL when out of range. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_array_get(const nectar_ipc_obj_t *a,
                                                  size_t i);
/* Borrowed value for key, NULL when absent. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_dict_get(const nectar_ipc_obj_t *d,
                                                 const char *key);
/* Dict entries in ascending key order (bytewise); borrowed. */
NECTAR_API const char *nectar_ipc_dict_key_at(const nectar_ipc_obj_t *d,
                                              size_t i);
NECTAR_API nectar_ipc_obj_t *nectar_ipc_dict_value_at(const nectar_ipc_obj_t *d,
                                                      size_t i);

/* JSON rendering for logs and `nectarctl --json`: uint64/int64/double as
 * numbers, data as {"$data":"<base64>"}, uuid as {"$uuid":"8-4-4-4-12"},
 * date as {"$date":ns}, fd as {"$fd":n}.  A NUL-terminated string the
 * caller frees with nectar_ipc_free_string; NULL on out of memory. */
NECTAR_API char *nectar_ipc_to_json(const nectar_ipc_obj_t *obj);
NECTAR_API void nectar_ipc_free_string(char *s);

/* ------------------------------------------------------------------ */
/* Peers and requirements                                              */
/* ------------------------------------------------------------------ */

/* What is known about the process at the other end.  Filled by the
 * backend: on Linux from SO_PEERCRED and a pidfd (the pid is read back
 * from the pidfd, so it never names a recycled process). */
typedef struct nectar_ipc_peer {
    uid_t uid;
    gid_t gid;
    pid_t pid;           /* informational; -1 when unknown */
    int pidfd;           /* borrowed, valid during the call; -1 if none */
    const char *exe;     /* executable path, NULL when unknown */
    const gid_t *groups; /* supplementary groups (may be NULL) */
    size_t ngroups;
} nectar_ipc_peer_t;

/* Returns true to accept.  Runs on the listener's event thread. */
typedef bool (*nectar_ipc_peer_pred)(const nectar_ipc_peer_t *peer, void *ctx);

enum {
    NECTAR_IPC_REQ_UID = 1u << 0,      /* peer uid == uid */
    NECTAR_IPC_REQ_GID = 1u << 1,      /* gid is the primary or a
                                          supplementary group */
    NECTAR_IPC_REQ_EXE_PATH = 1u << 2, /* executable == exe_path */
    NECTAR_IPC_REQ_SAME_EXE = 1u << 3, /* same file as our executable */
    NECTAR_IPC_REQ_PREDICATE = 1u << 4,
    NECTAR_IPC_REQ_OR_ROOT = 1u << 5, /* uid 0 passes every check */
    /* Apple only (NECTAR_ENOTSUP elsewhere): the libxpc calls of the same
     * names, applied before activation. */
    NECTAR_IPC_REQ_CODE_SIGNING = 1u << 8,
    NECTAR_IPC_REQ_TEAM_IDENTITY = 1u << 9,
    NECTAR_IPC_REQ_PLATFORM_IDENTITY = 1u << 10,
    NECTAR_IPC_REQ_ENTITLEMENT_EXISTS = 1u << 11,
    NECTAR_IPC_REQ_ENTITLEMENT_VALUE = 1u << 12,
    NECTAR_IPC_REQ_LIGHTWEIGHT = 1u << 13,
};

/* All checks whose flag is set must pass (AND), except that with
 * NECTAR_IPC_REQ_OR_ROOT a root peer passes outright.  Strings are
 * borrowed until listen/connect returns (they are copied). */
typedef struct nectar_ipc_requirement {
    unsigned flags;
    uid_t uid;
    gid_t gid;
    const char *exe_path;
    nectar_ipc_peer_pred predicate;
    void *predicate_ctx;
    const char *code_signing; /* requirement string */
    const char *signing_id;   /* team/platform identity; NULL = any */
    const char *entitlement;  /* key */
    const nectar_ipc_obj_t *entitlement_value; /* or LWCR dictionary */
} nectar_ipc_requirement_t;

/* Evaluates req against peer (exposed for tests and other backends);
 * 0 when accepted, NECTAR_EPEER with the reason in err otherwise. */
NECTAR_API int nectar_ipc_requirement_check(const nectar_ipc_requirement_t *req,
                                            const nectar_ipc_peer_t *peer,
                                            nectar_error_t *err);

/* ------------------------------------------------------------------ */
/* Connections, listeners, messages                                    */
/* ------------------------------------------------------------------ */

typedef struct nectar_ipc_conn nectar_ipc_conn_t;
typedef struct nectar_ipc_listener nectar_ipc_listener_t;
typedef struct nectar_ipc_message nectar_ipc_message_t;

typedef enum nectar_ipc_event {
    /* The remote end went away; a client reconnects on its next send. */
    NECTAR_IPC_EVENT_INTERRUPTED = 1,
    /* The connection is unusable for good (cancel, protocol error). */
    NECTAR_IPC_EVENT_INVALIDATED = 2,
    /* The peer failed a requirement (ours or theirs); final. */
    NECTAR_IPC_EVENT_PEER_REQUIREMENT_FAILED = 3,
} nectar_ipc_event_t;

/* A message arrived.  msg is handed to the callback: it must end with
 * exactly one nectar_ipc_message_reply or nectar_ipc_message_release, from
 * any thread, now or later.  conn is borrowed for the call (retain it to
 * keep it). */
typedef void (*nectar_ipc_message_cb)(nectar_ipc_conn_t *conn,
                                      nectar_ipc_message_t *msg, void *ctx);
/* A lifecycle event; reason may be NULL; borrowed for the call. */
typedef void (*nectar_ipc_event_cb)(nectar_ipc_conn_t *conn,
                                    nectar_ipc_event_t event,
                                    const char *reason, void *ctx);
/* A reply (status 0, reply borrowed for the call) or a failure (status <
 * 0, reply NULL, err describes it).  Runs once, on the connection's
 * event thread, unless the request was cancelled first. */
typedef void (*nectar_ipc_reply_cb)(int status, nectar_ipc_obj_t *reply,
                                    const nectar_error_t *err, void *ctx);
/* A listener accepted a peer (after the requirement passed).  conn is
 * borrowed; set per-peer context with nectar_ipc_conn_set_context. */
typedef void (*nectar_ipc_peer_cb)(nectar_ipc_listener_t *listener,
                                   nectar_ipc_conn_t *conn, void *ctx);

enum {
    /* Use a socket passed by systemd (LISTEN_FDS/LISTEN_PID) when present:
     * the one named service_name in LISTEN_FDNAMES, or the only one when
     * there are no names; otherwise bind as usual.  A passed socket that
     * is not a listening SOCK_SEQPACKET socket gives NECTAR_ECONFIG. */
    NECTAR_IPC_LISTEN_SOCKET_ACTIVATION = 1u << 0,
};

/* service_name: on Linux a name starting with '/' is a filesystem path
 * (a stale socket file there is replaced; one a live listener serves gives
 * NECTAR_EADDRINUSE); anything else is an abstract socket name.  On Apple
 * it is the Mach service name. */
typedef struct nectar_ipc_listener_config {
    const char *service_name;
    const nectar_ipc_requirement_t *requirement; /* NULL: any peer */
    nectar_ipc_message_cb on_message;
    nectar_ipc_event_cb on_event; /* per-peer events; may be NULL */
    nectar_ipc_peer_cb on_peer;   /* may be NULL */
    void *ctx;
    unsigned flags;
    unsigned path_mode; /* chmod for a filesystem socket; 0 = 0666 */
} nectar_ipc_listener_config_t;

/* Binds and starts the listener's event thread.  The config is copied.
 * Errors: NECTAR_EINVAL, NECTAR_EADDRINUSE, NECTAR_ENOTSUP (requirement
 * kind not available here), NECTAR_ECONFIG, -errno. */
NECTAR_API int nectar_ipc_listen(const nectar_ipc_listener_config_t *cfg,
                                 nectar_ipc_listener_t **out,
                                 nectar_error_t *err);
/* Stops accepting, cancels every peer, joins the event thread and frees
 * the listener.  Must not be called from one of its own callbacks.
 * NULL-safe. */
NECTAR_API void nectar_ipc_listener_close(nectar_ipc_listener_t *l);

typedef struct nectar_ipc_client_config {
    const char *service_name;
    bool privileged; /* Apple: XPC_CONNECTION_MACH_SERVICE_PRIVILEGED */
    const nectar_ipc_requirement_t *requirement; /* checks the server */
    nectar_ipc_message_cb on_message; /* unsolicited server messages */
    nectar_ipc_event_cb on_event;
    void *ctx;
    uint32_t call_timeout_ms;    /* default for requests; 0 = none */
    uint32_t connect_timeout_ms; /* handshake bound; 0 = 5000 */
} nectar_ipc_client_config_t;

/* Creates a lazy client connection: nothing touches the network until
 * the first send, which connects and waits for the listener's verdict.
 * With on_message or on_event set, the connection gets its own event
 * thread; without, blocking calls read their replies on the calling
 * thread ("direct mode") until the first nectar_ipc_send_with_reply
 * starts a thread.  The config is copied.  Errors: NECTAR_EINVAL,
 * NECTAR_ENOTSUP, NECTAR_ENOMEM. */
NECTAR_API int nectar_ipc_connect(const nectar_ipc_client_config_t *cfg,
                                  nectar_ipc_conn_t **out, nectar_error_t *err);

/* Fire-and-forget.  msg is borrowed (and frozen) and must be a
 * dictionary.  May block: on a client's first send (connect + verdict,
 * bounded by connect_timeout_ms) and while the peer's receive buffer is
 * full (bounded).  Errors: NECTAR_EINVAL (not a dictionary),
 * NECTAR_EPEER (refused, on the first send), NECTAR_ECONNREFUSED /
 * NECTAR_ENOENT (no listener), NECTAR_ECLOSED, NECTAR_ELIMIT. */
NECTAR_API int nectar_ipc_send(nectar_ipc_conn_t *conn,
                               const nectar_ipc_obj_t *msg,
                               nectar_error_t *err);
/* Request with a reply delivered to cb.  timeout_ms 0 uses the
 * connection's call_timeout_ms (0 = none).  *request_id (may be NULL)
 * receives an id for nectar_ipc_cancel_request.  If this returns an
 * error, cb is never called. */
NECTAR_API int nectar_ipc_send_with_reply(nectar_ipc_conn_t *conn,
                                          const nectar_ipc_obj_t *msg,
                                          uint32_t timeout_ms,
                                          nectar_ipc_reply_cb cb, void *ctx,
                                          uint64_t *request_id,
                                          nectar_error_t *err);
/* Blocking request: *reply receives a new reference on success.  Not on
 * the connection's own event thread (NECTAR_ESTATE). */
NECTAR_API int nectar_ipc_send_sync(nectar_ipc_conn_t *conn,
                                    const nectar_ipc_obj_t *msg,
                                    uint32_t timeout_ms,
                                    nectar_ipc_obj_t **reply,
                                    nectar_error_t *err);
/* Cancels a pending request: 0 if it was still pending (its callback will
 * not run), NECTAR_ENOENT if it already completed or was never sent.  A
 * late reply is dropped. */
NECTAR_API int nectar_ipc_cancel_request(nectar_ipc_conn_t *conn,
                                         uint64_t request_id);

/* Invalidates the connection: pending requests fail with NECTAR_ECLOSED,
 * then one INVALIDATED event fires, and afterwards no callback runs.
 * Idempotent.  From a callback of this connection it returns without
 * waiting. */
NECTAR_API void nectar_ipc_conn_cancel(nectar_ipc_conn_t *conn);
NECTAR_API nectar_ipc_conn_t *nectar_ipc_conn_retain(nectar_ipc_conn_t *c);
/* Drops a reference.  Dropping the creator's reference to a client
 * connection cancels it first. */
NECTAR_API void nectar_ipc_conn_release(nectar_ipc_conn_t *conn);
/* Peer credentials (strings borrowed while conn lives); NECTAR_ENOTCONN
 * for a client that has not connected yet. */
NECTAR_API int nectar_ipc_conn_peer(nectar_ipc_conn_t *conn,
                                    nectar_ipc_peer_t *out);
NECTAR_API void nectar_ipc_conn_set_context(nectar_ipc_conn_t *conn, void *ctx);
NECTAR_API void *nectar_ipc_conn_get_context(nectar_ipc_conn_t *conn);

/* Borrowed body of a received message (always a dictionary). */
NECTAR_API nectar_ipc_obj_t *
nectar_ipc_message_body(const nectar_ipc_message_t *msg);
NECTAR_API bool
nectar_ipc_message_expects_reply(const nectar_ipc_message_t *msg);
/* Sends reply (borrowed, must be a dictionary) and frees msg, even on
 * failure.  NECTAR_ESTATE ("reply not expected") for a fire-and-forget
 * message or a non-dictionary reply; NECTAR_ECLOSED when the peer left. */
NECTAR_API int nectar_ipc_message_reply(nectar_ipc_message_t *msg,
                                        const nectar_ipc_obj_t *reply,
                                        nectar_error_t *err);
/* Frees msg without replying (a requester then waits for its timeout or
 * the connection's end).  NULL-safe. */
NECTAR_API void nectar_ipc_message_release(nectar_ipc_message_t *msg);

/* ------------------------------------------------------------------ */
/* Router: rama's `$selector` convention                               */
/* ------------------------------------------------------------------ */

#define NECTAR_IPC_ERR_UNKNOWN_SELECTOR 1
#define NECTAR_IPC_ERR_INVALID_MESSAGE  2
#define NECTAR_IPC_ERR_HANDLER_FAILED   3

typedef struct nectar_ipc_router nectar_ipc_router_t;

/* Typed route: arg is `$arguments[0]` (null when the array is empty),
 * borrowed.  Return 0 and set *result (a new reference; NULL means null)
 * to reply {"$result": result}; return an error to reply with the
 * HANDLER_FAILED envelope carrying err's message. */
typedef int (*nectar_ipc_route_cb)(void *ctx, const nectar_ipc_obj_t *arg,
                                   nectar_ipc_obj_t **result,
                                   nectar_error_t *err);
/* Raw route / fallback: sees the whole call; *reply (new reference or
 * NULL for no reply) is sent unchanged. */
typedef int (*nectar_ipc_raw_route_cb)(void *ctx, const nectar_ipc_obj_t *call,
                                       nectar_ipc_obj_t **reply,
                                       nectar_error_t *err);

NECTAR_API nectar_ipc_router_t *nectar_ipc_router_new(void);
/* Registers (or replaces) a route; selector is copied.  Configure before
 * serving; the router is then read-only and safe to share. */
NECTAR_API int nectar_ipc_router_add(nectar_ipc_router_t *r,
                                     const char *selector,
                                     nectar_ipc_route_cb cb, void *ctx);
NECTAR_API int nectar_ipc_router_add_raw(nectar_ipc_router_t *r,
                                         const char *selector,
                                         nectar_ipc_raw_route_cb cb, void *ctx);
/* cb NULL removes the fallback. */
NECTAR_API void nectar_ipc_router_set_fallback(nectar_ipc_router_t *r,
                                               nectar_ipc_raw_route_cb cb,
                                               void *ctx);
NECTAR_API void nectar_ipc_router_free(nectar_ipc_router_t *r);
/* Dispatches one call; returns the reply to send (new reference) or NULL
 * for no reply.  Protocol errors come back as `$error` envelopes. */
NECTAR_API nectar_ipc_obj_t *
nectar_ipc_router_handle(const nectar_ipc_router_t *r,
                         const nectar_ipc_obj_t *call);
/* A nectar_ipc_message_cb serving a router (ctx = the router): handles
 * the message and replies when a reply exists and one is expected. */
NECTAR_API void nectar_ipc_router_on_message(nectar_ipc_conn_t *conn,
                                             nectar_ipc_message_t *msg,
                                             void *router);

/* {"$error": {"code": int64, "message": string}}; NULL on OOM. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_error_envelope(int64_t code,
                                                       const char *message);
/* {"$selector": selector, "$arguments": [arg]}; arg borrowed, NULL means
 * the empty dictionary (RamaXpcEmpty).  NULL on bad input / OOM. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_call_build(const char *selector,
                                                   const nectar_ipc_obj_t *arg);

typedef struct nectar_ipc_remote {
    int64_t code;
    char message[256];
} nectar_ipc_remote_t;

/* rama's extract_result: an envelope gives NECTAR_IPC_EREMOTE (remote
 * filled, may be NULL); a non-dictionary or a missing `$result` gives
 * NECTAR_EPARSE; otherwise *result is a new reference to `$result`. */
NECTAR_API int nectar_ipc_extract_result(const nectar_ipc_obj_t *reply,
                                         nectar_ipc_obj_t **result,
                                         nectar_ipc_remote_t *remote,
                                         nectar_error_t *err);
/* Blocking call by selector: build, send_sync, extract_result. */
NECTAR_API int nectar_ipc_call(nectar_ipc_conn_t *conn, const char *selector,
                               const nectar_ipc_obj_t *arg, uint32_t timeout_ms,
                               nectar_ipc_obj_t **result,
                               nectar_ipc_remote_t *remote,
                               nectar_error_t *err);

/* Decoding helpers following the Swift coder's acceptance rules (xpc.md
 * §5.6).  nectar_ipc_field returns NULL when key is missing *or* null
 * (an absent optional).  The get_* functions return NECTAR_ETYPE with a
 * message naming `what` when v has an unacceptable type or range. */
NECTAR_API nectar_ipc_obj_t *nectar_ipc_field(const nectar_ipc_obj_t *dict,
                                              const char *key);
NECTAR_API int nectar_ipc_get_bool(const nectar_ipc_obj_t *v, const char *what,
                                   bool *out, nectar_error_t *err);
/* INT64, or UINT64 that fits. */
NECTAR_API int nectar_ipc_get_int64(const nectar_ipc_obj_t *v, const char *what,
                                    int64_t *out, nectar_error_t *err);
/* UINT64, or INT64 >= 0. */
NECTAR_API int nectar_ipc_get_uint64(const nectar_ipc_obj_t *v,
                                     const char *what, uint64_t *out,
                                     nectar_error_t *err);
/* DOUBLE, INT64 or UINT64. */
NECTAR_API int nectar_ipc_get_double(const nectar_ipc_obj_t *v,
                                     const char *what, double *out,
                                     nectar_error_t *err);
/* STRING only; *out borrowed. */
NECTAR_API int nectar_ipc_get_string(const nectar_ipc_obj_t *v,
                                     const char *what, const char **out,
                                     nectar_error_t *err);
/* UUID, DATA of exactly 16 bytes, or a STRING in 8-4-4-4-12 form. */
NECTAR_API int nectar_ipc_get_uuid(const nectar_ipc_obj_t *v, const char *what,
                                   uint8_t out[16], nectar_error_t *err);
/* DATE (ns since 1970), or a DOUBLE of seconds since 2001-01-01 (what
 * Swift's Date decoder also accepts); NECTAR_ELIMIT outside int64 ns. */
NECTAR_API int nectar_ipc_get_date(const nectar_ipc_obj_t *v, const char *what,
                                   int64_t *ns, nectar_error_t *err);
/* DATA only; *p borrowed (NULL when empty). */
NECTAR_API int nectar_ipc_get_data(const nectar_ipc_obj_t *v, const char *what,
                                   const void **p, size_t *len,
                                   nectar_error_t *err);
/* A string-valued enum: a STRING equal to one of names[0..n), or (as
 * rama's serde accepts for unit variants) a one-key DICTIONARY with that
 * key.  *index receives the position in names. */
NECTAR_API int nectar_ipc_get_enum(const nectar_ipc_obj_t *v, const char *what,
                                   const char *const *names, size_t n,
                                   size_t *index, nectar_error_t *err);

/* ------------------------------------------------------------------ */
/* The daemon's control service                                        */
/* ------------------------------------------------------------------ */

#define NECTAR_CONTROL_SERVICE_DEFAULT "org.nectar.control"
#define NECTAR_CONTROL_GROUP           "nectar"

/* updateSettings request; has_* says whether the field was sent. */
typedef struct nectar_control_settings {
    bool has_html_badge_enabled;
    bool html_badge_enabled;
    const char *html_badge_label; /* NULL when absent or empty */
    bool has_exclude_domains;
    const char *const *exclude_domains;
    size_t n_exclude_domains;
} nectar_control_settings_t;

/* Result of a CA operation.  Buffers come from the ops' own allocator
 * and are returned through free_bytes. */
typedef struct nectar_control_ca_result {
    bool ok;
    char error[256];
    uint8_t *cert_der; /* install/uninstall; new cert for rotate */
    size_t cert_der_len;
    uint8_t *previous_der; /* rotate only */
    size_t previous_der_len;
} nectar_control_ca_result_t;

typedef struct nectar_control_status {
    const char *version;
    uint64_t uptime_ms;
    uint64_t tcp_flows;
    uint64_t udp_flows;
    uint64_t total_flows;
    bool tls_keylog;
    /* Optional (zero/NULL: not reported).  handler: which application
     * decides flows ("builtin", "example"); the rest are the host's
     * counters of ended flows by outcome. */
    const char *handler;
    uint64_t intercepted, passthrough, blocked, promoted;
} nectar_control_status_t;

typedef struct nectar_control_flow {
    uint64_t id;
    const char *protocol;    /* "tcp" | "udp" */
    const char *app;         /* may be NULL */
    const char *destination; /* "host:port" */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t age_ms;
} nectar_control_flow_t;

/* Emits one flow (borrowed for the call). */
typedef void (*nectar_control_flow_emit)(void *emit_ctx,
                                         const nectar_control_flow_t *f);

/* What the daemon implements.  Every slot runs on the control listener's
 * event thread; a NULL slot makes its route report ok=false / an error.
 * Domain failures travel in-band (ok=false, error) as rama's demo does. */
typedef struct nectar_control_ops {
    void *ctx;
    int (*update_settings)(void *ctx, const nectar_control_settings_t *s,
                           nectar_error_t *err);
    void (*install_root_ca)(void *ctx, nectar_control_ca_result_t *res);
    void (*uninstall_root_ca)(void *ctx, nectar_control_ca_result_t *res);
    void (*rotate_root_ca)(void *ctx, nectar_control_ca_result_t *res);
    /* Sets the keylog toggle; returns the state after the call. */
    bool (*set_tls_keylog)(void *ctx, bool enabled);
    bool (*get_tls_keylog)(void *ctx);
    int (*status)(void *ctx, nectar_control_status_t *out);
    int (*list_flows)(void *ctx, nectar_control_flow_emit emit, void *emit_ctx);
    /* Forwards to the engine's app-message handler
     * (rama_transparent_proxy_engine_handle_app_message); *reply may be
     * left NULL for "no reply". */
    int (*app_message)(void *ctx, const uint8_t *msg, size_t len,
                       uint8_t **reply, size_t *reply_len, nectar_error_t *err);
    void (*free_bytes)(void *ctx, uint8_t *p);
} nectar_control_ops_t;

typedef struct nectar_control nectar_control_t;

/* Starts the control service on service_name (NULL: the default), taking
 * a systemd-activated socket of that name when one was passed.  req NULL
 * means the platform default: on Linux root, or members of group
 * "nectar" when it exists (root only otherwise).  ops and req are copied;
 * ops->ctx is borrowed until nectar_control_stop returns.  Any thread.
 * On error *out is NULL.  Errors as for nectar_ipc_listen. */
NECTAR_API int nectar_control_start(const char *service_name,
                                    const nectar_ipc_requirement_t *req,
                                    const nectar_control_ops_t *ops,
                                    nectar_control_t **out,
                                    nectar_error_t *err);
/* Stops serving (invalidating connected clients), waits until no slot
 * runs any more, frees c.  Not from inside a slot.  NULL-safe. */
NECTAR_API void nectar_control_stop(nectar_control_t *c);
/* The router behind it (for in-process tests); borrowed. */
NECTAR_API const nectar_ipc_router_t *
nectar_control_router(const nectar_control_t *c);

#ifdef __cplusplus
}
#endif
#endif /* NECTAR_IPC_H */
