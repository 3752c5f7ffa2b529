/*
 * audit_token_none.c - platforms without audit tokens: a token never
 * yields a pid, so a flow's pid is present only when the host set it.
 * The Apple counterpart is audit_token_apple.c (CMake picks one).
 */
#include "engine/internal.h"

int nectar__audit_token_pid(const uint8_t token[32], int32_t *pid)
{
    (void)token;
    (void)pid;
    return NECTAR_ENOTSUP;
}
