/*
 * nectarctl - talks to the nectar daemon's control service over IPC.
 *
 *   nectarctl [--service NAME] [--timeout MS] status
 *   nectarctl ... flows [--json]
 *   nectarctl ... message JSON
 *   nectarctl ... ca install|uninstall|rotate
 *   nectarctl ... settings set KEY=VALUE...
 *   nectarctl ... keylog on|off|status
 *
 * Exit status: 0 success, 1 the daemon reported a failure, 2 usage,
 * 3 the daemon is not reachable, 4 the daemon refused this caller.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nectar/ipc.h"

enum {
    EXIT_OPFAIL = 1,
    EXIT_USAGE = 2,
    EXIT_ABSENT = 3,
    EXIT_REFUSED = 4,
};

struct ctl {
    const char *service;
    uint32_t timeout_ms;
    nectar_ipc_conn_t *conn;
};

static int usage(void)
{
    fprintf(stderr,
            "usage: nectarctl [--service NAME] [--timeout MS] COMMAND\n"
            "  status                       daemon state\n"
            "  flows [--json]               live flows\n"
            "  message JSON                 send an app message\n"
            "  ca install|uninstall|rotate  manage the MITM root CA\n"
            "  settings set KEY=VALUE...    html_badge_enabled=true|false,\n"
            "                               html_badge_label=TEXT,\n"
            "                               exclude_domains=a.com,b.org\n"
            "  keylog on|off|status         TLS key logging toggle\n"
            "default service: %s\n",
            NECTAR_CONTROL_SERVICE_DEFAULT);
    return EXIT_USAGE;
}

/* One call; prints a clear reason and returns an exit status on error. */
static int call(struct ctl *c, const char *selector, nectar_ipc_obj_t *arg,
                nectar_ipc_obj_t **result)
{
    nectar_error_t err = {0};
    nectar_ipc_remote_t remote;
    int rc = nectar_ipc_call(c->conn, selector, arg, c->timeout_ms, result,
                             &remote, &err);
    nectar_ipc_release(arg);
    if (rc == 0)
        return 0;
    if (rc == NECTAR_EACCES || rc == NECTAR_EPERM) {
        fprintf(stderr,
                "nectarctl: no permission to connect to '%s' (%s).\n",
                c->service, err.message);
        return EXIT_REFUSED;
    }
    if (rc == NECTAR_EPEER) {
        fprintf(stderr,
                "nectarctl: the daemon at '%s' refused this caller (%s).\n"
                "Run as root or as a member of group '%s'.\n",
                c->service, err.message, NECTAR_CONTROL_GROUP);
        return EXIT_REFUSED;
    }
    if (rc == NECTAR_ECONNREFUSED || rc == NECTAR_ENOENT ||
        rc == NECTAR_ECONNRESET) {
        fprintf(stderr,
                "nectarctl: cannot reach the nectar daemon at '%s' (%s).\n"
                "Is it running?\n",
                c->service, err.message);
        return EXIT_ABSENT;
    }
    fprintf(stderr, "nectarctl: %s failed: %s\n", selector,
            err.message[0] ? err.message : nectar_strerror(rc));
    return EXIT_OPFAIL;
}

static uint64_t u64_field(const nectar_ipc_obj_t *d, const char *key)
{
    uint64_t v = 0;
    nectar_ipc_get_uint64(nectar_ipc_field(d, key), key, &v, NULL);
    return v;
}

static const char *str_field(const nectar_ipc_obj_t *d, const char *key)
{
    const char *s = nectar_ipc_string_ptr(nectar_ipc_field(d, key), NULL);
    return s ? s : "-";
}

static int cmd_status(struct ctl *c)
{
    nectar_ipc_obj_t *r = NULL;
    int rc = call(c, "status:withReply:", nectar_ipc_dict(), &r);
    if (rc != 0)
        return rc;
    printf("nectar daemon %s\n", str_field(r, "version"));
    printf("uptime:     %.1f s\n", (double)u64_field(r, "uptime_ms") / 1e3);
    printf("flows:      %" PRIu64 " tcp, %" PRIu64 " udp (%" PRIu64
           " since start)\n",
           u64_field(r, "tcp_flows"), u64_field(r, "udp_flows"),
           u64_field(r, "total_flows"));
    printf("tls keylog: %s\n",
           nectar_ipc_bool_value(nectar_ipc_field(r, "tls_keylog")) ? "on"
                                                                    : "off");
    if (nectar_ipc_field(r, "handler") != NULL) {
        printf("handler:    %s\n", str_field(r, "handler"));
        printf("ended:      %" PRIu64 " intercepted, %" PRIu64
               " passthrough, %" PRIu64 " blocked, %" PRIu64 " promoted\n",
               u64_field(r, "intercepted"), u64_field(r, "passthrough"),
               u64_field(r, "blocked"), u64_field(r, "promoted"));
    }
    nectar_ipc_release(r);
    return 0;
}

