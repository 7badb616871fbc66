/* test_ring.c -- the hash ring: lookups agree with a brute-force scan,
 * keys spread evenly (1M random keys within +-10% of the mean for 3, 8 and
 * 32 groups), adding a group moves keys only to the new group, and bad
 * arguments are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>

#include "hash.h"
#include "ring.h"
#include "rng.h"

#define BALANCE_KEYS 1000000

static uint64_t brute_force(const struct meta_ring *r, uint32_t hash)
{
    size_t n = meta_ring_token_count(r);
    uint32_t best_token = 0;
    uint64_t best_group = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t t;
        uint64_t g;
        meta_ring_token_at(r, i, &t, &g);
        if (t >= hash && (!found || t < best_token)) {
            best_token = t;
            best_group = g;
            found = 1;
        }
    }
    if (!found) {
        uint32_t t;
        meta_ring_token_at(r, 0, &t, &best_group);
    }
    return best_group;
}

static void test_lookup_matches_brute_force(void **state)
{
    uint64_t groups[] = {3, 1, 2};
    struct meta_ring *r;
    struct kv_rng rng;
    assert_int_equal(meta_ring_new(groups, 3, 16, &r), KV_OK);
    kv_rng_seed(&rng, 1);
    for (int i = 0; i < 2000; i++) {
        uint32_t h = (uint32_t)kv_rng_next(&rng);
        assert_int_equal(meta_ring_lookup(r, h), brute_force(r, h));
    }
    assert_int_equal(meta_ring_lookup(r, 0), brute_force(r, 0));
    assert_int_equal(meta_ring_lookup(r, UINT32_MAX), brute_force(r, UINT32_MAX));
    /* Ring order does not depend on the order groups were listed in. */
    uint64_t reordered[] = {1, 2, 3};
    struct meta_ring *r2;
    assert_int_equal(meta_ring_new(reordered, 3, 16, &r2), KV_OK);
    for (size_t i = 0; i < meta_ring_token_count(r); i++) {
        uint32_t t1, t2;
        uint64_t g1, g2;
        meta_ring_token_at(r, i, &t1, &g1);
        meta_ring_token_at(r2, i, &t2, &g2);
        assert_int_equal(t1, t2);
        assert_int_equal(g1, g2);
    }
    meta_ring_free(r);
    meta_ring_free(r2);
}

static void check_balance(size_t group_count)
{
    uint64_t groups[32];
    uint64_t counts[33] = {0};
    struct meta_ring *r;
    struct kv_rng rng;
    for (size_t i = 0; i < group_count; i++) {
        groups[i] = i + 1;
    }
    assert_int_equal(meta_ring_new(groups, group_count, META_RING_VNODES_DEFAULT, &r), KV_OK);
    kv_rng_seed(&rng, 2024 + group_count);
    for (int i = 0; i < BALANCE_KEYS; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "user:%016llx", (unsigned long long)kv_rng_next(&rng));
        uint64_t g = meta_ring_group_of(r, key, (size_t)n);
        assert_true(g >= 1 && g <= group_count);
        counts[g]++;
    }
    double mean = (double)BALANCE_KEYS / (double)group_count;
    double worst = 0;
    double share_sum = 0;
    for (size_t g = 1; g <= group_count; g++) {
        double dev = fabs((double)counts[g] - mean) / mean;
        worst = dev > worst ? dev : worst;
        share_sum += meta_ring_share(r, g);
    }
    printf("ring balance: %zu groups x %u vnodes, 1M keys, worst deviation from mean %.2f%%\n",
           group_count, META_RING_VNODES_DEFAULT, worst * 100);
    assert_true(worst <= 0.10);
    assert_true(fabs(share_sum - 1.0) < 1e-9);
    meta_ring_free(r);
}

static void test_balance_3(void **state)
{
    check_balance(3);
}

static void test_balance_8(void **state)
{
    check_balance(8);
}

static void test_balance_32(void **state)
{
    check_balance(32);
}

static void test_adding_a_group_moves_keys_only_to_it(void **state)
{
    uint64_t before[] = {1, 2, 3};
    uint64_t after[] = {1, 2, 3, 4};
    struct meta_ring *a;
    struct meta_ring *b;
    struct kv_rng rng;
    assert_int_equal(meta_ring_new(before, 3, 64, &a), KV_OK);
    assert_int_equal(meta_ring_new(after, 4, 64, &b), KV_OK);
    kv_rng_seed(&rng, 9);
    int moved = 0;
    for (int i = 0; i < 100000; i++) {
        uint32_t h = (uint32_t)kv_rng_next(&rng);
        uint64_t ga = meta_ring_lookup(a, h);
        uint64_t gb = meta_ring_lookup(b, h);
        if (ga != gb) {
            assert_int_equal(gb, 4);
            moved++;
        }
    }
    /* About a quarter of the keys move to the new group. */
    assert_true(moved > 15000 && moved < 35000);
    meta_ring_free(a);
    meta_ring_free(b);
}

static void test_rejects_bad_arguments(void **state)
{
    struct meta_ring *r = (struct meta_ring *)1;
    uint64_t dup[] = {1, 2, 1};
    uint64_t zero[] = {0, 2};
    uint64_t one[] = {5};
    assert_int_equal(meta_ring_new(dup, 3, 8, &r), KV_EINVAL);
    assert_null(r);
    assert_int_equal(meta_ring_new(zero, 2, 8, &r), KV_EINVAL);
    assert_int_equal(meta_ring_new(one, 0, 8, &r), KV_EINVAL);
    assert_int_equal(meta_ring_new(one, 1, 0, &r), KV_EINVAL);
    assert_int_equal(meta_ring_new(one, 1, META_RING_VNODES_MAX + 1, &r), KV_EINVAL);
    assert_int_equal(meta_ring_new(one, 1, 1, &r), KV_OK);
    assert_true(meta_ring_share(r, 5) == 1.0);
    assert_int_equal(meta_ring_lookup(r, 12345), 5);
    meta_ring_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_matches_brute_force),
        cmocka_unit_test(test_balance_3),
        cmocka_unit_test(test_balance_8),
        cmocka_unit_test(test_balance_32),
        cmocka_unit_test(test_adding_a_group_moves_keys_only_to_it),
        cmocka_unit_test(test_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
