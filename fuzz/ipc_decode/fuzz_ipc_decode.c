/*
 * fuzz_ipc_decode.c - libFuzzer target for the IPC message decoder.
 *
 * The first input byte says how many descriptors "arrived" with the
 * message (0-3, all /dev/null), the rest is the CBOR payload.  Whatever
 * decodes must re-encode, decode again to an equal value, and render as
 * JSON; nothing may crash, leak or exceed the limits.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "ipc/ipc_int.h"

static void check_reencode(const nectar_ipc_obj_t *v, const int *fds,
                           size_t nfds)
{
    struct ipc_buf b = {0};
    int out_fds[NECTAR_IPC_MAX_FDS];
    size_t n = 0;
    (void)fds;
    (void)nfds;
    if (nectar__ipc_encode(v, &b, out_fds, &n, NULL) == 0) {
        nectar_ipc_obj_t *again = NULL;
        if (nectar__ipc_decode(b.p, b.len, out_fds, n, &again, NULL) != 0 ||
            !nectar_ipc_equal(v, again))
            abort();
        nectar_ipc_release(again);
    }
    nectar__ipc_buf_free(&b);
    nectar_ipc_free_string(nectar_ipc_to_json(v));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int fds[3];
    size_t nfds = data[0] % 4;
    for (size_t i = 0; i < nfds; i++)
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    nectar_ipc_obj_t *v = NULL;
    if (nectar__ipc_decode(data + 1, size - 1, fds, nfds, &v, NULL) == 0) {
        check_reencode(v, fds, nfds);
        nectar_ipc_release(v);
    }
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    return 0;
}
