/* visibility.h - NECTAR_API marks a symbol exported from libnectar.so.
 * Everything else is built with -fvisibility=hidden. */
#ifndef NECTAR_VISIBILITY_H
#define NECTAR_VISIBILITY_H
#if defined(__GNUC__) || defined(__clang__)
#define NECTAR_API __attribute__((visibility("default")))
#else
#define NECTAR_API
#endif
#endif
