/* test_transport.c - listeners and connections over real Unix sockets:
 * round trips, hostile peers, requirements, timeouts, concurrency, fd
 * passing, socket activation. */
#include "ipc_tests.h"

#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- helpers --------------------------------------------------------- */

struct events {
    atomic_int interrupted, invalidated, peer_failed;
};

static void count_event(nectar_ipc_conn_t *c, nectar_ipc_event_t ev,
                        const char *reason, void *ctx)
{
    struct events *e = ctx;
    (void)c;
    (void)reason;
    if (ev == NECTAR_IPC_EVENT_INTERRUPTED)
        atomic_fetch_add(&e->interrupted, 1);
    else if (ev == NECTAR_IPC_EVENT_INVALIDATED)
        atomic_fetch_add(&e->invalidated, 1);
    else
        atomic_fetch_add(&e->peer_failed, 1);
}

static nectar_ipc_conn_t *client_events(const char *name, struct events *e)
{
    nectar_ipc_client_config_t cfg = {
        .service_name = name, .on_event = count_event, .ctx = e};
    nectar_ipc_conn_t *c = NULL;
    CHECK_EQ(nectar_ipc_connect(&cfg, &c, NULL), 0);
    return c;
}

static void check_echo_int(nectar_ipc_conn_t *c, int64_t v)
{
    nectar_ipc_obj_t *back = echo_value(c, nectar_ipc_int64(v));
    CHECK_EQ(nectar_ipc_int64_value(back), v);
    nectar_ipc_release(back);
}

static int raw_connect(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    memcpy(sa.sun_path + 1, name, n);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    CHECK_GE(fd, 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    CHECK_EQ(connect(fd, (struct sockaddr *)&sa, len), 0);
    return fd;
}

/* Reads one packet with a timeout; returns its length, 0 on EOF, -1 on
 * timeout or error. */
static ssize_t raw_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    ssize_t n = recv(fd, buf, cap, 0);
    if (n < 0 && errno == ECONNRESET)
        return 0;
    return n;
}

static void put_header(uint8_t *h, uint8_t type, uint8_t flags, uint32_t total,
                       uint64_t id)
{
    h[0] = 0x4E;
    h[1] = 1;
    h[2] = type;
    h[3] = flags;
    for (int i = 0; i < 4; i++)
        h[4 + i] = (uint8_t)(total >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        h[8 + i] = (uint8_t)(id >> (56 - 8 * i));
}

static void raw_send(int fd, const uint8_t *p, size_t len, const int *fds,
                     size_t nfds)
{
    struct iovec iov = {(void *)p, len};
    char ctl[CMSG_SPACE(sizeof(int) * 80)];
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        memset(ctl, 0, sizeof(ctl));
        mh.msg_control = ctl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    CHECK_GE(sendmsg(fd, &mh, MSG_NOSIGNAL), 0);
}

/* A packet: header (type 3, id 1) + payload, total = payload length. */
static size_t packet(uint8_t *out, uint8_t type, const uint8_t *payload,
                     size_t len)
{
    put_header(out, type, 0, (uint32_t)len, 1);
    memcpy(out + 16, payload, len);
    return 16 + len;
}

/* ---- round trips ----------------------------------------------------- */

void test_echo_roundtrip(void)
{
    const char *name = ipc_test_name("echo");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *c = client_new(name);
    /* Every type crosses the wire and comes back equal. */
    uint8_t u[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    nectar_ipc_obj_t *vals[] = {
        nectar_ipc_null(),
        nectar_ipc_bool(true),
        nectar_ipc_int64(INT64_MIN),
        nectar_ipc_uint64(UINT64_MAX),
        nectar_ipc_double(-0.5),
        nectar_ipc_string("caf\xc3\xa9"),
        nectar_ipc_data("\0\1\2", 3),
        nectar_ipc_date(-123456789),
        nectar_ipc_uuid(u),
        nectar_ipc_array(),
        nectar_ipc_dict(),
    };
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        nectar_ipc_obj_t *copy = nectar_ipc_copy(vals[i]);
        nectar_ipc_obj_t *back = echo_value(c, vals[i]);
        CHECK(nectar_ipc_equal(copy, back));
        nectar_ipc_release(copy);
        nectar_ipc_release(back);
    }
    /* A message larger than one packet (fragmented) round-trips. */
    size_t big_len = 300000;
    char *big = malloc(big_len);
    memset(big, 'x', big_len);
    nectar_ipc_obj_t *back = echo_value(c, nectar_ipc_data(big, big_len));
    size_t got = 0;
    const void *p = nectar_ipc_data_ptr(back, &got);
    CHECK_EQ(got, big_len);
    CHECK_MEM_EQ(p, big, big_len);
    nectar_ipc_release(back);
    free(big);
    /* Non-dictionary messages are refused before any I/O. */
    nectar_ipc_obj_t *arr = nectar_ipc_array(), *reply = NULL;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ipc_send_sync(c, arr, 1000, &reply, &err), NECTAR_EINVAL);
    CHECK_EQ(nectar_ipc_send(c, arr, &err), NECTAR_EINVAL);
    nectar_ipc_release(arr);
    /* Peer credentials are those of this process. */
    nectar_ipc_peer_t peer;
    CHECK_EQ(nectar_ipc_conn_peer(c, &peer), 0);
    CHECK_EQ(peer.uid, getuid());
    CHECK_EQ(peer.pid, getpid());
    CHECK(peer.exe != NULL);
    nectar_ipc_conn_release(c);
    echo_stop(&s);
}

static void reply_check_on_message(nectar_ipc_conn_t *conn,
                                   nectar_ipc_message_t *m, void *ctx)
{
    atomic_int *state = ctx;
    (void)conn;
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    nectar_error_t err = {0};
    bool expects = nectar_ipc_message_expects_reply(m);
    int rc = nectar_ipc_message_reply(m, r, &err);
    nectar_ipc_release(r);
    /* Fire-and-forget: replying gives ReplyNotExpected (ESTATE). */
    if (!expects && rc == NECTAR_ESTATE)
        atomic_store(state, 1);
    else if (expects && rc == 0)
        atomic_store(state, 2);
}

