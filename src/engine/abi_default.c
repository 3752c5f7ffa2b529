/*
 * abi_default.c - rama_transparent_proxy_engine_new*: the entry points a
 * host that only knows the ABI uses.  They build an engine around the
 * handler registered with nectar_register_handler(), or the built-in
 * handler (src/app) when none was registered.  Kept in its own file so
 * programs linking libnectar.a without these two symbols do not pull in
 * the built-in handler.
 */
#include "engine/internal.h"

const nectar_handler_vtable_t *
nectar__registered_handler(const nectar_engine_options_t **opts);

NECTAR_API RamaTransparentProxyEngine *
rama_transparent_proxy_engine_new_with_config(RamaBytesView engine_config)
{
    const nectar_engine_options_t *opts = NULL;
    const nectar_handler_vtable_t *vt = nectar__registered_handler(&opts);
    const uint8_t *cfg = engine_config.ptr;
    size_t len = engine_config.len;

    if (cfg == NULL || len == 0) {
        cfg = NULL;
        len = 0;
    }
    if (vt == NULL)
        vt = nectar_builtin_handler();
    return nectar_engine_new(vt, opts, cfg, len, NULL);
}

NECTAR_API RamaTransparentProxyEngine *rama_transparent_proxy_engine_new(void)
{
    RamaBytesView none = {NULL, 0};
    return rama_transparent_proxy_engine_new_with_config(none);
}
