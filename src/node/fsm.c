/* fsm.c -- the data group state machine (see fsm.h): command codec,
 * a write overlay so later commands of one apply batch see earlier ones,
 * the exactly-once session table, and the atomic apply. */
#include "fsm.h"
#include "alloc.h"
#include "hash.h"
#include "keys.h"
#include "num.h"

#include <stdio.h>
#include <string.h>

#define APPLIED_META "applied"

/* ---- command codec -------------------------------------------------------- */

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static int op_valid(const struct node_op *op)
{
    if (op->key_size == 0 || op->key_size > NODE_USER_KEY_SIZE_MAX ||
        op->value_size > NODE_VALUE_SIZE_MAX) {
        return 0;
    }
    return op->type >= NODE_OP_SET && op->type <= NODE_OP_GETDEL;
}

int node_cmd_encode(const struct node_cmd *cmd, struct kv_buf *out)
{
    if (cmd->n_ops == 0 || cmd->n_ops > NODE_CMD_OPS_MAX) {
        return KV_EINVAL;
    }
    for (size_t i = 0; i < cmd->n_ops; i++) {
        if (!op_valid(&cmd->ops[i])) {
            return KV_EINVAL;
        }
    }
    size_t mark = out->size;
    int rc = kv_buf_put_u8(out, NODE_CMD_VERSION);
    rc = rc ? rc : kv_buf_put_varint(out, cmd->client_id);
    rc = rc ? rc : kv_buf_put_varint(out, cmd->seq);
    rc = rc ? rc : kv_buf_put_varint(out, cmd->ack_seq);
    rc = rc ? rc : kv_buf_put_varint(out, cmd->flags);
    rc = rc ? rc : kv_buf_put_varint(out, cmd->n_ops);
    for (size_t i = 0; i < cmd->n_ops && rc == KV_OK; i++) {
        const struct node_op *op = &cmd->ops[i];
        rc = kv_buf_put_u8(out, (uint8_t)op->type);
        rc = rc ? rc : kv_buf_put_varint(out, op->flags);
        rc = rc ? rc : kv_buf_put_varint(out, op->key_size);
        rc = rc ? rc : kv_buf_append(out, op->key, op->key_size);
        rc = rc ? rc : kv_buf_put_varint(out, op->value_size);
        rc = rc ? rc : kv_buf_append(out, op->value, op->value_size);
        rc = rc ? rc : kv_buf_put_varint(out, zigzag(op->delta));
    }
    if (rc != KV_OK) {
        out->size = mark;
    }
    return rc;
}

static int decode_op(struct kv_reader *r, struct node_op *op)
{
    uint8_t type;
    uint64_t flags, ks, vs, delta;
    if (kv_reader_u8(r, &type) || kv_reader_varint(r, &flags) || kv_reader_varint(r, &ks) ||
        kv_reader_bytes(r, ks, &op->key) || kv_reader_varint(r, &vs) ||
        kv_reader_bytes(r, vs, &op->value) || kv_reader_varint(r, &delta)) {
        return KV_ECORRUPT;
    }
    op->type = type;
    op->flags = (uint32_t)flags;
    op->key_size = ks;
    op->value_size = vs;
    op->delta = unzigzag(delta);
    return op_valid(op) && flags <= UINT32_MAX ? KV_OK : KV_ECORRUPT;
}

int node_cmd_decode(const uint8_t *data, size_t size, struct node_cmd *cmd)
{
    struct kv_reader r;
    uint8_t version;
    uint64_t flags, n;
    memset(cmd, 0, sizeof *cmd);
    kv_reader_init(&r, data, size);
    if (kv_reader_u8(&r, &version)) {
        return KV_ECORRUPT;
    }
    if (version != NODE_CMD_VERSION) {
        return KV_EUNSUPPORTED;
    }
    if (kv_reader_varint(&r, &cmd->client_id) || kv_reader_varint(&r, &cmd->seq) ||
        kv_reader_varint(&r, &cmd->ack_seq) || kv_reader_varint(&r, &flags) ||
        kv_reader_varint(&r, &n) || n == 0 || n > NODE_CMD_OPS_MAX || flags > UINT32_MAX) {
        return KV_ECORRUPT;
    }
    cmd->flags = (uint32_t)flags;
    cmd->ops = kv_calloc(n, sizeof *cmd->ops);
    if (cmd->ops == NULL) {
        return KV_ENOMEM;
    }
    cmd->n_ops = n;
    for (size_t i = 0; i < n; i++) {
        if (decode_op(&r, &cmd->ops[i]) != KV_OK) {
            node_cmd_clear(cmd);
            return KV_ECORRUPT;
        }
    }
    if (r.left != 0) {
        node_cmd_clear(cmd);
        return KV_ECORRUPT;
    }
    return KV_OK;
}

