/* main.c - the `nectar` binary: dispatches to one subcommand per file. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"run", nectar_cmd_run, "run the transparent proxy (nftables TPROXY)"},
    {"keychain", nectar_cmd_keychain, "store, read and list secrets"},
    {"ca", nectar_cmd_ca, "show, export or rotate the MITM CA"},
    {"vault", nectar_cmd_vault, "hardware key vault (TPM 2.0 / software)"},
};

static int usage(FILE *out)
{
    fprintf(out, "usage: nectar COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`nectar COMMAND --help` describes each command.\n");
    return out == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return usage(stdout);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "nectar: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
