/* command.h -- the proxy's declarative command table (name, arity, flags,
 * key positions) and the translation of a RESP request into a plan: one
 * item per key, in the client's order, each a state-machine write
 * (src/node/fsm.h) or a read; and of the items' results back into the reply
 * Redis clients expect. Arity and argument syntax are checked once, here,
 * with Redis's own error wording; handlers stay tiny.
 *
 * What runs the plan (routing by ring, per-group fan-out, retries) lives in
 * the proxy server; commands the proxy answers itself (PING, HELLO, ...) are
 * flagged PROXY_CMD_LOCAL and have no planner. */
#ifndef KV_PROXY_COMMAND_H
#define KV_PROXY_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "fsm.h"
#include "resp.h"

enum proxy_cmd_flag {
    PROXY_CMD_WRITE = 1u << 0,    /* goes through Raft */
    PROXY_CMD_READ = 1u << 1,     /* served under the read policy */
    PROXY_CMD_LOCAL = 1u << 2,    /* answered by the proxy itself */
    PROXY_CMD_NOAUTH = 1u << 3,   /* allowed before AUTH */
    PROXY_CMD_MULTIKEY = 1u << 4, /* keys may span shards: split and gather */
    PROXY_CMD_ALLSHARDS = 1u << 5 /* runs on every shard (DBSIZE, SCAN) */
};

enum proxy_read_type {
    PROXY_READ_GET = 1,    /* the value, or nil */
    PROXY_READ_EXISTS = 2, /* 1 or 0 */
    PROXY_READ_STRLEN = 3, /* the value's length, 0 when absent */
};

/* How the items' results become one reply. */
enum proxy_reply_kind {
    PROXY_REPLY_SINGLE = 1, /* the one item's result */
    PROXY_REPLY_SUM,        /* integer: sum of the items' integers (DEL, EXISTS) */
    PROXY_REPLY_ARRAY,      /* array of the items' results (MGET) */
    PROXY_REPLY_OK,         /* +OK once every item succeeded (MSET) */
    PROXY_REPLY_ALL_SET,    /* :1 when the items were set, :0 when refused (MSETNX) */
};

/* One key's part of a command. Pointers borrow the request's memory. */
struct proxy_item {
    const uint8_t *key;
    size_t key_size;
    int is_write;       /* 1: `op` goes to the group's leader through Raft */
    struct node_op op;  /* the write */
    uint32_t read_type; /* enum proxy_read_type when !is_write */
};

/* Limits of one plan. */
#define PROXY_PLAN_ITEMS_MAX NODE_CMD_OPS_MAX

struct proxy_plan {
    const struct proxy_command *cmd;
    struct proxy_item *items; /* kv_malloc'd, n_items used; proxy_plan_close frees */
    size_t n_items;
    uint32_t cmd_flags; /* enum node_cmd_flag for the writes (MSETNX) */
    uint32_t reply;     /* enum proxy_reply_kind */
};

struct proxy_command {
    const char *name; /* lowercase */
    int arity;        /* Redis convention: N exactly, -N at least N (name included) */
    uint32_t flags;   /* enum proxy_cmd_flag */
    /* Fills `plan` from `req` (argc already checked against arity). Returns
     * KV_OK, or KV_EINVAL with a Redis-style message ("ERR ...") in errmsg,
     * or KV_ENOMEM. NULL for local commands. */
    int (*plan)(const struct resp_request *req, struct proxy_plan *plan, char *errmsg);
};

/* The command named by argv[0] (any case), or NULL. */
const struct proxy_command *proxy_command_lookup(const uint8_t *name, size_t size);

/* The table, for COMMAND COUNT / COMMAND DOCS: *count entries. */
const struct proxy_command *proxy_command_table(size_t *count);

/* Looks up and checks a request: KV_OK with *cmd; KV_ENOTFOUND with
 * "ERR unknown command ..." or KV_EINVAL with "ERR wrong number of
 * arguments for '<name>' command" in errmsg (KV_ERRMSG_SIZE). */
int proxy_command_check(const struct resp_request *req, const struct proxy_command **cmd,
                        char *errmsg) KV_MUST_USE;

/* Builds the plan of a checked, non-local request. */
int proxy_plan_build(const struct proxy_command *cmd, const struct resp_request *req,
                     struct proxy_plan *plan, char *errmsg) KV_MUST_USE;
void proxy_plan_close(struct proxy_plan *plan);

/* One item's outcome: for writes the state machine's result; for reads
 * NODE_RES_VALUE / NODE_RES_NIL / NODE_RES_INT as the read type says; or
 * NODE_RES_ERROR with the text to send. */
struct proxy_item_result {
    uint32_t kind; /* enum node_result_kind */
    int64_t integer;
    const uint8_t *value; /* borrowed */
    size_t value_size;
};

/* Appends the reply for `plan` given one result per item. */
int proxy_plan_reply(const struct proxy_plan *plan, const struct proxy_item_result *results,
                     struct kv_buf *out, int resp3) KV_MUST_USE;

#endif
