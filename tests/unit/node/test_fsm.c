/* test_fsm.c -- the data group state machine: command codec, Redis
 * semantics of each operation, batches that see their own writes, the
 * applied index stored atomically with the data, exactly-once retries,
 * session acknowledgement, malformed log entries, and a fault loop that
 * fails every allocation of an apply in turn and checks nothing half-applies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "alloc.h"
#include "fsm.h"
#include "keys.h"

#define GROUP 7

struct fixture {
    struct stor_engine *engine;
    struct node_fsm *fsm;
    struct kv_buf entry_bufs[64];
    struct node_fsm_entry entries[64];
    size_t n;
    uint64_t next_index;
    /* Results of the last apply, flattened. */
    struct {
        uint32_t kind;
        int64_t integer;
        char value[64];
        int duplicate;
    } got[64];
    size_t n_got;
};

static int setup(void **state)
{
    struct fixture *fx = test_calloc(1, sizeof *fx);
    struct stor_options o;
    char errmsg[KV_ERRMSG_SIZE];
    stor_options_init(&o);
    assert_int_equal(stor_open("memory", &o, &fx->engine, errmsg), KV_OK);
    assert_int_equal(node_fsm_new(fx->engine, GROUP, &fx->fsm), KV_OK);
    for (size_t i = 0; i < 64; i++) {
        kv_buf_init(&fx->entry_bufs[i]);
    }
    fx->next_index = 1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    node_fsm_free(fx->fsm);
    stor_close(fx->engine);
    for (size_t i = 0; i < 64; i++) {
        kv_buf_close(&fx->entry_bufs[i]);
    }
    test_free(fx);
    return 0;
}

static struct node_op op(uint32_t type, const char *key, const char *value, uint32_t flags)
{
    struct node_op o = {
        .type = type,
        .flags = flags,
        .key = (const uint8_t *)key,
        .key_size = strlen(key),
        .value = (const uint8_t *)value,
        .value_size = value ? strlen(value) : 0,
    };
    return o;
}

/* Queues one command entry for the next apply. */
static void queue(struct fixture *fx, uint64_t client, uint64_t seq, uint64_t ack, uint32_t flags,
                  struct node_op *ops, size_t n_ops)
{
    struct node_cmd cmd = {client, seq, ack, flags, ops, n_ops};
    struct kv_buf *b = &fx->entry_bufs[fx->n];
    kv_buf_clear(b);
    assert_int_equal(node_cmd_encode(&cmd, b), KV_OK);
    fx->entries[fx->n] = (struct node_fsm_entry){fx->next_index++, 1, 1, b->data, b->size};
    fx->n++;
}

static void queue_noop(struct fixture *fx)
{
    fx->entries[fx->n++] = (struct node_fsm_entry){fx->next_index++, 1, 0, NULL, 0};
}

static void collect(void *data, uint64_t index, const struct node_cmd_result *res)
{
    struct fixture *fx = data;
    for (size_t i = 0; i < res->n_results; i++) {
        assert_true(fx->n_got < 64);
        fx->got[fx->n_got].kind = res->results[i].kind;
        fx->got[fx->n_got].integer = res->results[i].integer;
        fx->got[fx->n_got].duplicate = res->duplicate;
        size_t n = res->results[i].value.size < 63 ? res->results[i].value.size : 63;
        if (n > 0) {
            memcpy(fx->got[fx->n_got].value, res->results[i].value.data, n);
        }
        fx->got[fx->n_got].value[n] = '\0';
        fx->n_got++;
    }
}

static int apply(struct fixture *fx)
{
    fx->n_got = 0;
    int rc = node_fsm_apply(fx->fsm, fx->entries, fx->n, collect, fx);
    fx->n = 0;
    return rc;
}

/* Applies one command of one op and returns the result index 0. */
static void run1(struct fixture *fx, struct node_op o)
{
    queue(fx, 0, 0, 0, 0, &o, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->n_got, 1);
}

