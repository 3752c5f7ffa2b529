/*
 * process_int.h - the contract between the process-identity front
 * (process.c) and its one-per-platform backends (backend_linux.c,
 * backend_apple.c).  The front validates arguments and derives what is
 * pure text (systemd unit from a cgroup path); a backend only makes OS
 * calls.  A NULL slot means "not on this platform" (NECTAR_ENOTSUP).
 */
#ifndef NECTAR_PROCESS_INT_H
#define NECTAR_PROCESS_INT_H

#include "nectar/process.h"

struct nectar__process_backend {
    const char *name;
    unsigned caps; /* NECTAR_PROCESS_CAP_* */
    /* local/remote already validated: same family, AF_INET or AF_INET6. */
    int (*socket_owner)(int protocol, const struct sockaddr *local,
                        const struct sockaddr *remote,
                        nectar_process_owner_t *out, nectar_error_t *err);
    /* pid > 0, cap > 0. */
    int (*exe_path)(int32_t pid, char *buf, size_t cap, nectar_error_t *err);
    int (*cgroup_path)(int32_t pid, char *buf, size_t cap,
                       nectar_error_t *err);
    /* bytes != NULL, len == 32. */
    int32_t (*audit_token_to_pid)(const uint8_t *bytes, size_t len);
};

#if defined(__APPLE__)
extern const struct nectar__process_backend nectar__process_backend_apple;
#elif defined(__linux__)
extern const struct nectar__process_backend nectar__process_backend_linux;
#endif

#endif
