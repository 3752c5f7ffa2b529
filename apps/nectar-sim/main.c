/*
 * nectar-sim - run the sim host: listen on ADDR, send every accepted flow
 * through the engine to TARGET, print each flow's decision and byte counts
 * when it closes.  Stops on SIGINT/SIGTERM and prints the totals.
 *
 *   nectar-sim --listen ADDR --target ADDR [--udp] [--tcp] [--config FILE]
 *              [--loops N] [--quiet]
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "host/sim/sim.h"

static const char *const decision_names[] = {"?", "intercept", "passthrough",
                                             "blocked"};

static void usage(FILE *out)
{
    fprintf(out, "usage: nectar-sim --listen ADDR --target ADDR [--udp] "
                 "[--tcp] [--config FILE] [--loops N] [--quiet]\n"
                 "  ADDR is IPv4 1.2.3.4:port or IPv6 [::1]:port\n");
}

struct totals {
    atomic_ullong flows[4], promoted, c2s, s2c;
    bool quiet;
};

static void print_flow(void *ctx, const nectar_host_flow_report_t *r)
{
    struct totals *t = ctx;
    unsigned d = r->decision <= 3 ? (unsigned)r->decision : 0;
    atomic_fetch_add(&t->flows[d], 1);
    atomic_fetch_add(&t->promoted, r->promoted ? 1 : 0);
    atomic_fetch_add(&t->c2s, r->bytes_c2s);
    atomic_fetch_add(&t->s2c, r->bytes_s2c);
    if (t->quiet)
        return;
    d = r->decision <= 3 ? (unsigned)r->decision : 0;
    printf("flow %llu %s %s%s remote=%s c2s=%llu s2c=%llu ms=%llu %s\n",
           (unsigned long long)r->id,
           r->protocol == IPPROTO_TCP ? "tcp" : "udp", decision_names[d],
           r->promoted ? "+promoted" : "", r->remote ? r->remote : "-",
           (unsigned long long)r->bytes_c2s, (unsigned long long)r->bytes_s2c,
           (unsigned long long)r->duration_ms, r->reason ? r->reason : "");
    fflush(stdout);
}

/* Whole file into a new buffer; NULL on error (errno set). */
static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    uint8_t *buf = nectar_malloc(cap);
    while (buf != NULL) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            uint8_t *nb = nectar_realloc(buf, cap * 2);
            if (nb == NULL) {
                nectar_free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

struct args {
    nectar_sim_options_t o;
    const char *config_path;
    bool quiet;
};

static int parse_args(int argc, char **argv, struct args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(k, "--udp") == 0) {
            a->o.udp = true;
        } else if (strcmp(k, "--tcp") == 0) {
            a->o.tcp = true;
        } else if (strcmp(k, "--quiet") == 0) {
            a->quiet = true;
        } else if (strcmp(k, "-h") == 0 || strcmp(k, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (v == NULL) {
            fprintf(stderr, "nectar-sim: %s needs a value\n", k);
            return -1;
        } else if (strcmp(k, "--listen") == 0) {
            a->o.listen = v;
            i++;
        } else if (strcmp(k, "--target") == 0) {
            a->o.target = v;
            i++;
        } else if (strcmp(k, "--config") == 0) {
            a->config_path = v;
            i++;
        } else if (strcmp(k, "--loops") == 0) {
            a->o.host.loops = (unsigned)strtoul(v, NULL, 10);
            i++;
        } else {
            fprintf(stderr, "nectar-sim: unknown option %s\n", k);
            return -1;
        }
    }
    if (a->o.listen == NULL || a->o.target == NULL) {
        fprintf(stderr, "nectar-sim: --listen and --target are required\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    memset(&a, 0, sizeof(a));
    if (parse_args(argc, argv, &a) != 0) {
        usage(stderr);
        return 2;
    }
    uint8_t *cfg = NULL;
    if (a.config_path != NULL) {
        cfg = read_file(a.config_path, &a.o.config_len);
        if (cfg == NULL) {
            fprintf(stderr, "nectar-sim: %s: %s\n", a.config_path,
                    strerror(errno));
            return 1;
        }
        a.o.config = cfg;
    }
    static struct totals tot;
    tot.quiet = a.quiet;
    a.o.on_flow_closed = print_flow;
    a.o.ctx = &tot;

    /* Block the stop signals before any thread starts, then wait here. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    nectar_sim_t *sim;
    nectar_error_t err = {0};
    if (nectar_sim_start(&a.o, &sim, &err) != 0) {
        fprintf(stderr, "nectar-sim: %s\n", err.message);
        nectar_free(cfg);
        return 1;
    }
    printf("nectar-sim listening on port %u, target %s%s\n",
           nectar_sim_port(sim), a.o.target, a.o.udp ? " (udp)" : "");
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    nectar_sim_stop(sim);
    printf("nectar-sim: flows intercepted=%llu passthrough=%llu blocked=%llu "
           "promoted=%llu bytes c2s=%llu s2c=%llu\n",
           atomic_load(&tot.flows[1]), atomic_load(&tot.flows[2]),
           atomic_load(&tot.flows[3]), atomic_load(&tot.promoted),
           atomic_load(&tot.c2s), atomic_load(&tot.s2c));
    nectar_free(cfg);
    return 0;
}
