/*
 * linux_host.h - the Linux host (`nectar run`): nftables TPROXY in front
 * of the shared host core (src/host/core/host.h).
 *
 * Map of src/host/linux:
 *   config.c   the `host` object of the config file (defaults, checks)
 *   rules.c    engine network rules + host config -> one nft ruleset text
 *   nft.c      libnftables: install, delete, stale-table cleanup, sticky set
 *   route.c    rtnetlink policy routing (fwmark rule + local route table)
 *   listen.c   IP_TRANSPARENT listeners, original destination, egress mark
 *   daemon.c   the run loop: TCP accept and UDP flows into the core,
 *              UDP passthrough relay, flow log, counters, shutdown
 *   control.c  the control service nectarctl talks to (status, flows,
 *              app messages; the example's routes when it is the app)
 *
 * Threads: everything here runs on the thread that calls
 * nectar__linux_run (the front loop) except the hooks the core calls on
 * its loop threads (egress_socket, udp_send, udp_closed, flow_closed);
 * those touch only state guarded by the daemon's lock (daemon.c).
 * Errors: negative nectar codes with a message in nectar_error_t.
 */
#ifndef NECTAR_HOST_LINUX_H
#define NECTAR_HOST_LINUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"
#include "nectar/ne_abi.h"

/* The nftables table every run owns (family inet). */
#define NECTAR_LINUX_TABLE "nectar"

typedef struct nectar_linux_config {
    /* The engine JSON: the file without its "host" member (owned). */
    char *engine_json;
    size_t engine_json_len;
    uint16_t tcp_port;          /* TPROXY TCP listener; default 15001 */
    uint16_t udp_port;          /* TPROXY UDP socket; 0 = no UDP capture */
    uint32_t fwmark;            /* packets to divert; default 0x6e63 */
    uint32_t bypass_mark;       /* nectar's own sockets; default 0x6e64 */
    uint32_t bypass_gid;        /* egid of the daemon under local capture:
                                   sockets nectar opens anywhere (engine
                                   services too) carry it; default 28260,
                                   0 = keep the group */
    uint32_t route_table;       /* local-delivery table; default 28259 */
    uint32_t rule_priority;     /* ip rule preference; default 28259 */
    char **interfaces;          /* forwarded traffic from these only */
    size_t n_interfaces;        /*   (0 = any interface) */
    bool capture_forward;       /* prerouting capture; default true */
    bool capture_local;         /* output capture; default false */
    char **cgroups;             /* local capture only from these cgroup v2 */
    size_t n_cgroups;           /*   paths (0 = every local socket) */
    uint32_t connect_timeout_ms;     /* 0 = engine / core default */
    bool sticky_passthrough;         /* default true */
    uint32_t sticky_timeout_s;       /* default 300 */
    uint32_t udp_idle_timeout_ms;    /* default 60000 */
    unsigned loops;                  /* core loop threads; default 2 */
    bool process_identity;           /* sock_diag lookups; default true */
    bool log_flows;                  /* one line per flow; default true */
    bool control;                    /* serve the control service;
                                        default true */
    char *control_service;           /* its IPC name (owned); NULL = the
                                        default, org.nectar.control */
} nectar_linux_config_t;

/* ---- config.c ----------------------------------------------------------- */

/* Parse a config file (JSON object: engine keys plus "host").  On error
 * the message names the path and the reason; *cfg is left empty. */
int nectar__linux_config_load(const char *path, nectar_linux_config_t *cfg,
                              nectar_error_t *err);
/* The same from text (path is only used in messages). */
int nectar__linux_config_parse(const char *text, size_t len, const char *path,
                               nectar_linux_config_t *cfg,
                               nectar_error_t *err);
void nectar__linux_config_defaults(nectar_linux_config_t *cfg);
void nectar__linux_config_free(nectar_linux_config_t *cfg);

/* ---- rules.c ------------------------------------------------------------ */

typedef struct nectar_linux_ruleset {
    char *nft;            /* the `table inet nectar { ... }` text (owned) */
    size_t included;      /* include rules that produced nft rules */
    size_t excluded;      /* exclude rules that produced nft rules */
    size_t invalid;       /* engine rules skipped (logged) */
} nectar_linux_ruleset_t;

/* Build the ruleset text from the engine's rules (may be NULL/0 = match
 * all) and the host config.  NECTAR_ENOMEM only. */
int nectar__linux_rules_build(const RamaTransparentProxyNetworkRule *rules,
                              size_t n, const nectar_linux_config_t *cfg,
                              nectar_linux_ruleset_t *out);
void nectar__linux_ruleset_free(nectar_linux_ruleset_t *rs);

