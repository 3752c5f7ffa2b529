/*
 * backend_tpm2.c - the TPM 2.0 vault over tss2 ESAPI.
 *
 * The key is an ECC P-256 decrypt key created under the owner hierarchy's
 * storage primary (the standard ECC SRK template, recreated on demand from
 * the TPM's seed, so nothing needs to be persisted in the TPM).  The TPM
 * hands back the key wrapped by that primary; the blob is that wrapping,
 * marshalled with tss2-mu:
 *
 *   payload[0]  0x01 = "child of the ECC P-256 SRK template, owner
 *               hierarchy, empty auth"
 *   then        TPM2B_PUBLIC || TPM2B_PRIVATE (TPM wire format)
 *
 * The public point is read from TPM2B_PUBLIC without touching the TPM.
 * ECDH runs inside the TPM (TPM2_ECDH_ZGen) under a salted HMAC session
 * with response encryption, so the shared secret is not in clear on the
 * bus either.  Every transient handle (primary, key, session) is flushed
 * on every path: TPMs have only a few object slots.
 *
 * TCTI: options, else $NECTAR_TPM_TCTI, else the tss2 default
 * (/dev/tpmrm0, then /dev/tpm0, then a local simulator).
 */
#ifdef NECTAR_HAVE_TSS2

#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "common/alloc.h"
#include "vault/vault_int.h"

#define TPM_PAYLOAD_VERSION 0x01

struct tpm_state {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
};

static int tpm_error(nectar_error_t *err, const char *what, TSS2_RC rc)
{
    int code = nectar_error_set(err, NECTAR_ETPM, "%s: %s (0x%x)", what,
                                Tss2_RC_Decode(rc), (unsigned)rc);
    if (err != NULL)
        err->native = (long)rc;
    return code;
}

static const char *tcti_conf(const nectar_vault_options_t *opts)
{
    if (opts != NULL && opts->tpm_tcti != NULL)
        return opts->tpm_tcti;
    const char *env = getenv("NECTAR_TPM_TCTI");
    return env != NULL && env[0] != '\0' ? env : NULL;
}

static void tpm_close(void *state)
{
    struct tpm_state *s = state;
    if (s->esys != NULL)
        Esys_Finalize(&s->esys);
    if (s->tcti != NULL)
        Tss2_TctiLdr_Finalize(&s->tcti);
}

static int tpm_open(void *state, const nectar_vault_options_t *opts,
                    nectar_error_t *err)
{
    struct tpm_state *s = state;
    const char *conf = tcti_conf(opts);
    TSS2_RC rc = Tss2_TctiLdr_Initialize(conf, &s->tcti);
    if (rc != TSS2_RC_SUCCESS) {
        s->tcti = NULL;
        return tpm_error(err, conf != NULL ? conf : "default TCTI", rc);
    }
    rc = Esys_Initialize(&s->esys, s->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        s->esys = NULL;
        return tpm_error(err, "Esys_Initialize", rc);
    }
    /* A TPM that was already started (by firmware, or swtpm's
     * startup-clear flag) answers TPM2_RC_INITIALIZE: that is fine. */
    rc = Esys_Startup(s->esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && rc != TPM2_RC_INITIALIZE)
        return tpm_error(err, "TPM2_Startup", rc);
    /* One round trip proves the TPM answers before anyone relies on it. */
    TPM2B_DIGEST *rnd = NULL;
    rc = Esys_GetRandom(s->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 8,
                        &rnd);
    Esys_Free(rnd);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_error(err, "TPM2_GetRandom", rc);
    return 0;
}

static int tpm_probe(const nectar_vault_options_t *opts, nectar_error_t *err)
{
    struct tpm_state s = {NULL, NULL};
    int rc = tpm_open(&s, opts, err);
    tpm_close(&s);
    return rc;
}

/* The TCG "ECC P-256 SRK" template: restricted decrypt, AES-128-CFB. */
static void srk_template(TPM2B_PUBLIC *t)
{
    memset(t, 0, sizeof(*t));
    TPMT_PUBLIC *p = &t->publicArea;
    p->type = TPM2_ALG_ECC;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN |
                          TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
                          TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    p->parameters.eccDetail.symmetric.keyBits.aes = 128;
    p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    p->unique.ecc.x.size = 32;
    p->unique.ecc.y.size = 32;
}

/* The vault key: unrestricted ECC P-256 decrypt key, usable for ZGen. */
static void key_template(TPM2B_PUBLIC *t)
{
    memset(t, 0, sizeof(*t));
    TPMT_PUBLIC *p = &t->publicArea;
    p->type = TPM2_ALG_ECC;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN |
                          TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA |
                          TPMA_OBJECT_DECRYPT;
    p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
}

static void flush(ESYS_CONTEXT *esys, ESYS_TR *h)
{
    if (*h != ESYS_TR_NONE)
        (void)Esys_FlushContext(esys, *h);
    *h = ESYS_TR_NONE;
}

