/* record.c -- the WAL's framing: encoding batches into CRC32C-framed
 * records and decoding them back. The decoder takes untrusted bytes (a
 * damaged disk, the fuzzer) and must never read out of bounds. */
#include "wal_int.h"

#include <string.h>

#include "alloc.h"
#include "crc32c.h"

void wal__seg_header_encode(uint8_t *p, uint64_t seq)
{
    memcpy(p, WAL__SEG_MAGIC, WAL__SEG_MAGIC_SIZE);
    kv_store_u64(p + 8, seq);
    kv_store_u32(p + 16, kv_crc32c(0, p, 16));
}

void wal__write_rec_encode(uint8_t *p, uint64_t write_bytes)
{
    kv_store_u32(p + 4, WAL__WRITE_SIZE);
    p[8] = WAL__REC_WRITE;
    kv_store_u64(p + WAL__REC_HEADER_SIZE, write_bytes);
    kv_store_u32(p, kv_crc32c(0, p + 4, WAL__WRITE_SIZE + 5));
}

int wal__seg_header_check(const uint8_t *p, uint64_t seq)
{
    if (memcmp(p, WAL__SEG_MAGIC, WAL__SEG_MAGIC_SIZE) != 0 ||
        kv_load_u32(p + 16) != kv_crc32c(0, p, 16) || kv_load_u64(p + 8) != seq) {
        return KV_ECORRUPT;
    }
    return KV_OK;
}

/* Checks an ENTRIES entry area: exactly `count` well-formed entries. */
static int check_entries(const uint8_t *area, size_t size, uint64_t count, const char **why)
{
    struct wal__entry_cursor c = {.area = area, .size = size, .pos = 0};
    for (uint64_t i = 0; i < count; i++) {
        uint64_t term;
        uint32_t type;
        uint32_t esize;
        size_t off;
        if (wal__rec_entry_next(&c, &term, &type, &esize, &off) != KV_OK) {
            *why = "entry runs past its record";
            return KV_ECORRUPT;
        }
    }
    if (c.pos != size) {
        *why = "trailing bytes after the entries";
        return KV_ECORRUPT;
    }
    return KV_OK;
}

static int decode_payload(const uint8_t *pl, uint32_t len, struct wal__rec *out, const char **why)
{
    static const uint32_t fixed[] = {
        [WAL__REC_ENTRIES] = WAL__ENTRIES_HEAD_SIZE, [WAL__REC_HARD_STATE] = WAL__HARD_STATE_SIZE,
        [WAL__REC_COMPACT] = WAL__COMPACT_SIZE,      [WAL__REC_REMOVE] = WAL__REMOVE_SIZE,
        [WAL__REC_RESET] = WAL__RESET_HEAD_SIZE,     [WAL__REC_WRITE] = WAL__WRITE_SIZE,
    };
    if (out->type < WAL__REC_ENTRIES || out->type > WAL__REC_WRITE) {
        *why = "unknown record type";
        return KV_ECORRUPT;
    }
    uint32_t need = fixed[out->type];
    int variable = out->type == WAL__REC_ENTRIES || out->type == WAL__REC_RESET;
    if (len < need || (!variable && len != need)) {
        *why = "payload size does not match its type";
        return KV_ECORRUPT;
    }
    out->group = kv_load_u64(pl);
    switch (out->type) {
    case WAL__REC_WRITE:
        out->group = 0;
        out->a = kv_load_u64(pl);
        if (out->a < WAL__WRITE_REC_SIZE) {
            *why = "write shorter than its own record";
            return KV_ECORRUPT;
        }
        return KV_OK;
    case WAL__REC_ENTRIES:
        out->a = kv_load_u64(pl + 8);
        out->b = kv_load_u32(pl + 16);
        out->entries = pl + WAL__ENTRIES_HEAD_SIZE;
        out->entries_size = len - WAL__ENTRIES_HEAD_SIZE;
        if (out->a == 0 || out->b == 0 || out->a + out->b < out->a) {
            *why = "bad entry index or count";
            return KV_ECORRUPT;
        }
        return check_entries(out->entries, out->entries_size, out->b, why);
    case WAL__REC_RESET:
        out->a = kv_load_u64(pl + 8);
        out->c = kv_load_u64(pl + 16);
        out->has_hs = kv_load_u64(pl + 24) != 0;
        out->hs = (struct wal_hard_state){.term = kv_load_u64(pl + 32),
                                          .vote = kv_load_u64(pl + 40),
                                          .commit = kv_load_u64(pl + 48)};
        out->b = kv_load_u32(pl + 56);
        out->entries = pl + WAL__RESET_HEAD_SIZE;
        out->entries_size = len - WAL__RESET_HEAD_SIZE;
        if (out->a + 1 + out->b < out->a) {
            *why = "bad compact index or count";
            return KV_ECORRUPT;
        }
        return check_entries(out->entries, out->entries_size, out->b, why);
    case WAL__REC_HARD_STATE:
        out->a = kv_load_u64(pl + 8);
        out->b = kv_load_u64(pl + 16);
        out->c = kv_load_u64(pl + 24);
        return KV_OK;
    case WAL__REC_COMPACT:
        out->a = kv_load_u64(pl + 8);
        out->b = kv_load_u64(pl + 16);
        return KV_OK;
    default:
        return KV_OK;
    }
}

