/*
 * rules.c - engine network rules + host config -> one nftables ruleset.
 *
 * The engine's rules (RamaTransparentProxyNetworkRule, ne-engine §6.2) say
 * what the Swift provider hands to NETransparentProxyNetworkSettings.  Here
 * they become one `table inet nectar` (ne-host §2.3, Linux mapping):
 *
 *   prerouting (filter, mangle priority)    forwarded traffic, and the
 *     packets the output chain rerouted to lo
 *     - not TCP/UDP, or carrying nectar's bypass mark    -> return
 *     - a packet of a flow nectar already serves          -> to it
 *       (TCP: mark, accept; UDP: tproxy, which picks the reply socket)
 *     - marked by output (local capture)                 -> tproxy
 *     - wrong interface, to a local/broadcast/multicast
 *       address, or in the sticky-passthrough sets       -> return
 *     - exclude rules                                    -> return
 *     - include rules                                    -> tproxy + mark
 *   output (route, mangle priority)        locally originated traffic
 *     - same skips (bypass mark first: nectar's own egress is never
 *       captured; then the daemon's group, which also covers sockets the
 *       engine's services open), optional cgroup filter, excludes, then
 *       includes set the
 *       fwmark; the route hook re-routes the packet through the policy
 *       table onto lo, where prerouting diverts it.
 *
 * Rule translation follows §2.3: a port-only rule matches both families, a
 * rule with nothing set matches everything, an IP literal without prefix
 * is a /32 or /128, a prefix beyond the family's width is invalid.  nft
 * cannot match hostnames, so a hostname rule is logged and skipped (the
 * Swift provider would resolve it lazily; a packet filter cannot).
 */
#include "host/linux/linux_host.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "nectar/log.h"

#define TAG "linux-rules"

/* ---- a growable text buffer -------------------------------------------- */

struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = nectar_realloc(b->p, cap);
        if (np == NULL) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* ---- rule -> matcher ---------------------------------------------------- */

/* One side of a rule: no network, or a masked network of one family. */
struct net {
    int family; /* 0 = absent */
    char text[INET6_ADDRSTRLEN];
    unsigned prefix;
};

struct matcher {
    struct net remote, local;
    uint16_t port;  /* 0 = any */
    int proto;      /* 0 any, IPPROTO_TCP, IPPROTO_UDP */
    int family;     /* 0 = both */
};

static void mask_bytes(unsigned char *a, size_t len, unsigned prefix)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bits = prefix > i * 8 ? prefix - (unsigned)i * 8 : 0;
        if (bits < 8)
            a[i] &= (unsigned char)(0xff00u >> bits);
    }
}

/* Parse network text + optional prefix.  Returns 0, or -1 with *why set. */
static int parse_net(const char *s, size_t slen, bool has_prefix,
                     unsigned prefix, struct net *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL || slen == 0)
        return 0;
    char tmp[128];
    if (slen >= sizeof(tmp)) {
        *why = "network text too long";
        return -1;
    }
    memcpy(tmp, s, slen);
    tmp[slen] = '\0';
    char *zone = strchr(tmp, '%');
    if (zone != NULL)
        *zone = '\0'; /* nft matches addresses, not scopes */
    unsigned char a[16];
    size_t width;
    if (inet_pton(AF_INET, tmp, a) == 1) {
        out->family = AF_INET;
        width = 32;
    } else if (inet_pton(AF_INET6, tmp, a) == 1) {
        out->family = AF_INET6;
        width = 128;
    } else {
        *why = strchr(tmp, '/') != NULL
                   ? "CIDR text is not an address (use the prefix field)"
                   : "hostnames cannot be matched by nftables";
        return -1;
    }
    if (has_prefix && prefix > width) {
        *why = "prefix longer than the address";
        return -1;
    }
    out->prefix = has_prefix ? prefix : (unsigned)width;
    mask_bytes(a, width / 8, out->prefix);
    inet_ntop(out->family, a, out->text, sizeof(out->text));
    return 0;
}

