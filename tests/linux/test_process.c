/*
 * test_process.c - process identity on Linux, no root needed: sock_diag on
 * loopback sockets this test owns must report our own uid, pid and
 * executable; the cgroup-to-unit helper on known paths.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness/test.h"
#include "nectar/process.h"

/* A connected loopback pair (proto SOCK_STREAM or SOCK_DGRAM) in family
 * fam; returns the client fd, fills the server fd and both addresses. */
static int loop_pair(int fam, int type, int *server, struct sockaddr_storage *cl,
                     struct sockaddr_storage *sv)
{
    socklen_t len = fam == AF_INET ? sizeof(struct sockaddr_in)
                                   : sizeof(struct sockaddr_in6);
    memset(sv, 0, sizeof(*sv));
    sv->ss_family = (sa_family_t)fam;
    if (fam == AF_INET)
        ((struct sockaddr_in *)sv)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else
        ((struct sockaddr_in6 *)sv)->sin6_addr = in6addr_loopback;
    int s = socket(fam, type, 0);
    CHECK(s >= 0);
    CHECK_EQ(bind(s, (struct sockaddr *)sv, len), 0);
    CHECK_EQ(getsockname(s, (struct sockaddr *)sv, &len), 0);
    if (type == SOCK_STREAM)
        CHECK_EQ(listen(s, 4), 0);
    int c = socket(fam, type, 0);
    CHECK(c >= 0);
    CHECK_EQ(connect(c, (struct sockaddr *)sv, len), 0);
    CHECK_EQ(getsockname(c, (struct sockaddr *)cl, &len), 0);
    *server = s;
    return c;
}

static void check_owner(int fam, int type, int proto)
{
    int s;
    struct sockaddr_storage cl, sv;
    int c = loop_pair(fam, type, &s, &cl, &sv);
    nectar_process_owner_t o;
    nectar_error_t err = {0};
    int rc = nectar_process_socket_owner(proto, (struct sockaddr *)&cl,
                                         (struct sockaddr *)&sv, &o, &err);
    if (rc != 0)
        fprintf(stderr, "socket_owner: %s\n", err.message);
    CHECK_EQ(rc, 0);
    CHECK_EQ(o.uid, getuid());
    CHECK_EQ(o.pid, getpid());
    CHECK_NE(o.inode, 0);
    close(c);
    close(s);
}

static void owner_tcp4(void)
{
    check_owner(AF_INET, SOCK_STREAM, IPPROTO_TCP);
}

static void owner_tcp6(void)
{
    check_owner(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
}

static void owner_udp4(void)
{
    check_owner(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
}

static void owner_udp6(void)
{
    check_owner(AF_INET6, SOCK_DGRAM, IPPROTO_UDP);
}

/* An unconnected UDP socket that sent to a peer is found by its own
 * address and that peer. */
static void owner_udp_unconnected(void)
{
    int peer = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in pa = {.sin_family = AF_INET};
    pa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(pa);
    CHECK_EQ(bind(peer, (struct sockaddr *)&pa, len), 0);
    CHECK_EQ(getsockname(peer, (struct sockaddr *)&pa, &len), 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = pa;
    ua.sin_port = 0;
    CHECK_EQ(bind(u, (struct sockaddr *)&ua, len), 0);
    CHECK_EQ(getsockname(u, (struct sockaddr *)&ua, &len), 0);
    CHECK_EQ(sendto(u, "x", 1, 0, (struct sockaddr *)&pa, len), 1);
    nectar_process_owner_t o;
    CHECK_EQ(nectar_process_socket_owner(IPPROTO_UDP, (struct sockaddr *)&ua,
                                         (struct sockaddr *)&pa, &o, NULL),
             0);
    CHECK_EQ(o.pid, getpid());
    close(u);
    close(peer);
}

static void owner_missing(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1)};
    struct sockaddr_in b = {.sin_family = AF_INET, .sin_port = htons(2)};
    inet_pton(AF_INET, "192.0.2.1", &a.sin_addr);
    inet_pton(AF_INET, "192.0.2.2", &b.sin_addr);
    nectar_process_owner_t o;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_process_socket_owner(IPPROTO_TCP, (struct sockaddr *)&a,
                                         (struct sockaddr *)&b, &o, &err),
             NECTAR_ENOENT);
    CHECK_EQ(nectar_process_socket_owner(IPPROTO_ICMP, (struct sockaddr *)&a,
                                         (struct sockaddr *)&b, &o, &err),
             NECTAR_EINVAL);
    struct sockaddr_in6 c = {.sin6_family = AF_INET6};
    CHECK_EQ(nectar_process_socket_owner(IPPROTO_TCP, (struct sockaddr *)&a,
                                         (struct sockaddr *)&c, &o, &err),
             NECTAR_EINVAL);
}

