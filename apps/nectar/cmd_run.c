/*
 * cmd_run.c - `nectar run`: the Linux transparent-proxy daemon.
 *
 *   nectar run --config FILE [--dry-run]
 *
 * Reads the config (engine JSON plus a "host" object, docs/config.md),
 * creates the engine, turns its network rules into nftables TPROXY rules
 * and serves until SIGINT/SIGTERM (src/host/linux).  --dry-run prints the
 * ruleset and routing it would install and exits without touching the
 * system (no root needed).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "host/linux/linux_host.h"
#include "nectar/log.h"
#include "nectar/ne_abi.h"

static int usage(FILE *out)
{
    fprintf(out,
            "usage: nectar run --config FILE [--dry-run]\n"
            "\n"
            "Run the transparent proxy: nftables TPROXY for TCP and UDP,\n"
            "IPv4 and IPv6, in front of the nectar engine.  Needs root.\n"
            "\n"
            "  -c, --config FILE  engine JSON with a \"host\" object\n"
            "                     (see docs/config.md)\n"
            "  -n, --dry-run      print the nftables ruleset and routing\n"
            "                     that would be installed, then exit\n"
            "  -h, --help         this text\n"
            "\n"
            "Signals: SIGINT/SIGTERM stop and remove every rule and route;\n"
            "SIGUSR1 logs the counters.  NECTAR_LOG=debug logs each flow's\n"
            "start as well as its end.  nectarctl talks to the control\n"
            "service (host.control_service, default org.nectar.control).\n");
    return out == stdout ? 0 : 2;
}

static RamaTransparentProxyEngine *make_engine(const nectar_linux_config_t *c,
                                               const char *path)
{
    static const char storage[] = "/var/lib/nectar";
    static const char bundle[] = "org.nectar.run";
    RamaTransparentProxyInitConfig init = {
        storage, sizeof(storage) - 1, NULL, 0, bundle, sizeof(bundle) - 1,
    };
    if (!rama_transparent_proxy_initialize(&init)) {
        fprintf(stderr, "nectar run: engine initialisation failed\n");
        return NULL;
    }
    RamaTransparentProxyEngine *e;
    /* "{}" is what the file reduces to without engine keys: all defaults. */
    if (c->engine_json_len == 0 || strcmp(c->engine_json, "{}") == 0)
        e = rama_transparent_proxy_engine_new();
    else
        e = rama_transparent_proxy_engine_new_with_config((RamaBytesView){
            (const uint8_t *)c->engine_json, c->engine_json_len});
    if (e == NULL)
        fprintf(stderr,
                "nectar run: %s: the engine refused its configuration "
                "(reason in the log above)\n",
                path);
    return e;
}

static int dry_run(const nectar_linux_config_t *cfg,
                   RamaTransparentProxyEngine *engine)
{
    RamaTransparentProxyConfig *pc = rama_transparent_proxy_get_config(engine);
    if (pc == NULL) {
        fprintf(stderr, "nectar run: the engine returned no proxy config\n");
        rama_transparent_proxy_engine_stop(engine, 0);
        return 1;
    }
    nectar_linux_ruleset_t rs;
    int rc = nectar__linux_rules_build(pc->rules, pc->rules_len, cfg, &rs);
    rama_transparent_proxy_config_free(pc);
    rama_transparent_proxy_engine_stop(engine, 0);
    if (rc != 0) {
        fprintf(stderr, "nectar run: %s\n", nectar_strerror(rc));
        return 1;
    }
    char routes[1024];
    printf("# nftables ruleset (libnftables, one transaction)\n%s\n"
           "# policy routing (rtnetlink)\n%s",
           rs.nft, nectar__linux_routes_text(cfg, routes, sizeof(routes)));
    printf("# listeners: tcp port %u, udp port %u (IPv4 and IPv6, "
           "IP_TRANSPARENT, mark 0x%x)\n",
           cfg->tcp_port, cfg->udp_port, cfg->bypass_mark);
    nectar__linux_ruleset_free(&rs);
    return 0;
}

int nectar_cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int dry = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:nh", opts, NULL)) != -1) {
        if (c == 'c')
            path = optarg;
        else if (c == 'n')
            dry = 1;
        else if (c == 'h')
            return usage(stdout);
        else
            return usage(stderr);
    }
    if (path == NULL || optind != argc)
        return usage(stderr);
    nectar_linux_config_t cfg;
    nectar_error_t err = {0};
    if (nectar__linux_config_load(path, &cfg, &err) != 0) {
        fprintf(stderr, "nectar run: %s\n", err.message);
        return 1;
    }
    if (!dry && geteuid() != 0) {
        fprintf(stderr, "nectar run: must run as root (nftables, policy "
                        "routing and IP_TRANSPARENT need CAP_NET_ADMIN); "
                        "--dry-run works without\n");
        nectar__linux_config_free(&cfg);
        return 1;
    }
    RamaTransparentProxyEngine *engine = make_engine(&cfg, path);
    int rc = 1;
    if (engine != NULL && dry)
        rc = dry_run(&cfg, engine);
    else if (engine != NULL) {
        rc = nectar__linux_run(&cfg, engine, &err) == 0 ? 0 : 1;
        if (rc != 0)
            fprintf(stderr, "nectar run: %s\n", err.message);
    }
    nectar__linux_config_free(&cfg);
    return rc;
}