static int rule_to_matcher(const RamaTransparentProxyNetworkRule *r,
                           struct matcher *m, const char **why)
{
    memset(m, 0, sizeof(*m));
    if (parse_net(r->remote_network_utf8, r->remote_network_utf8_len,
                  r->remote_prefix_is_set, r->remote_prefix, &m->remote,
                  why) != 0)
        return -1;
    if (parse_net(r->local_network_utf8, r->local_network_utf8_len,
                  r->local_prefix_is_set, r->local_prefix, &m->local,
                  why) != 0)
        return -1;
    if (m->remote.family && m->local.family &&
        m->remote.family != m->local.family) {
        *why = "remote and local networks are of different families";
        return -1;
    }
    m->family = m->remote.family ? m->remote.family : m->local.family;
    m->port = r->remote_port_is_set ? r->remote_port : 0;
    m->proto = r->protocol == RAMA_RULE_PROTOCOL_TCP   ? IPPROTO_TCP
               : r->protocol == RAMA_RULE_PROTOCOL_UDP ? IPPROTO_UDP
                                                       : 0;
    return 0;
}

/* ---- emission ----------------------------------------------------------- */

struct emit {
    struct sbuf *b;
    const nectar_linux_config_t *cfg;
};

static const char *fam_kw(int family)
{
    return family == AF_INET ? "ip" : "ip6";
}

static const char *proto_kw(int proto)
{
    return proto == IPPROTO_TCP ? "tcp" : "udp";
}

/* The match part of one nft rule for (family, proto). */
static void emit_match(struct sbuf *b, const struct matcher *m, int family,
                       int proto)
{
    sb_printf(b, "meta nfproto %s meta l4proto %s",
              family == AF_INET ? "ipv4" : "ipv6", proto_kw(proto));
    if (m->remote.family && m->remote.prefix > 0)
        sb_printf(b, " %s daddr %s/%u", fam_kw(family), m->remote.text,
                  m->remote.prefix);
    if (m->port)
        sb_printf(b, " th dport %u", m->port);
    if (m->local.family && m->local.prefix > 0)
        sb_printf(b, " %s saddr %s/%u", fam_kw(family), m->local.text,
                  m->local.prefix);
}

static void emit_tproxy(struct emit *e, int family, int proto)
{
    uint16_t port = proto == IPPROTO_TCP ? e->cfg->tcp_port : e->cfg->udp_port;
    sb_printf(e->b, " tproxy %s to :%u meta mark set 0x%x accept\n",
              fam_kw(family), port, e->cfg->fwmark);
}

/* verdict: 'x' exclude (return), 'p' prerouting include (tproxy),
 * 'o' output include (mark). */
static void emit_matcher(struct emit *e, const struct matcher *m, char verdict)
{
    static const int fams[2] = {AF_INET, AF_INET6};
    static const int protos[2] = {IPPROTO_TCP, IPPROTO_UDP};
    for (int f = 0; f < 2; f++) {
        if (m->family && m->family != fams[f])
            continue;
        for (int p = 0; p < 2; p++) {
            if (m->proto && m->proto != protos[p])
                continue;
            if (protos[p] == IPPROTO_UDP && e->cfg->udp_port == 0)
                continue;
            sb_printf(e->b, "\t\t");
            emit_match(e->b, m, fams[f], protos[p]);
            if (verdict == 'x')
                sb_printf(e->b, " return\n");
            else if (verdict == 'p')
                emit_tproxy(e, fams[f], protos[p]);
            else
                sb_printf(e->b, " meta mark set 0x%x\n", e->cfg->fwmark);
        }
    }
}

static void emit_rules(struct emit *e, const struct matcher *ms, size_t n,
                       const bool *excl, char include_verdict)
{
    for (size_t i = 0; i < n; i++)
        if (excl[i])
            emit_matcher(e, &ms[i], 'x');
    for (size_t i = 0; i < n; i++)
        if (!excl[i])
            emit_matcher(e, &ms[i], include_verdict);
}

static void emit_common_skips(struct emit *e)
{
    sb_printf(e->b, "\t\tmeta l4proto != { tcp, udp } return\n");
    sb_printf(e->b, "\t\tmeta mark 0x%x return\n", e->cfg->bypass_mark);
}

