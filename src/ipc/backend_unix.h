/*
 * backend_unix.h - internal contract between the files of the Linux IPC
 * backend: the event loop, connection, pending-request and received-
 * message layouts, and the functions each file provides to the others.
 * Descriptor-level helpers (framing, credentials, addresses) are in
 * unix_sock.h.  The state chart and lock order are in backend_unix.c.
 *
 *   backend_unix_loop.c      event thread, command queue, request timer
 *   backend_unix_conn.c      connection lifetime, pending requests,
 *                            detach, delivery to handlers
 *   backend_unix_io.c        receive assembly (packets, fds, decode) and
 *                            writes
 *   backend_unix_client.c    client: lazy connect and verdict, direct mode
 *   backend_unix_listener.c  listener: bind, activation, accept, verdict
 *   backend_unix.c           the public slots and the backend table
 */
#ifndef NECTAR_IPC_BACKEND_UNIX_H
#define NECTAR_IPC_BACKEND_UNIX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "ipc/ipc_int.h"
#include "ipc/unix_sock.h"

enum cmd_kind { CMD_ATTACH, CMD_CANCEL, CMD_PEERFAIL, CMD_REARM, CMD_STOP };

struct ux_cmd {
    struct ux_cmd *next;
    enum cmd_kind kind;
    struct nectar_ipc_conn *conn; /* holds a reference */
    int fd;
    uint64_t gen;
};

struct ux_loop {
    atomic_uint refs;
    uv_loop_t uv;
    uv_async_t wake;
    uv_timer_t timer;
    pthread_t thread;
    atomic_bool running;  /* the thread is inside uv_run */
    pthread_mutex_t lock; /* guards cmds and closed */
    struct ux_cmd *cmd_head, *cmd_tail;
    bool closed;                          /* no more commands accepted */
    struct nectar_ipc_conn *conns;        /* loop thread only */
    struct nectar_ipc_listener *listener; /* set for a listener's loop */
};

struct ux_pending;

struct nectar_ipc_conn {
    atomic_uint refs;      /* memory */
    atomic_uint user_refs; /* handed to users (creator + retains) */
    atomic_uint live_msgs; /* delivered, not yet replied or released */
    bool is_client;
    /* Client: created on first connect or upgrade; atomic because the
     * "am I on its thread" checks read it without the lock. */
    struct ux_loop *_Atomic loop;

    pthread_mutex_t send_lock;
    pthread_mutex_t lock; /* everything below up to "loop thread only" */
    pthread_cond_t cv;    /* state changes, sync replies */
    enum {
        ST_IDLE,
        ST_CONNECTING,
        ST_OPEN,
        ST_PEER_FAILED,
        ST_INVALID,
    } state;
    int fd;
    uint64_t gen;
    char *fail_reason; /* for ST_PEER_FAILED */
    struct ux_pending *pending;
    uint64_t next_id;
    struct ux_cred cred;
    bool has_cred;
    bool final_done; /* the final event (if any) has run */
    bool direct;     /* client without event thread (backend_unix_client.c) */
    bool stalled;    /* a write timed out: no more writes */
    bool reader_active; /* direct mode: a caller is reading the socket */
    void *user_ctx;

    /* Fixed after creation. */
    char *service_name;
    struct ux_req req;
    nectar_ipc_message_cb on_message;
    nectar_ipc_event_cb on_event;
    void *ctx;
    uint32_t call_timeout_ms;
    uint32_t connect_timeout_ms;

    /* Loop thread only. */
    struct nectar_ipc_conn *loop_next, *loop_prev;
    bool in_loop;
    struct ux_io *io;
    struct ipc_buf rx;
    int rx_fds[NECTAR_IPC_MAX_FDS];
    size_t rx_nfds;
    bool rx_busy;
    struct pkt_header rx_hdr;
    bool drop_logged; /* the pending-message bound was hit (logged once) */
};

struct ux_io {
    uv_poll_t poll;
    struct nectar_ipc_conn *conn; /* reference */
    int fd;
};

struct ux_pending {
    struct ux_pending *next, *prev;
    uint64_t id;
    uint64_t gen;
    uint64_t deadline; /* 0 = none */
    nectar_ipc_reply_cb cb;
    void *cb_ctx;
    /* sync waiters */
    bool sync;
    bool done;
    int status;
    nectar_ipc_obj_t *reply;
    nectar_error_t err;
};

/* A received message waiting for its handler's reply or release. */
struct nectar_ipc_message {
    struct nectar_ipc_conn *conn; /* reference */
    nectar_ipc_obj_t *body;
    uint64_t id;
    uint64_t gen;
    bool expects_reply;
};

/* What one read of a packet found (nectar__ux_rx_one). */
enum rx_status { RX_AGAIN, RX_PARTIAL, RX_MESSAGE, RX_EOF, RX_ERROR };

/* ---- backend_unix_loop.c: the event loop ---- */

