/*
 * process.c - the process-identity front: argument checks, the one choice
 * of backend for this platform, and the text-only helpers (systemd unit
 * from a cgroup path) that every backend shares.
 */
#include "process/process_int.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* The one #if chain choosing this build's backend (curl vtls style). */
#if defined(__APPLE__)
static const struct nectar__process_backend *const backend =
    &nectar__process_backend_apple;
#elif defined(__linux__)
static const struct nectar__process_backend *const backend =
    &nectar__process_backend_linux;
#else
static const struct nectar__process_backend none_backend = {"none", 0,
                                                              NULL, NULL,
                                                              NULL, NULL};
static const struct nectar__process_backend *const backend = &none_backend;
#endif

const char *nectar_process_backend_name(void)
{
    return backend->name;
}

unsigned nectar_process_capabilities(void)
{
    return backend->caps;
}

static int not_supported(nectar_error_t *err, const char *what)
{
    return nectar_error_set(err, NECTAR_ENOTSUP,
                            "%s is not available on the %s backend", what,
                            backend->name);
}

int nectar_process_socket_owner(int protocol, const struct sockaddr *local,
                                const struct sockaddr *remote,
                                nectar_process_owner_t *out,
                                nectar_error_t *err)
{
    if (local == NULL || remote == NULL || out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "socket_owner: NULL");
    if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "socket_owner: protocol %d is not TCP/UDP",
                                protocol);
    if (local->sa_family != remote->sa_family ||
        (local->sa_family != AF_INET && local->sa_family != AF_INET6))
        return nectar_error_set(err, NECTAR_EINVAL,
                                "socket_owner: families %d/%d",
                                local->sa_family, remote->sa_family);
    if (backend->socket_owner == NULL)
        return not_supported(err, "socket owner lookup");
    return backend->socket_owner(protocol, local, remote, out, err);
}

int nectar_process_exe_path(int32_t pid, char *buf, size_t cap,
                            nectar_error_t *err)
{
    if (pid <= 0 || buf == NULL || cap == 0)
        return nectar_error_set(err, NECTAR_EINVAL, "exe_path: bad argument");
    if (backend->exe_path == NULL)
        return not_supported(err, "pid to path");
    return backend->exe_path(pid, buf, cap, err);
}

int nectar_process_cgroup_path(int32_t pid, char *buf, size_t cap,
                               nectar_error_t *err)
{
    if (pid <= 0 || buf == NULL || cap == 0)
        return nectar_error_set(err, NECTAR_EINVAL, "cgroup: bad argument");
    if (backend->cgroup_path == NULL)
        return not_supported(err, "pid to cgroup");
    return backend->cgroup_path(pid, buf, cap, err);
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

int nectar_process_unit_from_cgroup(const char *cgroup, char *buf, size_t cap)
{
    if (cgroup == NULL || buf == NULL || cap == 0)
        return NECTAR_EINVAL;
    /* Walk the components from the end: the innermost unit wins, so a
     * process in "user@1000.service/app.slice/foo.scope" reports foo.scope
     * and a service's own sub-cgroup ("x.service/payload") reports x. */
    size_t end = strlen(cgroup);
    while (end > 0) {
        size_t start = end;
        while (start > 0 && cgroup[start - 1] != '/')
            start--;
        size_t n = end - start;
        const char *c = cgroup + start;
        if (ends_with(c, n, ".service") || ends_with(c, n, ".scope")) {
            snprintf(buf, cap, "%.*s", (int)n, c);
            return 0;
        }
        end = start > 0 ? start - 1 : 0;
    }
    return NECTAR_ENOENT;
}

int nectar_process_systemd_unit(int32_t pid, char *buf, size_t cap,
                                nectar_error_t *err)
{
    char cg[512];
    int rc = nectar_process_cgroup_path(pid, cg, sizeof(cg), err);
    if (rc != 0)
        return rc;
    rc = nectar_process_unit_from_cgroup(cg, buf, cap);
    if (rc != 0)
        return nectar_error_set(err, rc, "pid %d is in no systemd unit (%s)",
                                (int)pid, cg);
    return 0;
}

int32_t nectar_process_audit_token_to_pid(const uint8_t *bytes, size_t len)
{
    if (bytes == NULL || len != 32 || backend->audit_token_to_pid == NULL)
        return -1;
    return backend->audit_token_to_pid(bytes, len);
}
