/*
 * helpers.h - peers for the host tests: a TCP test server with a few
 * scripted behaviours, a poll-driven client that checks every byte against
 * a deterministic pattern, a UDP echo server, and small sim wrappers.
 *
 * Protocol: a client opens with a 16-byte header {mode, seed, n} (host
 * byte order), then the upload.  The server's reply depends on mode.
 */
#ifndef NECTAR_TESTS_HOST_HELPERS_H
#define NECTAR_TESTS_HOST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "host/sim/sim.h"

enum peer_mode {
    M_DOWNLOAD = 1, /* server sends n bytes of pattern(seed), then FIN */
    M_UPLOAD = 2,   /* server reads to EOF checking pattern(seed), replies
                       9 bytes: u64 count, u8 ok */
    M_ECHO = 3,     /* server echoes to EOF, then FIN */
    M_HALF = 4,     /* server reads to EOF (client half-closed), then sends
                       n bytes of pattern(seed ^ 0x55) */
    M_SERVER_FIRST = 5, /* server sends n bytes, FIN, then reads to EOF and
                           records count/ok in the result table */
    M_HOLD = 6,     /* server reads to EOF, then stays silent with the
                       connection open (up to 10 s) until the peer goes */
    M_RESET = 7,    /* server reads n bytes (or to EOF), then resets */
};

uint8_t pat_byte(uint32_t seed, uint64_t i);
void pat_fill(uint32_t seed, uint64_t off, uint8_t *buf, size_t n);

/* TCP test server on 127.0.0.1 or ::1 (family), one thread per
 * connection.  Returns the port. */
struct test_server;
struct test_server *server_start(int family, uint16_t *port);
void server_stop(struct test_server *s);
/* Result of an M_SERVER_FIRST connection with this seed (waits up to
 * 5 s); returns the byte count the server read, *ok = pattern matched. */
uint64_t server_first_result(struct test_server *s, uint32_t seed, bool *ok);

struct client_result {
    uint64_t down;  /* bytes received */
    bool down_ok;   /* every received byte matched the expected pattern */
    uint8_t reply[16];
    bool reset;     /* the connection was reset */
};

/* Slow-reader knobs for client_run (0 = off): a small SO_RCVBUF and a
 * sleep after every read, so the proxy's write pumps fill and pause. */
extern int client_rcvbuf;
extern int client_read_sleep_us;

/* Connect to port on loopback (family), send the header and up_n bytes of
 * pattern(seed), shut down the write half (after the server's EOF when
 * send_after_eof), read to EOF checking pattern(down_seed) unless the mode
 * is M_UPLOAD (then the 9-byte reply is kept).  Returns 0 or -errno. */
int client_run(int family, uint16_t port, int mode, uint32_t seed, uint64_t n,
               uint64_t up_n, bool send_after_eof, struct client_result *r);

/* UDP echo server (own thread) on loopback of family, on *port (0: any;
 * the port is returned there). */
struct udp_echo;
struct udp_echo *udp_echo_start(int family, uint16_t *port);
void udp_echo_stop(struct udp_echo *e);

/* A loopback TCP port whose connects hang: a listener with backlog 0 that
 * never accepts, its queue already filled by one connection.  Returns the
 * listening fd; *filler is the filling connection (close both). */
int blackhole_start(uint16_t *port, int *filler);

/* Number of open file descriptors of this process. */
int count_fds(void);
/* List them on stderr (for failure reports). */
void dump_fds(void);

/* Loopback "127.0.0.1:port" / "[::1]:port". */
void loop_addr(int family, uint16_t port, char *buf, size_t n);

#endif