static int state_is_1(void *p)
{
    return atomic_load((atomic_int *)p) == 1;
}

void test_fire_and_forget(void)
{
    const char *name = ipc_test_name("ff");
    atomic_int state = 0;
    nectar_ipc_listener_config_t cfg = {.service_name = name,
                                        .on_message = reply_check_on_message,
                                        .ctx = &state};
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), 0);
    nectar_ipc_conn_t *c = client_new(name);
    nectar_ipc_obj_t *m = nectar_ipc_dict();
    nectar_ipc_dict_set(m, "kind", nectar_ipc_string("ping"), NULL);
    CHECK_EQ(nectar_ipc_send(c, m, NULL), 0);
    CHECK(nectar_test_poll(state_is_1, &state, 3000));
    nectar_ipc_release(m);
    nectar_ipc_conn_release(c);
    nectar_ipc_listener_close(ls);
}

void test_fd_passing(void)
{
    const char *name = ipc_test_name("fd");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *c = client_new(name);
    int pfd[2];
    CHECK_EQ(pipe(pfd), 0);
    /* Three fds in one message; the echo sends them back (dup'd). */
    nectar_ipc_obj_t *msg = nectar_ipc_dict();
    nectar_ipc_dict_set(msg, "w", nectar_ipc_fd(pfd[1]), NULL);
    nectar_ipc_dict_set(msg, "r", nectar_ipc_fd(pfd[0]), NULL);
    nectar_ipc_dict_set(msg, "w2", nectar_ipc_fd(pfd[1]), NULL);
    nectar_ipc_obj_t *reply = NULL;
    CHECK_EQ(nectar_ipc_send_sync(c, msg, 5000, &reply, NULL), 0);
    nectar_ipc_obj_t *w = nectar_ipc_dict_get(reply, "w");
    CHECK_EQ(nectar_ipc_type(w), NECTAR_IPC_FD);
    CHECK(nectar_ipc_equal(w, nectar_ipc_dict_get(msg, "w")));
    int wfd = nectar_ipc_fd_dup(w);
    CHECK_GE(wfd, 0);
    CHECK_EQ(write(wfd, "hello", 5), 5);
    char buf[8] = {0};
    CHECK_EQ(read(pfd[0], buf, sizeof(buf)), 5);
    CHECK_STR_EQ(buf, "hello");
    close(wfd);
    nectar_ipc_release(reply);
    nectar_ipc_release(msg);
    close(pfd[0]);
    close(pfd[1]);
    nectar_ipc_conn_release(c);
    echo_stop(&s);
}

/* ---- hostile peers --------------------------------------------------- */

/* Sends one hostile packet on a fresh connection and expects the server
 * to close that connection; then checks a good client still works. */
static void hostile(const char *name, nectar_ipc_conn_t *good,
                    const uint8_t *pkt, size_t len, const int *fds, size_t nfds,
                    const char *what)
{
    int fd = raw_connect(name);
    uint8_t buf[4096];
    CHECK_GT(raw_recv(fd, buf, sizeof(buf), 3000), 16); /* verdict */
    raw_send(fd, pkt, len, fds, nfds);
    ssize_t n = raw_recv(fd, buf, sizeof(buf), 3000);
    if (n != 0)
        NECTAR_FAIL_AT("hostile '%s': server did not close (%zd)", what, n);
    close(fd);
    check_echo_int(good, 42);
}

void test_hostile_input(void)
{
    const char *name = ipc_test_name("hostile");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *good = client_new(name);
    check_echo_int(good, 1);
    uint8_t pkt[2048];
    size_t n;

    hostile(name, good, (const uint8_t *)"garbage!", 8, NULL, 0, "garbage");
    put_header(pkt, 3, 0, 1, 1);
    pkt[0] = 0x00;
    pkt[16] = 0xa0;
    hostile(name, good, pkt, 17, NULL, 0, "bad magic");
    /* Truncated: declares 10 bytes, carries 3, no MORE flag. */
    put_header(pkt, 3, 0, 10, 1);
    memcpy(pkt + 16, "\xa1\x61\x61", 3);
    hostile(name, good, pkt, 19, NULL, 0, "truncated");
    /* Oversized: declares more than the message limit. */
    put_header(pkt, 3, 1, NECTAR_IPC_MAX_MESSAGE + 1, 1);
    hostile(name, good, pkt, 100, NULL, 0, "oversized");
    /* Too deep: 300 nested arrays. */
    memset(pkt + 16, 0x81, 300);
    pkt[316] = 0x01;
    put_header(pkt, 3, 0, 301, 1);
    hostile(name, good, pkt, 317, NULL, 0, "too deep");
    /* Wrong type at the top: an array. */
    const uint8_t arr[] = {0x81, 0x01};
    n = packet(pkt, 3, arr, sizeof(arr));
    hostile(name, good, pkt, n, NULL, 0, "top-level array");
    /* Bad fds: an fd reference with no descriptor attached. */
    const uint8_t fdref[] = {0xa1, 0x61, 0x66, 0xd9, 0xc7, 0x3b, 0x00};
    n = packet(pkt, 3, fdref, sizeof(fdref));
    hostile(name, good, pkt, n, NULL, 0, "fd index without fd");
    /* Bad fds: more descriptors than the limit. */
    int many[70];
    for (int i = 0; i < 70; i++)
        many[i] = 0;
    const uint8_t empty[] = {0xa0};
    n = packet(pkt, 2, empty, sizeof(empty));
    hostile(name, good, pkt, n, many, 70, "too many fds");
    /* A verdict packet from a client, and an unknown packet type. */
    n = packet(pkt, 1, empty, sizeof(empty));
    hostile(name, good, pkt, n, NULL, 0, "verdict from client");
    n = packet(pkt, 9, empty, sizeof(empty));
    hostile(name, good, pkt, n, NULL, 0, "unknown type");
    /* CBOR garbage in a well-framed packet. */
    const uint8_t junk[] = {0xff, 0xfe, 0xfd};
    n = packet(pkt, 3, junk, sizeof(junk));
    hostile(name, good, pkt, n, NULL, 0, "cbor garbage");
    /* A duplicate-key dictionary. */
    const uint8_t dup[] = {0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02};
    n = packet(pkt, 3, dup, sizeof(dup));
    hostile(name, good, pkt, n, NULL, 0, "duplicate key");

    /* None of the hostile messages reached the handler. */
    check_echo_int(good, 2);
    nectar_ipc_conn_release(good);
    echo_stop(&s);
}

