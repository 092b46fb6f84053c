/* LD_PRELOAD shim for tests: malloc() of exactly $SESSION_TEST_FAIL_MALLOC
 * bytes returns NULL (ENOMEM); every other size goes to glibc. nginx's pools
 * take blocks above their page from malloc, so a request can be made to
 * fail one chosen allocation of the module (a token copy of that size),
 * the one case a real server cannot produce on demand. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

extern void* __libc_malloc(size_t size);

static size_t fail_size = (size_t)-1;

__attribute__((constructor)) static void read_fail_size(void) {
    /* Read once in the master: nginx clears the environment of workers. */
    const char* text = getenv("SESSION_TEST_FAIL_MALLOC");
    if (text != NULL) {
        fail_size = (size_t)strtoul(text, NULL, 10);
    }
}

void* malloc(size_t size) {
    if (size == fail_size) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(size);
}
