/* command.c -- the command table, argument checking with Redis's wording,
 * planning requests into per-key items, and building replies (see
 * command.h). */
#include "command.h"
#include "alloc.h"
#include "keys.h"
#include "num.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SYNTAX_ERROR "ERR syntax error"
#define NOT_INTEGER  "ERR value is not an integer or out of range"

/* ---- argument helpers ----------------------------------------------------- */

static int arg_is(const struct resp_request *req, size_t i, const char *word)
{
    size_t n = strlen(word);
    return req->argv_size[i] == n && strncasecmp((const char *)req->argv[i], word, n) == 0;
}

static int check_sizes(size_t key_size, size_t value_size, char *errmsg)
{
    if (key_size == 0 || key_size > NODE_USER_KEY_SIZE_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "ERR key must be 1 to %u bytes (got %zu)",
                 NODE_USER_KEY_SIZE_MAX, key_size);
        return KV_EINVAL;
    }
    if (value_size > NODE_VALUE_SIZE_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "ERR value of %zu bytes is over the %u-byte limit",
                 value_size, NODE_VALUE_SIZE_MAX);
        return KV_EINVAL;
    }
    return KV_OK;
}

static struct proxy_item *add_item(struct proxy_plan *plan, const struct resp_request *req,
                                   size_t key_arg, char *errmsg, int *rc)
{
    *rc = check_sizes(req->argv_size[key_arg], 0, errmsg);
    if (*rc != KV_OK) {
        return NULL;
    }
    struct proxy_item *it = &plan->items[plan->n_items++];
    memset(it, 0, sizeof *it);
    it->key = req->argv[key_arg];
    it->key_size = req->argv_size[key_arg];
    it->op.key = it->key;
    it->op.key_size = it->key_size;
    return it;
}

static int add_read(struct proxy_plan *plan, const struct resp_request *req, size_t key_arg,
                    uint32_t type, char *errmsg)
{
    int rc;
    struct proxy_item *it = add_item(plan, req, key_arg, errmsg, &rc);
    if (it != NULL) {
        it->read_type = type;
    }
    return rc;
}

static int add_write(struct proxy_plan *plan, const struct resp_request *req, size_t key_arg,
                     uint32_t type, size_t value_arg, char *errmsg, struct proxy_item **out)
{
    int rc;
    struct proxy_item *it = add_item(plan, req, key_arg, errmsg, &rc);
    if (it == NULL) {
        return rc;
    }
    it->is_write = 1;
    it->op.type = type;
    if (value_arg != 0) {
        rc = check_sizes(it->key_size, req->argv_size[value_arg], errmsg);
        it->op.value = req->argv[value_arg];
        it->op.value_size = req->argv_size[value_arg];
    }
    if (out != NULL) {
        *out = it;
    }
    return rc;
}

/* ---- planners ------------------------------------------------------------- */

static int plan_get(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    return add_read(plan, req, 1, PROXY_READ_GET, errmsg);
}

static int plan_strlen(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    return add_read(plan, req, 1, PROXY_READ_STRLEN, errmsg);
}

static int plan_getdel(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    return add_write(plan, req, 1, NODE_OP_GETDEL, 0, errmsg, NULL);
}

static int plan_append(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    return add_write(plan, req, 1, NODE_OP_APPEND, 2, errmsg, NULL);
}

/* SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL] */
static int plan_set(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    uint32_t flags = 0;
    for (size_t i = 3; i < req->argc; i++) {
        uint32_t f = arg_is(req, i, "nx")    ? NODE_SET_NX
                     : arg_is(req, i, "xx")  ? NODE_SET_XX
                     : arg_is(req, i, "get") ? NODE_SET_GET
                                             : 0;
        if (f == 0 && (arg_is(req, i, "ex") || arg_is(req, i, "px") || arg_is(req, i, "exat") ||
                       arg_is(req, i, "pxat") || arg_is(req, i, "keepttl"))) {
            snprintf(errmsg, KV_ERRMSG_SIZE,
                     "ERR expiry (EX, PX, EXAT, PXAT, KEEPTTL) is not supported by RaftKV");
            return KV_EINVAL;
        }
        if (f == 0 || (flags & f)) {
            snprintf(errmsg, KV_ERRMSG_SIZE, SYNTAX_ERROR);
            return KV_EINVAL;
        }
        flags |= f;
    }
    if ((flags & NODE_SET_NX) && (flags & NODE_SET_XX)) {
        snprintf(errmsg, KV_ERRMSG_SIZE, SYNTAX_ERROR);
        return KV_EINVAL;
    }
    struct proxy_item *it;
    int rc = add_write(plan, req, 1, NODE_OP_SET, 2, errmsg, &it);
    if (rc == KV_OK) {
        it->op.flags = flags;
    }
    return rc;
}

static int plan_setnx(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    struct proxy_item *it;
    int rc = add_write(plan, req, 1, NODE_OP_SET, 2, errmsg, &it);
    if (rc == KV_OK) {
        it->op.flags = NODE_SET_NX;
        plan->reply = PROXY_REPLY_ALL_SET;
    }
    return rc;
}

