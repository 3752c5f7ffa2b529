/*
 * nft.c - the few libnftables transactions the Linux host needs.
 *
 * Each function runs one nft command buffer in a fresh context (they are
 * rare: start, stop, first passthrough to a destination).  Output and
 * errors are buffered, so nothing reaches the daemon's stderr except
 * through the error message returned here.
 */
#include "host/linux/linux_host.h"

#include <errno.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

/* Runs cmd; on failure copies the first line of nft's error into *err. */
static int run(const char *cmd, const char *what, nectar_error_t *err)
{
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "%s: nft_ctx_new failed",
                                what);
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    int rc = 0;
    if (nft_run_cmd_from_buffer(ctx, cmd) != 0) {
        const char *e = nft_ctx_get_error_buffer(ctx);
        size_t n = e ? strcspn(e, "\n") : 0;
        int code = e && strstr(e, "Operation not permitted") ? NECTAR_EPERM
                   : e && strstr(e, "No such file")          ? NECTAR_ENOENT
                                                              : NECTAR_EIO;
        rc = nectar_error_set(err, code, "%s: %.*s", what, (int)n,
                              e ? e : "nft failed");
    }
    nft_ctx_free(ctx);
    return rc;
}

int nectar__linux_nft_apply(const char *text, nectar_error_t *err)
{
    /* "add table" makes the delete valid when no table exists, so one
     * transaction replaces a stale table or creates a fresh one. */
    static const char head[] = "add table inet " NECTAR_LINUX_TABLE "\n"
                               "delete table inet " NECTAR_LINUX_TABLE "\n";
    size_t len = sizeof(head) - 1 + strlen(text) + 1;
    char *cmd = nectar_malloc(len);
    if (cmd == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "out of memory");
    snprintf(cmd, len, "%s%s", head, text);
    int rc = run(cmd, "installing nftables rules", err);
    nectar_free(cmd);
    return rc;
}

int nectar__linux_nft_delete(nectar_error_t *err)
{
    return run("delete table inet " NECTAR_LINUX_TABLE "\n",
               "deleting table inet " NECTAR_LINUX_TABLE, err);
}

int nectar__linux_nft_probe_tproxy(nectar_error_t *err)
{
    /* Built and torn down in one transaction: nothing is left behind, and
     * the kernel still has to accept the tproxy expression. */
    static const char probe[] =
        "add table inet nectar_probe\n"
        "add chain inet nectar_probe p { type filter hook prerouting "
        "priority mangle; }\n"
        "add rule inet nectar_probe p meta l4proto tcp tproxy ip to :1\n"
        "add rule inet nectar_probe p socket transparent 1 accept\n"
        "delete table inet nectar_probe\n";
    nectar_error_t e = {0};
    int rc = run(probe, "tproxy probe", &e);
    if (rc == 0)
        return 0;
    if (rc == NECTAR_EPERM)
        return nectar_error_set(err, rc,
                                "not permitted to change nftables rules: "
                                "run as root (CAP_NET_ADMIN)");
    return nectar_error_set(err, NECTAR_ENOTSUP,
                            "the kernel refused a tproxy rule (%s); load "
                            "the modules with `modprobe nft_tproxy "
                            "nft_socket` and check CONFIG_NFT_TPROXY",
                            e.message);
}

int nectar__linux_nft_sticky_add(int family, const char *ip, int protocol,
                                 uint16_t port, nectar_error_t *err)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd),
             "add element inet " NECTAR_LINUX_TABLE " sticky%d { %s . %s . "
             "%u }\n",
             family == AF_INET ? 4 : 6, ip,
             protocol == IPPROTO_TCP ? "tcp" : "udp", port);
    return run(cmd, "sticky passthrough", err);
}