/* ---- peer requirements ----------------------------------------------- */

/* Runs in a child exec'd as nobody: a raw peer that sends before the
 * verdict, then a library client whose first send must fail. */
void test_nobody_child(void)
{
    const char *name = getenv("NECTAR_TEST_SERVICE");
    CHECK(name != NULL);
    CHECK_EQ(getuid(), 65534);
    int fd = raw_connect(name);
    uint8_t pkt[64];
    const uint8_t empty[] = {0xa0};
    size_t n = packet(pkt, 2, empty, sizeof(empty));
    send(fd, pkt, n, MSG_NOSIGNAL);
    /* The listener answers with a refusing verdict and closes without
     * reading; because our packet sits unread in its queue, the kernel
     * may report the close as a reset before the verdict. */
    uint8_t buf[4096];
    ssize_t got = raw_recv(fd, buf, sizeof(buf), 3000);
    CHECK_GE(got, 0);
    if (got > 0)
        CHECK_EQ(buf[2], 1);
    close(fd);

    struct events ev = {0};
    nectar_ipc_conn_t *c = client_events(name, &ev);
    nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
    nectar_error_t err = {0};
    int rc = nectar_ipc_send_sync(c, m, 3000, &reply, &err);
    if (rc != NECTAR_EPEER)
        NECTAR_FAIL_AT("first send gave %d (%s), not EPEER", rc, err.message);
    CHECK(strstr(err.message, "uid 65534") != NULL);
    /* The event stream reports it too, and the failure is sticky. */
    CHECK_EQ(nectar_ipc_send(c, m, &err), NECTAR_EPEER);
    nectar_ipc_release(m);
    nectar_ipc_conn_release(c);
    CHECK_EQ(atomic_load(&ev.peer_failed), 1);
    exit(0);
}

void test_peer_requirement_uid(void)
{
    NECTAR_REQUIRE_ROOT();
    const char *name = ipc_test_name("uid");
    nectar_ipc_requirement_t req = {.flags = NECTAR_IPC_REQ_UID, .uid = 0};
    struct echo_server s;
    echo_start(&s, name, &req);
    pid_t pid = fork();
    CHECK_GE(pid, 0);
    if (pid == 0) {
        setenv("NECTAR_TEST_SERVICE", name, 1);
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
            _exit(90);
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
            _exit(91);
        exe[n] = '\0';
        execl(exe, exe, "_nobody_child", (char *)NULL);
        /* Binary not reachable as nobody: run the child's part in this
         * forked copy; setuid made it non-dumpable, which would upset
         * LeakSanitizer at exit. */
        prctl(PR_SET_DUMPABLE, 1);
        test_nobody_child();
        _exit(92);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    /* Nothing the refused peers sent was read or delivered. */
    CHECK_EQ(atomic_load(&s.messages), 0);
    CHECK_EQ(atomic_load(&s.peers), 0);
    /* Root itself is accepted. */
    nectar_ipc_conn_t *c = client_new(name);
    check_echo_int(c, 5);
    nectar_ipc_conn_release(c);
    echo_stop(&s);
}

static bool pred_self(const nectar_ipc_peer_t *p, void *ctx)
{
    (void)ctx;
    return p->pid == getpid() && p->pidfd >= 0;
}

static bool pred_never(const nectar_ipc_peer_t *p, void *ctx)
{
    (void)p;
    (void)ctx;
    return false;
}

/* Listens with req, makes one call, returns its status. */
static int call_with_requirement(const nectar_ipc_requirement_t *req,
                                 const nectar_ipc_requirement_t *client_req)
{
    const char *name = ipc_test_name("req");
    struct echo_server s;
    echo_start(&s, name, req);
    nectar_ipc_client_config_t cfg = {.service_name = name,
                                      .requirement = client_req};
    nectar_ipc_conn_t *c = NULL;
    CHECK_EQ(nectar_ipc_connect(&cfg, &c, NULL), 0);
    nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
    int rc = nectar_ipc_send_sync(c, m, 3000, &reply, NULL);
    nectar_ipc_release(reply);
    nectar_ipc_release(m);
    nectar_ipc_conn_release(c);
    echo_stop(&s);
    return rc;
}

void test_requirement_kinds(void)
{
    char self[PATH_MAX];
    CHECK(realpath("/proc/self/exe", self) != NULL);
    nectar_ipc_requirement_t r = {.flags = NECTAR_IPC_REQ_UID, .uid = getuid()};
    CHECK_EQ(call_with_requirement(&r, NULL), 0);
    r.uid = getuid() + 1;
    CHECK_EQ(call_with_requirement(&r, NULL), NECTAR_EPEER);
    r = (nectar_ipc_requirement_t){.flags = NECTAR_IPC_REQ_GID,
                                   .gid = getgid()};
    CHECK_EQ(call_with_requirement(&r, NULL), 0);
    r.gid = 54321;
    CHECK_EQ(call_with_requirement(&r, NULL), NECTAR_EPEER);
    r = (nectar_ipc_requirement_t){.flags = NECTAR_IPC_REQ_EXE_PATH,
                                   .exe_path = self};
    CHECK_EQ(call_with_requirement(&r, NULL), 0);
    r.exe_path = "/bin/false";
    CHECK_EQ(call_with_requirement(&r, NULL), NECTAR_EPEER);
    r = (nectar_ipc_requirement_t){.flags = NECTAR_IPC_REQ_SAME_EXE};
    CHECK_EQ(call_with_requirement(&r, NULL), 0);
    r = (nectar_ipc_requirement_t){.flags = NECTAR_IPC_REQ_PREDICATE,
                                   .predicate = pred_self};
    CHECK_EQ(call_with_requirement(&r, NULL), 0);
    r.predicate = pred_never;
    CHECK_EQ(call_with_requirement(&r, NULL), NECTAR_EPEER);
    /* The client checks the server too. */
    nectar_ipc_requirement_t srv = {.flags = NECTAR_IPC_REQ_UID,
                                    .uid = getuid() + 1};
    CHECK_EQ(call_with_requirement(NULL, &srv), NECTAR_EPEER);
    /* OR_ROOT lets uid 0 through any other check. */
    nectar_ipc_peer_t root = {.uid = 0, .gid = 0, .pid = -1, .pidfd = -1};
    r = (nectar_ipc_requirement_t){
        .flags = NECTAR_IPC_REQ_OR_ROOT | NECTAR_IPC_REQ_GID, .gid = 777};
    CHECK_EQ(nectar_ipc_requirement_check(&r, &root, NULL), 0);
    nectar_ipc_peer_t user = {.uid = 1000, .gid = 1000, .pid = -1, .pidfd = -1};
    CHECK_EQ(nectar_ipc_requirement_check(&r, &user, NULL), NECTAR_EPEER);
    gid_t groups[] = {5, 777};
    user.groups = groups;
    user.ngroups = 2;
    CHECK_EQ(nectar_ipc_requirement_check(&r, &user, NULL), 0);
    /* Apple-only kinds are refused up front on this backend. */
    r = (nectar_ipc_requirement_t){.flags = NECTAR_IPC_REQ_CODE_SIGNING,
                                   .code_signing = "anchor apple"};
    nectar_ipc_listener_config_t cfg = {.service_name = ipc_test_name("cs"),
                                        .requirement = &r,
                                        .on_message =
                                            nectar_ipc_router_on_message};
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), NECTAR_ENOTSUP);
}