/* INCR, DECR, INCRBY, DECRBY: the delta from the name and the argument. */
static int plan_incr(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    int64_t delta = 1;
    int negate = req->argv[0][0] == 'd' || req->argv[0][0] == 'D';
    if (req->argc == 3 && !kv_parse_i64(req->argv[2], req->argv_size[2], &delta)) {
        snprintf(errmsg, KV_ERRMSG_SIZE, NOT_INTEGER);
        return KV_EINVAL;
    }
    if (negate) {
        if (delta == INT64_MIN) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "ERR decrement would overflow");
            return KV_EINVAL;
        }
        delta = -delta;
    }
    struct proxy_item *it;
    int rc = add_write(plan, req, 1, NODE_OP_INCRBY, 0, errmsg, &it);
    if (rc == KV_OK) {
        it->op.delta = delta;
    }
    return rc;
}

/* DEL/UNLINK, EXISTS, MGET: one item per key argument. */
static int plan_keys(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    int is_del = arg_is(req, 0, "del") || arg_is(req, 0, "unlink");
    uint32_t read_type = arg_is(req, 0, "exists") ? PROXY_READ_EXISTS : PROXY_READ_GET;
    plan->reply = read_type == PROXY_READ_GET && !is_del ? PROXY_REPLY_ARRAY : PROXY_REPLY_SUM;
    for (size_t i = 1; i < req->argc; i++) {
        int rc = is_del ? add_write(plan, req, i, NODE_OP_DEL, 0, errmsg, NULL)
                        : add_read(plan, req, i, read_type, errmsg);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* MSET, MSETNX: key value pairs. */
static int plan_mset(const struct resp_request *req, struct proxy_plan *plan, char *errmsg)
{
    if (req->argc % 2 != 1) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "ERR wrong number of arguments for '%.*s' command",
                 (int)req->argv_size[0], (const char *)req->argv[0]);
        return KV_EINVAL;
    }
    int nx = arg_is(req, 0, "msetnx");
    plan->reply = nx ? PROXY_REPLY_ALL_SET : PROXY_REPLY_OK;
    plan->cmd_flags = nx ? NODE_CMD_ALL_NX : 0;
    for (size_t i = 1; i < req->argc; i += 2) {
        int rc = add_write(plan, req, i, NODE_OP_SET, i + 1, errmsg, NULL);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* ---- the table ------------------------------------------------------------ */

static const struct proxy_command table[] = {
    {"get", 2, PROXY_CMD_READ, plan_get},
    {"set", -3, PROXY_CMD_WRITE, plan_set},
    {"setnx", 3, PROXY_CMD_WRITE, plan_setnx},
    {"getdel", 2, PROXY_CMD_WRITE, plan_getdel},
    {"del", -2, PROXY_CMD_WRITE | PROXY_CMD_MULTIKEY, plan_keys},
    {"unlink", -2, PROXY_CMD_WRITE | PROXY_CMD_MULTIKEY, plan_keys},
    {"exists", -2, PROXY_CMD_READ | PROXY_CMD_MULTIKEY, plan_keys},
    {"mget", -2, PROXY_CMD_READ | PROXY_CMD_MULTIKEY, plan_keys},
    {"mset", -3, PROXY_CMD_WRITE | PROXY_CMD_MULTIKEY, plan_mset},
    {"msetnx", -3, PROXY_CMD_WRITE | PROXY_CMD_MULTIKEY, plan_mset},
    {"incr", 2, PROXY_CMD_WRITE, plan_incr},
    {"decr", 2, PROXY_CMD_WRITE, plan_incr},
    {"incrby", 3, PROXY_CMD_WRITE, plan_incr},
    {"decrby", 3, PROXY_CMD_WRITE, plan_incr},
    {"append", 3, PROXY_CMD_WRITE, plan_append},
    {"strlen", 2, PROXY_CMD_READ, plan_strlen},
    {"dbsize", 1, PROXY_CMD_READ | PROXY_CMD_ALLSHARDS, NULL},
    {"scan", -2, PROXY_CMD_READ | PROXY_CMD_ALLSHARDS, NULL},
    {"ping", -1, PROXY_CMD_LOCAL, NULL},
    {"echo", 2, PROXY_CMD_LOCAL, NULL},
    {"command", -1, PROXY_CMD_LOCAL, NULL},
    {"client", -2, PROXY_CMD_LOCAL, NULL},
    {"select", 2, PROXY_CMD_LOCAL, NULL},
    {"info", -1, PROXY_CMD_LOCAL, NULL},
    {"auth", -2, PROXY_CMD_LOCAL | PROXY_CMD_NOAUTH, NULL},
    {"hello", -1, PROXY_CMD_LOCAL | PROXY_CMD_NOAUTH, NULL},
    {"quit", -1, PROXY_CMD_LOCAL | PROXY_CMD_NOAUTH, NULL},
};
#define TABLE_SIZE (sizeof table / sizeof table[0])

const struct proxy_command *proxy_command_table(size_t *count)
{
    *count = TABLE_SIZE;
    return table;
}

const struct proxy_command *proxy_command_lookup(const uint8_t *name, size_t size)
{
    for (size_t i = 0; i < TABLE_SIZE; i++) {
        if (strlen(table[i].name) == size &&
            strncasecmp(table[i].name, (const char *)name, size) == 0) {
            return &table[i];
        }
    }
    return NULL;
}

/* Appends "'arg' " for up to the first few arguments, as Redis does. */
static void describe_args(const struct resp_request *req, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 1; i < req->argc && i <= 3 && used + 8 < cap; i++) {
        int n = snprintf(out + used, cap - used, "'%.*s' ",
                         (int)(req->argv_size[i] > 32 ? 32 : req->argv_size[i]),
                         (const char *)req->argv[i]);
        used += n > 0 ? (size_t)n : 0;
    }
}

int proxy_command_check(const struct resp_request *req, const struct proxy_command **cmd,
                        char *errmsg)
{
    KV_ASSERT(req->argc > 0);
    *cmd = proxy_command_lookup(req->argv[0], req->argv_size[0]);
    if (*cmd == NULL) {
        char args[160];
        describe_args(req, args, sizeof args);
        snprintf(errmsg, KV_ERRMSG_SIZE, "ERR unknown command '%.*s', with args beginning with: %s",
                 (int)(req->argv_size[0] > 64 ? 64 : req->argv_size[0]), (const char *)req->argv[0],
                 args);
        return KV_ENOTFOUND;
    }
    int arity = (*cmd)->arity;
    if ((arity > 0 && req->argc != (size_t)arity) || (arity < 0 && req->argc < (size_t)-arity)) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "ERR wrong number of arguments for '%s' command",
                 (*cmd)->name);
        return KV_EINVAL;
    }
    return KV_OK;
}