int wal__rec_decode(const uint8_t *p, size_t avail, struct wal__rec *out, const char **why)
{
    memset(out, 0, sizeof *out);
    if (avail < WAL__REC_HEADER_SIZE) {
        *why = "record header cut short";
        return KV_EOF;
    }
    uint32_t crc = kv_load_u32(p);
    uint32_t len = kv_load_u32(p + 4);
    if (len > WAL_RECORD_BYTES_MAX) {
        *why = "record length beyond the maximum";
        return KV_ECORRUPT;
    }
    if (avail - WAL__REC_HEADER_SIZE < len) {
        *why = "record cut short";
        return KV_EOF;
    }
    if (kv_crc32c(0, p + 4, (size_t)len + 5) != crc) {
        *why = "checksum mismatch";
        return KV_ECORRUPT;
    }
    out->type = p[8];
    out->size = WAL__REC_HEADER_SIZE + (size_t)len;
    return decode_payload(p + WAL__REC_HEADER_SIZE, len, out, why);
}

int wal__rec_entry_next(struct wal__entry_cursor *c, uint64_t *term, uint32_t *type, uint32_t *size,
                        size_t *data_off)
{
    if (c->size - c->pos < WAL__ENTRY_HEAD_SIZE) {
        return KV_ECORRUPT;
    }
    const uint8_t *p = c->area + c->pos;
    uint32_t esize = kv_load_u32(p + 12);
    if (esize > WAL_ENTRY_BYTES_MAX || c->size - c->pos - WAL__ENTRY_HEAD_SIZE < esize) {
        return KV_ECORRUPT;
    }
    *term = kv_load_u64(p);
    *type = kv_load_u32(p + 8);
    *size = esize;
    *data_off = c->pos + WAL__ENTRY_HEAD_SIZE;
    c->pos += WAL__ENTRY_HEAD_SIZE + esize;
    return KV_OK;
}

/* ---- Batch encoding ---- */

void wal_batch_init(struct wal_batch *b)
{
    kv_buf_init(&b->bytes);
    kv_buf_init(&b->ops);
    kv_buf_init(&b->ents);
}

void wal_batch_close(struct wal_batch *b)
{
    kv_buf_close(&b->bytes);
    kv_buf_close(&b->ops);
    kv_buf_close(&b->ents);
}

void wal_batch_clear(struct wal_batch *b)
{
    kv_buf_clear(&b->bytes);
    kv_buf_clear(&b->ops);
    kv_buf_clear(&b->ents);
}

/* Seals the record that starts at `start` of b->bytes: fills its length and
 * checksum now that its payload is complete. */
static void seal_record(struct wal_batch *b, size_t start, uint8_t type)
{
    uint8_t *p = b->bytes.data + start;
    uint32_t len = (uint32_t)(b->bytes.size - start - WAL__REC_HEADER_SIZE);
    kv_store_u32(p + 4, len);
    p[8] = type;
    kv_store_u32(p, kv_crc32c(0, p + 4, (size_t)len + 5));
}

/* Undoes a failed add: the batch is unchanged on error. */
static void rollback(struct wal_batch *b, size_t bytes, size_t ops, size_t ents)
{
    b->bytes.size = bytes;
    b->ops.size = ops;
    b->ents.size = ents;
}