static void check_value(struct fixture *fx, const char *key, const char *value)
{
    struct kv_buf v;
    kv_buf_init(&v);
    int rc = node_fsm_get(fx->fsm, NULL, key, strlen(key), &v);
    if (value == NULL) {
        assert_int_equal(rc, KV_ENOTFOUND);
    } else {
        assert_int_equal(rc, KV_OK);
        assert_int_equal(v.size, strlen(value));
        assert_memory_equal(v.data, value, v.size);
    }
    kv_buf_close(&v);
}

static void test_codec_roundtrip_and_rejects(void **state)
{
    struct node_op ops[2] = {op(NODE_OP_SET, "k", "v", NODE_SET_NX), op(NODE_OP_INCRBY, "n", 0, 0)};
    ops[1].delta = -42;
    struct node_cmd cmd = {9, 5, 3, NODE_CMD_ALL_NX, ops, 2};
    struct kv_buf b;
    struct node_cmd out;
    kv_buf_init(&b);
    assert_int_equal(node_cmd_encode(&cmd, &b), KV_OK);
    assert_int_equal(node_cmd_decode(b.data, b.size, &out), KV_OK);
    assert_int_equal(out.client_id, 9);
    assert_int_equal(out.seq, 5);
    assert_int_equal(out.ack_seq, 3);
    assert_int_equal(out.flags, NODE_CMD_ALL_NX);
    assert_int_equal(out.n_ops, 2);
    assert_int_equal(out.ops[0].flags, NODE_SET_NX);
    assert_memory_equal(out.ops[0].value, "v", 1);
    assert_int_equal(out.ops[1].delta, -42);
    node_cmd_clear(&out);
    /* Every truncation is rejected, never read past. */
    for (size_t n = 0; n < b.size; n++) {
        assert_int_not_equal(node_cmd_decode(b.data, n, &out), KV_OK);
    }
    b.data[0] = 2;
    assert_int_equal(node_cmd_decode(b.data, b.size, &out), KV_EUNSUPPORTED);
    /* Encoding refuses bad commands. */
    struct node_op empty = op(NODE_OP_SET, "", "v", 0);
    struct node_cmd bad = {0, 0, 0, 0, &empty, 1};
    assert_int_equal(node_cmd_encode(&bad, &b), KV_EINVAL);
    bad.n_ops = 0;
    assert_int_equal(node_cmd_encode(&bad, &b), KV_EINVAL);
    kv_buf_close(&b);
}

static void test_set_flags(void **state)
{
    struct fixture *fx = *state;
    run1(fx, op(NODE_OP_SET, "a", "1", NODE_SET_XX));
    assert_int_equal(fx->got[0].kind, NODE_RES_NIL);
    check_value(fx, "a", NULL);
    run1(fx, op(NODE_OP_SET, "a", "1", NODE_SET_NX));
    assert_int_equal(fx->got[0].kind, NODE_RES_OK);
    run1(fx, op(NODE_OP_SET, "a", "2", NODE_SET_NX));
    assert_int_equal(fx->got[0].kind, NODE_RES_NIL);
    check_value(fx, "a", "1");
    run1(fx, op(NODE_OP_SET, "a", "3", NODE_SET_XX | NODE_SET_GET));
    assert_int_equal(fx->got[0].kind, NODE_RES_VALUE);
    assert_string_equal(fx->got[0].value, "1");
    check_value(fx, "a", "3");
    run1(fx, op(NODE_OP_SET, "b", "x", NODE_SET_GET));
    assert_int_equal(fx->got[0].kind, NODE_RES_NIL);
    check_value(fx, "b", "x");
}

