/* secrets_test.c - helpers for the secrets tests (see secrets_test.h). */
#include "secrets/secrets_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "harness/test.h"

void st_tempdir(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/nectar-secrets-XXXXXX");
    CHECK(mkdtemp(out) != NULL);
}

void st_rmrf(const char *dir)
{
    CHECK_EQ(st_sh("rm -rf '%s'", dir), 0);
}

void st_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK_EQ(fwrite(data, 1, len, f), len);
    CHECK_EQ(fclose(f), 0);
}

uint8_t *st_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    CHECK(buf != NULL);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

void st_hex(const uint8_t *p, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * len] = '\0';
}

int st_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    CHECK_LT(n, (int)sizeof(cmd));
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

const char *st_src(const char *name)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", NECTAR_SECRETS_TEST_DIR, name);
    return path;
}
