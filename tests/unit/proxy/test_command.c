/* test_command.c -- the proxy command table: lookup, arity and syntax
 * errors in Redis's wording, plans for every data command, and the replies
 * built from item results (RESP2 and RESP3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "keys.h"

/* A request from string arguments (NULL-terminated list). */
struct req {
    struct resp_request r;
    const uint8_t *argv[16];
    size_t sizes[16];
};

static void make(struct req *q, const char *const *args)
{
    size_t n = 0;
    while (args[n] != NULL) {
        q->argv[n] = (const uint8_t *)args[n];
        q->sizes[n] = strlen(args[n]);
        n++;
    }
    q->r.argc = n;
    q->r.argv = q->argv;
    q->r.argv_size = q->sizes;
}

/* Checks and plans; returns the code and leaves errmsg filled. */
static int plan_of(const char *const *args, struct proxy_plan *plan, char *errmsg)
{
    struct req q;
    const struct proxy_command *cmd;
    make(&q, args);
    int rc = proxy_command_check(&q.r, &cmd, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    return proxy_plan_build(cmd, &q.r, plan, errmsg);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_lookup_and_arity(void **state)
{
    char errmsg[KV_ERRMSG_SIZE];
    struct proxy_plan plan;
    assert_non_null(proxy_command_lookup((const uint8_t *)"GeT", 3));
    assert_null(proxy_command_lookup((const uint8_t *)"getx", 4));
    assert_int_equal(plan_of(ARGS("FOO", "a", "b"), &plan, errmsg), KV_ENOTFOUND);
    assert_string_equal(errmsg, "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ");
    assert_int_equal(plan_of(ARGS("get"), &plan, errmsg), KV_EINVAL);
    assert_string_equal(errmsg, "ERR wrong number of arguments for 'get' command");
    assert_int_equal(plan_of(ARGS("GET", "a", "b"), &plan, errmsg), KV_EINVAL);
    assert_int_equal(plan_of(ARGS("set", "k"), &plan, errmsg), KV_EINVAL);
    assert_int_equal(plan_of(ARGS("mset", "a", "1", "b"), &plan, errmsg), KV_EINVAL);
    assert_string_equal(errmsg, "ERR wrong number of arguments for 'mset' command");
    size_t count;
    const struct proxy_command *t = proxy_command_table(&count);
    assert_true(count >= 20);
    for (size_t i = 0; i < count; i++) {
        /* Data commands plan; local ones are the server's. */
        assert_true((t[i].plan != NULL) ==
                    ((t[i].flags & (PROXY_CMD_LOCAL | PROXY_CMD_ALLSHARDS)) == 0));
    }
}

static void test_set_options(void **state)
{
    char errmsg[KV_ERRMSG_SIZE];
    struct proxy_plan plan;
    assert_int_equal(plan_of(ARGS("set", "k", "v", "nx", "GET"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.n_items, 1);
    assert_true(plan.items[0].is_write);
    assert_int_equal(plan.items[0].op.type, NODE_OP_SET);
    assert_int_equal(plan.items[0].op.flags, NODE_SET_NX | NODE_SET_GET);
    assert_memory_equal(plan.items[0].op.value, "v", 1);
    proxy_plan_close(&plan);
    assert_int_equal(plan_of(ARGS("set", "k", "v", "nx", "xx"), &plan, errmsg), KV_EINVAL);
    assert_string_equal(errmsg, "ERR syntax error");
    assert_int_equal(plan_of(ARGS("set", "k", "v", "nx", "nx"), &plan, errmsg), KV_EINVAL);
    assert_int_equal(plan_of(ARGS("set", "k", "v", "bogus"), &plan, errmsg), KV_EINVAL);
    assert_string_equal(errmsg, "ERR syntax error");
    assert_int_equal(plan_of(ARGS("set", "k", "v", "EX", "10"), &plan, errmsg), KV_EINVAL);
    assert_non_null(strstr(errmsg, "expiry"));
}

static void test_incr_family(void **state)
{
    char errmsg[KV_ERRMSG_SIZE];
    struct proxy_plan plan;
    assert_int_equal(plan_of(ARGS("decr", "n"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.items[0].op.type, NODE_OP_INCRBY);
    assert_int_equal(plan.items[0].op.delta, -1);
    proxy_plan_close(&plan);
    assert_int_equal(plan_of(ARGS("incrby", "n", "-42"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.items[0].op.delta, -42);
    proxy_plan_close(&plan);
    const char *bad[] = {"abc", "1.5", " 1", "01", "+1", "", "9223372036854775808"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(plan_of(ARGS("incrby", "n", bad[i]), &plan, errmsg), KV_EINVAL);
        assert_string_equal(errmsg, "ERR value is not an integer or out of range");
    }
    assert_int_equal(plan_of(ARGS("decrby", "n", "-9223372036854775808"), &plan, errmsg),
                     KV_EINVAL);
    assert_string_equal(errmsg, "ERR decrement would overflow");
}

static void test_multi_key_plans(void **state)
{
    char errmsg[KV_ERRMSG_SIZE];
    struct proxy_plan plan;
    assert_int_equal(plan_of(ARGS("mget", "a", "b", "c"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.n_items, 3);
    assert_int_equal(plan.reply, PROXY_REPLY_ARRAY);
    assert_false(plan.items[2].is_write);
    assert_memory_equal(plan.items[2].key, "c", 1);
    proxy_plan_close(&plan);
    assert_int_equal(plan_of(ARGS("del", "a", "b"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.reply, PROXY_REPLY_SUM);
    assert_int_equal(plan.items[1].op.type, NODE_OP_DEL);
    proxy_plan_close(&plan);
    assert_int_equal(plan_of(ARGS("exists", "a", "a"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.items[0].read_type, PROXY_READ_EXISTS);
    proxy_plan_close(&plan);
    assert_int_equal(plan_of(ARGS("msetnx", "a", "1", "b", "2"), &plan, errmsg), KV_OK);
    assert_int_equal(plan.n_items, 2);
    assert_int_equal(plan.cmd_flags, NODE_CMD_ALL_NX);
    assert_int_equal(plan.reply, PROXY_REPLY_ALL_SET);
    assert_memory_equal(plan.items[1].op.value, "2", 1);
    proxy_plan_close(&plan);
}

static void test_size_limits(void **state)
{
    char errmsg[KV_ERRMSG_SIZE];
    struct proxy_plan plan;
    char *longkey = test_malloc(NODE_USER_KEY_SIZE_MAX + 2);
    memset(longkey, 'k', NODE_USER_KEY_SIZE_MAX + 1);
    longkey[NODE_USER_KEY_SIZE_MAX + 1] = '\0';
    assert_int_equal(plan_of(ARGS("get", longkey), &plan, errmsg), KV_EINVAL);
    assert_non_null(strstr(errmsg, "key must be"));
    longkey[NODE_USER_KEY_SIZE_MAX] = '\0';
    assert_int_equal(plan_of(ARGS("get", longkey), &plan, errmsg), KV_OK);
    proxy_plan_close(&plan);
    test_free(longkey);
    char *big = malloc(NODE_VALUE_SIZE_MAX + 2);
    assert_non_null(big);
    memset(big, 'v', NODE_VALUE_SIZE_MAX + 1);
    big[NODE_VALUE_SIZE_MAX + 1] = '\0';
    assert_int_equal(plan_of(ARGS("set", "k", big), &plan, errmsg), KV_EINVAL);
    assert_non_null(strstr(errmsg, "limit"));
    free(big);
}

static void check_reply(const char *const *args, const struct proxy_item_result *res, int resp3,
                        const char *want)
{
    char errmsg[KV_ERRMSG_SIZE];
    struct proxy_plan plan;
    struct kv_buf out;
    kv_buf_init(&out);
    assert_int_equal(plan_of(args, &plan, errmsg), KV_OK);
    assert_int_equal(proxy_plan_reply(&plan, res, &out, resp3), KV_OK);
    assert_int_equal(out.size, strlen(want));
    assert_memory_equal(out.data, want, out.size);
    proxy_plan_close(&plan);
    kv_buf_close(&out);
}

static void test_replies(void **state)
{
    struct proxy_item_result v = {
        .kind = NODE_RES_VALUE, .value = (const uint8_t *)"hi", .value_size = 2};
    struct proxy_item_result nil = {.kind = NODE_RES_NIL};
    struct proxy_item_result ok = {.kind = NODE_RES_OK};
    struct proxy_item_result one = {.kind = NODE_RES_INT, .integer = 1};
    struct proxy_item_result zero = {.kind = NODE_RES_INT, .integer = 0};
    struct proxy_item_result err = {.kind = NODE_RES_ERROR,
                                    .value = (const uint8_t *)"ERR value is not an integer",
                                    .value_size = 27};
    check_reply(ARGS("get", "k"), &v, 0, "$2\r\nhi\r\n");
    check_reply(ARGS("get", "k"), &nil, 0, "$-1\r\n");
    check_reply(ARGS("get", "k"), &nil, 1, "_\r\n");
    check_reply(ARGS("set", "k", "v"), &ok, 0, "+OK\r\n");
    check_reply(ARGS("set", "k", "v", "nx"), &nil, 0, "$-1\r\n");
    check_reply(ARGS("incr", "k"), &err, 0, "-ERR value is not an integer\r\n");
    struct proxy_item_result del[3] = {one, zero, one};
    check_reply(ARGS("del", "a", "b", "c"), del, 0, ":2\r\n");
    struct proxy_item_result mget[2] = {v, nil};
    check_reply(ARGS("mget", "a", "b"), mget, 0, "*2\r\n$2\r\nhi\r\n$-1\r\n");
    struct proxy_item_result mset[2] = {ok, ok};
    check_reply(ARGS("mset", "a", "1", "b", "2"), mset, 0, "+OK\r\n");
    check_reply(ARGS("msetnx", "a", "1", "b", "2"), mset, 0, ":1\r\n");
    struct proxy_item_result refused[2] = {nil, nil};
    check_reply(ARGS("msetnx", "a", "1", "b", "2"), refused, 0, ":0\r\n");
    check_reply(ARGS("setnx", "a", "1"), &nil, 0, ":0\r\n");
    struct proxy_item_result partial[2] = {ok, err};
    check_reply(ARGS("mset", "a", "1", "b", "2"), partial, 0, "-ERR value is not an integer\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_and_arity), cmocka_unit_test(test_set_options),
        cmocka_unit_test(test_incr_family),      cmocka_unit_test(test_multi_key_plans),
        cmocka_unit_test(test_size_limits),      cmocka_unit_test(test_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