static int cmd_flows(struct ctl *c, bool json)
{
    nectar_ipc_obj_t *r = NULL;
    int rc = call(c, "flows:withReply:", nectar_ipc_dict(), &r);
    if (rc != 0)
        return rc;
    nectar_ipc_obj_t *flows = nectar_ipc_field(r, "flows");
    if (json) {
        char *s = nectar_ipc_to_json(flows);
        printf("%s\n", s ? s : "[]");
        nectar_ipc_free_string(s);
        nectar_ipc_release(r);
        return 0;
    }
    printf("%-8s %-5s %-28s %-32s %10s %10s %8s\n", "ID", "PROTO", "APP",
           "DESTINATION", "IN", "OUT", "AGE(s)");
    for (size_t i = 0; i < nectar_ipc_count(flows); i++) {
        nectar_ipc_obj_t *f = nectar_ipc_array_get(flows, i);
        printf("%-8" PRIu64 " %-5s %-28s %-32s %10" PRIu64 " %10" PRIu64
               " %8.1f\n",
               u64_field(f, "id"), str_field(f, "protocol"),
               str_field(f, "app"), str_field(f, "destination"),
               u64_field(f, "bytes_in"), u64_field(f, "bytes_out"),
               (double)u64_field(f, "age_ms") / 1e3);
    }
    nectar_ipc_release(r);
    return 0;
}

static int cmd_message(struct ctl *c, const char *text)
{
    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    nectar_ipc_dict_set(arg, "message", nectar_ipc_data(text, strlen(text)),
                        NULL);
    nectar_ipc_obj_t *r = NULL;
    int rc = call(c, "message:withReply:", arg, &r);
    if (rc != 0)
        return rc;
    size_t len = 0;
    const void *p = nectar_ipc_data_ptr(nectar_ipc_field(r, "reply"), &len);
    if (p != NULL)
        printf("%.*s\n", (int)len, (const char *)p);
    else
        printf("(no reply)\n");
    nectar_ipc_release(r);
    return 0;
}

/* Prints a CA reply; ok=false becomes exit 1 with the daemon's text. */
static int print_ca(nectar_ipc_obj_t *r, const char *const *keys,
                    const char *const *labels, size_t n)
{
    if (!nectar_ipc_bool_value(nectar_ipc_field(r, "ok"))) {
        fprintf(stderr, "nectarctl: daemon reported: %s\n",
                str_field(r, "error"));
        return EXIT_OPFAIL;
    }
    for (size_t i = 0; i < n; i++)
        printf("%s: %s\n", labels[i], str_field(r, keys[i]));
    return 0;
}

static int cmd_ca(struct ctl *c, const char *op)
{
    static const char *const one_key[] = {"cert_der_b64"};
    static const char *const one_label[] = {"certificate (DER, base64)"};
    static const char *const rot_keys[] = {"previous_cert_der_b64",
                                           "new_cert_der_b64"};
    static const char *const rot_labels[] = {"previous (DER, base64)",
                                             "new (DER, base64)"};
    const char *sel;
    if (strcmp(op, "install") == 0)
        sel = "installRootCA:withReply:";
    else if (strcmp(op, "uninstall") == 0)
        sel = "uninstallRootCA:withReply:";
    else if (strcmp(op, "rotate") == 0)
        sel = "rotateRootCA:withReply:";
    else
        return usage();
    nectar_ipc_obj_t *r = NULL;
    int rc = call(c, sel, nectar_ipc_dict(), &r);
    if (rc != 0)
        return rc;
    bool rot = strcmp(op, "rotate") == 0;
    rc = print_ca(r, rot ? rot_keys : one_key, rot ? rot_labels : one_label,
                  rot ? 2 : 1);
    nectar_ipc_release(r);
    return rc;
}

static int parse_bool(const char *v, bool *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "on") == 0 || strcmp(v, "1") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "off") == 0 ||
        strcmp(v, "0") == 0) {
        *out = false;
        return 0;
    }
    return -1;
}

static nectar_ipc_obj_t *domain_list(const char *v)
{
    nectar_ipc_obj_t *arr = nectar_ipc_array();
    while (*v != '\0') {
        size_t len = strcspn(v, ",");
        if (len != 0)
            nectar_ipc_array_append(arr, nectar_ipc_string_len(v, len), NULL);
        v += len;
        if (*v == ',')
            v++;
    }
    return arr;
}

