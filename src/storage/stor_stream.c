/* stor_stream.c -- snapshot export and ingest: a key range as a stream of
 * checksummed, engine-independent chunks (format in stor.h). Built only on
 * the public engine interface, so every engine gets it for free and a
 * stream from one engine installs into any other. */
#include "stor_int.h"
#include "alloc.h"
#include "crc32c.h"

#include <string.h>

#define CHUNK_MAGIC        0x53564b52u /* "RKVS" little-endian */
#define CHUNK_VERSION      1
#define CHUNK_FLAG_LAST    1u
#define CHUNK_HEADER_SIZE  24
#define CHUNK_TRAILER_SIZE 4
/* Deletes issued per batch when clearing an unbounded range on ingest. */
#define CLEAR_BATCH_KEYS 4096

struct stor_export {
    struct stor_engine *engine;
    struct stor_iter *it;
    uint64_t seq;           /* sequence number of the next chunk */
    size_t chunk_bytes;     /* payload target per chunk */
    int done;               /* the last chunk has been produced */
    int have_pending;       /* a pair read but not yet emitted */
    struct kv_buf pend_key; /* that pair */
    struct kv_buf pend_value;
};

struct stor_ingest {
    struct stor_engine *engine;
    struct kv_buf start; /* range; size 0 with has_start 0 = unbounded */
    struct kv_buf end;
    int has_start;
    int has_end;
    uint64_t seq; /* expected sequence number */
    int cleared;  /* the range has been emptied */
    int saw_last; /* the last chunk was applied */
    struct stor_batch batch;
};

/* ---- export ------------------------------------------------------------- */

int stor_export_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                    size_t start_size, const void *end, size_t end_size, size_t chunk_bytes,
                    struct stor_export **out)
{
    struct stor_export *x = kv_calloc(1, sizeof *x);
    if (x == NULL) {
        return KV_ENOMEM;
    }
    int rc = stor_iter_new(e, view, start, start_size, end, end_size, &x->it);
    if (rc != KV_OK) {
        kv_free(x);
        return rc;
    }
    x->engine = e;
    x->chunk_bytes = chunk_bytes ? chunk_bytes : STOR_CHUNK_BYTES_DEFAULT;
    kv_buf_init(&x->pend_key);
    kv_buf_init(&x->pend_value);
    *out = x;
    return KV_OK;
}

static int put_pair(struct kv_buf *chunk, const void *k, size_t ks, const void *v, size_t vs)
{
    int rc = kv_buf_reserve(chunk, 20 + ks + vs);
    if (rc != KV_OK) {
        return rc;
    }
    rc = kv_buf_put_varint(chunk, ks);
    rc |= kv_buf_append(chunk, k, ks);
    rc |= kv_buf_put_varint(chunk, vs);
    rc |= kv_buf_append(chunk, v, vs);
    return rc ? KV_ENOMEM : KV_OK;
}

int stor_export_next(struct stor_export *x, struct kv_buf *chunk)
{
    if (x->done) {
        return KV_EOF;
    }
    uint8_t header[CHUNK_HEADER_SIZE] = {0};
    uint32_t count = 0;
    int last = 0;
    int rc = kv_buf_set(chunk, header, sizeof header);
    if (rc != KV_OK) {
        return rc;
    }
    if (x->have_pending) {
        rc = put_pair(chunk, x->pend_key.data, x->pend_key.size, x->pend_value.data,
                      x->pend_value.size);
        if (rc != KV_OK) {
            return rc;
        }
        x->have_pending = 0;
        count++;
    }
    for (;;) {
        const uint8_t *k;
        const uint8_t *v;
        size_t ks;
        size_t vs;
        rc = stor_iter_next(x->it, &k, &ks, &v, &vs);
        if (rc == KV_EOF) {
            last = 1;
            break;
        }
        if (rc != KV_OK) {
            return rc;
        }
        size_t payload = chunk->size - CHUNK_HEADER_SIZE;
        if (count > 0 && payload + ks + vs + 20 > x->chunk_bytes) {
            /* Full: keep this pair for the next chunk. */
            if (kv_buf_set(&x->pend_key, k, ks) || kv_buf_set(&x->pend_value, v, vs)) {
                return KV_ENOMEM;
            }
            x->have_pending = 1;
            break;
        }
        rc = put_pair(chunk, k, ks, v, vs);
        if (rc != KV_OK) {
            return rc;
        }
        count++;
    }
    uint8_t *h = chunk->data;
    kv_store_u32(h, CHUNK_MAGIC);
    h[4] = CHUNK_VERSION & 0xff;
    h[5] = 0;
    h[6] = last ? CHUNK_FLAG_LAST : 0;
    h[7] = 0;
    kv_store_u64(h + 8, x->seq);
    kv_store_u32(h + 16, count);
    kv_store_u32(h + 20, (uint32_t)(chunk->size - CHUNK_HEADER_SIZE));
    rc = kv_buf_put_u32(chunk, kv_crc32c(0, chunk->data, chunk->size));
    if (rc != KV_OK) {
        return rc;
    }
    x->seq++;
    x->done = last;
    return KV_OK;
}

