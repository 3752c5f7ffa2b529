/*
 * peer.c - UDP peer attribution across the ABI (spec ne-engine §5.5):
 * RamaUdpPeerView <-> socket address.  Numeric IP literals only (never
 * DNS on the hot path); IPv6 zones travel only in scope_id, never as
 * "%zone" text.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "engine/internal.h"

bool nectar__peer_decode(const RamaUdpPeerView *v, struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN + 1];
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (!v->present || v->host_utf8 == NULL || v->host_utf8_len == 0 ||
        v->host_utf8_len >= sizeof(text))
        return false;
    if (memchr(v->host_utf8, '\0', v->host_utf8_len) != NULL ||
        !nectar__utf8_valid(v->host_utf8, v->host_utf8_len))
        return false;
    memcpy(text, v->host_utf8, v->host_utf8_len);
    text[v->host_utf8_len] = '\0';
    /* Numeric literals only (never DNS on the hot path); "%zone" fails to
     * parse, as zones travel only in scope_id. */
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(v->port);
        return true;
    }
    if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(v->port);
        s6->sin6_scope_id = v->scope_id;
        return true;
    }
    memset(ss, 0, sizeof(*ss));
    return false;
}

RamaUdpPeerView nectar__peer_encode(const struct sockaddr *sa, char *scratch,
                                    size_t scratch_len)
{
    RamaUdpPeerView v;
    const void *addr = NULL;
    int family = 0;

    memset(&v, 0, sizeof(v));
    if (sa == NULL)
        return v;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        addr = &s4->sin_addr;
        family = AF_INET;
        v.port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        addr = &s6->sin6_addr;
        family = AF_INET6;
        v.port = ntohs(s6->sin6_port);
        v.scope_id = s6->sin6_scope_id;
    } else {
        return v;
    }
    /* Too small a buffer: absent rather than truncated. */
    if (inet_ntop(family, addr, scratch, (socklen_t)scratch_len) == NULL) {
        memset(&v, 0, sizeof(v));
        return v;
    }
    v.present = true;
    v.host_utf8 = (const uint8_t *)scratch;
    v.host_utf8_len = strlen(scratch);
    return v;
}
