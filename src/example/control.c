/*
 * control.c - the example's control routes (spec §5.6) over the IPC
 * control service (include/nectar/ipc.h): the nectar_control_ops_t slots
 * implemented with the nectar/example.h API, and the listener the example
 * binds itself when the engine config names `xpc_service_name`.
 *
 * Fail closed: a service name without `container_signing_identifier` (the
 * required peer) binds nothing; the error is logged and the engine runs.
 * On Linux the required peer is "/path/to/exe", "uid:N" or "gid:N"; any
 * other string is a signing identity (Apple backends).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "example/example_int.h"
#include "nectar/example.h"
#include "nectar/ipc.h"
#include "nectar/log.h"

int nectar__example_control_bind(struct ex_state *ex);
void nectar__example_control_unbind(struct ex_state *ex);

static int ctl_update_settings(void *ctx, const nectar_control_settings_t *s,
                               nectar_error_t *err)
{
    (void)ctx;
    json_t *o = json_object();
    if (o == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    if (s->has_html_badge_enabled)
        json_object_set_new(o, "html_badge_enabled",
                            json_boolean(s->html_badge_enabled));
    if (s->html_badge_label != NULL)
        json_object_set_new(o, "html_badge_label",
                            json_string(s->html_badge_label));
    if (s->has_exclude_domains) {
        json_t *a = json_array();
        for (size_t i = 0; i < s->n_exclude_domains; i++)
            json_array_append_new(a, json_string(s->exclude_domains[i]));
        json_object_set_new(o, "exclude_domains", a);
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    int rc = nectar_example_update_settings(text, strlen(text), err);
    free(text); /* checksrc: allow (jansson's allocator) */
    return rc;
}

static void ca_result(nectar_control_ca_result_t *res, int rc,
                      const nectar_error_t *err)
{
    res->ok = rc == 0;
    if (rc != 0)
        snprintf(res->error, sizeof(res->error), "%s", err->message);
}

static void ctl_install(void *ctx, nectar_control_ca_result_t *res)
{
    (void)ctx;
    nectar_error_t err = {0};
    int rc =
        nectar_example_ca_install(&res->cert_der, &res->cert_der_len, &err);
    ca_result(res, rc, &err);
}

static void ctl_uninstall(void *ctx, nectar_control_ca_result_t *res)
{
    (void)ctx;
    nectar_error_t err = {0};
    int rc =
        nectar_example_ca_uninstall(&res->cert_der, &res->cert_der_len, &err);
    ca_result(res, rc, &err);
}

static void ctl_rotate(void *ctx, nectar_control_ca_result_t *res)
{
    (void)ctx;
    nectar_error_t err = {0};
    int rc = nectar_example_ca_rotate(&res->cert_der, &res->cert_der_len,
                                      &res->previous_der,
                                      &res->previous_der_len, &err);
    ca_result(res, rc, &err);
}

static bool ctl_set_keylog(void *ctx, bool on)
{
    (void)ctx;
    return nectar_example_set_tls_keylog(on);
}

static bool ctl_get_keylog(void *ctx)
{
    (void)ctx;
    return nectar_example_get_tls_keylog();
}

static int ctl_status(void *ctx, nectar_control_status_t *out)
{
    struct ex_state *ex = ctx;
    memset(out, 0, sizeof(*out));
    out->version = "nectar example";
    if (ex == NULL)
        return NECTAR_ESTATE;
    out->uptime_ms = ex_now_ms() - ex->created_ms;
    out->tcp_flows = (uint64_t)atomic_load(&ex->stats.tcp.live);
    out->udp_flows = (uint64_t)atomic_load(&ex->stats.udp.live);
    out->total_flows =
        atomic_load(&ex->stats.tcp.opened) + atomic_load(&ex->stats.udp.opened);
    out->tls_keylog = tls_keylog_enabled(ex->keylog);
    return 0;
}

static void ctl_free(void *ctx, uint8_t *p)
{
    (void)ctx;
    nectar_free(p);
}

NECTAR_API void nectar_example_control_ops(nectar_control_ops_t *ops)
{
    memset(ops, 0, sizeof(*ops));
    ops->update_settings = ctl_update_settings;
    ops->install_root_ca = ctl_install;
    ops->uninstall_root_ca = ctl_uninstall;
    ops->rotate_root_ca = ctl_rotate;
    ops->set_tls_keylog = ctl_set_keylog;
    ops->get_tls_keylog = ctl_get_keylog;
    ops->free_bytes = ctl_free;
}

/* Parses the required peer; false when it cannot be expressed. */
static bool requirement_of(const char *peer, nectar_ipc_requirement_t *req)
{
    memset(req, 0, sizeof(*req));
    char *end;
    if (peer[0] == '/') {
        req->flags = NECTAR_IPC_REQ_EXE_PATH;
        req->exe_path = peer;
    } else if (strncmp(peer, "uid:", 4) == 0) {
        req->flags = NECTAR_IPC_REQ_UID;
        req->uid = (uid_t)strtoul(peer + 4, &end, 10);
        return *end == '\0' && end != peer + 4;
    } else if (strncmp(peer, "gid:", 4) == 0) {
        req->flags = NECTAR_IPC_REQ_GID;
        req->gid = (gid_t)strtoul(peer + 4, &end, 10);
        return *end == '\0' && end != peer + 4;
    } else {
        req->flags = NECTAR_IPC_REQ_TEAM_IDENTITY;
        req->signing_id = peer;
    }
    return true;
}

int nectar__example_control_bind(struct ex_state *ex)
{
    const char *name = ex->cfg.ipc_service_name;
    const char *peer = ex->cfg.ipc_required_peer;
    if (name == NULL || name[0] == '\0')
        return 0;
    nectar_ipc_requirement_t req;
    if (peer == NULL || peer[strspn(peer, " \t")] == '\0' ||
        !requirement_of(peer, &req)) {
        nectar_log(NECTAR_LOG_ERROR, EX_TAG,
                   "xpc_service_name %s without a usable "
                   "container_signing_identifier: control not bound",
                   name);
        return NECTAR_ECONFIG;
    }
    nectar_control_ops_t ops;
    nectar_example_control_ops(&ops);
    ops.ctx = ex;
    ops.status = ctl_status;
    nectar_control_t *c = NULL;
    nectar_error_t err = {0};
    int rc = nectar_control_start(name, &req, &ops, &c, &err);
    if (rc != 0) {
        nectar_log(NECTAR_LOG_ERROR, EX_TAG, "control on %s: %s", name,
                   err.message);
        return rc;
    }
    ex->control = c;
    nectar_log(NECTAR_LOG_INFO, EX_TAG, "control service on %s", name);
    return 0;
}

void nectar__example_control_unbind(struct ex_state *ex)
{
    if (ex->control != NULL)
        nectar_control_stop(ex->control);
    ex->control = NULL;
}
