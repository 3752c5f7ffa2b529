/* error.c - the error table behind nectar_strerror and nectar_err_name. */
#include "nectar/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *nectar_strerror(int code)
{
    switch (code) {
#define NECTAR_ERR_MSG(name, value, msg)                                    \
    case value:                                                             \
        return msg;
        NECTAR_ERRNO_MAP(NECTAR_ERR_MSG)
#undef NECTAR_ERR_MSG
    case 0:
        return "success";
    default:
        break;
    }
    if (code < 0 && code > -4000)
        return strerror(-code);
    return "unknown error";
}

const char *nectar_err_name(int code)
{
    switch (code) {
#define NECTAR_ERR_NAME(name, value, msg)                                   \
    case value:                                                             \
        return "NECTAR_" #name;
        NECTAR_ERRNO_MAP(NECTAR_ERR_NAME)
#undef NECTAR_ERR_NAME
    default:
        return "NECTAR_UNKNOWN";
    }
}

int nectar_error_set(nectar_error_t *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}