void node_cmd_clear(struct node_cmd *cmd)
{
    kv_free(cmd->ops);
    memset(cmd, 0, sizeof *cmd);
}

/* ---- write overlay ----------------------------------------------------------
 * Engine keys written by the batch being built, so that reads during apply
 * see earlier commands of the same batch. Open addressing over an array of
 * entries; cleared after every apply. */

struct ov_entry {
    struct kv_buf key;
    struct kv_buf value;
    int present; /* 0: deleted in this batch */
};

struct overlay {
    struct ov_entry *entries;
    size_t count;
    size_t cap;
    uint32_t *slots; /* entry index + 1, 0 = empty */
    size_t n_slots;  /* power of two, > 2 * cap */
};

static void overlay_clear(struct overlay *ov)
{
    for (size_t i = 0; i < ov->count; i++) {
        kv_buf_clear(&ov->entries[i].key);
        kv_buf_clear(&ov->entries[i].value);
    }
    ov->count = 0;
    if (ov->slots != NULL) {
        memset(ov->slots, 0, ov->n_slots * sizeof *ov->slots);
    }
}

static void overlay_close(struct overlay *ov)
{
    for (size_t i = 0; i < ov->cap; i++) {
        kv_buf_close(&ov->entries[i].key);
        kv_buf_close(&ov->entries[i].value);
    }
    kv_free(ov->entries);
    kv_free(ov->slots);
    memset(ov, 0, sizeof *ov);
}

static size_t overlay_find_slot(const struct overlay *ov, const uint8_t *k, size_t ks)
{
    size_t mask = ov->n_slots - 1;
    size_t s = (size_t)kv_hash64(k, ks) & mask;
    while (ov->slots[s] != 0) {
        const struct ov_entry *e = &ov->entries[ov->slots[s] - 1];
        if (e->key.size == ks && memcmp(e->key.data, k, ks) == 0) {
            return s;
        }
        s = (s + 1) & mask;
    }
    return s;
}

static int overlay_grow(struct overlay *ov)
{
    size_t cap = ov->cap ? ov->cap * 2 : 64;
    size_t n_slots = cap * 4;
    /* Both allocations first, so a failure leaves the overlay unchanged. */
    uint32_t *slots = kv_calloc(n_slots, sizeof *slots);
    if (slots == NULL) {
        return KV_ENOMEM;
    }
    struct ov_entry *entries = kv_realloc(ov->entries, cap * sizeof *entries);
    if (entries == NULL) {
        kv_free(slots);
        return KV_ENOMEM;
    }
    for (size_t i = ov->cap; i < cap; i++) {
        kv_buf_init(&entries[i].key);
        kv_buf_init(&entries[i].value);
    }
    ov->entries = entries;
    ov->cap = cap;
    kv_free(ov->slots);
    ov->slots = slots;
    ov->n_slots = n_slots;
    for (size_t i = 0; i < ov->count; i++) {
        size_t s = overlay_find_slot(ov, ov->entries[i].key.data, ov->entries[i].key.size);
        ov->slots[s] = (uint32_t)(i + 1);
    }
    return KV_OK;
}

static struct ov_entry *overlay_get(const struct overlay *ov, const struct node_key *k)
{
    if (ov->count == 0) {
        return NULL;
    }
    size_t s = overlay_find_slot(ov, k->bytes, k->size);
    return ov->slots[s] ? &ov->entries[ov->slots[s] - 1] : NULL;
}

static int overlay_set(struct overlay *ov, const struct node_key *k, const void *v, size_t vs,
                       int present)
{
    struct ov_entry *e = overlay_get(ov, k);
    if (e == NULL) {
        if (ov->count == ov->cap && overlay_grow(ov) != KV_OK) {
            return KV_ENOMEM;
        }
        e = &ov->entries[ov->count];
        if (kv_buf_set(&e->key, k->bytes, k->size) != KV_OK) {
            return KV_ENOMEM;
        }
        ov->slots[overlay_find_slot(ov, k->bytes, k->size)] = (uint32_t)(ov->count + 1);
        ov->count++;
    }
    e->present = present;
    return present ? kv_buf_set(&e->value, v, vs) : KV_OK;
}