static void emit_dest_skips(struct emit *e)
{
    sb_printf(e->b,
              "\t\tfib daddr type { local, broadcast, multicast } return\n");
    /* Only new flows go sticky, and remember it in the conntrack mark so
     * their later packets follow; packets of a UDP flow nectar already
     * relays keep reaching its reply socket (a connected socket on a
     * forwarded path would make the kernel drop them). */
    if (e->cfg->sticky_passthrough) {
        sb_printf(e->b, "\t\tct mark 0x%x return\n", e->cfg->bypass_mark);
        sb_printf(e->b,
                  "\t\tct state new ip daddr . meta l4proto . th dport "
                  "@sticky4 ct mark set 0x%x return\n",
                  e->cfg->bypass_mark);
        sb_printf(e->b,
                  "\t\tct state new ip6 daddr . meta l4proto . th dport "
                  "@sticky6 ct mark set 0x%x return\n",
                  e->cfg->bypass_mark);
    }
}

static void emit_prerouting(struct emit *e, const struct matcher *ms, size_t n,
                            const bool *excl)
{
    const nectar_linux_config_t *c = e->cfg;
    sb_printf(e->b, "\tchain prerouting {\n\t\ttype filter hook prerouting "
                    "priority mangle; policy accept;\n");
    emit_common_skips(e);
    /* Packets of flows nectar already serves go back to it before any
     * sticky or exclude rule can send them elsewhere.  TCP: the normal
     * lookup finds the established socket.  UDP: tproxy itself assigns the
     * datagram (the normal lookup could miss a reply socket caught between
     * its bind and its connect; the daemon sorts datagrams by source). */
    sb_printf(e->b,
              "\t\tmeta l4proto tcp socket transparent 1 meta mark set 0x%x "
              "accept\n",
              c->fwmark);
    if (c->udp_port != 0) {
        static const int fams[2] = {AF_INET, AF_INET6};
        for (int f = 0; f < 2; f++) {
            sb_printf(e->b, "\t\tmeta nfproto %s meta l4proto udp socket "
                            "transparent 1",
                      fams[f] == AF_INET ? "ipv4" : "ipv6");
            emit_tproxy(e, fams[f], IPPROTO_UDP);
        }
    }
    if (c->capture_local) {
        /* Already classified by the output chain. */
        static const struct matcher any;
        static const int fams[2] = {AF_INET, AF_INET6};
        for (int f = 0; f < 2; f++) {
            for (int p = IPPROTO_TCP; p <= IPPROTO_UDP; p += 11) {
                if (p == IPPROTO_UDP && c->udp_port == 0)
                    continue;
                sb_printf(e->b, "\t\tmeta mark 0x%x ", c->fwmark);
                emit_match(e->b, &any, fams[f], p);
                emit_tproxy(e, fams[f], p);
            }
        }
    }
    if (!c->capture_forward) {
        sb_printf(e->b, "\t\treturn\n\t}\n");
        return;
    }
    if (c->n_interfaces > 0) {
        sb_printf(e->b, "\t\tiifname != {");
        for (size_t i = 0; i < c->n_interfaces; i++)
            sb_printf(e->b, "%s \"%s\"", i ? "," : "", c->interfaces[i]);
        sb_printf(e->b, " } return\n");
    }
    emit_dest_skips(e);
    emit_rules(e, ms, n, excl, 'p');
    sb_printf(e->b, "\t}\n");
}

/* Level of a cgroup v2 path = its number of components. */
static unsigned cgroup_level(const char *path)
{
    unsigned level = 0;
    int in = 0;
    for (const char *p = path; *p; p++) {
        if (*p != '/' && !in)
            level++;
        in = *p != '/';
    }
    return level;
}

static void emit_output(struct emit *e, const struct matcher *ms, size_t n,
                        const bool *excl)
{
    const nectar_linux_config_t *c = e->cfg;
    if (!c->capture_local)
        return;
    sb_printf(e->b, "\tchain output {\n\t\ttype route hook output priority "
                    "mangle; policy accept;\n");
    emit_common_skips(e);
    /* Sockets the engine's services open carry no mark, but every socket
     * of the daemon carries its group (cgroup-independent, set once). */
    if (c->bypass_gid != 0)
        sb_printf(e->b, "\t\tmeta skgid %u return\n", c->bypass_gid);
    if (c->n_cgroups == 0) {
        sb_printf(e->b, "\t\tgoto local_capture\n\t}\n");
    } else {
        for (size_t i = 0; i < c->n_cgroups; i++) {
            const char *p = c->cgroups[i];
            while (*p == '/')
                p++;
            sb_printf(e->b,
                      "\t\tsocket cgroupv2 level %u \"%s\" goto "
                      "local_capture\n",
                      cgroup_level(p), p);
        }
        sb_printf(e->b, "\t}\n");
    }
    sb_printf(e->b, "\tchain local_capture {\n");
    emit_dest_skips(e);
    emit_rules(e, ms, n, excl, 'o');
    sb_printf(e->b, "\t}\n");
}