/* ---- timeouts, cancellation, interruption ---------------------------- */

struct holder {
    pthread_mutex_t lock;
    nectar_ipc_message_t *held[256];
    int n;
};

/* Echoes, except messages with "hold" which are kept unanswered. */
static void hold_on_message(nectar_ipc_conn_t *conn, nectar_ipc_message_t *m,
                            void *ctx)
{
    struct holder *h = ctx;
    (void)conn;
    if (nectar_ipc_dict_get(nectar_ipc_message_body(m), "hold") != NULL) {
        pthread_mutex_lock(&h->lock);
        if (h->n < (int)(sizeof(h->held) / sizeof(h->held[0])))
            h->held[h->n++] = m;
        else
            nectar_ipc_message_release(m); /* full: drop, never answer */
        pthread_mutex_unlock(&h->lock);
        return;
    }
    nectar_ipc_obj_t *r = nectar_ipc_copy(nectar_ipc_message_body(m));
    nectar_ipc_dict_set(r, "echo", nectar_ipc_bool(true), NULL);
    nectar_ipc_message_reply(m, r, NULL);
    nectar_ipc_release(r);
}

static int held_count(struct holder *h)
{
    pthread_mutex_lock(&h->lock);
    int n = h->n;
    pthread_mutex_unlock(&h->lock);
    return n;
}

struct cb_state {
    atomic_int calls;
    atomic_int status;
};

static void record_reply(int status, nectar_ipc_obj_t *reply,
                         const nectar_error_t *err, void *ctx)
{
    struct cb_state *s = ctx;
    (void)reply;
    (void)err;
    atomic_store(&s->status, status);
    atomic_fetch_add(&s->calls, 1);
}

static int has_call(void *p)
{
    return atomic_load(&((struct cb_state *)p)->calls) > 0;
}

static nectar_ipc_listener_t *hold_listen(const char *name, struct holder *h)
{
    pthread_mutex_init(&h->lock, NULL);
    h->n = 0;
    nectar_ipc_listener_config_t cfg = {
        .service_name = name, .on_message = hold_on_message, .ctx = h};
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), 0);
    return ls;
}

static void release_held(struct holder *h)
{
    for (int i = 0; i < h->n; i++)
        nectar_ipc_message_release(h->held[i]);
    h->n = 0;
}

void test_timeout_and_cancel(void)
{
    const char *name = ipc_test_name("timeout");
    struct holder h;
    nectar_ipc_listener_t *ls = hold_listen(name, &h);
    nectar_ipc_conn_t *c = client_new(name);
    nectar_ipc_obj_t *hold = nectar_ipc_dict(), *reply = NULL;
    nectar_ipc_dict_set(hold, "hold", nectar_ipc_bool(true), NULL);
    nectar_error_t err = {0};

    uint64_t t0 = nectar_test_now_ms();
    CHECK_EQ(nectar_ipc_send_sync(c, hold, 300, &reply, &err),
             NECTAR_ETIMEDOUT);
    CHECK_GE(nectar_test_now_ms() - t0, 290);

    struct cb_state st = {0};
    CHECK_EQ(
        nectar_ipc_send_with_reply(c, hold, 200, record_reply, &st, NULL, NULL),
        0);
    CHECK(nectar_test_poll(has_call, &st, 3000));
    CHECK_EQ(atomic_load(&st.status), NECTAR_ETIMEDOUT);

    /* Cancel: the callback never runs, even when the reply comes. */
    struct cb_state st2 = {0};
    uint64_t id = 0;
    CHECK_EQ(
        nectar_ipc_send_with_reply(c, hold, 0, record_reply, &st2, &id, NULL),
        0);
    CHECK_NE(id, 0);
    while (held_count(&h) < 3)
        usleep(1000);
    CHECK_EQ(nectar_ipc_cancel_request(c, id), 0);
    CHECK_EQ(nectar_ipc_cancel_request(c, id), NECTAR_ENOENT);
    pthread_mutex_lock(&h.lock);
    nectar_ipc_obj_t *r = nectar_ipc_dict();
    CHECK_EQ(nectar_ipc_message_reply(h.held[2], r, NULL), 0);
    h.held[2] = h.held[--h.n];
    nectar_ipc_release(r);
    pthread_mutex_unlock(&h.lock);
    /* Replies arrive in order, so after this call the late one was seen
     * and dropped. */
    check_echo_int(c, 9);
    CHECK_EQ(atomic_load(&st2.calls), 0);

    nectar_ipc_release(hold);
    nectar_ipc_conn_release(c);
    nectar_ipc_listener_close(ls);
    release_held(&h);
}