static void exe_path_self(void)
{
    char want[4096], got[4096];
    ssize_t n = readlink("/proc/self/exe", want, sizeof(want) - 1);
    CHECK_GT(n, 0);
    want[n] = '\0';
    CHECK_EQ(nectar_process_exe_path(getpid(), got, sizeof(got), NULL), 0);
    CHECK_STR_EQ(got, want);
    CHECK_EQ(nectar_process_exe_path(0, got, sizeof(got), NULL),
             NECTAR_EINVAL);
    /* pid_max is at most 2^22: this pid cannot exist. */
    CHECK_EQ(nectar_process_exe_path(0x7ffffff0, got, sizeof(got), NULL),
             NECTAR_ENOENT);
    /* Truncation keeps a NUL. */
    char small[4];
    CHECK_EQ(nectar_process_exe_path(getpid(), small, sizeof(small), NULL),
             0);
    CHECK_EQ(strlen(small), 3);
}

static void cgroup_self(void)
{
    char cg[512];
    int rc = nectar_process_cgroup_path(getpid(), cg, sizeof(cg), NULL);
    if (rc == NECTAR_ENOENT)
        return; /* cgroup v1-only host: nothing to compare */
    CHECK_EQ(rc, 0);
    CHECK_EQ(cg[0], '/');
}

static void unit_from_cgroup(void)
{
    char u[64];
    CHECK_EQ(nectar_process_unit_from_cgroup("/system.slice/ssh.service", u,
                                             sizeof(u)),
             0);
    CHECK_STR_EQ(u, "ssh.service");
    CHECK_EQ(nectar_process_unit_from_cgroup(
                 "/user.slice/user-1000.slice/user@1000.service/app.slice/"
                 "run-r1.scope",
                 u, sizeof(u)),
             0);
    CHECK_STR_EQ(u, "run-r1.scope");
    CHECK_EQ(nectar_process_unit_from_cgroup("/system.slice/x.service/payload",
                                             u, sizeof(u)),
             0);
    CHECK_STR_EQ(u, "x.service");
    CHECK_EQ(nectar_process_unit_from_cgroup("/", u, sizeof(u)),
             NECTAR_ENOENT);
    CHECK_EQ(nectar_process_unit_from_cgroup("/a.slice/.service", u, sizeof(u)),
             NECTAR_ENOENT);
    CHECK_EQ(nectar_process_audit_token_to_pid((const uint8_t *)"x", 1), -1);
    CHECK_STR_EQ(nectar_process_backend_name(), "linux");
}

static const nectar_test_t tests[] = {
    {"owner_tcp4", owner_tcp4},
    {"owner_tcp6", owner_tcp6},
    {"owner_udp4", owner_udp4},
    {"owner_udp6", owner_udp6},
    {"owner_udp_unconnected", owner_udp_unconnected},
    {"owner_missing", owner_missing},
    {"exe_path_self", exe_path_self},
    {"cgroup_self", cgroup_self},
    {"unit_from_cgroup", unit_from_cgroup},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
