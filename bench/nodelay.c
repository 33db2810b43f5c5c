/*
 * An experiment for scripts/bench, never shipped. Loaded with LD_PRELOAD into a process, it
 * turns TCP_NODELAY on for every TCP socket that process connects or accepts, and turns every
 * attempt to switch it off into "on".
 *
 * lambda_runtime's Runtime API client switches TCP_NODELAY off (hyper-util's HttpConnector
 * default) and cargo-lambda's emulator never switches it on, so a streamed answer, written as
 * several small chunks, can wait for the peer's delayed ACK (~40 ms on Linux) before its next
 * chunk leaves. The streaming rows with and without this library show what that costs.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int (*real_setsockopt)(int, int, int, const void *, socklen_t);

static void no_delay(int fd) {
    int on = 1;
    if (!real_setsockopt) {
        real_setsockopt = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
    }
    /* Fails harmlessly on sockets that are not TCP. */
    real_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t length) {
    if (!real_setsockopt) {
        real_setsockopt = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
    }
    if (level == IPPROTO_TCP && name == TCP_NODELAY) {
        int on = 1;
        return real_setsockopt(fd, level, name, &on, sizeof on);
    }
    return real_setsockopt(fd, level, name, value, length);
}

int accept(int fd, struct sockaddr *address, socklen_t *length) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) {
        real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    }
    int accepted = real(fd, address, length);
    if (accepted >= 0) {
        no_delay(accepted);
    }
    return accepted;
}

int accept4(int fd, struct sockaddr *address, socklen_t *length, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) {
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    }
    int accepted = real(fd, address, length, flags);
    if (accepted >= 0) {
        no_delay(accepted);
    }
    return accepted;
}