/* KEY=VALUE into the updateSettings request; -1 on a bad pair. */
static int add_setting(nectar_ipc_obj_t *arg, const char *pair)
{
    const char *eq = strchr(pair, '=');
    if (eq == NULL)
        return -1;
    size_t klen = (size_t)(eq - pair);
    const char *v = eq + 1;
    bool b;
    if (klen == 18 && strncmp(pair, "html_badge_enabled", klen) == 0) {
        if (parse_bool(v, &b) != 0)
            return -1;
        return nectar_ipc_dict_set(arg, "html_badge_enabled",
                                   nectar_ipc_bool(b), NULL);
    }
    if (klen == 16 && strncmp(pair, "html_badge_label", klen) == 0)
        return nectar_ipc_dict_set(arg, "html_badge_label",
                                   nectar_ipc_string(v), NULL);
    if (klen == 15 && strncmp(pair, "exclude_domains", klen) == 0)
        return nectar_ipc_dict_set(arg, "exclude_domains", domain_list(v),
                                   NULL);
    return -1;
}

static int cmd_settings(struct ctl *c, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[0], "set") != 0)
        return usage();
    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    for (int i = 1; i < argc; i++) {
        if (add_setting(arg, argv[i]) != 0) {
            fprintf(stderr, "nectarctl: bad setting '%s'\n", argv[i]);
            nectar_ipc_release(arg);
            return usage();
        }
    }
    nectar_ipc_obj_t *r = NULL;
    int rc = call(c, "updateSettings:withReply:", arg, &r);
    if (rc != 0)
        return rc;
    bool ok = nectar_ipc_bool_value(nectar_ipc_field(r, "ok"));
    if (ok)
        printf("settings updated\n");
    else
        fprintf(stderr, "nectarctl: daemon reported: %s\n",
                str_field(r, "error"));
    nectar_ipc_release(r);
    return ok ? 0 : EXIT_OPFAIL;
}

static int cmd_keylog(struct ctl *c, const char *op)
{
    bool on = false;
    bool get = strcmp(op, "status") == 0;
    if (!get && parse_bool(op, &on) != 0)
        return usage();
    nectar_ipc_obj_t *arg = nectar_ipc_dict();
    if (!get)
        nectar_ipc_dict_set(arg, "enabled", nectar_ipc_bool(on), NULL);
    nectar_ipc_obj_t *r = NULL;
    int rc = call(
        c, get ? "getTlsKeylog:withReply:" : "setTlsKeylog:withReply:", arg,
        &r);
    if (rc != 0)
        return rc;
    printf("tls keylog: %s\n",
           nectar_ipc_bool_value(nectar_ipc_field(r, "enabled")) ? "on"
                                                                 : "off");
    nectar_ipc_release(r);
    return 0;
}

static int dispatch(struct ctl *c, int argc, char **argv)
{
    const char *cmd = argv[0];
    if (strcmp(cmd, "status") == 0 && argc == 1)
        return cmd_status(c);
    if (strcmp(cmd, "flows") == 0 && argc <= 2) {
        bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
        if (argc == 2 && !json)
            return usage();
        return cmd_flows(c, json);
    }
    if (strcmp(cmd, "message") == 0 && argc == 2)
        return cmd_message(c, argv[1]);
    if (strcmp(cmd, "ca") == 0 && argc == 2)
        return cmd_ca(c, argv[1]);
    if (strcmp(cmd, "settings") == 0)
        return cmd_settings(c, argc - 1, argv + 1);
    if (strcmp(cmd, "keylog") == 0 && argc == 2)
        return cmd_keylog(c, argv[1]);
    return usage();
}

int main(int argc, char **argv)
{
    struct ctl c = {.service = NECTAR_CONTROL_SERVICE_DEFAULT,
                    .timeout_ms = 10000};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--service") == 0 && i + 1 < argc)
            c.service = argv[++i];
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            c.timeout_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
        else
            return usage();
    }
    if (i >= argc)
        return usage();
    nectar_ipc_client_config_t cfg = {.service_name = c.service};
    nectar_error_t err = {0};
    if (nectar_ipc_connect(&cfg, &c.conn, &err) != 0) {
        fprintf(stderr, "nectarctl: %s\n", err.message);
        return EXIT_USAGE;
    }
    int rc = dispatch(&c, argc - i, argv + i);
    nectar_ipc_conn_release(c.conn);
    return rc;
}