void test_interrupted_reconnect(void)
{
    const char *name = ipc_test_name("intr");
    struct holder h;
    nectar_ipc_listener_t *ls = hold_listen(name, &h);
    struct events ev = {0};
    nectar_ipc_conn_t *c = client_events(name, &ev);
    check_echo_int(c, 1);
    nectar_ipc_obj_t *hold = nectar_ipc_dict();
    nectar_ipc_dict_set(hold, "hold", nectar_ipc_bool(true), NULL);
    struct cb_state st = {0};
    CHECK_EQ(
        nectar_ipc_send_with_reply(c, hold, 0, record_reply, &st, NULL, NULL),
        0);
    while (held_count(&h) < 1)
        usleep(1000);
    /* The server goes away: the pending call fails as interrupted. */
    nectar_ipc_listener_close(ls);
    release_held(&h);
    CHECK(nectar_test_poll(has_call, &st, 3000));
    CHECK_EQ(atomic_load(&st.status), NECTAR_ECONNRESET);
    CHECK_EQ(atomic_load(&ev.interrupted), 1);
    /* A new server under the same name: the next send reconnects. */
    ls = hold_listen(name, &h);
    check_echo_int(c, 2);
    CHECK_EQ(atomic_load(&ev.invalidated), 0);
    nectar_ipc_release(hold);
    nectar_ipc_conn_release(c);
    nectar_ipc_listener_close(ls);
}

void test_cancel_invalidates(void)
{
    const char *name = ipc_test_name("cancel");
    struct echo_server s;
    echo_start(&s, name, NULL);
    struct events ev = {0};
    nectar_ipc_conn_t *c = client_events(name, &ev);
    check_echo_int(c, 1);
    nectar_ipc_conn_cancel(c);
    /* When cancel returns, its one INVALIDATED event has run. */
    CHECK_EQ(atomic_load(&ev.invalidated), 1);
    nectar_ipc_conn_cancel(c);
    CHECK_EQ(atomic_load(&ev.invalidated), 1);
    nectar_ipc_obj_t *m = nectar_ipc_dict();
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ipc_send(c, m, &err), NECTAR_ECLOSED);
    nectar_ipc_conn_release(c);
    CHECK_EQ(atomic_load(&ev.invalidated), 1);
    /* A never-connected client: one event, then sends fail. */
    struct events ev2 = {0};
    nectar_ipc_conn_t *lazy = client_events(name, &ev2);
    nectar_ipc_conn_cancel(lazy);
    CHECK_EQ(atomic_load(&ev2.invalidated), 1);
    CHECK_EQ(nectar_ipc_send(lazy, m, &err), NECTAR_ECLOSED);
    nectar_ipc_conn_release(lazy);
    nectar_ipc_release(m);
    /* The server noticed the peers leave. */
    CHECK_GE(atomic_load(&s.events), 0);
    echo_stop(&s);
}

/* ---- concurrency ----------------------------------------------------- */

struct worker {
    pthread_t thread;
    const char *name;
    int index;
    int calls;
    int matched;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    nectar_ipc_conn_t *c = client_new(w->name);
    for (int i = 0; i < w->calls; i++) {
        nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
        nectar_ipc_dict_set(m, "t", nectar_ipc_int64(w->index), NULL);
        nectar_ipc_dict_set(m, "i", nectar_ipc_int64(i), NULL);
        if (nectar_ipc_send_sync(c, m, 30000, &reply, NULL) == 0 &&
            nectar_ipc_int64_value(nectar_ipc_dict_get(reply, "t")) ==
                w->index &&
            nectar_ipc_int64_value(nectar_ipc_dict_get(reply, "i")) == i)
            w->matched++;
        nectar_ipc_release(reply);
        nectar_ipc_release(m);
    }
    nectar_ipc_conn_release(c);
    return NULL;
}

static void run_concurrent(int clients, int calls)
{
    const char *name = ipc_test_name("conc");
    struct echo_server s;
    echo_start(&s, name, NULL);
    struct worker *w = calloc((size_t)clients, sizeof(*w));
    for (int i = 0; i < clients; i++) {
        w[i] = (struct worker){.name = name, .index = i, .calls = calls};
        CHECK_EQ(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    }
    long total = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(w[i].thread, NULL);
        CHECK_EQ(w[i].matched, calls);
        total += w[i].matched;
    }
    CHECK_EQ(total, (long)clients * calls);
    CHECK_EQ(atomic_load(&s.messages), clients * calls);
    free(w);
    echo_stop(&s);
}

void test_concurrent_100x1000(void)
{
    run_concurrent(100, 1000);
}

void test_concurrent_small(void)
{
    run_concurrent(10, 100);
}

/* ---- socket activation, paths, absence ------------------------------- */

void test_activation_child(void)
{
    const char *name = getenv("NECTAR_TEST_SERVICE");
    CHECK(name != NULL);
    struct echo_server s;
    atomic_init(&s.messages, 0);
    nectar_ipc_listener_config_t cfg = {
        .service_name = name,
        .on_message = hold_on_message,
        .flags = NECTAR_IPC_LISTEN_SOCKET_ACTIVATION,
    };
    struct holder h;
    pthread_mutex_init(&h.lock, NULL);
    h.n = 0;
    cfg.ctx = &h;
    nectar_ipc_listener_t *ls = NULL;
    nectar_error_t err = {0};
    if (nectar_ipc_listen(&cfg, &ls, &err) != 0)
        NECTAR_FAIL_AT("activation listen: %s", err.message);
    /* Serve until the parent sends {"hold"}; then exit. */
    uint64_t deadline = nectar_test_now_ms() + 10000;
    while (held_count(&h) == 0 && nectar_test_now_ms() < deadline)
        usleep(2000);
    release_held(&h);
    nectar_ipc_listener_close(ls);
    exit(0);
}