void stor_export_free(struct stor_export *x)
{
    if (x == NULL) {
        return;
    }
    stor_iter_free(x->it);
    kv_buf_close(&x->pend_key);
    kv_buf_close(&x->pend_value);
    kv_free(x);
}

/* ---- ingest ------------------------------------------------------------- */

int stor_ingest_new(struct stor_engine *e, const void *start, size_t start_size, const void *end,
                    size_t end_size, struct stor_ingest **out)
{
    struct stor_ingest *in = kv_calloc(1, sizeof *in);
    if (in == NULL) {
        return KV_ENOMEM;
    }
    in->engine = e;
    kv_buf_init(&in->start);
    kv_buf_init(&in->end);
    stor_batch_init(&in->batch);
    in->has_start = start != NULL;
    in->has_end = end != NULL;
    if ((start && kv_buf_set(&in->start, start, start_size)) ||
        (end && kv_buf_set(&in->end, end, end_size))) {
        stor_ingest_free(in);
        return KV_ENOMEM;
    }
    *out = in;
    return KV_OK;
}

/* Empties the ingest range: one delete-range op when the range is bounded
 * above, otherwise deletes of every key found, in bounded batches. */
static int clear_range(struct stor_ingest *in)
{
    const void *start = in->has_start ? in->start.data : NULL;
    const void *end = in->has_end ? in->end.data : NULL;
    static const uint8_t lowest_key[1] = {0};
    struct stor_batch b;
    int rc;

    stor_batch_init(&b);
    if (end != NULL) {
        const void *s = start ? start : lowest_key;
        size_t ss = start ? in->start.size : 1;
        if (stor__key_cmp(s, ss, end, in->end.size) < 0) {
            rc = stor_batch_delete_range(&b, s, ss, end, in->end.size);
            if (rc == KV_OK) {
                rc = stor_write(in->engine, &b);
            }
        } else {
            rc = KV_OK;
        }
        stor_batch_close(&b);
        return rc;
    }
    struct stor_iter *it = NULL;
    rc = stor_iter_new(in->engine, NULL, start, in->start.size, NULL, 0, &it);
    while (rc == KV_OK) {
        const uint8_t *k;
        const uint8_t *v;
        size_t ks;
        size_t vs;
        rc = stor_iter_next(it, &k, &ks, &v, &vs);
        if (rc == KV_OK) {
            rc = stor_batch_delete(&b, k, ks);
        }
        if ((rc == KV_EOF || b.count >= CLEAR_BATCH_KEYS) && b.count > 0) {
            int wrc = stor_write(in->engine, &b);
            stor_batch_clear(&b);
            if (wrc != KV_OK) {
                rc = wrc;
            }
        }
    }
    stor_iter_free(it); /* NULL when stor_iter_new failed */
    stor_batch_close(&b);
    return rc == KV_EOF ? KV_OK : rc;
}