static int add_op(struct wal_batch *b, const struct wal__op *op)
{
    return kv_buf_append(&b->ops, op, sizeof *op);
}

/* Encodes a fixed-size record (hard state, compact, remove). */
static int add_fixed(struct wal_batch *b, const struct wal__op *op, uint32_t payload_size)
{
    if (b->bytes.size + WAL__REC_HEADER_SIZE + payload_size > WAL_BATCH_BYTES_MAX) {
        return KV_ETOOBIG;
    }
    size_t bytes0 = b->bytes.size;
    size_t ops0 = b->ops.size;
    uint8_t rec[WAL__REC_HEADER_SIZE + WAL__HARD_STATE_SIZE] = {0};
    uint8_t *pl = rec + WAL__REC_HEADER_SIZE;
    kv_store_u64(pl, op->group);
    kv_store_u64(pl + 8, op->a);
    kv_store_u64(pl + 16, op->b);
    kv_store_u64(pl + 24, op->c);
    int rc = kv_buf_append(&b->bytes, rec, WAL__REC_HEADER_SIZE + payload_size);
    if (rc == KV_OK) {
        seal_record(b, bytes0, (uint8_t)op->type);
        rc = add_op(b, op);
    }
    if (rc != KV_OK) {
        rollback(b, bytes0, ops0, b->ents.size);
    }
    return rc;
}

int wal_batch_hard_state(struct wal_batch *b, uint64_t group, const struct wal_hard_state *hs)
{
    struct wal__op op = {
        .type = WAL__REC_HARD_STATE, .group = group, .a = hs->term, .b = hs->vote, .c = hs->commit};
    return add_fixed(b, &op, WAL__HARD_STATE_SIZE);
}

int wal_batch_compact(struct wal_batch *b, uint64_t group, uint64_t index, uint64_t term)
{
    struct wal__op op = {.type = WAL__REC_COMPACT, .group = group, .a = index, .b = term};
    return add_fixed(b, &op, WAL__COMPACT_SIZE);
}

int wal_batch_remove(struct wal_batch *b, uint64_t group)
{
    struct wal__op op = {.type = WAL__REC_REMOVE, .group = group};
    return add_fixed(b, &op, WAL__REMOVE_SIZE);
}

static int check_entries_arg(const struct wal_entry *e, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (e[i].index == 0 || (i > 0 && e[i].index != e[i - 1].index + 1)) {
            return KV_EINVAL;
        }
        if (e[i].size > WAL_ENTRY_BYTES_MAX) {
            return KV_ETOOBIG;
        }
    }
    return KV_OK;
}

/* Appends one entry (head and payload) to the open record. */
static int add_entry(struct wal_batch *b, const struct wal_entry *e)
{
    uint8_t eh[WAL__ENTRY_HEAD_SIZE];
    kv_store_u64(eh, e->term);
    kv_store_u32(eh + 8, e->type);
    kv_store_u32(eh + 12, (uint32_t)e->size);
    struct wal__ent ent = {.term = e->term,
                           .type = e->type,
                           .size = (uint32_t)e->size,
                           .data_off = b->bytes.size + WAL__ENTRY_HEAD_SIZE};
    int rc = kv_buf_append(&b->bytes, eh, sizeof eh);
    if (rc == KV_OK && e->size > 0) {
        rc = kv_buf_append(&b->bytes, e->data, e->size);
    }
    if (rc == KV_OK) {
        rc = kv_buf_append(&b->ents, &ent, sizeof ent);
    }
    return rc;
}

/* Encodes entries [0, n) of `e` as one record (n bounded by the caller so
 * the record stays under WAL_RECORD_BYTES_MAX). */
