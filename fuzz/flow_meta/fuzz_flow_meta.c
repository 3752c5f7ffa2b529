/*
 * fuzz_flow_meta.c - decode arbitrary bytes as flow metadata.
 *
 * Input layout: a 64-byte header of scalar fields and eight slice
 * descriptors (offset, length; offset 0xffff = NULL pointer with that
 * length), then the data the slices point into.  Slices are clamped to
 * the input, never NUL-terminated, so ASan catches any over-read.  The
 * decoder must never crash and must produce NUL-terminated, valid UTF-8
 * strings or NULL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static const uint8_t *slice(const uint8_t *desc, const uint8_t *data,
                            size_t data_len, size_t *len)
{
    uint16_t off = rd16(desc), n = rd16(desc + 2);

    if (off == 0xffff) {
        *len = n;
        return NULL;
    }
    if (data_len == 0) {
        *len = 0;
        return data;
    }
    off %= (uint16_t)(data_len > 0xfffe ? 0xfffe : data_len);
    *len = n > data_len - off ? data_len - off : n;
    return data + off;
}

static void check_str(const char *s)
{
    if (s == NULL)
        return;
    size_t n = strlen(s);
    if (n == 0 || !nectar__utf8_valid((const uint8_t *)s, n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    RamaTransparentProxyFlowMeta raw;
    uint8_t hdr[64] = {0};
    const uint8_t *data = in;
    size_t data_len = size, len;
    struct ne_meta *m;
    bool unknown;

    memcpy(hdr, in, size < sizeof(hdr) ? size : sizeof(hdr));
    if (size >= sizeof(hdr)) {
        data = in + sizeof(hdr);
        data_len = size - sizeof(hdr);
    } else {
        data_len = 0;
    }
    memset(&raw, 0, sizeof(raw));
    raw.protocol = rd32(hdr);
    raw.source_app_pid = (int32_t)rd32(hdr + 4);
    raw.source_app_pid_is_set = hdr[8] & 1;
    raw.local_interface_index = rd32(hdr + 9);
    raw.local_interface_index_is_set = hdr[13] & 1;
    raw.local_interface_type = hdr[14];
    raw.local_interface_type_is_set = hdr[15] & 1;
    raw.is_bound = hdr[16] & 1;
    raw.is_bound_is_set = hdr[17] & 1;
    raw.remote_endpoint.port = rd16(hdr + 18);
    raw.local_endpoint.port = rd16(hdr + 20);

    raw.remote_endpoint.host_utf8 =
        (const char *)slice(hdr + 24, data, data_len, &len);
    raw.remote_endpoint.host_utf8_len = len;
    raw.local_endpoint.host_utf8 =
        (const char *)slice(hdr + 28, data, data_len, &len);
    raw.local_endpoint.host_utf8_len = len;
    raw.source_app_signing_identifier_utf8 =
        (const char *)slice(hdr + 32, data, data_len, &len);
    raw.source_app_signing_identifier_utf8_len = len;
    raw.source_app_bundle_identifier_utf8 =
        (const char *)slice(hdr + 36, data, data_len, &len);
    raw.source_app_bundle_identifier_utf8_len = len;
    raw.source_app_audit_token_bytes = slice(hdr + 40, data, data_len, &len);
    raw.source_app_audit_token_bytes_len = len;
    raw.remote_hostname_utf8 =
        (const char *)slice(hdr + 44, data, data_len, &len);
    raw.remote_hostname_utf8_len = len;
    raw.local_interface_name_utf8 =
        (const char *)slice(hdr + 48, data, data_len, &len);
    raw.local_interface_name_utf8_len = len;

    m = nectar__meta_decode(&raw, NECTAR_PROTO_TCP, &unknown);
    if (m != NULL) {
        const nectar_flow_meta_t *f = &m->m;
        if (f->flow_id == 0)
            abort();
        if ((f->remote.host == NULL) != (f->remote.port == 0))
            abort();
        check_str(f->remote.host);
        check_str(f->local.host);
        check_str(f->signing_identifier);
        check_str(f->bundle_identifier);
        check_str(f->remote_hostname);
        check_str(f->interface_name);
        if (f->has_interface_type && f->interface_type > 4)
            abort();
        nectar__meta_unref(m);
    }

    /* The same bytes as a UDP peer, and back. */
    {
        RamaUdpPeerView v;
        struct sockaddr_storage ss;
        char scratch[64];
        v.present = hdr[52] & 1;
        v.host_utf8 = slice(hdr + 56, data, data_len, &len);
        v.host_utf8_len = len;
        v.port = rd16(hdr + 60);
        v.scope_id = rd16(hdr + 62);
        if (nectar__peer_decode(&v, &ss)) {
            RamaUdpPeerView back = nectar__peer_encode(
                (struct sockaddr *)&ss, scratch, sizeof(scratch));
            if (!back.present || back.port != v.port ||
                memchr(back.host_utf8, '%', back.host_utf8_len) != NULL)
                abort();
        }
    }
    free(nectar__utf8_dup_trimmed((const char *)data, data_len));
    return 0;
}