/* ---- the state machine ----------------------------------------------------- */

struct node_fsm {
    struct stor_engine *engine; /* borrowed */
    uint64_t group;
    uint64_t applied_index;
    uint64_t applied_term;
    struct overlay ov;       /* this batch's writes */
    struct stor_batch batch; /* this batch's engine operations */
    struct kv_buf scratch;   /* a value read during apply */
    struct kv_buf encoded;   /* results being encoded for the session table */
    /* Results of every command of the batch, reported after the write. */
    struct node_result *results;
    size_t n_results;
    size_t cap_results;
    struct pending {
        uint64_t index;
        size_t first; /* into results */
        size_t count;
        int duplicate;
    } * pending;
    size_t n_pending;
    size_t cap_pending;
};

static int load_applied(struct node_fsm *f)
{
    struct node_key k;
    node_key_meta(&k, f->group, APPLIED_META);
    int rc = stor_get(f->engine, NULL, k.bytes, k.size, &f->scratch);
    if (rc == KV_ENOTFOUND) {
        return KV_OK;
    }
    if (rc != KV_OK) {
        return rc;
    }
    if (f->scratch.size != 16) {
        return KV_ECORRUPT;
    }
    f->applied_index = kv_load_u64(f->scratch.data);
    f->applied_term = kv_load_u64(f->scratch.data + 8);
    return KV_OK;
}

int node_fsm_new(struct stor_engine *engine, uint64_t group, struct node_fsm **out)
{
    struct node_fsm *f = kv_calloc(1, sizeof *f);
    if (f == NULL) {
        return KV_ENOMEM;
    }
    f->engine = engine;
    f->group = group;
    stor_batch_init(&f->batch);
    kv_buf_init(&f->scratch);
    kv_buf_init(&f->encoded);
    int rc = load_applied(f);
    if (rc != KV_OK) {
        node_fsm_free(f);
        return rc;
    }
    *out = f;
    return KV_OK;
}

static void results_reset(struct node_fsm *f)
{
    for (size_t i = 0; i < f->n_results; i++) {
        kv_buf_clear(&f->results[i].value);
    }
    f->n_results = 0;
    f->n_pending = 0;
}

void node_fsm_free(struct node_fsm *f)
{
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->cap_results; i++) {
        kv_buf_close(&f->results[i].value);
    }
    kv_free(f->results);
    kv_free(f->pending);
    overlay_close(&f->ov);
    stor_batch_close(&f->batch);
    kv_buf_close(&f->scratch);
    kv_buf_close(&f->encoded);
    kv_free(f);
}

uint64_t node_fsm_applied_index(const struct node_fsm *f)
{
    return f->applied_index;
}

uint64_t node_fsm_applied_term(const struct node_fsm *f)
{
    return f->applied_term;
}

/* Reads engine key `k` as this batch sees it. KV_OK / KV_ENOTFOUND. */
static int read_key(struct node_fsm *f, const struct node_key *k, struct kv_buf *out)
{
    struct ov_entry *e = overlay_get(&f->ov, k);
    if (e != NULL) {
        return e->present ? kv_buf_set(out, e->value.data, e->value.size) : KV_ENOTFOUND;
    }
    return stor_get(f->engine, NULL, k->bytes, k->size, out);
}

static int write_key(struct node_fsm *f, const struct node_key *k, const void *v, size_t vs)
{
    int rc = stor_batch_put(&f->batch, k->bytes, k->size, v, vs);
    return rc ? rc : overlay_set(&f->ov, k, v, vs, 1);
}

static int delete_key(struct node_fsm *f, const struct node_key *k)
{
    int rc = stor_batch_delete(&f->batch, k->bytes, k->size);
    return rc ? rc : overlay_set(&f->ov, k, NULL, 0, 0);
}

