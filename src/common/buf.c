/* buf.c -- growable buffer and bounded reader. */
#include "buf.h"
#include "alloc.h"

#include <string.h>

void kv_buf_init(struct kv_buf *b)
{
    b->data = NULL;
    b->size = 0;
    b->cap = 0;
}

void kv_buf_close(struct kv_buf *b)
{
    kv_free(b->data);
    kv_buf_init(b);
}

int kv_buf_reserve(struct kv_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->size) {
        return KV_ENOMEM;
    }
    size_t need = b->size + extra;
    if (need <= b->cap) {
        return KV_OK;
    }
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    uint8_t *p = kv_realloc(b->data, cap);
    if (p == NULL) {
        return KV_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return KV_OK;
}

int kv_buf_append(struct kv_buf *b, const void *src, size_t size)
{
    if (size == 0) {
        return KV_OK;
    }
    int rc = kv_buf_reserve(b, size);
    if (rc != KV_OK) {
        return rc;
    }
    memcpy(b->data + b->size, src, size);
    b->size += size;
    return KV_OK;
}

int kv_buf_set(struct kv_buf *b, const void *src, size_t size)
{
    b->size = 0;
    return kv_buf_append(b, src, size);
}

int kv_buf_put_u8(struct kv_buf *b, uint8_t v)
{
    return kv_buf_append(b, &v, 1);
}

int kv_buf_put_u32(struct kv_buf *b, uint32_t v)
{
    uint8_t tmp[4];
    kv_store_u32(tmp, v);
    return kv_buf_append(b, tmp, sizeof tmp);
}

int kv_buf_put_u64(struct kv_buf *b, uint64_t v)
{
    uint8_t tmp[8];
    kv_store_u64(tmp, v);
    return kv_buf_append(b, tmp, sizeof tmp);
}

int kv_buf_put_varint(struct kv_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    return kv_buf_append(b, tmp, n);
}

int kv_reader_u8(struct kv_reader *r, uint8_t *out)
{
    if (r->left < 1) {
        return KV_ECORRUPT;
    }
    *out = r->p[0];
    r->p++;
    r->left--;
    return KV_OK;
}

int kv_reader_u32(struct kv_reader *r, uint32_t *out)
{
    if (r->left < 4) {
        return KV_ECORRUPT;
    }
    *out = kv_load_u32(r->p);
    r->p += 4;
    r->left -= 4;
    return KV_OK;
}

int kv_reader_u64(struct kv_reader *r, uint64_t *out)
{
    if (r->left < 8) {
        return KV_ECORRUPT;
    }
    *out = kv_load_u64(r->p);
    r->p += 8;
    r->left -= 8;
    return KV_OK;
}

int kv_reader_varint(struct kv_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->left == 0) {
            return KV_ECORRUPT;
        }
        uint8_t byte = *r->p++;
        r->left--;
        if (shift == 63 && byte > 1) {
            return KV_ECORRUPT; /* overflows 64 bits */
        }
        v |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            *out = v;
            return KV_OK;
        }
    }
    return KV_ECORRUPT;
}

int kv_reader_bytes(struct kv_reader *r, size_t size, const uint8_t **out)
{
    if (r->left < size) {
        return KV_ECORRUPT;
    }
    *out = r->p;
    r->p += size;
    r->left -= size;
    return KV_OK;
}