static int add_record(struct wal_batch *b, uint64_t group, const struct wal_entry *e, size_t n)
{
    size_t start = b->bytes.size;
    uint8_t head[WAL__REC_HEADER_SIZE + WAL__ENTRIES_HEAD_SIZE] = {0};
    kv_store_u64(head + WAL__REC_HEADER_SIZE, group);
    kv_store_u64(head + WAL__REC_HEADER_SIZE + 8, e[0].index);
    kv_store_u32(head + WAL__REC_HEADER_SIZE + 16, (uint32_t)n);
    struct wal__op op = {.type = WAL__REC_ENTRIES,
                         .group = group,
                         .a = e[0].index,
                         .b = n,
                         .ent_start = b->ents.size / sizeof(struct wal__ent)};
    int rc = kv_buf_append(&b->bytes, head, sizeof head);
    for (size_t i = 0; i < n && rc == KV_OK; i++) {
        rc = add_entry(b, &e[i]);
    }
    if (rc == KV_OK) {
        seal_record(b, start, WAL__REC_ENTRIES);
        rc = add_op(b, &op);
    }
    return rc;
}

int wal_batch_entries(struct wal_batch *b, uint64_t group, const struct wal_entry *entries,
                      size_t count)
{
    int rc = check_entries_arg(entries, count);
    if (rc != KV_OK || count == 0) {
        return rc;
    }
    size_t bytes0 = b->bytes.size;
    size_t ops0 = b->ops.size;
    size_t ents0 = b->ents.size;
    size_t done = 0;
    while (done < count && rc == KV_OK) {
        /* As many entries as fit one record. */
        size_t rec_bytes = WAL__REC_HEADER_SIZE + WAL__ENTRIES_HEAD_SIZE;
        size_t n = 0;
        while (done + n < count && n < UINT32_MAX) {
            size_t add = WAL__ENTRY_HEAD_SIZE + entries[done + n].size;
            if (n > 0 && rec_bytes + add > WAL_RECORD_BYTES_MAX) {
                break;
            }
            rec_bytes += add;
            n++;
        }
        if (b->bytes.size + rec_bytes > WAL_BATCH_BYTES_MAX) {
            rc = KV_ETOOBIG;
            break;
        }
        rc = add_record(b, group, entries + done, n);
        done += n;
    }
    if (rc != KV_OK) {
        rollback(b, bytes0, ops0, ents0);
    }
    return rc;
}

int wal__batch_reset(struct wal_batch *b, uint64_t group, uint64_t compact_index,
                     uint64_t compact_term, const struct wal_hard_state *hs,
                     const struct wal_entry *entries, size_t count)
{
    size_t rec_bytes = WAL__REC_HEADER_SIZE + WAL__RESET_HEAD_SIZE;
    for (size_t i = 0; i < count; i++) {
        KV_ASSERT(entries[i].index == compact_index + 1 + i);
        rec_bytes += WAL__ENTRY_HEAD_SIZE + entries[i].size;
    }
    if (rec_bytes > WAL_RECORD_BYTES_MAX || count > UINT32_MAX ||
        b->bytes.size + rec_bytes > WAL_BATCH_BYTES_MAX) {
        return KV_ETOOBIG;
    }
    size_t bytes0 = b->bytes.size;
    size_t ops0 = b->ops.size;
    size_t ents0 = b->ents.size;
    uint8_t head[WAL__REC_HEADER_SIZE + WAL__RESET_HEAD_SIZE] = {0};
    uint8_t *pl = head + WAL__REC_HEADER_SIZE;
    kv_store_u64(pl, group);
    kv_store_u64(pl + 8, compact_index);
    kv_store_u64(pl + 16, compact_term);
    kv_store_u64(pl + 24, hs != NULL);
    if (hs != NULL) {
        kv_store_u64(pl + 32, hs->term);
        kv_store_u64(pl + 40, hs->vote);
        kv_store_u64(pl + 48, hs->commit);
    }
    kv_store_u32(pl + 56, (uint32_t)count);
    struct wal__op op = {.type = WAL__REC_RESET,
                         .group = group,
                         .a = compact_index,
                         .b = count,
                         .c = compact_term,
                         .has_hs = hs != NULL,
                         .ent_start = b->ents.size / sizeof(struct wal__ent)};
    if (hs != NULL) {
        op.hs = *hs;
    }
    int rc = kv_buf_append(&b->bytes, head, sizeof head);
    for (size_t i = 0; i < count && rc == KV_OK; i++) {
        rc = add_entry(b, &entries[i]);
    }
    if (rc == KV_OK) {
        seal_record(b, bytes0, WAL__REC_RESET);
        rc = add_op(b, &op);
    }
    if (rc != KV_OK) {
        rollback(b, bytes0, ops0, ents0);
    }
    return rc;
}