void test_socket_activation(void)
{
    const char *name = ipc_test_name("activation");
    /* Our socket, bound under the name, handed over as fd 3. */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, name, strlen(name));
    int lfd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CHECK_GE(lfd, 0);
    CHECK_EQ(bind(lfd, (struct sockaddr *)&sa,
                  (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                              strlen(name))),
             0);
    CHECK_EQ(listen(lfd, 16), 0);
    pid_t pid = fork();
    CHECK_GE(pid, 0);
    if (pid == 0) {
        if (dup2(lfd, 3) != 3)
            _exit(90);
        char pidbuf[32];
        snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
        setenv("LISTEN_PID", pidbuf, 1);
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_FDNAMES", name, 1);
        setenv("NECTAR_TEST_SERVICE", name, 1);
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
            _exit(91);
        exe[n] = '\0';
        execl(exe, exe, "_activation_child", (char *)NULL);
        _exit(92);
    }
    close(lfd);
    /* This process never accepts on the socket and the name is taken
     * (the child could not have bound it), so a reply proves the child
     * serves the passed socket. */
    nectar_ipc_conn_t *c = client_new(name);
    check_echo_int(c, 77);
    nectar_ipc_obj_t *quit = nectar_ipc_dict();
    nectar_ipc_dict_set(quit, "hold", nectar_ipc_bool(true), NULL);
    CHECK_EQ(nectar_ipc_send(c, quit, NULL), 0);
    nectar_ipc_release(quit);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    nectar_ipc_conn_release(c);
}

void test_path_socket(void)
{
    char path[128];
    snprintf(path, sizeof(path), "/tmp/nectar-ipc-test-%d.sock", (int)getpid());
    struct echo_server s;
    echo_start(&s, path, NULL);
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK_EQ(st.st_mode & 0777, 0666);
    nectar_ipc_conn_t *c = client_new(path);
    check_echo_int(c, 3);
    nectar_ipc_conn_release(c);
    echo_stop(&s);
    CHECK_NE(stat(path, &st), 0);
}

void test_no_listener(void)
{
    nectar_ipc_conn_t *c = client_new(ipc_test_name("absent"));
    nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
    nectar_error_t err = {0};
    CHECK_EQ(nectar_ipc_send_sync(c, m, 1000, &reply, &err),
             NECTAR_ECONNREFUSED);
    CHECK(strstr(err.message, "cannot reach") != NULL);
    nectar_ipc_release(m);
    nectar_ipc_conn_release(c);
}

/* ---- direct mode (clients without handlers) --------------------------- */

struct shared_worker {
    pthread_t thread;
    nectar_ipc_conn_t *conn;
    int index;
    int matched;
};

static void *shared_main(void *arg)
{
    struct shared_worker *w = arg;
    for (int i = 0; i < 500; i++) {
        nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
        nectar_ipc_dict_set(m, "t", nectar_ipc_int64(w->index), NULL);
        nectar_ipc_dict_set(m, "i", nectar_ipc_int64(i), NULL);
        if (nectar_ipc_send_sync(w->conn, m, 30000, &reply, NULL) == 0 &&
            nectar_ipc_int64_value(nectar_ipc_dict_get(reply, "t")) ==
                w->index &&
            nectar_ipc_int64_value(nectar_ipc_dict_get(reply, "i")) == i)
            w->matched++;
        nectar_ipc_release(reply);
        nectar_ipc_release(m);
    }
    return NULL;
}

void test_shared_connection(void)
{
    /* Eight threads share one handler-less client: one reads at a time
     * and hands each reply to its waiter. */
    const char *name = ipc_test_name("shared");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *c = client_new(name);
    struct shared_worker w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct shared_worker){.conn = c, .index = i};
        CHECK_EQ(pthread_create(&w[i].thread, NULL, shared_main, &w[i]), 0);
    }
    /* Midway, an async request moves the connection onto an event
     * thread; calls in flight keep working. */
    struct cb_state st = {0};
    nectar_ipc_obj_t *m = nectar_ipc_dict();
    CHECK_EQ(
        nectar_ipc_send_with_reply(c, m, 5000, record_reply, &st, NULL, NULL),
        0);
    CHECK(nectar_test_poll(has_call, &st, 5000));
    CHECK_EQ(atomic_load(&st.status), 0);
    nectar_ipc_release(m);
    for (int i = 0; i < 8; i++) {
        pthread_join(w[i].thread, NULL);
        CHECK_EQ(w[i].matched, 500);
    }
    nectar_ipc_conn_release(c);
    echo_stop(&s);
}

void test_direct_reconnect(void)
{
    const char *name = ipc_test_name("dreconn");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *c = client_new(name);
    check_echo_int(c, 1);
    echo_stop(&s);
    /* The server is gone: the next call fails as interrupted (or as
     * refused, if the reconnect came first), never hangs. */
    nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
    int rc = nectar_ipc_send_sync(c, m, 3000, &reply, NULL);
    CHECK(rc == NECTAR_ECONNRESET || rc == NECTAR_ECONNREFUSED);
    nectar_ipc_release(m);
    /* A new server under the name: calls work again. */
    echo_start(&s, name, NULL);
    check_echo_int(c, 2);
    nectar_ipc_conn_cancel(c);
    nectar_ipc_obj_t *m2 = nectar_ipc_dict();
    CHECK_EQ(nectar_ipc_send(c, m2, NULL), NECTAR_ECLOSED);
    nectar_ipc_release(m2);
    nectar_ipc_conn_release(c);
    echo_stop(&s);
}

