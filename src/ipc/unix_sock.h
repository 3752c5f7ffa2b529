/*
 * unix_sock.h - internal contract between the backend_unix*.c files and
 * unix_sock.c: packet framing constants, peer credentials, requirement
 * copies, and the descriptor-level helpers (docs/ipc-protocol.md has the
 * wire format).
 */
#ifndef NECTAR_IPC_UNIX_SOCK_H
#define NECTAR_IPC_UNIX_SOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "ipc/ipc_int.h"

#define PKT_MAGIC   0x4E
#define PKT_VERSION 1
#define PKT_HEADER  16
#define PKT_MAX     65536 /* whole packet, header included */
#define PKT_PAYLOAD (PKT_MAX - PKT_HEADER)
#define PKT_MORE    0x01

enum pkt_type {
    PKT_VERDICT = 1,
    PKT_MESSAGE = 2,
    PKT_REQUEST = 3,
    PKT_REPLY = 4,
};

#define SEND_TIMEOUT_MS      5000 /* a peer that never reads is dropped */
#define LOOP_SEND_TIMEOUT_MS 500  /* ...sooner when an event thread waits */
#define READS_PER_TURN       32   /* packets read per wake-up, per conn */
#define ACCEPTS_PER_TURN     64
#define DEFAULT_CONNECT_MS   5000
#define DIRECT_SLICE_MS      50 /* direct-mode readers re-check this often */

struct pkt_header {
    uint8_t type;
    uint8_t flags;
    uint32_t total;
    uint64_t id;
};

/* Header (16 bytes, big-endian fields) to and from bytes.  header_read
 * returns false for a bad magic, version, type or flag. */
void nectar__ux_header_write(uint8_t *p, const struct pkt_header *h);
bool nectar__ux_header_read(const uint8_t *p, size_t n, struct pkt_header *h);

/* Monotonic milliseconds. */
uint64_t nectar__ux_now_ms(void);
/* Waits until fd is ready for events or deadline (ms) passes: 0,
 * NECTAR_ETIMEDOUT or -errno. */
int nectar__ux_wait_fd(int fd, short events, uint64_t deadline);
/* Writes one message as packets (fragments if needed), fds on the first;
 * waits at most timeout_ms for buffer space.  The caller serializes
 * writers.  0 or a negative code (NECTAR_ETIMEDOUT: the peer does not
 * read). */
int nectar__ux_write_message(int fd, uint8_t type, uint64_t id,
                             const uint8_t *payload, size_t len, const int *fds,
                             size_t nfds, uint32_t timeout_ms);

struct ux_cred {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    int pidfd;
    char *exe;
    gid_t *groups;
    size_t ngroups;
};

/* Reads the peer of a connected socket: uid/gid/groups from the kernel,
 * a pidfd, the pid read back from it, the executable.  0 or -errno; *c is
 * always initialised (free with cred_clear). */
int nectar__ux_cred_read(int sock, struct ux_cred *c);
void nectar__ux_cred_clear(struct ux_cred *c);
/* A borrowed view of c for requirement checks. */
void nectar__ux_cred_to_peer(const struct ux_cred *c, nectar_ipc_peer_t *p);

/* A requirement with its strings owned (config copies). */
struct ux_req {
    nectar_ipc_requirement_t r;
    bool set;
};
int nectar__ux_req_copy(struct ux_req *dst,
                        const nectar_ipc_requirement_t *src);
void nectar__ux_req_free(struct ux_req *r);

/* Service name to address: '/'-prefixed names are paths, others abstract.
 * NECTAR_EINVAL when too long. */
int nectar__ux_make_addr(const char *name, struct sockaddr_un *sa,
                         socklen_t *len);
/* Client side of the handshake: reads the verdict packet.  0 accepted,
 * NECTAR_EPEER refused (reason in err), other codes on failure. */
int nectar__ux_read_verdict(int fd, uint64_t deadline, nectar_error_t *err);
/* Listener side: sends the verdict {"accepted", "reason"?}. */
void nectar__ux_send_verdict(int fd, bool ok, const char *reason);
/* The systemd-passed socket for name: fd, -1 when none was passed, or a
 * negative code below -1 (with err) when one was passed but unusable. */
int nectar__ux_activation_fd(const char *name, nectar_error_t *err);

#endif
