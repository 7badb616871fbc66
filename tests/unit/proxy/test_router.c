/* test_router.c -- splitting plans by shard: every item lands in exactly
 * one part, the part of its key's group, in client order; a cross-shard
 * MSETNX is refused; a part encodes as one state-machine command holding
 * exactly its writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "router.h"

#define KEYS 50

struct fixture {
    char names[KEYS][16];
    const uint8_t *argv[2 * KEYS + 1];
    size_t sizes[2 * KEYS + 1];
    struct resp_request req;
    struct meta_ring *ring;
};

/* Builds "<cmd> k0 [v] k1 [v] ..." with `keys` keys. */
static void request(struct fixture *f, const char *cmd, size_t keys, int with_values)
{
    size_t n = 0;
    f->argv[n] = (const uint8_t *)cmd;
    f->sizes[n++] = strlen(cmd);
    for (size_t i = 0; i < keys; i++) {
        snprintf(f->names[i], sizeof f->names[i], "key:%zu", i);
        f->argv[n] = (const uint8_t *)f->names[i];
        f->sizes[n++] = strlen(f->names[i]);
        if (with_values) {
            f->argv[n] = (const uint8_t *)"v";
            f->sizes[n++] = 1;
        }
    }
    f->req.argc = n;
    f->req.argv = f->argv;
    f->req.argv_size = f->sizes;
}

static void plan_of(struct fixture *f, struct proxy_plan *plan)
{
    const struct proxy_command *cmd;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(proxy_command_check(&f->req, &cmd, errmsg), KV_OK);
    assert_int_equal(proxy_plan_build(cmd, &f->req, plan, errmsg), KV_OK);
}

static int setup(void **state)
{
    static struct fixture f;
    uint64_t groups[] = {1, 2, 3};
    memset(&f, 0, sizeof f);
    assert_int_equal(meta_ring_new(groups, 3, 64, &f.ring), KV_OK);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    meta_ring_free(f->ring);
    return 0;
}

static void test_split_covers_every_item_once(void **state)
{
    struct fixture *f = *state;
    struct proxy_plan plan;
    struct proxy_route route;
    char errmsg[KV_ERRMSG_SIZE];
    request(f, "mget", KEYS, 0);
    plan_of(f, &plan);
    assert_int_equal(proxy_route_build(&plan, f->ring, &route, errmsg), KV_OK);
    assert_int_equal(route.n_parts, 3); /* 50 keys over 3 groups */
    int seen[KEYS] = {0};
    for (size_t p = 0; p < route.n_parts; p++) {
        const struct proxy_part *part = &route.parts[p];
        for (size_t i = 0; i < part->n_items; i++) {
            size_t idx = part->items[i];
            assert_true(idx < KEYS);
            seen[idx]++;
            const struct proxy_item *it = &plan.items[idx];
            assert_int_equal(meta_ring_group_of(f->ring, it->key, it->key_size), part->group);
            if (i > 0) {
                assert_true(part->items[i - 1] < idx); /* client order */
            }
        }
    }
    for (size_t i = 0; i < KEYS; i++) {
        assert_int_equal(seen[i], 1);
    }
    proxy_route_close(&route);
    proxy_plan_close(&plan);
}

static void test_msetnx_must_stay_in_one_shard(void **state)
{
    struct fixture *f = *state;
    struct proxy_plan plan;
    struct proxy_route route;
    char errmsg[KV_ERRMSG_SIZE];
    request(f, "msetnx", 10, 1);
    plan_of(f, &plan);
    assert_int_equal(proxy_route_build(&plan, f->ring, &route, errmsg), KV_EINVAL);
    assert_non_null(strstr(errmsg, "one shard"));
    proxy_plan_close(&plan);
    request(f, "msetnx", 1, 1);
    plan_of(f, &plan);
    assert_int_equal(proxy_route_build(&plan, f->ring, &route, errmsg), KV_OK);
    assert_int_equal(route.n_parts, 1);
    proxy_route_close(&route);
    proxy_plan_close(&plan);
}

static void test_part_encodes_its_writes(void **state)
{
    struct fixture *f = *state;
    struct proxy_plan plan;
    struct proxy_route route;
    char errmsg[KV_ERRMSG_SIZE];
    request(f, "mset", 20, 1);
    plan_of(f, &plan);
    assert_int_equal(proxy_route_build(&plan, f->ring, &route, errmsg), KV_OK);
    size_t total = 0;
    for (size_t p = 0; p < route.n_parts; p++) {
        struct kv_buf b;
        struct node_cmd cmd;
        kv_buf_init(&b);
        assert_int_equal(proxy_part_encode(&plan, &route.parts[p], 9, 4, 3, &b), KV_OK);
        assert_int_equal(node_cmd_decode(b.data, b.size, &cmd), KV_OK);
        assert_int_equal(cmd.client_id, 9);
        assert_int_equal(cmd.seq, 4);
        assert_int_equal(cmd.ack_seq, 3);
        assert_int_equal(cmd.n_ops, route.parts[p].n_items);
        for (size_t i = 0; i < cmd.n_ops; i++) {
            const struct proxy_item *it = &plan.items[route.parts[p].items[i]];
            assert_int_equal(cmd.ops[i].key_size, it->key_size);
            assert_memory_equal(cmd.ops[i].key, it->key, it->key_size);
            assert_int_equal(cmd.ops[i].type, NODE_OP_SET);
        }
        total += cmd.n_ops;
        node_cmd_clear(&cmd);
        kv_buf_close(&b);
    }
    assert_int_equal(total, 20);
    proxy_route_close(&route);
    proxy_plan_close(&plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_covers_every_item_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msetnx_must_stay_in_one_shard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_part_encodes_its_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