/* True on l's own event thread. */
bool nectar__ux_on_loop_thread(const struct ux_loop *l);
/* Queues a command for the loop thread (takes its own reference on c).
 * Returns false when the loop no longer takes commands. */
bool nectar__ux_loop_post(struct ux_loop *l, enum cmd_kind kind,
                          struct nectar_ipc_conn *c, int fd, uint64_t gen);
/* A loop with its wake and timer handles, not yet running: NULL (with
 * err) on failure. */
struct ux_loop *nectar__ux_loop_new(nectar_error_t *err);
/* Starts the thread, which holds its own reference. */
int nectar__ux_loop_start(struct ux_loop *l, nectar_error_t *err);
void nectar__ux_loop_unref(struct ux_loop *l);
/* Stops the loop thread and waits for it; not from that thread. */
void nectar__ux_loop_shutdown(struct ux_loop *l);
/* CMD_STOP on the loop thread (or before it ever ran). */
void nectar__ux_loop_stop_all(struct ux_loop *l);
/* A close callback for handles embedded in larger objects. */
void nectar__ux_on_handle_closed(uv_handle_t *h);

/* ---- backend_unix_conn.c: connections ---- */

struct nectar_ipc_conn *nectar__ux_conn_new(void);
void nectar__ux_conn_unref(struct nectar_ipc_conn *c);
/* Pending list; conn->lock held. */
void nectar__ux_pending_add(struct nectar_ipc_conn *c, struct ux_pending *p);
void nectar__ux_pending_unlink(struct nectar_ipc_conn *c, struct ux_pending *p);
struct ux_pending *nectar__ux_pending_find(struct nectar_ipc_conn *c,
                                           uint64_t id);
void nectar__ux_pending_complete(struct nectar_ipc_conn *c,
                                 struct ux_pending *p, int status,
                                 nectar_ipc_obj_t *reply, const char *why);
struct ux_pending *nectar__ux_pending_fail_all(struct nectar_ipc_conn *c,
                                               int status, const char *why);
void nectar__ux_pending_run_failed(struct ux_pending *list, int status,
                                   const char *why);
void nectar__ux_fire_event(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                           const char *reason);
/* Adds c to its loop's list (loop thread; takes a reference). */
void nectar__ux_loop_list_add(struct ux_loop *l, struct nectar_ipc_conn *c);
void nectar__ux_conn_detach(struct nectar_ipc_conn *c, nectar_ipc_event_t ev,
                            const char *reason, bool final);
void nectar__ux_loop_cancel_conn(struct nectar_ipc_conn *c);
void nectar__ux_protocol_error(struct nectar_ipc_conn *c, const char *what);
/* body is consumed. */
void nectar__ux_deliver_message(struct nectar_ipc_conn *c,
                                nectar_ipc_obj_t *body, uint8_t type,
                                uint64_t id, uint64_t gen);
void nectar__ux_deliver_reply(struct nectar_ipc_conn *c, nectar_ipc_obj_t *body,
                              uint64_t id);

/* ---- backend_unix_io.c: receive assembly and writes ---- */

void nectar__ux_rx_reset(struct nectar_ipc_conn *c);
int nectar__ux_rx_decode(struct nectar_ipc_conn *c, nectar_ipc_obj_t **body,
                         struct pkt_header *h, nectar_error_t *err);
enum rx_status nectar__ux_rx_one(struct nectar_ipc_conn *c, int fd, int flags,
                                 const char **why);
/* Starts watching fd for c (loop thread). */
void nectar__ux_conn_attach(struct nectar_ipc_conn *c, int fd, uint64_t gen);
int nectar__ux_conn_write(struct nectar_ipc_conn *c, uint8_t type, uint64_t id,
                          uint64_t gen, const nectar_ipc_obj_t *msg,
                          nectar_error_t *err);

/* ---- backend_unix_client.c: client side ---- */

int nectar__ux_ensure_open(struct nectar_ipc_conn *c, uint64_t *gen,
                           nectar_error_t *err);
void nectar__ux_direct_close(struct nectar_ipc_conn *c, bool as_reader,
                             bool final, int status, const char *why);
void nectar__ux_direct_read(struct nectar_ipc_conn *c, uint64_t deadline);
int nectar__ux_direct_upgrade(struct nectar_ipc_conn *c, nectar_error_t *err);
int nectar__ux_connect(const nectar_ipc_client_config_t *cfg,
                       nectar_ipc_conn_t **out, nectar_error_t *err);

/* ---- backend_unix_listener.c: listener ---- */

/* Stops the accept poll and closes the listener's handles (loop thread). */
void nectar__ux_listener_stop_io(struct nectar_ipc_listener *ls);
int nectar__ux_listen(const nectar_ipc_listener_config_t *cfg,
                      nectar_ipc_listener_t **out, nectar_error_t *err);
void nectar__ux_listener_close(nectar_ipc_listener_t *ls);

#endif
