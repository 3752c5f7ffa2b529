/* test_blocks.c - the engine's small building blocks: ring and list. */
#include <stdint.h>

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

static const nectar_test_t tests[] = {
    {"ring", test_ring},
    {"list", test_list},
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    return nectar_test_main(argc, argv, tests);
}
