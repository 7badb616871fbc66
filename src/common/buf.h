/* buf.h -- a growable byte buffer, and fixed-width little-endian and varint
 * encoders used by every on-disk and on-wire format. */
#ifndef KV_BUF_H
#define KV_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* A byte buffer owned by whoever embeds it. `data` may be NULL when `cap`
 * is 0. Bytes [0, size) are valid. */
struct kv_buf {
    uint8_t *data; /* heap storage, kv_malloc'd */
    size_t size;   /* bytes in use */
    size_t cap;    /* bytes allocated */
};

/* Initialises an empty buffer (no allocation). */
void kv_buf_init(struct kv_buf *b);

/* Frees the storage and leaves the buffer empty and reusable. */
void kv_buf_close(struct kv_buf *b);

/* Makes room for `extra` more bytes. Returns KV_OK or KV_ENOMEM (buffer
 * unchanged). */
int kv_buf_reserve(struct kv_buf *b, size_t extra) KV_MUST_USE;

/* Appends `size` bytes. Returns KV_OK or KV_ENOMEM (buffer unchanged). */
int kv_buf_append(struct kv_buf *b, const void *src, size_t size) KV_MUST_USE;

/* Replaces the contents with `size` bytes at `src`. */
int kv_buf_set(struct kv_buf *b, const void *src, size_t size) KV_MUST_USE;

/* Appends a fixed-width little-endian integer / a LEB128 varint. */
int kv_buf_put_u8(struct kv_buf *b, uint8_t v) KV_MUST_USE;
int kv_buf_put_u32(struct kv_buf *b, uint32_t v) KV_MUST_USE;
int kv_buf_put_u64(struct kv_buf *b, uint64_t v) KV_MUST_USE;
int kv_buf_put_varint(struct kv_buf *b, uint64_t v) KV_MUST_USE;

/* Empties the buffer, keeping its storage. */
static inline void kv_buf_clear(struct kv_buf *b)
{
    b->size = 0;
}

/* Raw little-endian stores and loads on memory the caller owns. */
static inline void kv_store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void kv_store_u64(uint8_t *p, uint64_t v)
{
    kv_store_u32(p, (uint32_t)v);
    kv_store_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t kv_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t kv_load_u64(const uint8_t *p)
{
    return (uint64_t)kv_load_u32(p) | (uint64_t)kv_load_u32(p + 4) << 32;
}

/* Big-endian 32-bit store/load: used where byte order must sort like the
 * number (the hash prefix of on-disk keys). */
static inline void kv_store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t kv_load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Big-endian 64-bit store/load: group and client ids in on-disk keys, so
 * keys sort by the number. */
static inline void kv_store_be64(uint8_t *p, uint64_t v)
{
    kv_store_be32(p, (uint32_t)(v >> 32));
    kv_store_be32(p + 4, (uint32_t)v);
}

static inline uint64_t kv_load_be64(const uint8_t *p)
{
    return (uint64_t)kv_load_be32(p) << 32 | kv_load_be32(p + 4);
}

/* A read cursor over borrowed bytes; every get fails (KV_ECORRUPT) rather
 * than reading past the end, so decoders of untrusted input stay in bounds. */
struct kv_reader {
    const uint8_t *p; /* next byte to read */
    size_t left;      /* bytes remaining */
};

static inline void kv_reader_init(struct kv_reader *r, const void *data, size_t size)
{
    r->p = data;
    r->left = size;
}

int kv_reader_u8(struct kv_reader *r, uint8_t *out) KV_MUST_USE;
int kv_reader_u32(struct kv_reader *r, uint32_t *out) KV_MUST_USE;
int kv_reader_u64(struct kv_reader *r, uint64_t *out) KV_MUST_USE;
int kv_reader_varint(struct kv_reader *r, uint64_t *out) KV_MUST_USE;
/* Borrows `size` bytes: *out points into the reader's memory. */
int kv_reader_bytes(struct kv_reader *r, size_t size, const uint8_t **out) KV_MUST_USE;

#endif