static int create_primary(struct tpm_state *s, ESYS_TR *primary,
                          nectar_error_t *err)
{
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside;
    TPML_PCR_SELECTION pcrs;
    memset(&sens, 0, sizeof(sens));
    memset(&outside, 0, sizeof(outside));
    memset(&pcrs, 0, sizeof(pcrs));
    srk_template(&tmpl);
    TPM2B_PUBLIC *out_pub = NULL;
    TPM2B_CREATION_DATA *cdata = NULL;
    TPM2B_DIGEST *chash = NULL;
    TPMT_TK_CREATION *ticket = NULL;
    TSS2_RC rc =
        Esys_CreatePrimary(s->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD,
                           ESYS_TR_NONE, ESYS_TR_NONE, &sens, &tmpl, &outside,
                           &pcrs, primary, &out_pub, &cdata, &chash, &ticket);
    Esys_Free(out_pub);
    Esys_Free(cdata);
    Esys_Free(chash);
    Esys_Free(ticket);
    if (rc != TSS2_RC_SUCCESS) {
        *primary = ESYS_TR_NONE;
        return tpm_error(err,
                         "TPM2_CreatePrimary (owner hierarchy; is an owner "
                         "password set?)",
                         rc);
    }
    return 0;
}

static int marshal_payload(const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
                           uint8_t **payload, size_t *len, nectar_error_t *err)
{
    size_t cap = 1 + sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE);
    uint8_t *buf = nectar_secret_alloc(cap);
    if (buf == NULL)
        return nectar_error_set(err, NECTAR_ENOMEM, "vault: out of memory");
    buf[0] = TPM_PAYLOAD_VERSION;
    size_t off = 1;
    TSS2_RC rc = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, cap, &off);
    if (rc == TSS2_RC_SUCCESS)
        rc = Tss2_MU_TPM2B_PRIVATE_Marshal(priv, buf, cap, &off);
    if (rc != TSS2_RC_SUCCESS) {
        nectar_secret_free(buf);
        return tpm_error(err, "marshal key blob", rc);
    }
    *payload = buf;
    *len = off;
    return 0;
}

static int unmarshal_payload(const uint8_t *payload, size_t len,
                             TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv,
                             nectar_error_t *err)
{
    memset(pub, 0, sizeof(*pub));
    memset(priv, 0, sizeof(*priv));
    if (len < 1 || payload[0] != TPM_PAYLOAD_VERSION)
        return nectar_error_set(err, NECTAR_EVERSION,
                                "TPM key blob: unknown payload version");
    size_t off = 1;
    TSS2_RC rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(payload, len, &off, pub);
    if (rc == TSS2_RC_SUCCESS)
        rc = Tss2_MU_TPM2B_PRIVATE_Unmarshal(payload, len, &off, priv);
    if (rc != TSS2_RC_SUCCESS || off != len)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "TPM key blob is malformed");
    const TPMT_PUBLIC *p = &pub->publicArea;
    if (p->type != TPM2_ALG_ECC ||
        p->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256 ||
        p->unique.ecc.x.size > 32 || p->unique.ecc.y.size > 32)
        return nectar_error_set(err, NECTAR_EPARSE,
                                "TPM key blob is not a P-256 key");
    return 0;
}

static int tpm_create(void *state, uint8_t **payload, size_t *len,
                      nectar_error_t *err)
{
    struct tpm_state *s = state;
    ESYS_TR primary = ESYS_TR_NONE;
    int rc = create_primary(s, &primary, err);
    if (rc != 0)
        return rc;
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_PUBLIC tmpl;
    TPM2B_DATA outside;
    TPML_PCR_SELECTION pcrs;
    memset(&sens, 0, sizeof(sens));
    memset(&outside, 0, sizeof(outside));
    memset(&pcrs, 0, sizeof(pcrs));
    key_template(&tmpl);
    TPM2B_PRIVATE *out_priv = NULL;
    TPM2B_PUBLIC *out_pub = NULL;
    TPM2B_CREATION_DATA *cdata = NULL;
    TPM2B_DIGEST *chash = NULL;
    TPMT_TK_CREATION *ticket = NULL;
    TSS2_RC trc = Esys_Create(s->esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                              ESYS_TR_NONE, &sens, &tmpl, &outside, &pcrs,
                              &out_priv, &out_pub, &cdata, &chash, &ticket);
    flush(s->esys, &primary);
    if (trc != TSS2_RC_SUCCESS)
        rc = tpm_error(err, "TPM2_Create", trc);
    else
        rc = marshal_payload(out_pub, out_priv, payload, len, err);
    Esys_Free(out_priv);
    Esys_Free(out_pub);
    Esys_Free(cdata);
    Esys_Free(chash);
    Esys_Free(ticket);
    return rc;
}