void test_peer_not_reading(void)
{
    /* A peer floods requests and never reads the replies: the listener
     * drops it after a bounded wait and keeps serving others. */
    const char *name = ipc_test_name("noread");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *good = client_new(name);
    check_echo_int(good, 1);
    int fd = raw_connect(name);
    uint8_t buf[4096];
    CHECK_GT(raw_recv(fd, buf, sizeof(buf), 3000), 16);
    /* {"pad": 1 KiB of data} as a request, sent until our side blocks. */
    uint8_t payload[1100];
    size_t n = 0;
    payload[n++] = 0xa1;
    payload[n++] = 0x63;
    memcpy(payload + n, "pad", 3);
    n += 3;
    payload[n++] = 0x59;
    payload[n++] = 0x04;
    payload[n++] = 0x00;
    memset(payload + n, 'x', 1024);
    n += 1024;
    uint8_t pkt[1200];
    size_t len = packet(pkt, 3, payload, n);
    int sent = 0;
    uint64_t until = nectar_test_now_ms() + 3000;
    while (nectar_test_now_ms() < until) {
        if (send(fd, pkt, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            if (errno != EAGAIN)
                break; /* dropped already */
            usleep(1000);
            continue;
        }
        sent++;
    }
    CHECK_GT(sent, 10);
    /* Others are still served promptly. */
    uint64_t t0 = nectar_test_now_ms();
    check_echo_int(good, 2);
    CHECK_LT(nectar_test_now_ms() - t0, 2000);
    /* And the flooding peer was closed. */
    ssize_t r;
    do {
        r = raw_recv(fd, buf, sizeof(buf), 3000);
    } while (r > 0);
    CHECK_EQ(r, 0);
    close(fd);
    nectar_ipc_conn_release(good);
    echo_stop(&s);
}

void test_path_in_use(void)
{
    char path[128];
    snprintf(path, sizeof(path), "/tmp/nectar-ipc-inuse-%d.sock",
             (int)getpid());
    struct echo_server a, b;
    echo_start(&a, path, NULL);
    /* A second listener on a live path is refused, the first unharmed. */
    nectar_ipc_listener_config_t cfg = {
        .service_name = path, .on_message = nectar_ipc_router_on_message};
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), NECTAR_EADDRINUSE);
    nectar_ipc_conn_t *c = client_new(path);
    check_echo_int(c, 1);
    nectar_ipc_conn_release(c);
    /* A stale socket file (no listener) is replaced. */
    int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    echo_stop(&a);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    CHECK_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd); /* leaves the file behind, like a crashed daemon */
    echo_start(&b, path, NULL);
    c = client_new(path);
    check_echo_int(c, 2);
    nectar_ipc_conn_release(c);
    echo_stop(&b);
}

void test_activation_fallback(void)
{
    char pidbuf[32];
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)getpid());
    setenv("LISTEN_PID", pidbuf, 1);
    setenv("LISTEN_FDS", "1", 1);
    /* A passed socket named for another service is left alone: the
     * listener binds its own name. */
    setenv("LISTEN_FDNAMES", "some.other.service", 1);
    const char *name = ipc_test_name("actfb");
    nectar_ipc_listener_config_t cfg = {
        .service_name = name,
        .on_message = nectar_ipc_router_on_message,
        .flags = NECTAR_IPC_LISTEN_SOCKET_ACTIVATION,
    };
    nectar_ipc_router_t *r = nectar_ipc_router_new();
    cfg.ctx = r;
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), 0);
    nectar_ipc_conn_t *c = client_new(name);
    nectar_ipc_remote_t rem;
    nectar_ipc_obj_t *res = NULL;
    CHECK_EQ(nectar_ipc_call(c, "x", NULL, 2000, &res, &rem, NULL),
             NECTAR_IPC_EREMOTE);
    CHECK_EQ(rem.code, 1);
    nectar_ipc_conn_release(c);
    nectar_ipc_listener_close(ls);
    /* Our name on something that is not a listening SEQPACKET socket:
     * a configuration error, not a silent bind. */
    if (fcntl(3, F_GETFD) < 0) {
        int p[2];
        CHECK_EQ(pipe(p), 0);
        if (p[0] != 3)
            CHECK_EQ(dup2(p[0], 3), 3);
        setenv("LISTEN_FDNAMES", name, 1);
        nectar_error_t err = {0};
        CHECK_EQ(nectar_ipc_listen(&cfg, &ls, &err), NECTAR_ECONFIG);
        CHECK(strstr(err.message, "not a listening") != NULL);
        close(3);
        if (p[0] != 3)
            close(p[0]);
        close(p[1]);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    nectar_ipc_router_free(r);
}