int proxy_plan_build(const struct proxy_command *cmd, const struct resp_request *req,
                     struct proxy_plan *plan, char *errmsg)
{
    KV_ASSERT(cmd->plan != NULL);
    memset(plan, 0, sizeof *plan);
    plan->cmd = cmd;
    plan->reply = PROXY_REPLY_SINGLE;
    if (req->argc - 1 > PROXY_PLAN_ITEMS_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "ERR too many keys in one command (max %u)",
                 PROXY_PLAN_ITEMS_MAX);
        return KV_EINVAL;
    }
    plan->items = kv_calloc(req->argc, sizeof *plan->items);
    if (plan->items == NULL) {
        return KV_ENOMEM;
    }
    int rc = cmd->plan(req, plan, errmsg);
    if (rc != KV_OK) {
        proxy_plan_close(plan);
    }
    return rc;
}

void proxy_plan_close(struct proxy_plan *plan)
{
    kv_free(plan->items);
    plan->items = NULL;
    plan->n_items = 0;
}

/* ---- replies -------------------------------------------------------------- */

static int add_result(struct kv_buf *out, const struct proxy_item_result *r, int resp3)
{
    switch (r->kind) {
    case NODE_RES_OK:
        return resp_add_simple(out, "OK");
    case NODE_RES_NIL:
        return resp_add_null(out, resp3);
    case NODE_RES_INT:
        return resp_add_int(out, r->integer);
    case NODE_RES_VALUE:
        return resp_add_bulk(out, r->value, r->value_size);
    default: {
        char msg[KV_ERRMSG_SIZE];
        snprintf(msg, sizeof msg, "%.*s", (int)(r->value_size < 500 ? r->value_size : 500),
                 r->value ? (const char *)r->value : "ERR internal error");
        return resp_add_error(out, msg);
    }
    }
}

int proxy_plan_reply(const struct proxy_plan *plan, const struct proxy_item_result *results,
                     struct kv_buf *out, int resp3)
{
    /* Whole-command replies report the first failed item as they are. */
    if (plan->reply != PROXY_REPLY_ARRAY) {
        for (size_t i = 0; i < plan->n_items; i++) {
            if (results[i].kind == NODE_RES_ERROR) {
                return add_result(out, &results[i], resp3);
            }
        }
    }
    switch (plan->reply) {
    case PROXY_REPLY_SINGLE:
        return add_result(out, &results[0], resp3);
    case PROXY_REPLY_SUM: {
        int64_t sum = 0;
        for (size_t i = 0; i < plan->n_items; i++) {
            sum += results[i].integer;
        }
        return resp_add_int(out, sum);
    }
    case PROXY_REPLY_ARRAY: {
        int rc = resp_add_array(out, plan->n_items);
        for (size_t i = 0; i < plan->n_items && rc == KV_OK; i++) {
            rc = add_result(out, &results[i], resp3);
        }
        return rc;
    }
    case PROXY_REPLY_OK:
        return resp_add_simple(out, "OK");
    case PROXY_REPLY_ALL_SET: {
        int all = 1;
        for (size_t i = 0; i < plan->n_items; i++) {
            all &= results[i].kind == NODE_RES_OK;
        }
        return resp_add_int(out, all);
    }
    }
    return resp_add_error(out, "ERR internal error: unknown reply kind");
}
