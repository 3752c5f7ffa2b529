/*
 * keychain.c - the keychain front: backend choice, argument checks, and
 * the operations every backend shares.  PKCS#12 identities live in
 * identity.c; backends only store and fetch bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "keychain/keychain_int.h"

struct nectar_keychain {
    const struct nectar__keychain_backend *be;
    void *state;
};

static const struct nectar__keychain_backend *const backends[] = {
#ifdef NECTAR_HAVE_APPLE_KEYCHAIN
    &nectar__keychain_backend_apple, /* first: the platform default */
#endif
    &nectar__keychain_backend_file,
};
#define N_BACKENDS (sizeof(backends) / sizeof(backends[0]))

static const struct nectar__keychain_backend *pick(const char *name)
{
    if (name == NULL || name[0] == '\0')
        name = getenv("NECTAR_KEYCHAIN");
    if (name == NULL || name[0] == '\0')
        return backends[0];
    for (size_t i = 0; i < N_BACKENDS; i++) {
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    }
    return NULL;
}

int nectar_keychain_open(const nectar_keychain_options_t *opts,
                         nectar_keychain_t **out, nectar_error_t *err)
{
    if (out == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain_open: no out");
    *out = NULL;
    nectar_keychain_options_t none = {0};
    if (opts == NULL)
        opts = &none;
    const struct nectar__keychain_backend *be = pick(opts->backend);
    if (be == NULL)
        return nectar_error_set(
            err, NECTAR_ENOTSUP, "keychain backend '%s' is not built in",
            opts->backend != NULL ? opts->backend : getenv("NECTAR_KEYCHAIN"));
    nectar_keychain_t *kc = nectar_calloc(1, sizeof(*kc));
    void *state = kc != NULL ? nectar_calloc(1, be->state_size) : NULL;
    if (state == NULL) {
        nectar_free(kc);
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    }
    kc->be = be;
    kc->state = state;
    int rc = be->open(state, opts, err);
    if (rc != 0) {
        be->close(state);
        nectar_free(state);
        nectar_free(kc);
        return rc;
    }
    *out = kc;
    return 0;
}

void nectar_keychain_close(nectar_keychain_t *kc)
{
    if (kc == NULL)
        return;
    kc->be->close(kc->state);
    nectar_wipe(kc->state, kc->be->state_size);
    nectar_free(kc->state);
    nectar_free(kc);
}

const char *nectar_keychain_backend(const nectar_keychain_t *kc)
{
    return kc != NULL ? kc->be->name : "none";
}

const char *nectar_keychain_protection(const nectar_keychain_t *kc)
{
    return kc != NULL ? kc->be->protection(kc->state) : "none";
}

static int check_name(const char *what, const char *s, nectar_error_t *err)
{
    if (s == NULL || s[0] == '\0')
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: empty %s", what);
    if (strlen(s) > NECTAR_KEYCHAIN_NAME_MAX)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "keychain: %s longer than %d bytes", what,
                                NECTAR_KEYCHAIN_NAME_MAX);
    return 0;
}

static int check_item(nectar_keychain_t *kc, const char *service,
                      const char *account, nectar_error_t *err)
{
    if (kc == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: NULL handle");
    int rc = check_name("service", service, err);
    return rc != 0 ? rc : check_name("account", account, err);
}

int nectar_keychain_store(nectar_keychain_t *kc, const char *service,
                          const char *account, const void *data, size_t len,
                          nectar_error_t *err)
{
    int rc = check_item(kc, service, account, err);
    if (rc != 0)
        return rc;
    if (data == NULL && len > 0)
        return nectar_error_set(err, NECTAR_EINVAL,
                                "keychain: data is NULL with length %zu", len);
    if (len > NECTAR_KEYCHAIN_DATA_MAX)
        return nectar_error_set(err, NECTAR_ELIMIT,
                                "keychain: secret of %zu bytes exceeds the "
                                "%u-byte limit",
                                len, NECTAR_KEYCHAIN_DATA_MAX);
    return kc->be->store(kc->state, service, account, data, len, err);
}

int nectar_keychain_load(nectar_keychain_t *kc, const char *service,
                         const char *account, uint8_t **data, size_t *len,
                         nectar_error_t *err)
{
    if (data == NULL || len == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain_load: no out");
    *data = NULL;
    *len = 0;
    int rc = check_item(kc, service, account, err);
    if (rc != 0)
        return rc;
    rc = kc->be->load(kc->state, service, account, data, len, err);
    if (rc == NECTAR_ENOENT)
        nectar_error_set(err, NECTAR_ENOENT, "not found");
    return rc;
}

int nectar_keychain_delete(nectar_keychain_t *kc, const char *service,
                           const char *account, nectar_error_t *err)
{
    int rc = check_item(kc, service, account, err);
    if (rc != 0)
        return rc;
    rc = kc->be->remove(kc->state, service, account, err);
    return rc == NECTAR_ENOENT ? 0 : rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int nectar_keychain_list(nectar_keychain_t *kc, const char *service,
                         char ***accounts, size_t *count, nectar_error_t *err)
{
    if (accounts == NULL || count == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain_list: no out");
    *accounts = NULL;
    *count = 0;
    if (kc == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: NULL handle");
    int rc = check_name("service", service, err);
    if (rc != 0)
        return rc;
    if (kc->be->list == NULL)
        return nectar_error_set(err, NECTAR_ENOTSUP,
                                "the %s keychain cannot list accounts",
                                kc->be->name);
    rc = kc->be->list(kc->state, service, accounts, count, err);
    if (rc == 0 && *count > 1)
        qsort(*accounts, *count, sizeof(char *), cmp_str);
    return rc;
}

void nectar_keychain_list_free(char **accounts, size_t count)
{
    for (size_t i = 0; accounts != NULL && i < count; i++)
        nectar_free(accounts[i]);
    nectar_free(accounts);
}

static int check_der(nectar_keychain_t *kc, const uint8_t *der, size_t len,
                     nectar_error_t *err)
{
    if (kc == NULL)
        return nectar_error_set(err, NECTAR_EINVAL, "keychain: NULL handle");
    if (der == NULL || len == 0)
        return nectar_error_set(err, NECTAR_EINVAL, "empty certificate DER");
    if (len > NECTAR_KEYCHAIN_DATA_MAX)
        return nectar_error_set(err, NECTAR_ELIMIT, "certificate too large");
    return 0;
}

int nectar_keychain_cert_install(nectar_keychain_t *kc, const uint8_t *der,
                                 size_t len, nectar_error_t *err)
{
    int rc = check_der(kc, der, len, err);
    return rc != 0 ? rc : kc->be->cert_install(kc->state, der, len, err);
}

int nectar_keychain_cert_uninstall(nectar_keychain_t *kc, const uint8_t *der,
                                   size_t len, nectar_error_t *err)
{
    int rc = check_der(kc, der, len, err);
    return rc != 0 ? rc : kc->be->cert_uninstall(kc->state, der, len, err);
}

int nectar_keychain_cert_installed(nectar_keychain_t *kc, const uint8_t *der,
                                   size_t len, nectar_error_t *err)
{
    int rc = check_der(kc, der, len, err);
    if (rc != 0)
        return rc;
    if (kc->be->cert_installed == NULL)
        return nectar_error_set(err, NECTAR_ENOTSUP,
                                "the %s keychain cannot look up certificates",
                                kc->be->name);
    return kc->be->cert_installed(kc->state, der, len, err);
}