/* The policy routing the run installs, as `ip` commands (for --dry-run and
 * docs), into buf.  Returns buf. */
char *nectar__linux_routes_text(const nectar_linux_config_t *cfg, char *buf,
                                size_t n);

/* ---- nft.c -------------------------------------------------------------- */

/* Load a ruleset text.  The text replaces any table of the same name
 * atomically (one transaction: add, delete, define). */
int nectar__linux_nft_apply(const char *text, nectar_error_t *err);
/* Delete `table inet nectar`; 0 if it was there, NECTAR_ENOENT if not. */
int nectar__linux_nft_delete(nectar_error_t *err);
/* Does the kernel accept a tproxy rule?  0, or NECTAR_ENOTSUP with a hint. */
int nectar__linux_nft_probe_tproxy(nectar_error_t *err);
/* Add protocol/destination to the sticky-passthrough set (its timeout
 * applies).  ip is numeric text. */
int nectar__linux_nft_sticky_add(int family, const char *ip, int protocol,
                                 uint16_t port, nectar_error_t *err);

/* ---- route.c ------------------------------------------------------------ */

/* Add (or delete) for IPv4 and IPv6: `rule fwmark M lookup T pref P` and
 * `route local default dev lo table T`.  Add is idempotent (EEXIST is
 * fine); delete ignores what is already gone. */
int nectar__linux_routes_add(const nectar_linux_config_t *cfg,
                             nectar_error_t *err);
int nectar__linux_routes_del(const nectar_linux_config_t *cfg);

/* Interface index of the route to dst for a socket carrying `mark`
 * (RTM_GETROUTE); > 0, 0 when the route names none, or -errno. */
struct sockaddr;
int nectar__linux_route_oif(const struct sockaddr *dst, uint32_t mark);

/* ---- listen.c ----------------------------------------------------------- */

/* A non-blocking IP_TRANSPARENT listener (TCP) or receive socket (UDP,
 * with IP(V6)_RECVORIGDSTADDR) on the wildcard address of `family`,
 * carrying bypass_mark.  Returns the fd or a negative code
 * (NECTAR_EADDRINUSE with "port in use" in the message). */
int nectar__linux_listen(int family, int type, uint16_t port,
                         uint32_t bypass_mark, nectar_error_t *err);

struct sockaddr;
struct sockaddr_storage;
/* SO_MARK; 0 or -1 with errno. */
int nectar__linux_set_mark(int fd, uint32_t mark);
/* A non-blocking socket carrying the bypass mark; fd or -errno. */
int nectar__linux_egress_socket(int family, int type, uint32_t bypass_mark);
/* A UDP socket bound to orig_dst (transparent) and connected to client,
 * carrying the bypass mark; fd or -errno. */
int nectar__linux_udp_reply_socket(const struct sockaddr *orig_dst,
                                   const struct sockaddr *client,
                                   uint32_t bypass_mark);
/* One datagram from a TPROXY UDP socket with its source and original
 * destination.  Returns its length (may exceed cap: truncated), -EAGAIN,
 * -EPROTO when the datagram carried no original destination, or -errno. */
long nectar__linux_recv_orig(int fd, void *buf, size_t cap,
                             struct sockaddr_storage *from,
                             struct sockaddr_storage *orig_dst);

/* ---- daemon.c ----------------------------------------------------------- */

/* Run until SIGINT/SIGTERM: remove a stale table, open listeners, install
 * routes and rules, serve, then remove everything.  Returns 0 or a code.
 * The engine is consumed (stopped) in every case. */
int nectar__linux_run(const nectar_linux_config_t *cfg,
                      RamaTransparentProxyEngine *engine,
                      nectar_error_t *err);

/* ---- control.c ---------------------------------------------------------- */

struct nectar_host;
typedef struct nectar_linux_control nectar_linux_control_t;

/* Serve the control service (include/nectar/ipc.h) for a running host:
 * status and flows from the host core, app messages to its engine, and,
 * when the engine config selects `"app": "example"`, the example's settings,
 * CA and key-log slots.  Name and switch come from cfg (control,
 * control_service); the requirement is the IPC default (root, or group
 * nectar).  *out is NULL when cfg->control is false.  cfg and host are
 * borrowed until nectar__linux_control_stop.  Front thread.  Errors as for
 * nectar_control_start (e.g. the name is already served). */
int nectar__linux_control_start(const nectar_linux_config_t *cfg,
                                struct nectar_host *host,
                                nectar_linux_control_t **out,
                                nectar_error_t *err);
/* Stop serving and wait for a running slot; before the host stops.
 * NULL-safe. */
void nectar__linux_control_stop(nectar_linux_control_t *c);

#endif
