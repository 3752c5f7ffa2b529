/*
 * secrets_test.h - small helpers shared by the secrets tests: private
 * temp directories, whole-file read/write, hex, and running a command
 * with a file as stdin and stdout.
 */
#ifndef NECTAR_TEST_SECRETS_H
#define NECTAR_TEST_SECRETS_H

#include <stddef.h>
#include <stdint.h>

/* mkdtemp under /tmp; the path is static storage per call slot. */
void st_tempdir(char *out, size_t cap);
void st_rmrf(const char *dir);

/* Whole-file helpers; st_read returns malloc'd bytes (free()). */
void st_write(const char *path, const void *data, size_t len);
uint8_t *st_read(const char *path, size_t *len);

void st_hex(const uint8_t *p, size_t len, char *out); /* out: 2*len+1 */

/* Runs `cmd` through /bin/sh; returns its exit status (or -1). */
int st_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Path of a file in tests/secrets (the source directory). */
const char *st_src(const char *name);

#endif
