/*
 * backend_apple.c - the keychain on macOS: the legacy, file-based System
 * keychain (/Library/Keychains/System.keychain) through Security.framework.
 *
 * A system extension runs as root in the global context, where the Data
 * Protection keychain (access groups, SE-protected items) is not
 * available; the System keychain is, and the sysext reads it without user
 * interaction.  Secrets are generic-password items with only service and
 * account attributes (default ACL); certificates are certificate items.
 * Trust settings are never touched: that needs an admin prompt, which a
 * UI process must show.  Listing accounts is not offered (NULL slot).
 *
 * The SecKeychain* calls are deprecated but are the only API for this
 * keychain file; the warnings are silenced for this file alone.  Built
 * only on Apple; kept thin because no machine here compiles it.
 */
#ifdef NECTAR_HAVE_APPLE_KEYCHAIN

#include <string.h>

#include <CoreFoundation/CoreFoundation.h>
#include <Security/Security.h>

#include "common/alloc.h"
#include "keychain/keychain_int.h"
#include "nectar/log.h"

#pragma clang diagnostic ignored "-Wdeprecated-declarations"

#define SYSTEM_KEYCHAIN "/Library/Keychains/System.keychain"

struct apple_state {
    SecKeychainRef kc;
};

static const char *hint(OSStatus st)
{
    switch (st) {
    case errSecItemNotFound:
        return "item does not exist";
    case errSecDuplicateItem:
        return "a concurrent writer added the same item";
    case errSecAuthFailed:
        return "authorization rejected (wrong admin password or expired "
               "authorization)";
    case errSecInteractionNotAllowed:
        return "a UI prompt was needed but this context cannot show one";
    case errSecMissingEntitlement:
        return "the signing identity lacks the keychain entitlement";
    default:
        return NULL;
    }
}

/* "<what> failed (OSStatus <code>) — <hint>", native = the OSStatus. */
static int os_error(nectar_error_t *err, const char *what, OSStatus st)
{
    int code;
    switch (st) {
    case errSecItemNotFound:
        code = NECTAR_ENOENT;
        break;
    case errSecDuplicateItem:
        code = NECTAR_EEXIST;
        break;
    case errSecAuthFailed:
    case errSecInteractionNotAllowed:
        code = NECTAR_EACCES;
        break;
    case errSecMissingEntitlement:
        code = NECTAR_EPERM;
        break;
    default:
        code = NECTAR_EIO;
        break;
    }
    const char *h = hint(st);
    int rc = nectar_error_set(err, code, "%s failed (OSStatus %d)%s%s", what,
                              (int)st, h != NULL ? " \xe2\x80\x94 " : "",
                              h != NULL ? h : "");
    if (err != NULL)
        err->native = st;
    return rc;
}

static int ap_open(void *state, const nectar_keychain_options_t *opts,
                   nectar_error_t *err)
{
    struct apple_state *s = state;
    (void)opts; /* the System keychain's path is fixed */
    OSStatus st = SecKeychainOpen(SYSTEM_KEYCHAIN, &s->kc);
    if (st != errSecSuccess) {
        s->kc = NULL;
        return os_error(err, "SecKeychainOpen", st);
    }
    return 0;
}

static void ap_close(void *state)
{
    struct apple_state *s = state;
    if (s->kc != NULL)
        CFRelease(s->kc);
    s->kc = NULL;
}

static const char *ap_protection(void *state)
{
    (void)state;
    return SYSTEM_KEYCHAIN;
}

/* Finds the generic password (service, account); *item may be NULL. */
static OSStatus find(struct apple_state *s, const char *svc, const char *acct,
                     SecKeychainItemRef *item)
{
    return SecKeychainFindGenericPassword(s->kc, (UInt32)strlen(svc), svc,
                                          (UInt32)strlen(acct), acct, NULL,
                                          NULL, item);
}

static int ap_store(void *state, const char *svc, const char *acct,
                    const void *data, size_t len, nectar_error_t *err)
{
    struct apple_state *s = state;
    /* find -> update, or add; a writer that adds between our find and add
     * makes the add fail with errSecDuplicateItem: retry once as update. */
    for (int attempt = 0; attempt < 2; attempt++) {
        SecKeychainItemRef item = NULL;
        OSStatus st = find(s, svc, acct, &item);
        if (st == errSecSuccess) {
            st = SecKeychainItemModifyAttributesAndData(item, NULL, (UInt32)len,
                                                        data);
            CFRelease(item);
            return st == errSecSuccess
                       ? 0
                       : os_error(err, "SecKeychainItemModifyAttributesAndData",
                                  st);
        }
        if (st != errSecItemNotFound)
            return os_error(err, "SecKeychainFindGenericPassword", st);
        st = SecKeychainAddGenericPassword(s->kc, (UInt32)strlen(svc), svc,
                                           (UInt32)strlen(acct), acct,
                                           (UInt32)len, data, NULL);
        if (st == errSecSuccess)
            return 0;
        if (st != errSecDuplicateItem)
            return os_error(err, "SecKeychainAddGenericPassword", st);
        nectar_log(NECTAR_LOG_DEBUG, "keychain",
                   "store %s/%s raced another writer; retrying as update", svc,
                   acct);
    }
    int rc = nectar_error_set(err, NECTAR_EBUSY,
                              "store_secret: keychain remained contended "
                              "after retry (OSStatus %d)",
                              (int)errSecDuplicateItem);
    if (err != NULL)
        err->native = errSecDuplicateItem;
    return rc;
}

