/*
 * hijack.c - local answers for the hijack host (nectar.localhost by
 * default): requests for it never reach a server.  Routes:
 *   GET /                   status page (HTML) with a CA download link
 *   GET /ping               {"ok":true,"service":"nectar"} (JSON)
 *   GET /data/root.ca.pem   the current CA certificate (PEM), via the
 *   GET /ca.pem             caller's callback, so it follows rotation
 * HEAD works like GET without the body; other methods get 405, other
 * paths 404.
 */
#include <string.h>

#include "common/alloc.h"
#include "nectar/error.h"
#include "services/http/http_int.h"

static const char status_page[] =
    "<!DOCTYPE html>\n"
    "<html><head><meta charset=\"utf-8\">"
    "<title>nectar transparent proxy</title></head>\n"
    "<body>\n"
    "<h1>nectar transparent proxy</h1>\n"
    "<p>This domain is hijacked by the transparent proxy runtime: your "
    "traffic goes through nectar and the proxy is active.</p>\n"
    "<p>To let the proxy inspect HTTPS without warnings, install its root "
    "certificate authority:</p>\n"
    "<p><a href=\"/data/root.ca.pem\" download=\"nectar-root-ca.pem\">"
    "Download Root CA PEM</a></p>\n"
    "</body></html>\n";

bool nectar__http_hijack_match(const svc_http_opts_t *o, const char *host)
{
    if (o->hijack_host == NULL || o->hijack_host[0] == '\0' || host == NULL)
        return false;
    return nectar__http_ieq(host, strlen(host), o->hijack_host);
}

static int answer_ca(const svc_http_opts_t *o, hijack_resp_t *r)
{
    char *pem = NULL;
    size_t len = 0;
    if (o->ca_pem == NULL) {
        r->status = 404;
        r->ctype = "text/plain";
        return nectar__http_buf_adds(&r->body, "no CA configured\n");
    }
    int rc = o->ca_pem(o->data, &pem, &len);
    if (rc != 0 || pem == NULL) {
        nectar_free(pem);
        r->status = 503;
        r->ctype = "text/plain";
        return nectar__http_buf_adds(&r->body, "CA unavailable\n");
    }
    r->status = 200;
    r->ctype = "application/x-pem-file";
    r->extra_header =
        "Content-Disposition: attachment; filename=\"nectar-root-ca.pem\"";
    rc = nectar__http_buf_add(&r->body, pem, len);
    nectar_free(pem);
    return rc;
}

int nectar__http_hijack_answer(const svc_http_opts_t *o, const char *method,
                               const char *path, size_t plen, hijack_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    /* Only the path part counts: strip "?query" and "#fragment". */
    for (size_t i = 0; i < plen; i++) {
        if (path[i] == '?' || path[i] == '#') {
            plen = i;
            break;
        }
    }
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (!get) {
        r->status = 405;
        r->ctype = "text/plain";
        r->extra_header = "Allow: GET, HEAD";
        return nectar__http_buf_adds(&r->body, "method not allowed\n");
    }
    if (nectar__http_ieq(path, plen, "/") || plen == 0) {
        r->status = 200;
        r->ctype = "text/html; charset=utf-8";
        return nectar__http_buf_adds(&r->body, status_page);
    }
    if (nectar__http_ieq(path, plen, "/ping")) {
        r->status = 200;
        r->ctype = "application/json";
        return nectar__http_buf_adds(&r->body,
                                     "{\"ok\":true,\"service\":\"nectar\"}\n");
    }
    if (nectar__http_ieq(path, plen, "/data/root.ca.pem") ||
        nectar__http_ieq(path, plen, "/ca.pem"))
        return answer_ca(o, r);
    r->status = 404;
    r->ctype = "text/plain";
    return nectar__http_buf_adds(&r->body, "not found\n");
}
