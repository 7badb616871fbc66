/* fsm.h -- the replica state machine of one data group: applies committed
 * key-value commands to the storage engine, exactly once per (client,
 * sequence), with the applied index written in the same atomic batch as the
 * data it covers, so a restart resumes exactly where apply stopped.
 *
 * Read-modify-write commands (INCRBY, APPEND, SET NX/XX/GET, GETDEL,
 * MSETNX) execute here, inside the state machine, so they are atomic
 * however many proxies send them. Every replica applies the same entries
 * in the same order and so computes the same results: nothing here reads a
 * clock or a random source.
 *
 * Command encoding (the payload of a Raft entry), format version 1, all
 * integers varints unless noted:
 *   u8 version (1) | client | seq | ack_seq | flags | op count |
 *   per op: u8 type | flags | key size | key | value size | value |
 *           zigzag delta
 * A payload that does not decode applies as an error result, identically
 * on every replica, and changes nothing but the applied index. */
#ifndef KV_NODE_FSM_H
#define KV_NODE_FSM_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "stor.h"

#define NODE_CMD_VERSION 1
/* Most ops one command may carry (an MSET is split per group first). */
#define NODE_CMD_OPS_MAX 4096u
/* Requests a client may have applied but not yet acknowledged per group;
 * beyond it the command fails (the client must acknowledge first). */
#define NODE_SESSION_WINDOW_MAX 4096u
/* Sessions of clients idle for this many log entries are forgotten (a
 * later request from such a client that had acknowledged answers gets
 * "session expired"); the sweep runs every NODE_SESSION_SWEEP_EVERY entries
 * and evicts at most NODE_SESSION_EVICT_MAX clients each time. */
#define NODE_SESSION_IDLE_ENTRIES (1024u * 1024u)
#define NODE_SESSION_SWEEP_EVERY  4096u
#define NODE_SESSION_EVICT_MAX    1024u
/* Largest value a command may create (APPEND included). */
#define NODE_VALUE_SIZE_MAX (16u * 1024u * 1024u)

enum node_op_type {
    NODE_OP_SET = 1,    /* key = value; flags NX / XX / GET */
    NODE_OP_DEL = 2,    /* remove key; integer 1 when it existed, else 0 */
    NODE_OP_INCRBY = 3, /* key += delta; integer result */
    NODE_OP_APPEND = 4, /* key .= value; integer new length */
    NODE_OP_GETDEL = 5, /* value (or nil), then remove */
};

enum node_op_flag {
    NODE_SET_NX = 1u << 0,  /* only if the key does not exist */
    NODE_SET_XX = 1u << 1,  /* only if the key exists */
    NODE_SET_GET = 1u << 2, /* reply with the old value */
};

enum node_cmd_flag {
    /* MSETNX: the SETs happen only if none of the keys exists; all or none. */
    NODE_CMD_ALL_NX = 1u << 0,
};

struct node_op {
    uint32_t type;        /* enum node_op_type */
    uint32_t flags;       /* enum node_op_flag */
    const uint8_t *key;   /* user key, borrowed */
    size_t key_size;      /* 1..NODE_USER_KEY_SIZE_MAX */
    const uint8_t *value; /* SET / APPEND value, borrowed */
    size_t value_size;    /* bytes of value */
    int64_t delta;        /* INCRBY amount */
};

struct node_cmd {
    uint64_t client_id;  /* 0: no exactly-once tracking */
    uint64_t seq;        /* the client's request number, from 1 */
    uint64_t ack_seq;    /* the client has every answer up to this seq */
    uint32_t flags;      /* enum node_cmd_flag */
    struct node_op *ops; /* the operations, applied in order */
    size_t n_ops;        /* 1..NODE_CMD_OPS_MAX */
};

enum node_result_kind {
    NODE_RES_OK = 0,    /* done */
    NODE_RES_NIL = 1,   /* condition not met / no old value */
    NODE_RES_INT = 2,   /* `integer` holds the result */
    NODE_RES_VALUE = 3, /* `value` holds the result */
    NODE_RES_ERROR = 4, /* `value` holds a message (a Redis-style "ERR ...") */
};

struct node_result {
    uint32_t kind;       /* enum node_result_kind */
    int64_t integer;     /* NODE_RES_INT */
    struct kv_buf value; /* NODE_RES_VALUE or NODE_RES_ERROR text */
};

/* The outcome of one applied command: one result per op (or one error
 * result for a command that failed as a whole). */
struct node_cmd_result {
    struct node_result *results; /* owned by the fsm; valid during the cb */
    size_t n_results;
    int duplicate; /* 1 when answered from the session table (a retry) */
};

/* Encodes `cmd` into `out` (appended). KV_OK, KV_ENOMEM, KV_EINVAL (no ops,
 * too many, an empty or oversized key or value). */
int node_cmd_encode(const struct node_cmd *cmd, struct kv_buf *out) KV_MUST_USE;

/* Decodes `size` bytes into *cmd; cmd->ops is kv_malloc'd (free with
 * node_cmd_clear) and its keys and values borrow `data`. KV_ECORRUPT for
 * malformed input, KV_EUNSUPPORTED for another version, KV_ENOMEM. */
int node_cmd_decode(const uint8_t *data, size_t size, struct node_cmd *cmd) KV_MUST_USE;
void node_cmd_clear(struct node_cmd *cmd);

/* One committed Raft entry as the fsm sees it. */
struct node_fsm_entry {
    uint64_t index;      /* log index */
    uint64_t term;       /* log term */
    int is_command;      /* 0: leader no-op or conf change (only the index moves) */
    const uint8_t *data; /* command payload when is_command */
    size_t size;
};

struct node_fsm;

/* Opens the state machine of `group` over `engine` (borrowed; outlives the
 * fsm), reading the applied index stored there. */
int node_fsm_new(struct stor_engine *engine, uint64_t group, struct node_fsm **out) KV_MUST_USE;
void node_fsm_free(struct node_fsm *f);

/* Index and term of the last applied entry (0, 0 for a fresh group). */
uint64_t node_fsm_applied_index(const struct node_fsm *f);
uint64_t node_fsm_applied_term(const struct node_fsm *f);

/* Called once per command entry after the whole batch is durable. */
typedef void (*node_fsm_result_cb)(void *data, uint64_t index, const struct node_cmd_result *res);

/* Applies `n` committed entries (consecutive, starting right after the
 * applied index) in one atomic engine write that also records the new
 * applied index; then reports each command's results through `result_cb`.
 * Entries at or below the applied index are skipped (replay after a
 * restart). Returns KV_OK, or the engine's error (nothing applied; the
 * engine is poisoned on I/O errors and the group must stop), KV_EINVAL for
 * a gap in the indices. */
int node_fsm_apply(struct node_fsm *f, const struct node_fsm_entry *entries, size_t n,
                   node_fsm_result_cb result_cb, void *data) KV_MUST_USE;

/* Reads user key `key` at `view` (NULL: latest). KV_OK with the value,
 * KV_ENOTFOUND, KV_EINVAL for a bad key, or the engine's error. */
int node_fsm_get(struct node_fsm *f, const struct stor_view *view, const void *key, size_t key_size,
                 struct kv_buf *value) KV_MUST_USE;

#endif