static int ap_load(void *state, const char *svc, const char *acct,
                   uint8_t **data, size_t *len, nectar_error_t *err)
{
    struct apple_state *s = state;
    UInt32 n = 0;
    void *p = NULL;
    OSStatus st = SecKeychainFindGenericPassword(s->kc, (UInt32)strlen(svc),
                                                 svc, (UInt32)strlen(acct),
                                                 acct, &n, &p, NULL);
    if (st != errSecSuccess)
        return os_error(err, "SecKeychainFindGenericPassword", st);
    uint8_t *copy = nectar_secret_alloc(n);
    if (copy != NULL && n > 0 && p != NULL)
        memcpy(copy, p, n);
    if (p != NULL)
        SecKeychainItemFreeContent(NULL, p);
    if (copy == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    *data = copy;
    *len = p != NULL ? n : 0;
    return 0;
}

static int ap_remove(void *state, const char *svc, const char *acct,
                     nectar_error_t *err)
{
    struct apple_state *s = state;
    SecKeychainItemRef item = NULL;
    OSStatus st = find(s, svc, acct, &item);
    if (st != errSecSuccess)
        return os_error(err, "SecKeychainFindGenericPassword", st);
    st = SecKeychainItemDelete(item); /* the first match only */
    CFRelease(item);
    return st == errSecSuccess ? 0 : os_error(err, "SecKeychainItemDelete", st);
}

static int ap_cert_install(void *state, const uint8_t *der, size_t len,
                           nectar_error_t *err)
{
    struct apple_state *s = state;
    CFDataRef data = CFDataCreate(NULL, der, (CFIndex)len);
    if (data == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "CFDataCreate failed");
    SecCertificateRef cert = SecCertificateCreateWithData(NULL, data);
    CFRelease(data);
    if (cert == NULL)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "SecCertificateCreateWithData failed "
                                "(invalid DER?)");
    OSStatus st = SecCertificateAddToKeychain(cert, s->kc);
    CFRelease(cert);
    if (st != errSecSuccess && st != errSecDuplicateItem)
        return os_error(err, "SecCertificateAddToKeychain", st);
    return 0;
}

/* Collects every certificate item whose DER equals der.  Deleting while a
 * search is open invalidates it, hence collect first, delete after. */
static int find_certs(struct apple_state *s, const uint8_t *der, size_t len,
                      CFMutableArrayRef found, nectar_error_t *err)
{
    SecKeychainSearchRef search = NULL;
    OSStatus st = SecKeychainSearchCreateFromAttributes(
        s->kc, kSecCertificateItemClass, NULL, &search);
    if (st != errSecSuccess)
        return os_error(err, "SecKeychainSearchCreateFromAttributes", st);
    int rc = 0;
    for (;;) {
        SecKeychainItemRef item = NULL;
        st = SecKeychainSearchCopyNext(search, &item);
        if (st == errSecItemNotFound)
            break;
        if (st != errSecSuccess) {
            rc = os_error(err, "SecKeychainSearchCopyNext", st);
            break;
        }
        CFDataRef d = SecCertificateCopyData((SecCertificateRef)item);
        if (d != NULL && (size_t)CFDataGetLength(d) == len &&
            memcmp(CFDataGetBytePtr(d), der, len) == 0)
            CFArrayAppendValue(found, item);
        if (d != NULL)
            CFRelease(d);
        CFRelease(item);
    }
    CFRelease(search);
    return rc;
}

static int ap_cert_uninstall(void *state, const uint8_t *der, size_t len,
                             nectar_error_t *err)
{
    CFMutableArrayRef found =
        CFArrayCreateMutable(NULL, 0, &kCFTypeArrayCallBacks);
    if (found == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    int rc = find_certs(state, der, len, found, err);
    for (CFIndex i = 0; rc == 0 && i < CFArrayGetCount(found); i++) {
        SecKeychainItemRef item =
            (SecKeychainItemRef)CFArrayGetValueAtIndex(found, i);
        OSStatus st = SecKeychainItemDelete(item);
        if (st != errSecSuccess && st != errSecItemNotFound)
            rc = os_error(err, "SecKeychainItemDelete (cert item)", st);
    }
    CFRelease(found);
    return rc;
}

static int ap_cert_installed(void *state, const uint8_t *der, size_t len,
                             nectar_error_t *err)
{
    CFMutableArrayRef found =
        CFArrayCreateMutable(NULL, 0, &kCFTypeArrayCallBacks);
    if (found == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "keychain: out of memory");
    int rc = find_certs(state, der, len, found, err);
    if (rc == 0)
        rc = CFArrayGetCount(found) > 0;
    CFRelease(found);
    return rc;
}

const struct nectar__keychain_backend nectar__keychain_backend_apple = {
    .name = "apple",
    .state_size = sizeof(struct apple_state),
    .open = ap_open,
    .close = ap_close,
    .protection = ap_protection,
    .store = ap_store,
    .load = ap_load,
    .remove = ap_remove,
    .list = NULL,
    .cert_install = ap_cert_install,
    .cert_uninstall = ap_cert_uninstall,
    .cert_installed = ap_cert_installed,
};

#endif /* NECTAR_HAVE_APPLE_KEYCHAIN */