static void emit_sets(struct emit *e)
{
    if (!e->cfg->sticky_passthrough)
        return;
    for (int v6 = 0; v6 < 2; v6++)
        sb_printf(e->b,
                  "\tset sticky%d {\n\t\ttype %s . inet_proto . "
                  "inet_service\n\t\tflags timeout\n\t\ttimeout %us\n"
                  "\t\tsize 65536\n\t}\n",
                  v6 ? 6 : 4, v6 ? "ipv6_addr" : "ipv4_addr",
                  e->cfg->sticky_timeout_s);
}

/* Translate every engine rule, logging as the Swift provider does. */
static size_t translate(const RamaTransparentProxyNetworkRule *rules,
                        size_t n, struct matcher *ms, bool *excl,
                        nectar_linux_ruleset_t *out)
{
    size_t k = 0;
    if (rules == NULL || n == 0) {
        memset(&ms[0], 0, sizeof(ms[0])); /* one match-all rule */
        excl[0] = false;
        out->included = 1;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *kind = rules[i].exclude ? "exclude" : "include";
        const char *why = "";
        if (rule_to_matcher(&rules[i], &ms[k], &why) != 0) {
            nectar_log(NECTAR_LOG_ERROR, TAG, "invalid %s rule[%zu]: %s",
                       kind, i, why);
            out->invalid++;
            continue;
        }
        excl[k] = rules[i].exclude;
        if (excl[k])
            out->excluded++;
        else
            out->included++;
        nectar_log(NECTAR_LOG_DEBUG, TAG, "%s rule[%zu] accepted", kind, i);
        k++;
    }
    return k;
}

int nectar__linux_rules_build(const RamaTransparentProxyNetworkRule *rules,
                              size_t n, const nectar_linux_config_t *cfg,
                              nectar_linux_ruleset_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t slots = n ? n : 1;
    struct matcher *ms = nectar_calloc(slots, sizeof(*ms));
    bool *excl = nectar_calloc(slots, sizeof(*excl));
    if (ms == NULL || excl == NULL) {
        nectar_free(ms);
        nectar_free(excl);
        return NECTAR_ENOMEM;
    }
    size_t k = translate(rules, n, ms, excl, out);
    struct sbuf b = {0};
    struct emit e = {&b, cfg};
    sb_printf(&b, "table inet %s {\n", NECTAR_LINUX_TABLE);
    emit_sets(&e);
    emit_prerouting(&e, ms, k, excl);
    emit_output(&e, ms, k, excl);
    sb_printf(&b, "}\n");
    nectar_free(ms);
    nectar_free(excl);
    if (b.failed) {
        nectar_free(b.p);
        return NECTAR_ENOMEM;
    }
    out->nft = b.p;
    nectar_log(NECTAR_LOG_INFO, TAG, "network rules: included=%zu excluded=%zu",
               out->included, out->excluded);
    return 0;
}

void nectar__linux_ruleset_free(nectar_linux_ruleset_t *rs)
{
    if (rs == NULL)
        return;
    nectar_free(rs->nft);
    rs->nft = NULL;
}

char *nectar__linux_routes_text(const nectar_linux_config_t *cfg, char *buf,
                                size_t n)
{
    snprintf(buf, n,
             "ip -4 rule add fwmark 0x%x lookup %u pref %u\n"
             "ip -4 route add local 0.0.0.0/0 dev lo table %u\n"
             "ip -6 rule add fwmark 0x%x lookup %u pref %u\n"
             "ip -6 route add local ::/0 dev lo table %u\n",
             cfg->fwmark, cfg->route_table, cfg->rule_priority,
             cfg->route_table, cfg->fwmark, cfg->route_table,
             cfg->rule_priority, cfg->route_table);
    return buf;
}