static struct node_result *result_new(struct node_fsm *f)
{
    if (f->n_results == f->cap_results) {
        size_t cap = f->cap_results ? f->cap_results * 2 : 64;
        struct node_result *r = kv_realloc(f->results, cap * sizeof *r);
        if (r == NULL) {
            return NULL;
        }
        for (size_t i = f->cap_results; i < cap; i++) {
            kv_buf_init(&r[i].value);
        }
        f->results = r;
        f->cap_results = cap;
    }
    struct node_result *res = &f->results[f->n_results++];
    res->kind = NODE_RES_OK;
    res->integer = 0;
    kv_buf_clear(&res->value);
    return res;
}

static int set_error(struct node_result *res, const char *msg)
{
    res->kind = NODE_RES_ERROR;
    return kv_buf_set(&res->value, msg, strlen(msg));
}

static int op_set(struct node_fsm *f, const struct node_op *op, const struct node_key *k,
                  struct node_result *res)
{
    int rc = read_key(f, k, &f->scratch);
    if (rc != KV_OK && rc != KV_ENOTFOUND) {
        return rc;
    }
    int exists = rc == KV_OK;
    int go = !((op->flags & NODE_SET_NX) && exists) && !((op->flags & NODE_SET_XX) && !exists);
    if (op->flags & NODE_SET_GET) {
        res->kind = exists ? NODE_RES_VALUE : NODE_RES_NIL;
        if (exists && kv_buf_set(&res->value, f->scratch.data, f->scratch.size) != KV_OK) {
            return KV_ENOMEM;
        }
    } else {
        res->kind = go ? NODE_RES_OK : NODE_RES_NIL;
    }
    return go ? write_key(f, k, op->value, op->value_size) : KV_OK;
}

static int op_incrby(struct node_fsm *f, const struct node_op *op, const struct node_key *k,
                     struct node_result *res)
{
    int64_t cur = 0;
    int rc = read_key(f, k, &f->scratch);
    if (rc != KV_OK && rc != KV_ENOTFOUND) {
        return rc;
    }
    if (rc == KV_OK && !kv_parse_i64(f->scratch.data, f->scratch.size, &cur)) {
        return set_error(res, "ERR value is not an integer or out of range");
    }
    if ((op->delta > 0 && cur > INT64_MAX - op->delta) ||
        (op->delta < 0 && cur < INT64_MIN - op->delta)) {
        return set_error(res, "ERR increment or decrement would overflow");
    }
    cur += op->delta;
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", (long long)cur);
    res->kind = NODE_RES_INT;
    res->integer = cur;
    return write_key(f, k, text, (size_t)n);
}

static int op_append(struct node_fsm *f, const struct node_op *op, const struct node_key *k,
                     struct node_result *res)
{
    int rc = read_key(f, k, &f->scratch);
    if (rc == KV_ENOTFOUND) {
        kv_buf_clear(&f->scratch);
    } else if (rc != KV_OK) {
        return rc;
    }
    if (f->scratch.size + op->value_size > NODE_VALUE_SIZE_MAX) {
        return set_error(res, "ERR string exceeds maximum allowed size");
    }
    if (kv_buf_append(&f->scratch, op->value, op->value_size) != KV_OK) {
        return KV_ENOMEM;
    }
    res->kind = NODE_RES_INT;
    res->integer = (int64_t)f->scratch.size;
    return write_key(f, k, f->scratch.data, f->scratch.size);
}

static int op_remove(struct node_fsm *f, const struct node_op *op, const struct node_key *k,
                     struct node_result *res)
{
    int rc = read_key(f, k, &f->scratch);
    if (rc != KV_OK && rc != KV_ENOTFOUND) {
        return rc;
    }
    int exists = rc == KV_OK;
    if (op->type == NODE_OP_DEL) {
        res->kind = NODE_RES_INT;
        res->integer = exists;
    } else {
        res->kind = exists ? NODE_RES_VALUE : NODE_RES_NIL;
        if (exists && kv_buf_set(&res->value, f->scratch.data, f->scratch.size) != KV_OK) {
            return KV_ENOMEM;
        }
    }
    return exists ? delete_key(f, k) : KV_OK;
}

static int exec_op(struct node_fsm *f, const struct node_op *op, struct node_result *res)
{
    struct node_key k;
    node_key_data(&k, f->group, op->key, op->key_size);
    switch (op->type) {
    case NODE_OP_SET:
        return op_set(f, op, &k, res);
    case NODE_OP_INCRBY:
        return op_incrby(f, op, &k, res);
    case NODE_OP_APPEND:
        return op_append(f, op, &k, res);
    case NODE_OP_DEL:
    case NODE_OP_GETDEL:
        return op_remove(f, op, &k, res);
    }
    return set_error(res, "ERR unknown operation");
}

