/*
 * process.h - who owns a flow: process identity for flow metadata.
 *
 * Linux: the uid and pid owning a local TCP or UDP socket (found with
 * NETLINK_SOCK_DIAG, then the socket inode is matched under /proc), and
 * for a pid its executable path, cgroup path and systemd unit.  Apple: an
 * audit token to a pid (libbsm) and a pid to its executable path
 * (proc_pidpath).  An operation a platform lacks returns NECTAR_ENOTSUP.
 *
 * Every answer is a racy snapshot (a process may exit or exec at any
 * moment): good for logs and policy hints, never a security boundary.
 *
 * Threading: every function may be called from any thread; none keeps
 * state between calls.  They block briefly on netlink or /proc reads.
 * Buffers are borrowed for the call; strings written are NUL-terminated
 * and truncated to fit.  Errors: negative nectar codes (error.h), with a
 * message in *err when err != NULL.
 */
#ifndef NECTAR_PROCESS_H
#define NECTAR_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "nectar/error.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Owner of a socket.  pid is -1 when the socket was found but no process
 * holding it could be (it may be held by several; the first found wins). */
typedef struct nectar_process_owner {
    uint32_t uid;
    int32_t pid;
    uint64_t inode;
} nectar_process_owner_t;

/* Capability bits of the backend compiled in. */
enum {
    NECTAR_PROCESS_CAP_SOCKET_OWNER = 1 << 0, /* socket -> uid/pid */
    NECTAR_PROCESS_CAP_EXE_PATH = 1 << 1,     /* pid -> executable */
    NECTAR_PROCESS_CAP_CGROUP = 1 << 2,       /* pid -> cgroup, unit */
    NECTAR_PROCESS_CAP_AUDIT_TOKEN = 1 << 3,  /* audit token -> pid */
};

/* Name of the backend ("linux", "apple", "none") and its NECTAR_PROCESS_CAP_*
 * bits.  Never fails. */
NECTAR_API const char *nectar_process_backend_name(void);
NECTAR_API unsigned nectar_process_capabilities(void);

/*
 * Finds the local socket whose own address is `local` and whose peer is
 * `remote` (both AF_INET or both AF_INET6; an IPv4-mapped IPv6 address is
 * looked up as IPv4).  protocol is IPPROTO_TCP or IPPROTO_UDP.  For an
 * unconnected UDP socket `remote` is the address it sent to.
 * Returns 0 and fills *out, NECTAR_ENOENT when no such socket exists in
 * this network namespace (e.g. the flow was forwarded from another host),
 * NECTAR_EINVAL for bad arguments, other codes for netlink failures.
 */
NECTAR_API int nectar_process_socket_owner(int protocol,
                                           const struct sockaddr *local,
                                           const struct sockaddr *remote,
                                           nectar_process_owner_t *out,
                                           nectar_error_t *err);

/* Executable path of pid into buf (cap bytes).  NECTAR_ENOENT when the
 * process is gone; NECTAR_EINVAL when pid <= 0 or cap == 0. */
NECTAR_API int nectar_process_exe_path(int32_t pid, char *buf, size_t cap,
                                       nectar_error_t *err);

/* Unified (v2) cgroup path of pid, e.g. "/system.slice/ssh.service".
 * NECTAR_ENOENT when the process is gone or has no v2 cgroup. */
NECTAR_API int nectar_process_cgroup_path(int32_t pid, char *buf, size_t cap,
                                          nectar_error_t *err);

/* systemd unit of pid, derived from its cgroup path: the last path
 * component ending in .service or .scope ("ssh.service").  NECTAR_ENOENT
 * when the process is in no unit. */
NECTAR_API int nectar_process_systemd_unit(int32_t pid, char *buf, size_t cap,
                                           nectar_error_t *err);

/* Apple: pid from raw audit token bytes (exactly 32 bytes), -1 otherwise
 * and on every platform without audit tokens. */
NECTAR_API int32_t nectar_process_audit_token_to_pid(const uint8_t *bytes,
                                                     size_t len);

/* Pure helper shared by backends and tests: the unit named by a cgroup
 * path (see nectar_process_systemd_unit).  Returns 0 or NECTAR_ENOENT. */
NECTAR_API int nectar_process_unit_from_cgroup(const char *cgroup, char *buf,
                                               size_t cap);

#ifdef __cplusplus
}
#endif
#endif
