/*
 * ipc.c - the front of the IPC transport: argument checks, freezing of
 * outgoing messages, requirement policy, then one call into the backend
 * chosen at build time (backend_unix.c or backend_xpc.c).
 */
#include "ipc/ipc_int.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* CMake defines exactly one NECTAR_IPC_BACKEND_* for this module. */
#if defined(NECTAR_IPC_BACKEND_XPC)
#define BACKEND (&nectar__ipc_backend_xpc)
#else
#define BACKEND (&nectar__ipc_backend_unix)
#endif

/* ---- requirement policy ---------------------------------------------- */

static bool peer_in_group(const nectar_ipc_peer_t *p, gid_t gid)
{
    if (p->gid == gid)
        return true;
    for (size_t i = 0; i < p->ngroups; i++) {
        if (p->groups[i] == gid)
            return true;
    }
    return false;
}

static bool same_exe_as_self(const char *exe)
{
    struct stat a, b;
    if (exe == NULL || stat("/proc/self/exe", &a) != 0 || stat(exe, &b) != 0)
        return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int nectar_ipc_requirement_check(const nectar_ipc_requirement_t *req,
                                 const nectar_ipc_peer_t *peer,
                                 nectar_error_t *err)
{
    if (req == NULL || req->flags == 0)
        return 0;
    if (peer == NULL)
        return nectar_error_set(err, NECTAR_EPEER, "peer unknown");
    if ((req->flags & NECTAR_IPC_REQ_OR_ROOT) && peer->uid == 0)
        return 0;
    unsigned f = req->flags;
    if ((f & NECTAR_IPC_REQ_UID) && peer->uid != req->uid)
        return nectar_error_set(err, NECTAR_EPEER,
                                "peer uid %u is not the required uid %u",
                                (unsigned)peer->uid, (unsigned)req->uid);
    if ((f & NECTAR_IPC_REQ_GID) && !peer_in_group(peer, req->gid))
        return nectar_error_set(err, NECTAR_EPEER,
                                "peer (uid %u) is not in group %u",
                                (unsigned)peer->uid, (unsigned)req->gid);
    if ((f & NECTAR_IPC_REQ_EXE_PATH) &&
        (peer->exe == NULL || req->exe_path == NULL ||
         strcmp(peer->exe, req->exe_path) != 0))
        return nectar_error_set(err, NECTAR_EPEER,
                                "peer executable %s is not %s",
                                peer->exe ? peer->exe : "(unknown)",
                                req->exe_path ? req->exe_path : "(unset)");
    if ((f & NECTAR_IPC_REQ_SAME_EXE) && !same_exe_as_self(peer->exe))
        return nectar_error_set(err, NECTAR_EPEER,
                                "peer executable %s is not ours",
                                peer->exe ? peer->exe : "(unknown)");
    if ((f & NECTAR_IPC_REQ_PREDICATE) &&
        (req->predicate == NULL || !req->predicate(peer, req->predicate_ctx)))
        return nectar_error_set(err, NECTAR_EPEER,
                                "peer refused by the custom predicate");
    return 0;
}

static int check_req_supported(const nectar_ipc_requirement_t *req,
                               nectar_error_t *err)
{
    if (req == NULL)
        return 0;
    unsigned missing = req->flags & ~BACKEND->req_supported;
    if (missing != 0)
        return nectar_error_set(err, NECTAR_ENOTSUP,
                                "ipc: requirement kinds 0x%x are not "
                                "available on the %s backend",
                                missing, BACKEND->name);
    if ((req->flags & NECTAR_IPC_REQ_EXE_PATH) && req->exe_path == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: exe path requirement without a path");
    if ((req->flags & NECTAR_IPC_REQ_PREDICATE) && req->predicate == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: predicate requirement without one");
    return 0;
}

/* ---- listeners and connections --------------------------------------- */

static int check_name(const char *name, nectar_error_t *err)
{
    if (name == NULL || name[0] == '\0')
        return nectar_error_set(err, NECTAR_EINVAL, "ipc: empty service name");
    if (strlen(name) > 100)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: service name longer than 100 bytes");
    return 0;
}

int nectar_ipc_listen(const nectar_ipc_listener_config_t *cfg,
                      nectar_ipc_listener_t **out, nectar_error_t *err)
{
    if (out != NULL)
        *out = NULL;
    if (cfg == NULL || out == NULL || cfg->on_message == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: listen needs a config with "
                                "on_message and an out pointer");
    int rc = check_name(cfg->service_name, err);
    if (rc == 0)
        rc = check_req_supported(cfg->requirement, err);
    if (rc != 0)
        return rc;
    return BACKEND->listen(cfg, out, err);
}

void nectar_ipc_listener_close(nectar_ipc_listener_t *l)
{
    if (l != NULL)
        BACKEND->listener_close(l);
}

int nectar_ipc_connect(const nectar_ipc_client_config_t *cfg,
                       nectar_ipc_conn_t **out, nectar_error_t *err)
{
    if (out != NULL)
        *out = NULL;
    if (cfg == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: connect needs a config and an out "
                                "pointer");
    int rc = check_name(cfg->service_name, err);
    if (rc == 0)
        rc = check_req_supported(cfg->requirement, err);
    if (rc != 0)
        return rc;
    return BACKEND->connect(cfg, out, err);
}

/* The top level of every message must be a dictionary (libxpc aborts
 * otherwise; we refuse before touching the transport). */
static int check_msg(const nectar_ipc_conn_t *c, const nectar_ipc_obj_t *m,
                     nectar_error_t *err)
{
    if (c == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ipc: NULL connection");
    if (nectar_ipc_type(m) != NECTAR_IPC_DICT || m == NULL)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "ipc: top-level message must be a "
                                "dictionary");
    nectar__ipc_freeze(m);
    return 0;
}

int nectar_ipc_send(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *m,
                    nectar_error_t *err)
{
    int rc = check_msg(c, m, err);
    return rc != 0 ? rc : BACKEND->send(c, m, err);
}

int nectar_ipc_send_with_reply(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *m,
                               uint32_t timeout_ms, nectar_ipc_reply_cb cb,
                               void *ctx, uint64_t *id, nectar_error_t *err)
{
    int rc = check_msg(c, m, err);
    if (rc == 0 && cb == NULL)
        rc = nectar_error_set(err, NECTAR_EINVAL, "ipc: NULL reply callback");
    if (rc != 0)
        return rc;
    return BACKEND->send_with_reply(c, m, timeout_ms, cb, ctx, id, err);
}

int nectar_ipc_send_sync(nectar_ipc_conn_t *c, const nectar_ipc_obj_t *m,
                         uint32_t timeout_ms, nectar_ipc_obj_t **reply,
                         nectar_error_t *err)
{
    if (reply != NULL)
        *reply = NULL;
    int rc = check_msg(c, m, err);
    if (rc == 0 && reply == NULL)
        rc = nectar_error_set(err, NECTAR_EINVAL, "ipc: NULL reply pointer");
    if (rc != 0)
        return rc;
    return BACKEND->send_sync(c, m, timeout_ms, reply, err);
}

int nectar_ipc_cancel_request(nectar_ipc_conn_t *c, uint64_t id)
{
    return c == NULL ? NECTAR_EINVAL : BACKEND->cancel_request(c, id);
}

void nectar_ipc_conn_cancel(nectar_ipc_conn_t *c)
{
    if (c != NULL)
        BACKEND->conn_cancel(c);
}

nectar_ipc_conn_t *nectar_ipc_conn_retain(nectar_ipc_conn_t *c)
{
    return c == NULL ? NULL : BACKEND->conn_retain(c);
}

void nectar_ipc_conn_release(nectar_ipc_conn_t *c)
{
    if (c != NULL)
        BACKEND->conn_release(c);
}

int nectar_ipc_conn_peer(nectar_ipc_conn_t *c, nectar_ipc_peer_t *out)
{
    if (c == NULL || out == NULL)
        return NECTAR_EINVAL;
    return BACKEND->conn_peer(c, out);
}

void nectar_ipc_conn_set_context(nectar_ipc_conn_t *c, void *ctx)
{
    if (c != NULL)
        BACKEND->conn_set_context(c, ctx);
}

void *nectar_ipc_conn_get_context(nectar_ipc_conn_t *c)
{
    return c == NULL ? NULL : BACKEND->conn_get_context(c);
}

nectar_ipc_obj_t *nectar_ipc_message_body(const nectar_ipc_message_t *m)
{
    return m == NULL ? NULL : BACKEND->message_body(m);
}

bool nectar_ipc_message_expects_reply(const nectar_ipc_message_t *m)
{
    return m != NULL && BACKEND->message_expects_reply(m);
}

int nectar_ipc_message_reply(nectar_ipc_message_t *m,
                             const nectar_ipc_obj_t *reply, nectar_error_t *err)
{
    if (m == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "ipc: NULL message");
    if (nectar_ipc_type(reply) != NECTAR_IPC_DICT || reply == NULL) {
        BACKEND->message_release(m);
        return nectar_error_set(err, NECTAR_ESTATE,
                                "ipc: reply not expected (the reply must "
                                "be a dictionary)");
    }
    nectar__ipc_freeze(reply);
    return BACKEND->message_reply(m, reply, err);
}

void nectar_ipc_message_release(nectar_ipc_message_t *m)
{
    if (m != NULL)
        BACKEND->message_release(m);
}
