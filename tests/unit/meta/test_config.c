/* test_config.c -- the cluster configuration: bootstrap placement, the
 * invariants every change must keep (a refused change leaves the config and
 * its epoch untouched), protobuf round trips, and damaged encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "rng.h"

static void three_nodes(struct meta_node nodes[3])
{
    memset(nodes, 0, 3 * sizeof nodes[0]);
    for (int i = 0; i < 3; i++) {
        nodes[i].id = (uint64_t)(3 - i); /* unsorted on purpose */
        snprintf(nodes[i].address, sizeof nodes[i].address, "127.0.0.1:%d", 7003 - i);
    }
}

static void boot(struct meta_config *c)
{
    struct meta_node nodes[3];
    char errmsg[KV_ERRMSG_SIZE];
    three_nodes(nodes);
    meta_config_init(c);
    assert_int_equal(meta_config_bootstrap(c, 42, nodes, 3, 3, 3, 64, errmsg), KV_OK);
}

static void test_bootstrap(void **state)
{
    struct meta_config c;
    boot(&c);
    assert_int_equal(c.epoch, 1);
    assert_int_equal(c.n_nodes, 3);
    assert_int_equal(c.nodes[0].id, 1); /* sorted */
    assert_int_equal(c.n_shards, 3);
    assert_int_equal(c.next_group_id, 4);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(c.shards[i].group_id, i + 1);
        assert_int_equal(c.shards[i].n_voters, 3);
        assert_int_equal(c.shards[i].voters[0], i + 1); /* first replicas rotate */
    }
    assert_int_equal(c.n_meta_voters, 3);
    struct meta_ring *ring;
    assert_int_equal(meta_config_ring(&c, &ring), KV_OK);
    uint64_t g = meta_ring_group_of(ring, "user:1", 6);
    assert_non_null(meta_config_shard(&c, g));
    meta_ring_free(ring);
    meta_config_close(&c);
}

static void test_bootstrap_refuses_bad_input(void **state)
{
    struct meta_node nodes[3];
    struct meta_config c;
    char errmsg[KV_ERRMSG_SIZE];
    meta_config_init(&c);
    three_nodes(nodes);
    assert_int_equal(meta_config_bootstrap(&c, 42, nodes, 3, 3, 4, 64, errmsg), KV_EINVAL);
    assert_int_equal(meta_config_bootstrap(&c, 42, nodes, 3, 0, 3, 64, errmsg), KV_EINVAL);
    assert_int_equal(meta_config_bootstrap(&c, 0, nodes, 3, 3, 3, 64, errmsg), KV_EINVAL);
    const char *bad[] = {"nohost", "h:0", ":80", "h:99999", "h:", "h:8x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        three_nodes(nodes);
        snprintf(nodes[1].address, sizeof nodes[1].address, "%s", bad[i]);
        assert_int_equal(meta_config_bootstrap(&c, 42, nodes, 3, 3, 3, 64, errmsg), KV_EINVAL);
        assert_non_null(strstr(errmsg, "address"));
    }
    three_nodes(nodes);
    snprintf(nodes[2].address, sizeof nodes[2].address, "%s", nodes[0].address);
    assert_int_equal(meta_config_bootstrap(&c, 42, nodes, 3, 3, 3, 64, errmsg), KV_EINVAL);
    three_nodes(nodes);
    nodes[2].id = nodes[0].id;
    assert_int_equal(meta_config_bootstrap(&c, 42, nodes, 3, 3, 3, 64, errmsg), KV_EINVAL);
    assert_int_equal(c.epoch, 0); /* nothing was set */
    meta_config_close(&c);
}

static int apply(struct meta_config *c, struct meta_change ch)
{
    char errmsg[KV_ERRMSG_SIZE];
    return meta_config_apply(c, &ch, errmsg);
}

