/*
 * secrets_cli.h - what `nectar keychain`, `nectar ca` and `nectar vault`
 * share: the common options, opening the vault and keychain they name,
 * stdin/file I/O into non-dumpable memory, and turning off core dumps.
 * Implemented in cmd_vault.c.
 *
 * Common options (anywhere on the command line):
 *   --store DIR      keychain directory, and DIR/host.key as the software
 *                    vault's host key (lets tests run without root)
 *   --vault NAME     auto | tpm2 | software | secure-enclave
 *   --tcti CONF      TPM TCTI (else $NECTAR_TPM_TCTI, else the default)
 */
#ifndef NECTAR_APP_SECRETS_CLI_H
#define NECTAR_APP_SECRETS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "nectar/keychain.h"
#include "nectar/vault.h"

struct secrets_cli {
    const char *store;
    const char *vault;
    const char *tcti;
    char host_key[4096];
    int argc;    /* positional arguments left after the options */
    char **argv; /* (argv[0] is the subcommand name) */
};

/* Parses the common options out of argv (modified in place).  Returns 0,
 * or 2 after printing a usage error. */
int secrets_cli_parse(struct secrets_cli *c, int argc, char **argv);

/* Core dumps off, ptrace by others off: this process will hold secrets. */
void secrets_cli_protect(void);

/* Opens what the options name; prints the error and returns 1 on
 * failure. */
int secrets_cli_vault(struct secrets_cli *c, nectar_vault_t **out);
int secrets_cli_keychain(struct secrets_cli *c, nectar_vault_t *vault,
                         nectar_keychain_t **out);

/* All of stdin / a whole file into secret memory (nectar_secret_free).
 * Return 0, or 1 after printing the error. */
int secrets_cli_read_stdin(uint8_t **data, size_t *len);
int secrets_cli_read_file(const char *path, uint8_t **data, size_t *len);

/* Writes all of data to stdout; 0 or 1 after printing the error. */
int secrets_cli_write_stdout(const void *data, size_t len);

/* Prints "nectar <cmd>: <message>" for a failed call; returns 1. */
int secrets_cli_fail(const char *cmd, const nectar_error_t *err);

#endif
