/*
 * audit_token.c - audit token -> pid, the engine's private shim (spec
 * ne-engine §1.1).  Only Apple has audit tokens; elsewhere a token never
 * yields a pid, so the pid is absent unless the host set it explicitly.
 * The public rama_apple_audit_token_to_pid belongs to the Swift package
 * and is deliberately not exported here.
 */
#include "engine/internal.h"

#ifdef __APPLE__
#include <bsm/libbsm.h>
#include <string.h>

int nectar__audit_token_pid(const uint8_t token[32], int32_t *pid)
{
    audit_token_t tok;

    _Static_assert(sizeof(tok) == 32, "audit_token_t is 32 bytes");
    memcpy(&tok, token, sizeof(tok));
    *pid = (int32_t)audit_token_to_pid(tok);
    return 0;
}
#else
int nectar__audit_token_pid(const uint8_t token[32], int32_t *pid)
{
    (void)token;
    (void)pid;
    return NECTAR_ENOTSUP;
}
#endif
