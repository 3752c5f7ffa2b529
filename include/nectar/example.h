/*
 * example.h - the example application (docs/example.md): a handler that
 * peeks every intercepted TCP flow and intercepts TLS with a local CA,
 * inspects HTTP (observed header, HTML badge, WebSocket, CONNECT), promotes
 * excluded domains and unknown protocols back to the host, and relays UDP.
 *
 * Selecting it: `"app": "example"` in the engine-config JSON makes the
 * built-in handler delegate to it (nectar-sim, the nectar daemon and any
 * host that uses rama_transparent_proxy_engine_new_with_config), or pass
 * nectar_example_handler() to nectar_register_handler/nectar_engine_new.
 *
 * Live control: the functions below act on the running example engine (the
 * most recently created one that is not destroyed).  They may be called
 * from any thread; changes apply to flows created afterwards.  With no
 * example engine running they return NECTAR_ESTATE.
 */
#ifndef NECTAR_EXAMPLE_H
#define NECTAR_EXAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nectar/error.h"
#include "nectar/handler.h"
#include "nectar/visibility.h"

#ifdef __cplusplus
extern "C" {
#endif

NECTAR_API const nectar_handler_vtable_t *nectar_example_handler(void);

/* updateSettings: JSON {html_badge_enabled?, html_badge_label?,
 * exclude_domains?}; missing fields keep their value, an empty label is
 * ignored.  Returns 0, NECTAR_ECONFIG (bad JSON/type, *err filled) or
 * NECTAR_ESTATE. */
NECTAR_API int nectar_example_update_settings(const char *json, size_t len,
                                              nectar_error_t *err);

/* TLS key log toggle (off at start, never persisted).  set returns the
 * state after the call (false when no example engine runs). */
NECTAR_API bool nectar_example_set_tls_keylog(bool on);
NECTAR_API bool nectar_example_get_tls_keylog(void);

/* The current CA certificate as PEM (allocated with malloc-compatible
 * nectar_malloc; free with nectar_example_free) or NULL. */
NECTAR_API char *nectar_example_ca_pem(void);
NECTAR_API void nectar_example_free(void *p);

/*
 * CA lifecycle (spec §2.4).  install: the current CA (created and stored
 * when none is), DER in *der.  uninstall: the stored CA's DER, kept stored
 * (NULL when none).  rotate: a new CA replaces the old one for new flows;
 * *der the new DER and *previous the old.  DER buffers are nectar_malloc'd
 * (free with nectar_example_free).  Return 0 or a NECTAR_* code with *err.
 */
NECTAR_API int nectar_example_ca_install(uint8_t **der, size_t *der_len,
                                         nectar_error_t *err);
NECTAR_API int nectar_example_ca_uninstall(uint8_t **der, size_t *der_len,
                                           nectar_error_t *err);
NECTAR_API int nectar_example_ca_rotate(uint8_t **der, size_t *der_len,
                                        uint8_t **previous,
                                        size_t *previous_len,
                                        nectar_error_t *err);

/*
 * The control routes of spec §5.6 as IPC control-service slots
 * (include/nectar/ipc.h): fills *ops with update_settings, the three CA
 * operations, the key log toggle and free_bytes, all acting on the running
 * example (ctx unused).  For a host that serves nectar_control_start
 * itself; the example binds one on its own when the engine config names
 * `xpc_service_name`.  Any thread.
 */
struct nectar_control_ops;
NECTAR_API void nectar_example_control_ops(struct nectar_control_ops *ops);

#ifdef __cplusplus
}
#endif
#endif
