/* bitcask_int.h -- the bitcask engine's on-disk record codec, shared by
 * engine_bitcask.c and its unit tests. Nothing else includes this; the
 * format is described in docs/storage-bitcask.md.
 *
 * Record layout (all integers little-endian, BITCASK_RECORD_HEADER_SIZE
 * bytes of header, then the key, then the value):
 *   u32 crc        CRC-32C of every byte after this field to the record end
 *   u8  type       enum bitcask_type
 *   u8  reserved   always 0
 *   u16 key_size   1..STOR_KEY_SIZE_MAX for put/tombstone, 0 for commit
 *   u32 value_size 0..STOR_VALUE_SIZE_MAX for put, 0 for tombstone, 4 for
 *                  commit (the value is the u32 record count of the batch)
 *   u64 seq        put/tombstone: the record's sequence number;
 *                  commit: the sequence number of the batch's first record */
#ifndef KV_BITCASK_INT_H
#define KV_BITCASK_INT_H

#include <stddef.h>
#include <stdint.h>

#define BITCASK_RECORD_HEADER_SIZE 20u
#define BITCASK_COMMIT_VALUE_SIZE  4u

enum bitcask_type {
    BITCASK_PUT = 1,       /* key and value */
    BITCASK_TOMBSTONE = 2, /* key deleted */
    BITCASK_COMMIT = 3,    /* ends a batch; value = u32 record count */
};

/* A decoded record; key and value borrow the decoded bytes. */
struct bitcask_record {
    uint8_t type;
    uint64_t seq;
    const uint8_t *key;
    uint32_t key_size;
    const uint8_t *value;
    uint32_t value_size;
    size_t record_size; /* header + key + value; 0 if the header is short */
};

/* Bytes a record with these sizes occupies on disk. */
static inline size_t stor__bitcask_record_size(size_t key_size, size_t value_size)
{
    return BITCASK_RECORD_HEADER_SIZE + key_size + value_size;
}

/* Encodes one record into `dst`, which has room for
 * stor__bitcask_record_size(key_size, value_size) bytes. */
void stor__bitcask_record_encode(uint8_t *dst, enum bitcask_type type, uint64_t seq,
                                 const void *key, size_t key_size, const void *value,
                                 size_t value_size);

/* Decodes the record at `src` (`avail` readable bytes). Returns KV_OK;
 * KV_EOF when the record is longer than `avail` (out->record_size then
 * holds its length, or 0 when even the header is incomplete); KV_ECORRUPT
 * for an impossible header or a checksum mismatch. */
int stor__bitcask_record_decode(const uint8_t *src, size_t avail, struct bitcask_record *out);

#endif