static void test_changes(void **state)
{
    struct meta_config c;
    boot(&c);
    struct meta_change add = {.type = META_CHANGE_ADD_NODE, .node_id = 4};
    snprintf(add.address, sizeof add.address, "127.0.0.1:7004");
    assert_int_equal(apply(&c, add), KV_OK);
    assert_int_equal(c.epoch, 2);
    assert_int_equal(c.n_nodes, 4);
    /* Refused changes leave epoch and content alone. */
    assert_int_equal(apply(&c, add), KV_EEXIST);
    struct meta_change clash = add;
    clash.node_id = 5; /* same address as node 4 */
    assert_int_equal(apply(&c, clash), KV_EINVAL);
    struct meta_change rm1 = {.type = META_CHANGE_REMOVE_NODE, .node_id = 1};
    assert_int_equal(apply(&c, rm1), KV_EBUSY);
    struct meta_change stale = add;
    stale.node_id = 6;
    stale.expect_epoch = 1;
    snprintf(stale.address, sizeof stale.address, "127.0.0.1:7006");
    assert_int_equal(apply(&c, stale), KV_ESTALE);
    assert_int_equal(c.epoch, 2);
    assert_int_equal(c.n_nodes, 4);

    /* A new shard on nodes 2, 3, 4 gets the next id and joins the ring. */
    struct meta_change shard = {.type = META_CHANGE_ADD_SHARD, .voters = {2, 3, 4}, .n_voters = 3};
    assert_int_equal(apply(&c, shard), KV_OK);
    assert_non_null(meta_config_shard(&c, 4));
    struct meta_change unknown = shard;
    unknown.voters[2] = 99;
    assert_int_equal(apply(&c, unknown), KV_EINVAL);
    struct meta_change dup = shard;
    dup.voters[2] = 2;
    assert_int_equal(apply(&c, dup), KV_EINVAL);

    /* Drain node 4: no new replicas there. */
    struct meta_change drain = {.type = META_CHANGE_DRAIN_NODE, .node_id = 4};
    assert_int_equal(apply(&c, drain), KV_OK);
    assert_int_equal(apply(&c, shard), KV_EINVAL);

    /* Move node 1's replicas away (as Raft changes would), then remove it. */
    for (uint64_t g = 1; g <= 3; g++) {
        struct meta_change mv = {
            .type = META_CHANGE_SET_MEMBERS, .group_id = g, .voters = {2, 3}, .n_voters = 2};
        assert_int_equal(apply(&c, mv), KV_OK);
    }
    assert_int_equal(apply(&c, rm1), KV_EBUSY); /* still in the meta group */
    uint64_t epoch = c.epoch;
    c.meta_voters[0] = 4; /* as a meta-group membership change would */
    assert_int_equal(apply(&c, rm1), KV_OK);
    assert_int_equal(c.epoch, epoch + 1);
    assert_null(meta_config_node(&c, 1));

    /* Shards: remove one, never the last. */
    struct meta_change rms = {.type = META_CHANGE_REMOVE_SHARD, .group_id = 4};
    assert_int_equal(apply(&c, rms), KV_OK);
    assert_int_equal(apply(&c, rms), KV_ENOTFOUND);
    for (uint64_t g = 1; g <= 2; g++) {
        rms.group_id = g;
        assert_int_equal(apply(&c, rms), KV_OK);
    }
    rms.group_id = 3;
    assert_int_equal(apply(&c, rms), KV_EINVAL);
    assert_int_equal(c.n_shards, 1);
    meta_config_close(&c);
}

static void test_encoding(void **state)
{
    struct meta_config c;
    struct meta_config d;
    struct kv_buf b;
    char errmsg[KV_ERRMSG_SIZE];
    boot(&c);
    meta_config_init(&d);
    kv_buf_init(&b);
    assert_int_equal(meta_config_encode(&c, &b), KV_OK);
    assert_int_equal(meta_config_decode(b.data, b.size, &d, errmsg), KV_OK);
    assert_int_equal(d.epoch, c.epoch);
    assert_int_equal(d.n_nodes, c.n_nodes);
    assert_memory_equal(d.nodes, c.nodes, c.n_nodes * sizeof c.nodes[0]);
    assert_memory_equal(d.shards, c.shards, c.n_shards * sizeof c.shards[0]);
    assert_memory_equal(d.meta_voters, c.meta_voters, sizeof c.meta_voters);
    /* Damaged bytes: an error or a configuration that passes validation,
     * never a crash. */
    struct kv_rng rng;
    kv_rng_seed(&rng, 5);
    for (int i = 0; i < 2000; i++) {
        struct kv_buf x;
        kv_buf_init(&x);
        assert_int_equal(kv_buf_set(&x, b.data, b.size), KV_OK);
        x.data[kv_rng_below(&rng, x.size)] ^= (uint8_t)(1 + kv_rng_below(&rng, 255));
        size_t cut = kv_rng_below(&rng, 4) == 0 ? kv_rng_below(&rng, x.size) : x.size;
        struct meta_config y;
        meta_config_init(&y);
        int rc = meta_config_decode(x.data, cut, &y, errmsg);
        assert_true(rc == KV_OK || rc == KV_ECORRUPT || rc == KV_EINVAL);
        if (rc == KV_OK) {
            assert_int_equal(meta_config_validate(&y, errmsg), KV_OK);
        }
        meta_config_close(&y);
        kv_buf_close(&x);
    }
    /* A well-formed message that breaks an invariant is refused. */
    c.shards[0].voters[0] = 77;
    kv_buf_clear(&b);
    assert_int_equal(meta_config_encode(&c, &b), KV_OK);
    assert_int_equal(meta_config_decode(b.data, b.size, &d, errmsg), KV_EINVAL);
    assert_non_null(strstr(errmsg, "77"));
    /* Changes round-trip. */
    struct meta_change ch;
    memset(&ch, 0, sizeof ch); /* padding too: compared bytewise below */
    ch.type = META_CHANGE_SET_MEMBERS;
    ch.group_id = 2;
    ch.voters[0] = 1;
    ch.voters[1] = 2;
    ch.n_voters = 2;
    ch.learners[0] = 3;
    ch.n_learners = 1;
    ch.expect_epoch = 9;
    struct meta_change back;
    kv_buf_clear(&b);
    assert_int_equal(meta_change_encode(&ch, &b), KV_OK);
    assert_int_equal(meta_change_decode(b.data, b.size, &back), KV_OK);
    assert_memory_equal(&back, &ch, sizeof ch);
    assert_int_equal(meta_change_decode((const uint8_t *)"\xff\xff", 2, &back), KV_ECORRUPT);
    kv_buf_close(&b);
    meta_config_close(&c);
    meta_config_close(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bootstrap),
        cmocka_unit_test(test_bootstrap_refuses_bad_input),
        cmocka_unit_test(test_changes),
        cmocka_unit_test(test_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
