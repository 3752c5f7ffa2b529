/* cmd_run.c - placeholder until the owning module lands; exits with an
 * error so nobody mistakes it for the real command. */
#include <stdio.h>

#include "commands.h"

int nectar_cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "nectar run: not built in this tree yet\n");
    return 1;
}
