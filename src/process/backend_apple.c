/*
 * backend_apple.c - process identity on macOS: audit token to pid through
 * libbsm and pid to executable path through libproc.  Thin by design: the
 * token layout is opaque to everyone but libbsm, so the bytes are copied
 * into an audit_token_t and handed over untouched.  Compiled only on Apple.
 */
#if defined(__APPLE__)
#include "process/process_int.h"

#include <bsm/libbsm.h>
#include <errno.h>
#include <libproc.h>
#include <string.h>

static int32_t apple_audit_token_to_pid(const uint8_t *bytes, size_t len)
{
    audit_token_t token;
    if (len != sizeof(token))
        return -1;
    memcpy(&token, bytes, sizeof(token));
    return (int32_t)audit_token_to_pid(token);
}

static int apple_exe_path(int32_t pid, char *buf, size_t cap,
                          nectar_error_t *err)
{
    char path[PROC_PIDPATHINFO_MAXSIZE];
    int n = proc_pidpath(pid, path, sizeof(path));
    if (n <= 0) {
        int e = errno;
        if (e == ESRCH || e == ENOENT)
            return nectar_error_set(err, NECTAR_ENOENT, "pid %d is gone",
                                    (int)pid);
        return nectar_error_set(err, -e, "proc_pidpath(%d): %s", (int)pid,
                                strerror(e));
    }
    size_t len = strnlen(path, (size_t)n);
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, path, len);
    buf[len] = '\0';
    return 0;
}

const struct nectar__process_backend nectar__process_backend_apple = {
    "apple",
    NECTAR_PROCESS_CAP_EXE_PATH | NECTAR_PROCESS_CAP_AUDIT_TOKEN,
    NULL,                     /* socket_owner: NE gives the audit token */
    apple_exe_path,           /* exe_path */
    NULL,                     /* cgroup_path */
    apple_audit_token_to_pid, /* audit_token_to_pid */
};
#endif