static void test_del_getdel_append(void **state)
{
    struct fixture *fx = *state;
    run1(fx, op(NODE_OP_DEL, "a", NULL, 0));
    assert_int_equal(fx->got[0].kind, NODE_RES_INT);
    assert_int_equal(fx->got[0].integer, 0);
    run1(fx, op(NODE_OP_APPEND, "a", "hello", 0));
    assert_int_equal(fx->got[0].integer, 5);
    run1(fx, op(NODE_OP_APPEND, "a", " world", 0));
    assert_int_equal(fx->got[0].integer, 11);
    check_value(fx, "a", "hello world");
    run1(fx, op(NODE_OP_GETDEL, "a", NULL, 0));
    assert_int_equal(fx->got[0].kind, NODE_RES_VALUE);
    assert_string_equal(fx->got[0].value, "hello world");
    check_value(fx, "a", NULL);
    run1(fx, op(NODE_OP_GETDEL, "a", NULL, 0));
    assert_int_equal(fx->got[0].kind, NODE_RES_NIL);
    run1(fx, op(NODE_OP_SET, "a", "v", 0));
    run1(fx, op(NODE_OP_DEL, "a", NULL, 0));
    assert_int_equal(fx->got[0].integer, 1);
    check_value(fx, "a", NULL);
}

static void test_incrby(void **state)
{
    struct fixture *fx = *state;
    struct node_op o = op(NODE_OP_INCRBY, "n", NULL, 0);
    o.delta = 5;
    run1(fx, o);
    assert_int_equal(fx->got[0].kind, NODE_RES_INT);
    assert_int_equal(fx->got[0].integer, 5);
    o.delta = -7;
    run1(fx, o);
    assert_int_equal(fx->got[0].integer, -2);
    check_value(fx, "n", "-2");
    run1(fx, op(NODE_OP_SET, "n", "9223372036854775807", 0));
    o.delta = 1;
    run1(fx, o);
    assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
    assert_string_equal(fx->got[0].value, "ERR increment or decrement would overflow");
    check_value(fx, "n", "9223372036854775807");
    const char *not_ints[] = {"abc", " 1", "1 ", "01", "-0", "", "99999999999999999999", "1.5"};
    for (size_t i = 0; i < sizeof not_ints / sizeof not_ints[0]; i++) {
        run1(fx, op(NODE_OP_SET, "s", not_ints[i], 0));
        run1(fx,
             o = (struct node_op){
                 .type = NODE_OP_INCRBY, .key = (const uint8_t *)"s", .key_size = 1, .delta = 1});
        assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
        assert_string_equal(fx->got[0].value, "ERR value is not an integer or out of range");
    }
    run1(fx, op(NODE_OP_SET, "m", "-9223372036854775808", 0));
    o = (struct node_op){
        .type = NODE_OP_INCRBY, .key = (const uint8_t *)"m", .key_size = 1, .delta = -1};
    run1(fx, o);
    assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
    o.delta = 1;
    run1(fx, o);
    assert_int_equal(fx->got[0].integer, INT64_MIN + 1);
}

static void test_msetnx_all_or_none(void **state)
{
    struct fixture *fx = *state;
    struct node_op ops[2] = {op(NODE_OP_SET, "x", "1", 0), op(NODE_OP_SET, "y", "2", 0)};
    queue(fx, 0, 0, 0, NODE_CMD_ALL_NX, ops, 2);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].kind, NODE_RES_OK);
    struct node_op ops2[2] = {op(NODE_OP_SET, "z", "3", 0), op(NODE_OP_SET, "y", "4", 0)};
    queue(fx, 0, 0, 0, NODE_CMD_ALL_NX, ops2, 2);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].kind, NODE_RES_NIL);
    assert_int_equal(fx->got[1].kind, NODE_RES_NIL);
    check_value(fx, "z", NULL);
    check_value(fx, "y", "2");
}

