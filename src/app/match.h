/*
 * match.h - the built-in handler's flow matcher: IP/CIDR containment, exact
 * and ".suffix" host names, `*` globs, and one `match` object of the
 * engine-config JSON evaluated against flow metadata.
 *
 * No engine dependency and no allocation except in
 * nectar__app_host_pattern_parse (freed by nectar__app_host_pattern_free).
 * All functions are pure over their arguments and callable from any thread;
 * a parsed pattern is immutable and may be shared between threads.
 */
#ifndef NECTAR_APP_MATCH_H
#define NECTAR_APP_MATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "nectar/handler.h"

/* An address (family AF_INET or AF_INET6) with a prefix length.  The host
 * bits beyond `prefix` are always zero. */
struct app_cidr {
    int family;
    uint8_t addr[16]; /* network byte order; first 4 bytes for AF_INET */
    unsigned prefix;  /* 0..32 or 0..128 */
};

/*
 * Parse an IP literal: dotted IPv4, IPv6 (optionally in brackets, with an
 * optional %zone suffix that is ignored).  An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is returned as IPv4, so it matches IPv4 networks.
 * Returns true and fills family/addr, or false (outputs unspecified).
 */
bool nectar__app_ip_parse(const char *text, int *family, uint8_t addr[16]);

/* Parse "addr/prefix" or a bare address (prefix = full length).  Host
 * bits are cleared.  Returns 0, or NECTAR_EINVAL when the text is not a
 * CIDR or the prefix exceeds the family's length. */
int nectar__app_cidr_parse(const char *text, struct app_cidr *out);

bool nectar__app_cidr_contains(const struct app_cidr *c, int family,
                               const uint8_t addr[16]);

/* Format the network address of c (no prefix) into buf; returns buf. */
const char *nectar__app_cidr_addr_text(const struct app_cidr *c, char *buf,
                                       unsigned buflen);

/* Case-insensitive host-name comparisons; one trailing dot on either side
 * is ignored.  `suffix` is given without its leading dot and matches the
 * name itself and every subdomain ("example.com" matches "example.com"
 * and "a.b.example.com", never "badexample.com"). */
bool nectar__app_name_equal(const char *pattern, const char *name);
bool nectar__app_name_suffix(const char *suffix, const char *name);

/* `*` matches any run of characters (also none); every other character
 * matches itself, case-sensitively. */
bool nectar__app_glob(const char *pattern, const char *text);

enum app_host_kind {
    APP_HOST_NAME = 1,   /* exact name */
    APP_HOST_SUFFIX = 2, /* ".suffix" */
    APP_HOST_CIDR = 3,   /* IP literal or CIDR */
};

struct app_host_pattern {
    enum app_host_kind kind;
    char *name; /* NAME/SUFFIX: lower-case, no leading/trailing dot */
    struct app_cidr cidr;
};

/*
 * Parse one `remote_host` value: "10.0.0.0/8", "2001:db8::/32", "::1",
 * ".example.com", "example.com".  Returns 0, NECTAR_ENOMEM, or
 * NECTAR_EINVAL with *why set to a static reason.
 */
int nectar__app_host_pattern_parse(const char *text,
                                   struct app_host_pattern *out,
                                   const char **why);
void nectar__app_host_pattern_free(struct app_host_pattern *p);

/* Does host (a name or an IP literal; NULL never matches) match p? */
bool nectar__app_host_pattern_match(const struct app_host_pattern *p,
                                    const char *host);

/* One `match` object: every present key must hold; an empty match holds
 * for every flow. */
struct app_match {
    bool has_protocol;
    nectar_protocol_t protocol;
    int remote_port; /* -1 = any */
    bool has_remote_host;
    struct app_host_pattern remote_host;
    char *app; /* glob over the signing identifier, NULL = any */
};

bool nectar__app_match_flow(const struct app_match *m,
                            const nectar_flow_meta_t *meta);

#endif
