/*
 * cmd_ca.c - `nectar ca`: the MITM root CA the TLS interception signs
 * with.
 *
 *   nectar ca show     subject, serial, validity, SHA-256 fingerprint and
 *                      how it is stored (creates the CA if none exists)
 *   nectar ca export   the certificate as PEM on stdout (to trust it)
 *   nectar ca rotate   replace it with a new CA (new vault key too)
 *
 * The private key never leaves this process; only the certificate is
 * printed.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "commands.h"
#include "nectar/ca.h"
#include "secrets_cli.h"

static int usage(FILE *out)
{
    fprintf(out, "usage: nectar ca [--store DIR] [--vault NAME] COMMAND\n"
                 "\n"
                 "  show     describe the MITM root CA (created on first use)\n"
                 "  export   print its certificate as PEM\n"
                 "  rotate   replace it with a fresh CA and print the change\n"
                 "\n"
                 "The CA key is stored in the keychain encrypted by the vault\n"
                 "(see `nectar keychain --help`, `nectar vault --help`).\n");
    return out == stdout ? 0 : 2;
}

static void print_fingerprint(const char *label, const uint8_t *der, size_t len)
{
    uint8_t md[32];
    unsigned int n = 0;
    printf("%s", label);
    if (EVP_Digest(der, len, md, &n, EVP_sha256(), NULL) != 1)
        n = 0;
    for (unsigned int i = 0; i < n; i++)
        printf("%02X%s", md[i], i + 1 < n ? ":" : "\n");
}

static void print_time(const char *label, const ASN1_TIME *t)
{
    BIO *out = BIO_new_fp(stdout, BIO_NOCLOSE);
    printf("%s", label);
    fflush(stdout);
    ASN1_TIME_print(out, t);
    BIO_free(out);
    printf("\n");
}

static int ca_show(const char *cert_pem, nectar_vault_t *v)
{
    BIO *b = BIO_new_mem_buf(cert_pem, -1);
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    uint8_t *der = NULL;
    size_t len = 0;
    nectar_error_t err = {0};
    if (x == NULL || nectar_ca_cert_der(cert_pem, &der, &len, &err) != 0) {
        X509_free(x);
        fprintf(stderr, "nectar ca: stored certificate does not parse\n");
        return 1;
    }
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    printf("subject:     %s\n", subject);
    BIGNUM *sn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = sn != NULL ? BN_bn2hex(sn) : NULL;
    printf("serial:      %s\n", hex != NULL ? hex : "?");
    OPENSSL_free(hex);
    BN_free(sn);
    print_time("not before:  ", X509_get0_notBefore(x));
    print_time("not after:   ", X509_get0_notAfter(x));
    print_fingerprint("sha256:      ", der, len);
    printf("key storage: %s\n",
           v != NULL ? nectar_vault_kind_name(nectar_vault_kind(v)) : "plain");
    nectar_secret_free(der);
    X509_free(x);
    return 0;
}

static int ca_rotate(nectar_keychain_t *kc, nectar_vault_t *v)
{
    char *cert = NULL, *key = NULL;
    uint8_t *prev = NULL, *der = NULL;
    size_t prev_len = 0, len = 0;
    nectar_error_t err = {0};
    if (nectar_ca_rotate(kc, v, &cert, &key, &prev, &prev_len, &err) != 0)
        return secrets_cli_fail("ca rotate", &err);
    nectar_secret_free(key);
    if (prev != NULL)
        print_fingerprint("previous sha256: ", prev, prev_len);
    else
        printf("previous sha256: (none)\n");
    if (nectar_ca_cert_der(cert, &der, &len, &err) == 0)
        print_fingerprint("new sha256:      ", der, len);
    nectar_secret_free(der);
    nectar_secret_free(prev);
    nectar_secret_free(cert);
    return 0;
}

static int run(nectar_keychain_t *kc, nectar_vault_t *v, const char *cmd)
{
    if (strcmp(cmd, "rotate") == 0)
        return ca_rotate(kc, v);
    char *cert = NULL, *key = NULL;
    nectar_error_t err = {0};
    if (nectar_ca_load_or_create(kc, v, &cert, &key, &err) != 0)
        return secrets_cli_fail("ca", &err);
    nectar_secret_free(key); /* only the certificate is ever printed */
    int rc = strcmp(cmd, "show") == 0
                 ? ca_show(cert, v)
                 : secrets_cli_write_stdout(cert, strlen(cert));
    nectar_secret_free(cert);
    return rc;
}

int nectar_cmd_ca(int argc, char **argv)
{
    struct secrets_cli c;
    if (secrets_cli_parse(&c, argc, argv) != 0)
        return 2;
    if (c.argc != 2)
        return usage(stderr);
    const char *cmd = c.argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout);
    if (strcmp(cmd, "show") != 0 && strcmp(cmd, "export") != 0 &&
        strcmp(cmd, "rotate") != 0)
        return usage(stderr);
    secrets_cli_protect();
    nectar_vault_t *v = NULL;
    nectar_keychain_t *kc = NULL;
    if (secrets_cli_vault(&c, &v) != 0)
        return 1;
    if (secrets_cli_keychain(&c, v, &kc) != 0) {
        nectar_vault_close(v);
        return 1;
    }
    int rc = run(kc, v, cmd);
    nectar_keychain_close(kc);
    nectar_vault_close(v);
    return rc;
}