static void test_batch_sees_its_own_writes(void **state)
{
    struct fixture *fx = *state;
    struct node_op inc = op(NODE_OP_INCRBY, "c", NULL, 0);
    inc.delta = 1;
    struct node_op app = op(NODE_OP_APPEND, "s", "ab", 0);
    struct node_op del = op(NODE_OP_DEL, "s", NULL, 0);
    queue(fx, 0, 0, 0, 0, &inc, 1);
    queue(fx, 0, 0, 0, 0, &inc, 1);
    queue_noop(fx);
    queue(fx, 0, 0, 0, 0, &app, 1);
    queue(fx, 0, 0, 0, 0, &app, 1);
    queue(fx, 0, 0, 0, 0, &del, 1);
    queue(fx, 0, 0, 0, 0, &app, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->n_got, 6);
    assert_int_equal(fx->got[1].integer, 2);
    assert_int_equal(fx->got[3].integer, 4);
    assert_int_equal(fx->got[4].integer, 1);
    assert_int_equal(fx->got[5].integer, 2);
    check_value(fx, "c", "2");
    check_value(fx, "s", "ab");
    assert_int_equal(node_fsm_applied_index(fx->fsm), 7);
}

static void test_applied_index_persists_and_replay_skips(void **state)
{
    struct fixture *fx = *state;
    struct node_op inc = op(NODE_OP_INCRBY, "c", NULL, 0);
    inc.delta = 10;
    queue(fx, 0, 0, 0, 0, &inc, 1);
    queue(fx, 0, 0, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    node_fsm_free(fx->fsm);
    assert_int_equal(node_fsm_new(fx->engine, GROUP, &fx->fsm), KV_OK);
    assert_int_equal(node_fsm_applied_index(fx->fsm), 2);
    assert_int_equal(node_fsm_applied_term(fx->fsm), 1);
    /* Replay of 1..3 after a restart applies only 3. */
    fx->next_index = 1;
    queue(fx, 0, 0, 0, 0, &inc, 1);
    queue(fx, 0, 0, 0, 0, &inc, 1);
    queue(fx, 0, 0, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->n_got, 1);
    check_value(fx, "c", "30");
    /* A gap is refused and changes nothing. */
    fx->next_index = 5;
    queue(fx, 0, 0, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_EINVAL);
    assert_int_equal(node_fsm_applied_index(fx->fsm), 3);
    check_value(fx, "c", "30");
    /* Another group on the same engine sees none of it. */
    struct node_fsm *other;
    struct kv_buf v;
    kv_buf_init(&v);
    assert_int_equal(node_fsm_new(fx->engine, GROUP + 1, &other), KV_OK);
    assert_int_equal(node_fsm_applied_index(other), 0);
    assert_int_equal(node_fsm_get(other, NULL, "c", 1, &v), KV_ENOTFOUND);
    node_fsm_free(other);
    kv_buf_close(&v);
}

static size_t count_kind(struct fixture *fx, uint8_t kind)
{
    struct node_key start;
    struct node_key end;
    struct stor_iter *it;
    size_t n = 0;
    node_key_group_start(&start, GROUP);
    node_key_group_end(&end, GROUP);
    assert_int_equal(
        stor_iter_new(fx->engine, NULL, start.bytes, start.size, end.bytes, end.size, &it), KV_OK);
    const uint8_t *k, *v;
    size_t ks, vs;
    while (stor_iter_next(it, &k, &ks, &v, &vs) == KV_OK) {
        n += k[8] == kind;
    }
    stor_iter_free(it);
    return n;
}

static void test_exactly_once(void **state)
{
    struct fixture *fx = *state;
    struct node_op inc = op(NODE_OP_INCRBY, "c", NULL, 0);
    inc.delta = 1;
    /* seq 1 and its retry in the same batch, and again in a later one. */
    queue(fx, 100, 1, 0, 0, &inc, 1);
    queue(fx, 100, 1, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].integer, 1);
    assert_int_equal(fx->got[0].duplicate, 0);
    assert_int_equal(fx->got[1].integer, 1);
    assert_int_equal(fx->got[1].duplicate, 1);
    queue(fx, 100, 1, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].integer, 1);
    assert_int_equal(fx->got[0].duplicate, 1);
    check_value(fx, "c", "1");
    /* Out of order within the window: 3 before 2, both apply once. */
    queue(fx, 100, 3, 0, 0, &inc, 1);
    queue(fx, 100, 2, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    check_value(fx, "c", "3");
    assert_int_equal(count_kind(fx, NODE_KEY_SESSION), 3);
    /* Acknowledging through 3 drops the stored results. */
    queue(fx, 100, 4, 3, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(count_kind(fx, NODE_KEY_SESSION), 1);
    /* A request at or below the acknowledgement is refused, not re-run. */
    queue(fx, 100, 2, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
    check_value(fx, "c", "4");
    /* Another client's seq 1 is its own. */
    queue(fx, 200, 1, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].duplicate, 0);
    check_value(fx, "c", "5");
    /* Beyond the window of unacknowledged requests: refused. */
    queue(fx, 200, 2 + NODE_SESSION_WINDOW_MAX, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
    check_value(fx, "c", "5");
}

static void test_malformed_entry_is_an_error_result(void **state)
{
    struct fixture *fx = *state;
    uint8_t junk[] = {1, 0xff, 0xff};
    uint8_t future[] = {99, 0, 0};
    fx->entries[fx->n++] = (struct node_fsm_entry){fx->next_index++, 1, 1, junk, sizeof junk};
    fx->entries[fx->n++] = (struct node_fsm_entry){fx->next_index++, 1, 1, future, sizeof future};
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->n_got, 2);
    assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
    assert_int_equal(fx->got[1].kind, NODE_RES_ERROR);
    assert_int_equal(node_fsm_applied_index(fx->fsm), 2);
}

static void test_allocation_failures_never_half_apply(void **state)
{
    struct fixture *fx = *state;
    struct node_op ops[3] = {op(NODE_OP_SET, "a", "1", 0), op(NODE_OP_APPEND, "b", "xy", 0),
                             op(NODE_OP_INCRBY, "c", NULL, 0)};
    ops[2].delta = 1;
    int succeeded = 0;
    for (long fail_at = 0; fail_at < 500 && !succeeded; fail_at++) {
        uint64_t before = node_fsm_applied_index(fx->fsm);
        fx->next_index = before + 1;
        queue(fx, 300, 1, 0, 0, ops, 3);
        queue(fx, 300, 2, 1, 0, &ops[2], 1);
        kv_alloc_fault_after(fail_at);
        int rc = apply(fx);
        kv_alloc_fault_clear();
        if (rc == KV_OK) {
            succeeded = 1;
            assert_int_equal(node_fsm_applied_index(fx->fsm), before + 2);
            check_value(fx, "c", "2");
            check_value(fx, "b", "xy");
        } else {
            assert_int_equal(rc, KV_ENOMEM);
            assert_int_equal(node_fsm_applied_index(fx->fsm), before);
            check_value(fx, "a", NULL);
            check_value(fx, "c", NULL);
        }
    }
    assert_true(succeeded);
}

/* Applies no-op entries until the applied index is `target`, in chunks of
 * `chunk` (different chunkings must give the same state). */
static void noops_until(struct fixture *fx, uint64_t target, size_t chunk)
{
    while (node_fsm_applied_index(fx->fsm) < target) {
        fx->next_index = node_fsm_applied_index(fx->fsm) + 1;
        while (fx->n < chunk && fx->next_index <= target) {
            queue_noop(fx);
        }
        assert_int_equal(apply(fx), KV_OK);
    }
}

static void test_idle_sessions_are_evicted(void **state)
{
    struct fixture *fx = *state;
    struct node_op inc = op(NODE_OP_INCRBY, "c", NULL, 0);
    inc.delta = 1;
    queue(fx, 500, 1, 0, 0, &inc, 1); /* index 1: client 500, then idle */
    queue(fx, 600, 1, 0, 0, &inc, 1); /* index 2: client 600 */
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(count_kind(fx, NODE_KEY_CLIENT), 2);
    /* Client 600 stays active past the idle limit; 500 does not. */
    uint64_t mid = NODE_SESSION_IDLE_ENTRIES / 2;
    noops_until(fx, mid, 64);
    fx->next_index = mid + 1;
    queue(fx, 600, 2, 1, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    noops_until(fx, NODE_SESSION_IDLE_ENTRIES + 2 * NODE_SESSION_SWEEP_EVERY, 61);
    assert_int_equal(count_kind(fx, NODE_KEY_CLIENT), 1);
    assert_int_equal(count_kind(fx, NODE_KEY_SESSION), 1); /* 600's seq 2 */
    /* 500 comes back having acknowledged seq 1: its session is gone. */
    fx->next_index = node_fsm_applied_index(fx->fsm) + 1;
    queue(fx, 500, 2, 1, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].kind, NODE_RES_ERROR);
    assert_non_null(strstr(fx->got[0].value, "session expired"));
    check_value(fx, "c", "3");
    /* A new client (nothing acknowledged yet) starts a session. */
    fx->next_index = node_fsm_applied_index(fx->fsm) + 1;
    queue(fx, 700, 1, 0, 0, &inc, 1);
    assert_int_equal(apply(fx), KV_OK);
    assert_int_equal(fx->got[0].kind, NODE_RES_INT);
    check_value(fx, "c", "4");
}

/* Two replicas applying one log in different batch sizes end with the
 * same bytes in their engines, evictions included. */
static void test_replicas_agree_whatever_the_batching(void **state)
{
    struct fixture *a = *state;
    struct fixture *b;
    setup((void **)&b);
    struct node_op inc = op(NODE_OP_INCRBY, "c", NULL, 0);
    inc.delta = 1;
    struct fixture *fxs[2] = {a, b};
    size_t chunks[2] = {64, 7};
    for (int r = 0; r < 2; r++) {
        struct fixture *fx = fxs[r];
        queue(fx, 1, 1, 0, 0, &inc, 1);
        queue(fx, 2, 1, 0, 0, &inc, 1);
        assert_int_equal(apply(fx), KV_OK);
        noops_until(fx, NODE_SESSION_IDLE_ENTRIES + NODE_SESSION_SWEEP_EVERY - 3, chunks[r]);
        fx->next_index = node_fsm_applied_index(fx->fsm) + 1;
        queue(fx, 2, 2, 1, 0, &inc, 1); /* client 2 active right before the sweep */
        assert_int_equal(apply(fx), KV_OK);
        noops_until(fx, NODE_SESSION_IDLE_ENTRIES + 3 * NODE_SESSION_SWEEP_EVERY, chunks[r]);
    }
    struct stor_iter *ia;
    struct stor_iter *ib;
    assert_int_equal(stor_iter_new(a->engine, NULL, NULL, 0, NULL, 0, &ia), KV_OK);
    assert_int_equal(stor_iter_new(b->engine, NULL, NULL, 0, NULL, 0, &ib), KV_OK);
    size_t n = 0;
    for (;;) {
        const uint8_t *ka, *va, *kb, *vb;
        size_t ksa, vsa, ksb, vsb;
        int ra = stor_iter_next(ia, &ka, &ksa, &va, &vsa);
        int rb = stor_iter_next(ib, &kb, &ksb, &vb, &vsb);
        assert_int_equal(ra, rb);
        if (ra != KV_OK) {
            break;
        }
        assert_int_equal(ksa, ksb);
        assert_memory_equal(ka, kb, ksa);
        assert_int_equal(vsa, vsb);
        assert_memory_equal(va, vb, vsa);
        n++;
    }
    stor_iter_free(ia);
    stor_iter_free(ib);
    assert_int_equal(count_kind(a, NODE_KEY_CLIENT), 1); /* client 1 evicted, 2 kept */
    assert_true(n > 0);
    teardown((void **)&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_roundtrip_and_rejects),
        cmocka_unit_test_setup_teardown(test_set_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_getdel_append, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incrby, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msetnx_all_or_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_sees_its_own_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_applied_index_persists_and_replay_skips, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_entry_is_an_error_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures_never_half_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_sessions_are_evicted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replicas_agree_whatever_the_batching, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
