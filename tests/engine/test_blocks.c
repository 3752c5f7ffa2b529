/* test_blocks.c - the engine's small building blocks: ring and list. */
#include <stdint.h>

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "engine/gate.h"
#include "engine/list.h"
#include "engine/ring.h"
#include "harness/test.h"
#include "nectar/error.h"

static int dtor_calls;
static void dtor(void *item)
{
    (void)item;
    dtor_calls++;
}

static void test_ring(void)
{
    struct nectar_ring r;
    int items[5];

    CHECK_EQ(nectar_ring_init(&r, 0), NECTAR_EINVAL);
    CHECK_EQ(nectar_ring_init(&r, 3), 0);
    CHECK(nectar_ring_pop(&r) == NULL);
    for (int round = 0; round < 4; round++) {
        /* Wrap around several times, FIFO every time. */
        CHECK(nectar_ring_push(&r, &items[0]));
        CHECK(nectar_ring_push(&r, &items[1]));
        CHECK(nectar_ring_push(&r, &items[2]));
        CHECK(nectar_ring_full(&r));
        CHECK(!nectar_ring_push(&r, &items[3]));
        CHECK_EQ(nectar_ring_count(&r), 3);
        CHECK(nectar_ring_pop(&r) == &items[0]);
        CHECK(nectar_ring_push(&r, &items[4]));
        CHECK(nectar_ring_pop(&r) == &items[1]);
        CHECK(nectar_ring_pop(&r) == &items[2]);
        CHECK(nectar_ring_pop(&r) == &items[4]);
        CHECK(nectar_ring_pop(&r) == NULL);
    }
    nectar_ring_push(&r, &items[0]);
    nectar_ring_push(&r, &items[1]);
    nectar_ring_free(&r, dtor);
    CHECK_EQ(dtor_calls, 2);
    nectar_ring_free(&r, dtor); /* safe twice */
    CHECK_EQ(dtor_calls, 2);
}

struct item {
    int v;
    struct nectar_list node;
};

static void test_list(void)
{
    struct nectar_list a, b;
    struct item it[4];
    int want[] = {0, 1, 2, 3};
    int k = 0;

    nectar_list_init(&a);
    nectar_list_init(&b);
    CHECK(nectar_list_empty(&a));
    CHECK(nectar_list_first(&a) == NULL);
    for (int i = 0; i < 4; i++) {
        it[i].v = i;
        nectar_list_init(&it[i].node);
        CHECK(!nectar_list_linked(&it[i].node));
    }
    nectar_list_push_back(&a, &it[0].node);
    nectar_list_push_back(&a, &it[1].node);
    nectar_list_push_back(&b, &it[2].node);
    nectar_list_push_back(&b, &it[3].node);
    nectar_list_splice(&a, &b);
    CHECK(nectar_list_empty(&b));
    for (struct nectar_list *n = a.next; n != &a; n = n->next)
        CHECK_EQ(nectar_list_entry(n, struct item, node)->v, want[k++]);
    CHECK_EQ(k, 4);
    nectar_list_remove(&it[1].node);
    nectar_list_remove(&it[1].node); /* harmless twice */
    CHECK(!nectar_list_linked(&it[1].node));
    CHECK(nectar_list_first(&a) == &it[0].node);
    CHECK(a.next->next == &it[2].node);
}

static struct ne_gate gate;
static atomic_int in_callback;

static void *holder(void *arg)
{
    struct timespec ts = {0, 100 * 1000000L};
    (void)arg;
    if (ne_gate_enter(&gate)) {
        atomic_store(&in_callback, 1);
        nanosleep(&ts, NULL); /* a slow host callback */
        atomic_store(&in_callback, 2);
    }
    ne_gate_leave(&gate);
    return NULL;
}

static int entered(void *arg)
{
    (void)arg;
    return atomic_load(&in_callback) != 0;
}

static void test_gate(void)
{
    pthread_t t;
    uint64_t t0;

    ne_gate_init(&gate);
    pthread_create(&t, NULL, holder, NULL);
    CHECK(nectar_test_poll(entered, NULL, 5000));
    t0 = nectar_test_now_ms();
    ne_gate_close(&gate); /* waits for the callback in progress */
    CHECK_EQ(atomic_load(&in_callback), 2);
    CHECK_GE(nectar_test_now_ms() - t0, 50);
    CHECK(!ne_gate_enter(&gate)); /* nothing runs after close */
    ne_gate_leave(&gate);
    ne_gate_close(&gate); /* idempotent */
    pthread_join(t, NULL);
    ne_gate_destroy(&gate);
}

static const nectar_test_t tests[] = {
    {"gate", test_gate},
    {"ring", test_ring},
    {"list", test_list},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
