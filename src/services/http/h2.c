/* h2.c - HTTP/2 relay (work in progress). */
#include "nectar/error.h"
#include "services/http/http_int.h"

int svc_h2_start(svc_stream_t *client, svc_stream_t *server,
                 const svc_http_opts_t *opts, svc_http_done_cb done_cb,
                 void *data, svc_http_t **out)
{
    (void)client;
    (void)server;
    (void)opts;
    (void)done_cb;
    (void)data;
    (void)out;
    return NECTAR_ENOTSUP;
}
