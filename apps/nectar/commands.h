/*
 * commands.h - subcommands of the `nectar` binary, one file each.
 * Each takes the arguments after its name (argv[0] is the subcommand) and
 * returns the process exit status (0 ok, 1 failure, 2 usage).
 */
#ifndef NECTAR_APP_COMMANDS_H
#define NECTAR_APP_COMMANDS_H

int nectar_cmd_run(int argc, char **argv);      /* cmd_run.c: the daemon */
int nectar_cmd_keychain(int argc, char **argv); /* cmd_keychain.c */
int nectar_cmd_ca(int argc, char **argv);       /* cmd_ca.c */
int nectar_cmd_vault(int argc, char **argv);    /* cmd_vault.c */

#endif