void test_hostile_random(void)
{
    /* Seeded random packets, some with a plausible header, from many
     * short-lived peers: the listener survives and keeps serving. */
    const char *name = ipc_test_name("random");
    struct echo_server s;
    echo_start(&s, name, NULL);
    nectar_ipc_conn_t *good = client_new(name);
    unsigned seed = 12345;
    uint8_t pkt[512], buf[4096];
    for (int conn = 0; conn < 300; conn++) {
        int fd = raw_connect(name);
        CHECK_GT(raw_recv(fd, buf, sizeof(buf), 3000), 16);
        int packets = 1 + rand_r(&seed) % 3;
        for (int p = 0; p < packets; p++) {
            size_t len = (size_t)(rand_r(&seed) % 200);
            for (size_t i = 0; i < len + 16; i++)
                pkt[i] = (uint8_t)rand_r(&seed);
            if (rand_r(&seed) % 2) {
                uint8_t type = (uint8_t)(1 + rand_r(&seed) % 4);
                uint8_t flags = (uint8_t)(rand_r(&seed) % 3 == 0);
                put_header(pkt, type, flags, (uint32_t)len, 1);
                if (rand_r(&seed) % 2)
                    pkt[16] = 0xa1; /* a map, to get past the first byte */
            }
            send(fd, pkt, len + 16, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        close(fd);
        if (conn % 50 == 0)
            check_echo_int(good, conn);
    }
    check_echo_int(good, -1);
    nectar_ipc_conn_release(good);
    echo_stop(&s);
}

/* ---- soak (label long) ------------------------------------------------ */

struct soak {
    const char *name;
    atomic_bool stop;
    atomic_long calls, timeouts, cancels, errors;
};

static void soak_reply(int status, nectar_ipc_obj_t *reply,
                       const nectar_error_t *err, void *ctx)
{
    struct soak *s = ctx;
    (void)reply;
    (void)err;
    if (status == NECTAR_ETIMEDOUT)
        atomic_fetch_add(&s->timeouts, 1);
    else if (status != 0)
        atomic_fetch_add(&s->errors, 1);
}

static void *soak_client(void *arg)
{
    struct soak *s = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    struct events ev = {0};
    nectar_ipc_conn_t *c =
        rand_r(&seed) % 2 ? client_new(s->name) : client_events(s->name, &ev);
    while (!atomic_load(&s->stop)) {
        nectar_ipc_obj_t *m = nectar_ipc_dict(), *reply = NULL;
        if (rand_r(&seed) % 8 == 0)
            nectar_ipc_dict_set(m, "hold", nectar_ipc_bool(true), NULL);
        uint64_t id = 0;
        switch (rand_r(&seed) % 4) {
        case 0:
            nectar_ipc_send(c, m, NULL);
            break;
        case 1:
            if (nectar_ipc_send_with_reply(c, m, 50, soak_reply, s, &id,
                                           NULL) == 0 &&
                rand_r(&seed) % 2 && nectar_ipc_cancel_request(c, id) == 0)
                atomic_fetch_add(&s->cancels, 1);
            break;
        default:
            if (nectar_ipc_send_sync(c, m, 100, &reply, NULL) == 0)
                atomic_fetch_add(&s->calls, 1);
            break;
        }
        nectar_ipc_release(reply);
        nectar_ipc_release(m);
        if (rand_r(&seed) % 500 == 0) {
            nectar_ipc_conn_release(c);
            c = client_new(s->name);
        }
    }
    nectar_ipc_conn_release(c);
    return NULL;
}

void test_soak(void)
{
    /* 16 clients mixing every call kind, random cancels and held
     * requests, while the listener restarts every second.  Label long
     * (make check-long).  Not for TSan: libuv closes its epoll and eventfd
     * descriptors with syscall(SYS_close), which TSan cannot see, so a
     * descriptor number reused by another thread is reported as a race
     * (google/sanitizers#1376). */
    struct soak s = {.name = ipc_test_name("soak")};
    struct holder h;
    nectar_ipc_listener_t *ls = hold_listen(s.name, &h);
    pthread_t t[16];
    for (int i = 0; i < 16; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, soak_client, &s), 0);
    uint64_t end = nectar_test_now_ms() + 20000;
    while (nectar_test_now_ms() < end) {
        usleep(1000000);
        nectar_ipc_listener_close(ls);
        release_held(&h);
        ls = hold_listen(s.name, &h);
    }
    atomic_store(&s.stop, true);
    for (int i = 0; i < 16; i++)
        pthread_join(t[i], NULL);
    nectar_ipc_listener_close(ls);
    release_held(&h);
    fprintf(stderr, "soak: %ld calls, %ld timeouts, %ld cancels, %ld errors\n",
            atomic_load(&s.calls), atomic_load(&s.timeouts),
            atomic_load(&s.cancels), atomic_load(&s.errors));
    CHECK_GT(atomic_load(&s.calls), 1000);
}

struct keeper {
    pthread_mutex_t lock;
    nectar_ipc_message_t **msgs;
    int n, delivered;
};

/* Keeps every message unfinished; counts deliveries. */
static void keep_on_message(nectar_ipc_conn_t *conn, nectar_ipc_message_t *m,
                            void *ctx)
{
    struct keeper *k = ctx;
    (void)conn;
    pthread_mutex_lock(&k->lock);
    k->msgs[k->n++] = m;
    k->delivered++;
    pthread_mutex_unlock(&k->lock);
}

static int keeper_delivered(struct keeper *k)
{
    pthread_mutex_lock(&k->lock);
    int n = k->delivered;
    pthread_mutex_unlock(&k->lock);
    return n;
}

static void keeper_release(struct keeper *k)
{
    pthread_mutex_lock(&k->lock);
    for (int i = 0; i < k->n; i++)
        nectar_ipc_message_release(k->msgs[i]);
    k->n = 0;
    pthread_mutex_unlock(&k->lock);
}

void test_pending_bound(void)
{
    /* A handler that finishes nothing: past NECTAR_IPC_MAX_PENDING_MESSAGES
     * the newest messages are dropped; once it lets go, delivery resumes
     * on the same connection. */
    const char *name = ipc_test_name("bound");
    struct keeper k = {.lock = PTHREAD_MUTEX_INITIALIZER};
    k.msgs = calloc(NECTAR_IPC_MAX_PENDING_MESSAGES + 100, sizeof(*k.msgs));
    nectar_ipc_listener_config_t cfg = {
        .service_name = name, .on_message = keep_on_message, .ctx = &k};
    nectar_ipc_listener_t *ls = NULL;
    CHECK_EQ(nectar_ipc_listen(&cfg, &ls, NULL), 0);
    nectar_ipc_conn_t *c = client_new(name);
    nectar_ipc_obj_t *m = nectar_ipc_dict();
    int total = (int)NECTAR_IPC_MAX_PENDING_MESSAGES + 50;
    for (int i = 0; i < total; i++)
        CHECK_EQ(nectar_ipc_send(c, m, NULL), 0);
    /* A request behind them: dropped too, so it times out. */
    nectar_ipc_obj_t *reply = NULL;
    CHECK_EQ(nectar_ipc_send_sync(c, m, 300, &reply, NULL), NECTAR_ETIMEDOUT);
    CHECK_EQ(keeper_delivered(&k), (int)NECTAR_IPC_MAX_PENDING_MESSAGES);
    keeper_release(&k);
    CHECK_EQ(nectar_ipc_send(c, m, NULL), 0);
    uint64_t until = nectar_test_now_ms() + 3000;
    while (keeper_delivered(&k) <= (int)NECTAR_IPC_MAX_PENDING_MESSAGES &&
           nectar_test_now_ms() < until)
        usleep(1000);
    CHECK_EQ(keeper_delivered(&k), (int)NECTAR_IPC_MAX_PENDING_MESSAGES + 1);
    nectar_ipc_release(m);
    nectar_ipc_conn_release(c);
    nectar_ipc_listener_close(ls);
    keeper_release(&k);
    free(k.msgs);
}