/* MSETNX: 1 when no key of the command exists. */
static int none_exist(struct node_fsm *f, const struct node_cmd *cmd, int *none)
{
    *none = 1;
    for (size_t i = 0; i < cmd->n_ops; i++) {
        struct node_key k;
        node_key_data(&k, f->group, cmd->ops[i].key, cmd->ops[i].key_size);
        int rc = read_key(f, &k, &f->scratch);
        if (rc == KV_OK) {
            *none = 0;
            return KV_OK;
        }
        if (rc != KV_ENOTFOUND) {
            return rc;
        }
    }
    return KV_OK;
}

static int exec_cmd(struct node_fsm *f, const struct node_cmd *cmd, struct pending *p)
{
    int go = 1;
    if (cmd->flags & NODE_CMD_ALL_NX) {
        int rc = none_exist(f, cmd, &go);
        if (rc != KV_OK) {
            return rc;
        }
    }
    for (size_t i = 0; i < cmd->n_ops; i++) {
        struct node_result *res = result_new(f);
        if (res == NULL) {
            return KV_ENOMEM;
        }
        p->count++;
        if (!go) {
            res->kind = NODE_RES_NIL;
            continue;
        }
        int rc = exec_op(f, &cmd->ops[i], res);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* Session results: u8 count-varint, then per result u8 kind, zigzag int,
 * varint size, bytes. */
static int encode_results(struct node_fsm *f, const struct pending *p)
{
    struct kv_buf *b = &f->encoded;
    kv_buf_clear(b);
    int rc = kv_buf_put_varint(b, p->count);
    for (size_t i = 0; i < p->count && rc == KV_OK; i++) {
        const struct node_result *r = &f->results[p->first + i];
        rc = kv_buf_put_u8(b, (uint8_t)r->kind);
        rc = rc ? rc : kv_buf_put_varint(b, zigzag(r->integer));
        rc = rc ? rc : kv_buf_put_varint(b, r->value.size);
        rc = rc ? rc : kv_buf_append(b, r->value.data, r->value.size);
    }
    return rc;
}

static int decode_results(struct node_fsm *f, const struct kv_buf *in, struct pending *p)
{
    struct kv_reader r;
    uint64_t n;
    kv_reader_init(&r, in->data, in->size);
    if (kv_reader_varint(&r, &n) || n > NODE_CMD_OPS_MAX) {
        return KV_ECORRUPT;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint8_t kind;
        uint64_t integer, size;
        const uint8_t *bytes;
        if (kv_reader_u8(&r, &kind) || kv_reader_varint(&r, &integer) ||
            kv_reader_varint(&r, &size) || kv_reader_bytes(&r, size, &bytes)) {
            return KV_ECORRUPT;
        }
        struct node_result *res = result_new(f);
        if (res == NULL) {
            return KV_ENOMEM;
        }
        p->count++;
        res->kind = kind;
        res->integer = unzigzag(integer);
        if (kv_buf_set(&res->value, bytes, size) != KV_OK) {
            return KV_ENOMEM;
        }
    }
    return KV_OK;
}

static int error_result(struct node_fsm *f, struct pending *p, const char *msg)
{
    struct node_result *res = result_new(f);
    if (res == NULL) {
        return KV_ENOMEM;
    }
    p->count++;
    return set_error(res, msg);
}

/* Reads a client row: acknowledged watermark and the index of its last
 * command. KV_OK, KV_ENOTFOUND, KV_ECORRUPT. */
static int read_client(struct node_fsm *f, const struct node_key *ck, uint64_t *acked,
                       uint64_t *last_index)
{
    int rc = read_key(f, ck, &f->scratch);
    if (rc != KV_OK) {
        return rc;
    }
    if (f->scratch.size != 16) {
        return KV_ECORRUPT;
    }
    *acked = kv_load_u64(f->scratch.data);
    *last_index = kv_load_u64(f->scratch.data + 8);
    return KV_OK;
}

/* Exactly-once: answers a retry from the session table, or executes the
 * command and records its results until the client acknowledges them. */
static int apply_with_session(struct node_fsm *f, const struct node_cmd *cmd, uint64_t index,
                              struct pending *p)
{
    struct node_key ck;
    struct node_key sk;
    uint64_t acked = 0;
    uint64_t last_index = 0;
    node_key_client(&ck, f->group, cmd->client_id);
    int rc = read_client(f, &ck, &acked, &last_index);
    if (rc == KV_ENOTFOUND && cmd->ack_seq > 0) {
        /* The client had a session here (it acknowledged answers) that was
         * evicted as idle: whether its unanswered requests ran is unknown. */
        return error_result(f, p, "ERR session expired: retry with a new client session");
    }
    if (rc != KV_OK && rc != KV_ENOTFOUND) {
        return rc;
    }
    if (cmd->seq == 0 || cmd->seq == UINT64_MAX || cmd->seq <= acked) {
        return error_result(f, p, "ERR request sequence already acknowledged by the client");
    }
    node_key_session(&sk, f->group, cmd->client_id, cmd->seq);
    rc = read_key(f, &sk, &f->encoded);
    if (rc == KV_OK) {
        p->duplicate = 1;
        return decode_results(f, &f->encoded, p);
    }
    if (rc != KV_ENOTFOUND) {
        return rc;
    }
    uint64_t new_ack = cmd->ack_seq < cmd->seq ? cmd->ack_seq : cmd->seq - 1;
    if (new_ack < acked) {
        new_ack = acked;
    }
    if (cmd->seq - new_ack > NODE_SESSION_WINDOW_MAX) {
        return error_result(f, p, "ERR too many unacknowledged requests from this client");
    }
    rc = exec_cmd(f, cmd, p);
    rc = rc ? rc : encode_results(f, p);
    rc = rc ? rc : write_key(f, &sk, f->encoded.data, f->encoded.size);
    if (rc == KV_OK && new_ack > acked) {
        /* The client holds every answer up to new_ack: forget them. The
         * overlay needs no update: those seqs are never read again. */
        struct node_key from;
        struct node_key to;
        node_key_session(&from, f->group, cmd->client_id, acked + 1);
        node_key_session(&to, f->group, cmd->client_id, new_ack + 1);
        rc = stor_batch_delete_range(&f->batch, from.bytes, from.size, to.bytes, to.size);
    }
    if (rc == KV_OK) {
        uint8_t row[16];
        kv_store_u64(row, new_ack);
        kv_store_u64(row + 8, index);
        rc = write_key(f, &ck, row, sizeof row);
    }
    return rc;
}

/* Forgets one client: its row and every stored result. */
static int evict_client(struct node_fsm *f, uint64_t client)
{
    struct node_key ck;
    struct node_key from;
    struct node_key to;
    node_key_client(&ck, f->group, client);
    node_key_session(&from, f->group, client, 0);
    node_key_session(&to, f->group, client, UINT64_MAX);
    int rc = stor_batch_delete_range(&f->batch, from.bytes, from.size, to.bytes, to.size);
    return rc ? rc : delete_key(f, &ck);
}

/* Evicts clients idle for NODE_SESSION_IDLE_ENTRIES entries, at most
 * NODE_SESSION_EVICT_MAX per sweep. Runs right after entry `index` with
 * index % NODE_SESSION_SWEEP_EVERY == 0, on every replica, so every replica
 * evicts the same clients at the same point of the log however it batches
 * its applies. Rows written earlier in this batch are read from the
 * overlay, so a client active in the batch is never evicted. */
static int sweep_sessions(struct node_fsm *f, uint64_t index)
{
    struct node_key start;
    struct node_key end;
    struct stor_iter *it = NULL;
    node_key_client(&start, f->group, 0);
    node_key_client(&end, f->group, UINT64_MAX);
    if (index <= NODE_SESSION_IDLE_ENTRIES) {
        return KV_OK;
    }
    int rc = stor_iter_new(f->engine, NULL, start.bytes, start.size, end.bytes, end.size, &it);
    size_t evicted = 0;
    while (rc == KV_OK && evicted < NODE_SESSION_EVICT_MAX) {
        const uint8_t *k;
        const uint8_t *v;
        size_t ks;
        size_t vs;
        rc = stor_iter_next(it, &k, &ks, &v, &vs);
        if (rc != KV_OK) {
            break;
        }
        if (ks != NODE_KEY_PREFIX_SIZE + 8) {
            rc = KV_ECORRUPT;
            break;
        }
        uint64_t client = kv_load_be64(k + NODE_KEY_PREFIX_SIZE);
        struct node_key ck;
        uint64_t acked;
        uint64_t last_index;
        node_key_client(&ck, f->group, client);
        int crc = read_client(f, &ck, &acked, &last_index); /* overlay first */
        if (crc == KV_OK && last_index + NODE_SESSION_IDLE_ENTRIES < index) {
            rc = evict_client(f, client);
            evicted++;
        } else if (crc != KV_OK && crc != KV_ENOTFOUND) {
            rc = crc;
        }
    }
    stor_iter_free(it);
    return rc == KV_EOF ? KV_OK : rc;
}

static int apply_entry(struct node_fsm *f, const struct node_fsm_entry *e)
{
    if (!e->is_command) {
        return KV_OK;
    }
    if (f->n_pending == f->cap_pending) {
        size_t cap = f->cap_pending ? f->cap_pending * 2 : 64;
        struct pending *np = kv_realloc(f->pending, cap * sizeof *np);
        if (np == NULL) {
            return KV_ENOMEM;
        }
        f->pending = np;
        f->cap_pending = cap;
    }
    struct pending *p = &f->pending[f->n_pending++];
    p->index = e->index;
    p->first = f->n_results;
    p->count = 0;
    p->duplicate = 0;
    struct node_cmd cmd;
    int rc = node_cmd_decode(e->data, e->size, &cmd);
    if (rc == KV_ECORRUPT || rc == KV_EUNSUPPORTED) {
        return error_result(f, p,
                            rc == KV_ECORRUPT ? "ERR malformed command in the log"
                                              : "ERR command format not supported");
    }
    if (rc != KV_OK) {
        return rc;
    }
    rc = cmd.client_id != 0 ? apply_with_session(f, &cmd, e->index, p) : exec_cmd(f, &cmd, p);
    node_cmd_clear(&cmd);
    return rc;
}

int node_fsm_apply(struct node_fsm *f, const struct node_fsm_entry *entries, size_t n,
                   node_fsm_result_cb result_cb, void *data)
{
    uint64_t expect = f->applied_index + 1;
    uint64_t last_index = f->applied_index;
    uint64_t last_term = f->applied_term;
    int rc = KV_OK;
    stor_batch_clear(&f->batch);
    overlay_clear(&f->ov);
    results_reset(f);
    for (size_t i = 0; i < n && rc == KV_OK; i++) {
        if (entries[i].index < expect) {
            continue; /* already applied before a restart */
        }
        if (entries[i].index != expect) {
            return KV_EINVAL;
        }
        rc = apply_entry(f, &entries[i]);
        if (rc == KV_OK && entries[i].index % NODE_SESSION_SWEEP_EVERY == 0) {
            rc = sweep_sessions(f, entries[i].index);
        }
        last_index = entries[i].index;
        last_term = entries[i].term;
        expect++;
    }
    if (rc == KV_OK && last_index != f->applied_index) {
        struct node_key k;
        uint8_t v[16];
        node_key_meta(&k, f->group, APPLIED_META);
        kv_store_u64(v, last_index);
        kv_store_u64(v + 8, last_term);
        rc = stor_batch_put(&f->batch, k.bytes, k.size, v, sizeof v);
        rc = rc ? rc : stor_write(f->engine, &f->batch);
    }
    if (rc != KV_OK) {
        results_reset(f);
        return rc;
    }
    f->applied_index = last_index;
    f->applied_term = last_term;
    for (size_t i = 0; i < f->n_pending && result_cb != NULL; i++) {
        struct node_cmd_result cr = {
            .results = &f->results[f->pending[i].first],
            .n_results = f->pending[i].count,
            .duplicate = f->pending[i].duplicate,
        };
        result_cb(data, f->pending[i].index, &cr);
    }
    results_reset(f);
    return KV_OK;
}

int node_fsm_get(struct node_fsm *f, const struct stor_view *view, const void *key, size_t key_size,
                 struct kv_buf *value)
{
    if (key_size == 0 || key_size > NODE_USER_KEY_SIZE_MAX) {
        return KV_EINVAL;
    }
    struct node_key k;
    node_key_data(&k, f->group, key, key_size);
    return stor_get(f->engine, view, k.bytes, k.size, value);
}