static void point_bytes(const TPM2B_ECC_PARAMETER *c, uint8_t out[32])
{
    /* The TPM may drop leading zero bytes; restore fixed width. */
    memset(out, 0, 32);
    memcpy(out + 32 - c->size, c->buffer, c->size);
}

static int tpm_public_key(void *state, const uint8_t *payload, size_t len,
                          uint8_t pub[65], nectar_error_t *err)
{
    (void)state;
    TPM2B_PUBLIC tpub;
    TPM2B_PRIVATE tpriv;
    int rc = unmarshal_payload(payload, len, &tpub, &tpriv, err);
    if (rc == 0) {
        pub[0] = 0x04;
        point_bytes(&tpub.publicArea.unique.ecc.x, pub + 1);
        point_bytes(&tpub.publicArea.unique.ecc.y, pub + 33);
    }
    nectar_wipe(&tpriv, sizeof(tpriv));
    return rc;
}

/* A salted HMAC session that encrypts the first response parameter (the
 * shared point) and the first command parameter. */
static int start_session(struct tpm_state *s, ESYS_TR salt_key,
                         ESYS_TR *session, nectar_error_t *err)
{
    TPMT_SYM_DEF sym;
    memset(&sym, 0, sizeof(sym));
    sym.algorithm = TPM2_ALG_AES;
    sym.keyBits.aes = 128;
    sym.mode.aes = TPM2_ALG_CFB;
    TSS2_RC rc = Esys_StartAuthSession(
        s->esys, salt_key, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
        ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256, session);
    if (rc != TSS2_RC_SUCCESS) {
        *session = ESYS_TR_NONE;
        return tpm_error(err, "TPM2_StartAuthSession", rc);
    }
    TPMA_SESSION attrs = TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT |
                         TPMA_SESSION_CONTINUESESSION;
    rc = Esys_TRSess_SetAttributes(s->esys, *session, attrs, 0xff);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_error(err, "session attributes", rc);
    return 0;
}

static int zgen(struct tpm_state *s, ESYS_TR key, ESYS_TR session,
                const uint8_t peer[65], uint8_t z[32], nectar_error_t *err)
{
    TPM2B_ECC_POINT in;
    memset(&in, 0, sizeof(in));
    in.point.x.size = 32;
    memcpy(in.point.x.buffer, peer + 1, 32);
    in.point.y.size = 32;
    memcpy(in.point.y.buffer, peer + 33, 32);
    TPM2B_ECC_POINT *out = NULL;
    TSS2_RC rc = Esys_ECDH_ZGen(s->esys, key, session, ESYS_TR_NONE,
                                ESYS_TR_NONE, &in, &out);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_error(err, "TPM2_ECDH_ZGen", rc);
    int ok = out->point.x.size <= 32;
    if (ok)
        point_bytes(&out->point.x, z);
    nectar_wipe(out, sizeof(*out));
    Esys_Free(out);
    if (!ok)
        return nectar_error_set(err, NECTAR_ETPM, "ZGen: oversized point");
    return 0;
}

static int tpm_ecdh(void *state, const uint8_t *payload, size_t len,
                    const uint8_t peer[65], uint8_t z[32], nectar_error_t *err)
{
    struct tpm_state *s = state;
    TPM2B_PUBLIC tpub;
    TPM2B_PRIVATE tpriv;
    int rc = unmarshal_payload(payload, len, &tpub, &tpriv, err);
    if (rc != 0)
        return rc;
    ESYS_TR primary = ESYS_TR_NONE, key = ESYS_TR_NONE;
    ESYS_TR session = ESYS_TR_NONE;
    rc = create_primary(s, &primary, err);
    if (rc == 0) {
        TSS2_RC trc =
            Esys_Load(s->esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                      ESYS_TR_NONE, &tpriv, &tpub, &key);
        if (trc != TSS2_RC_SUCCESS) {
            key = ESYS_TR_NONE;
            rc = tpm_error(
                err, "TPM2_Load (blob from another TPM, or tampered)", trc);
        }
    }
    if (rc == 0)
        rc = start_session(s, primary, &session, err);
    if (rc == 0)
        rc = zgen(s, key, session, peer, z, err);
    flush(s->esys, &session);
    flush(s->esys, &key);
    flush(s->esys, &primary);
    nectar_wipe(&tpriv, sizeof(tpriv));
    return rc;
}

const struct nectar__vault_backend nectar__vault_backend_tpm2 = {
    .name = "tpm2",
    .kind = NECTAR_VAULT_TPM2,
    .hardware = 1,
    .state_size = sizeof(struct tpm_state),
    .probe = tpm_probe,
    .open = tpm_open,
    .close = tpm_close,
    .create = tpm_create,
    .public_key = tpm_public_key,
    .ecdh = tpm_ecdh,
    .seal = NULL,
    .unseal = NULL,
};

#endif /* NECTAR_HAVE_TSS2 */
