/*
 * audit_token_apple.c - audit token -> pid through libbsm, the engine's
 * private shim (spec ne-engine §1.1).  The public
 * rama_apple_audit_token_to_pid belongs to the Swift package and is
 * deliberately not exported here.  Built only on Apple (CMake picks it).
 */
#include <bsm/libbsm.h>
#include <string.h>

#include "engine/internal.h"

int nectar__audit_token_pid(const uint8_t token[32], int32_t *pid)
{
    audit_token_t tok;

    _Static_assert(sizeof(tok) == 32, "audit_token_t is 32 bytes");
    memcpy(&tok, token, sizeof(tok));
    *pid = (int32_t)audit_token_to_pid(tok);
    return 0;
}