/* Parses and checks a chunk's frame; on success *payload and *count describe it. */
static int parse_chunk(const uint8_t *c, size_t size, uint64_t *seq, int *last,
                       struct kv_reader *payload, uint32_t *count)
{
    if (size < CHUNK_HEADER_SIZE + CHUNK_TRAILER_SIZE) {
        return KV_ECORRUPT;
    }
    uint32_t crc = kv_load_u32(c + size - CHUNK_TRAILER_SIZE);
    if (kv_crc32c(0, c, size - CHUNK_TRAILER_SIZE) != crc) {
        return KV_ECORRUPT;
    }
    if (kv_load_u32(c) != CHUNK_MAGIC || c[4] != CHUNK_VERSION || c[5] != 0) {
        return KV_ECORRUPT;
    }
    uint32_t payload_size = kv_load_u32(c + 20);
    if (payload_size != size - CHUNK_HEADER_SIZE - CHUNK_TRAILER_SIZE) {
        return KV_ECORRUPT;
    }
    *seq = kv_load_u64(c + 8);
    *last = (c[6] & CHUNK_FLAG_LAST) != 0;
    *count = kv_load_u32(c + 16);
    kv_reader_init(payload, c + CHUNK_HEADER_SIZE, payload_size);
    return KV_OK;
}

static int decode_pairs(struct stor_ingest *in, struct kv_reader *r, uint32_t count)
{
    stor_batch_clear(&in->batch);
    for (uint32_t i = 0; i < count; i++) {
        uint64_t ks;
        uint64_t vs;
        const uint8_t *k;
        const uint8_t *v;
        if (kv_reader_varint(r, &ks) || kv_reader_bytes(r, ks, &k) || kv_reader_varint(r, &vs) ||
            kv_reader_bytes(r, vs, &v)) {
            return KV_ECORRUPT;
        }
        if (ks == 0 || ks > STOR_KEY_SIZE_MAX || vs > STOR_VALUE_SIZE_MAX) {
            return KV_ECORRUPT;
        }
        if (!stor__key_in_range(k, ks, in->has_start ? in->start.data : NULL, in->start.size,
                                in->has_end ? in->end.data : NULL, in->end.size)) {
            return KV_EPROTO;
        }
        int rc = stor_batch_put(&in->batch, k, ks, v, vs);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return r->left == 0 ? KV_OK : KV_ECORRUPT;
}

int stor_ingest_chunk(struct stor_ingest *in, const void *chunk, size_t chunk_size)
{
    struct kv_reader payload;
    uint64_t seq;
    uint32_t count;
    int last;
    int rc = parse_chunk(chunk, chunk_size, &seq, &last, &payload, &count);
    if (rc != KV_OK) {
        stor__set_errmsg(in->engine, "snapshot chunk %llu: bad frame or checksum",
                         (unsigned long long)in->seq);
        return rc;
    }
    if (in->saw_last || seq != in->seq) {
        stor__set_errmsg(in->engine, "snapshot chunk out of sequence: got %llu, want %llu%s",
                         (unsigned long long)seq, (unsigned long long)in->seq,
                         in->saw_last ? " (stream already ended)" : "");
        return KV_EPROTO;
    }
    rc = decode_pairs(in, &payload, count);
    if (rc != KV_OK) {
        stor__set_errmsg(in->engine, "snapshot chunk %llu: %s", (unsigned long long)seq,
                         rc == KV_EPROTO ? "key outside the ingest range" : "bad record");
        return rc;
    }
    if (!in->cleared) {
        rc = clear_range(in);
        if (rc != KV_OK) {
            return rc;
        }
        in->cleared = 1;
    }
    rc = stor_write(in->engine, &in->batch);
    if (rc != KV_OK) {
        return rc;
    }
    in->seq++;
    in->saw_last = last;
    return KV_OK;
}

int stor_ingest_finish(struct stor_ingest *in)
{
    if (!in->saw_last) {
        stor__set_errmsg(in->engine, "snapshot stream ended before its last chunk (got %llu)",
                         (unsigned long long)in->seq);
        return KV_EPROTO;
    }
    /* Each chunk was written under the engine's sync policy; an empty synced
     * write is not needed because the last chunk's write already was one. */
    return KV_OK;
}

void stor_ingest_free(struct stor_ingest *in)
{
    if (in == NULL) {
        return;
    }
    kv_buf_close(&in->start);
    kv_buf_close(&in->end);
    stor_batch_close(&in->batch);
    kv_free(in);
}
