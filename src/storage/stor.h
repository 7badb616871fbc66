/* stor.h -- the storage layer: one engine interface, the state machine of
 * every Raft replica, with engines rocksdb, leveldb, lmdb, bitcask, memory.
 *
 * Keys and values are arbitrary bytes (NUL bytes allowed; empty values
 * allowed; keys non-empty). Keys order bytewise (memcmp, a proper prefix
 * first). Ordered engines iterate in that order; an unordered engine
 * (bitcask) visits every key of a range exactly once in some order.
 *
 * Threading: one engine may be used from several threads at once for reads
 * (get, views, iterators, export) while one thread writes; stor_write calls
 * are serialised by the engine. An iterator or export belongs to one thread.
 *
 * Errors: every fallible call returns a kv_err code; a message with context
 * (file, offset, what went wrong) for the calling thread's last failure is
 * readable with stor_errmsg(). */
#ifndef KV_STOR_H
#define KV_STOR_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

struct stor_engine; /* an open engine instance */
struct stor_view;   /* a point-in-time read view of one engine */
struct stor_iter;   /* an iterator over a key range */

/* Largest key and value the layer accepts; larger gets KV_ETOOBIG. The key
 * limit is LMDB's (511 bytes in its default build), applied to every engine
 * so that a snapshot exported from one engine always installs into any
 * other. */
#define STOR_KEY_SIZE_MAX   511u
#define STOR_VALUE_SIZE_MAX (64u * 1024u * 1024u)

/* When stor_write returns, is the batch on stable storage? */
enum stor_sync {
    STOR_SYNC_ALWAYS = 0, /* fsync/fdatasync before stor_write returns */
    STOR_SYNC_NONE = 1,   /* left to the OS: a crash may lose recent writes
                             (never tear a batch or corrupt older data) */
};

struct stor_options {
    const char *path;        /* directory holding the engine's files; created if
                                missing; ignored by the memory engine */
    size_t cache_bytes;      /* read cache budget (block cache / map size hint);
                                0 picks the engine's default */
    enum stor_sync sync;     /* durability of each stor_write */
    int read_only;           /* reserved; must be 0 for now */
    uint64_t file_bytes_max; /* size at which engines that roll files (bitcask
                                data files) start a new one; 0 = default */
};

/* Fills `o` with defaults: path NULL, cache 64 MiB, sync always. */
void stor_options_init(struct stor_options *o);

/* Names of the engines compiled in, NULL-terminated, static. */
const char *const *stor_engine_names(void);

/* Opens engine `name` with options `o`. A persistent engine's directory
 * carries a RAFTKV_STORE marker naming the engine: opening it with another
 * engine is KV_EINVAL, and when the marker is there but the engine's
 * essential files are gone the open is refused with KV_ECORRUPT rather than
 * creating an empty store over lost data. On success *out is a new engine the
 * caller frees with stor_close. On failure returns KV_EINVAL for an unknown
 * name (errmsg lists the valid ones), KV_ECORRUPT for a damaged file,
 * KV_ELOCKED when another process holds the directory, KV_EIO etc.; errmsg
 * (KV_ERRMSG_SIZE bytes, caller's) then says which file and what is wrong. */
int stor_open(const char *name, const struct stor_options *o, struct stor_engine **out,
              char errmsg[KV_ERRMSG_SIZE]) KV_MUST_USE;

/* Flushes and frees the engine. Views and iterators must be freed first. */
void stor_close(struct stor_engine *e);

/* The engine's name ("rocksdb", ...), static. */
const char *stor_name(const struct stor_engine *e);

/* 1 when iteration is in key order, 0 when in unspecified order. */
int stor_is_ordered(const struct stor_engine *e);

/* Message describing the last failure of a call on `e` made by the calling
 * thread (messages are per thread, so concurrent readers never mix them);
 * valid until that thread's next call on the storage layer; "" when
 * nothing failed. */
const char *stor_errmsg(const struct stor_engine *e);

/* Reads `key`. `view` is a view of `e`, or NULL for the latest state. On
 * success copies the value into `value` (contents replaced) and returns
 * KV_OK; KV_ENOTFOUND when absent. */
int stor_get(struct stor_engine *e, const struct stor_view *view, const void *key, size_t key_size,
             struct kv_buf *value) KV_MUST_USE;

/* One-operation writes, each atomic and durable per the sync policy. */
int stor_put(struct stor_engine *e, const void *key, size_t key_size, const void *value,
             size_t value_size) KV_MUST_USE;
int stor_delete(struct stor_engine *e, const void *key, size_t key_size) KV_MUST_USE;

/* ---- Write batches ------------------------------------------------------
 * A batch is an ordered list of operations applied all-or-nothing by
 * stor_write: after a crash the engine holds either all of them or none.
 * Later operations see earlier ones (a delete-range removes keys put by
 * earlier operations of the same batch). The batch is a plain buffer the
 * caller owns; it does not refer to any engine. */
struct stor_batch {
    struct kv_buf rep; /* encoded operations (see stor_batch_next) */
    uint32_t count;    /* number of operations */
};

enum stor_op {
    STOR_OP_PUT = 1,
    STOR_OP_DELETE = 2,
    STOR_OP_DELETE_RANGE = 3, /* key = start (inclusive), value = end (exclusive) */
};

void stor_batch_init(struct stor_batch *b);
void stor_batch_close(struct stor_batch *b);
void stor_batch_clear(struct stor_batch *b);
/* Each returns KV_OK, KV_ENOMEM, KV_EINVAL (empty key, or range start >=
 * end) or KV_ETOOBIG (over the size limits); the batch is unchanged on error. */
int stor_batch_put(struct stor_batch *b, const void *key, size_t key_size, const void *value,
                   size_t value_size) KV_MUST_USE;
int stor_batch_delete(struct stor_batch *b, const void *key, size_t key_size) KV_MUST_USE;
int stor_batch_delete_range(struct stor_batch *b, const void *start, size_t start_size,
                            const void *end, size_t end_size) KV_MUST_USE;

/* A decoded operation; pointers borrow the batch's memory. */
struct stor_batch_op {
    enum stor_op op;
    const uint8_t *key; /* key, or range start */
    size_t key_size;
    const uint8_t *value; /* value, or range end; NULL for delete */
    size_t value_size;
};

/* Cursor over a batch's operations in order: set *pos = 0, then call until
 * it returns KV_EOF. KV_ECORRUPT for a malformed batch. */
int stor_batch_next(const struct stor_batch *b, size_t *pos, struct stor_batch_op *op) KV_MUST_USE;

/* Applies `b` atomically (see above), durable per the sync policy. An empty
 * batch is a no-op. On an I/O error the engine is poisoned: later writes
 * return KV_EPOISONED (an fsync is never retried). */
int stor_write(struct stor_engine *e, const struct stor_batch *b) KV_MUST_USE;

/* ---- Read views ---------------------------------------------------------
 * A view sees the engine exactly as it was when made, however many writes
 * follow. It holds resources (LSM snapshots, an LMDB read transaction,
 * bitcask files) until freed: keep views short-lived. */
int stor_view_new(struct stor_engine *e, struct stor_view **out) KV_MUST_USE;
void stor_view_free(struct stor_view *v);

/* ---- Iteration ----------------------------------------------------------
 * Iterates keys in [start, end): start NULL means from the first key, end
 * NULL means to the last. `view` may be NULL (the iterator then makes and
 * owns a view of its own, so it is consistent anyway). */
int stor_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                  size_t start_size, const void *end, size_t end_size,
                  struct stor_iter **out) KV_MUST_USE;

/* Moves to the next pair. On KV_OK *key and *value borrow memory valid
 * until the next call on `it`. Returns KV_EOF at the end of the range. */
int stor_iter_next(struct stor_iter *it, const uint8_t **key, size_t *key_size,
                   const uint8_t **value, size_t *value_size) KV_MUST_USE;

void stor_iter_free(struct stor_iter *it);

/* ---- Snapshot export and ingest ------------------------------------------
 * The content of a key range as a stream of self-checking chunks, in an
 * engine-independent format, so a snapshot taken from one engine installs
 * into an engine of any kind (Raft snapshots, shard migration).
 *
 * Chunk format (all integers little-endian):
 *   u32 magic "RKVS" | u16 version (1) | u16 flags (bit 0: last chunk)
 *   u64 sequence number (0, 1, 2, ...) | u32 record count | u32 payload bytes
 *   payload: count x (varint key size, key, varint value size, value)
 *   u32 CRC-32C of everything before it. */
struct stor_export;
struct stor_ingest;

#define STOR_CHUNK_BYTES_DEFAULT (1024u * 1024u)

/* Starts exporting [start, end) of `view` (NULL: a fresh view the export
 * owns). Chunks hold about `chunk_bytes` of payload (a single larger pair
 * gets a chunk of its own). */
int stor_export_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                    size_t start_size, const void *end, size_t end_size, size_t chunk_bytes,
                    struct stor_export **out) KV_MUST_USE;

/* Writes the next chunk into `chunk` (contents replaced). Returns KV_OK with
 * a chunk, KV_EOF after the last chunk was produced. At least one chunk (the
 * last-flagged one, possibly empty) is always produced. */
int stor_export_next(struct stor_export *x, struct kv_buf *chunk) KV_MUST_USE;
void stor_export_free(struct stor_export *x);

/* Starts ingesting a stream into [start, end) of `e`: the first chunk's
 * batch deletes everything in the range, so after finish the range holds
 * exactly the stream's content. Ingest is not atomic as a whole: the data
 * layer records an install-in-progress mark and redoes it after a crash. */
int stor_ingest_new(struct stor_engine *e, const void *start, size_t start_size, const void *end,
                    size_t end_size, struct stor_ingest **out) KV_MUST_USE;

/* Verifies and applies one chunk. KV_ECORRUPT for a bad checksum, magic,
 * version or encoding; KV_EPROTO for an out-of-sequence chunk, a key outside
 * the range, or data after the last chunk. Nothing of a rejected chunk is
 * written. */
int stor_ingest_chunk(struct stor_ingest *in, const void *chunk, size_t chunk_size) KV_MUST_USE;

/* Completes the ingest (KV_EPROTO if the last chunk was never seen) and
 * makes it durable. */
int stor_ingest_finish(struct stor_ingest *in) KV_MUST_USE;
void stor_ingest_free(struct stor_ingest *in);

/* Compacts now: reclaims space held by deleted and overwritten data
 * (RocksDB/LevelDB compact the whole range, bitcask merges its immutable
 * files, LMDB and memory have nothing to do). Safe while views are open:
 * files a view still reads are removed only when it is freed. */
int stor_compact(struct stor_engine *e) KV_MUST_USE;

/* ---- Stats --------------------------------------------------------------- */
struct stor_stats {
    uint64_t key_count;  /* live keys (an estimate when key_count_exact is 0) */
    int key_count_exact; /* 1 when key_count is exact */
    uint64_t disk_bytes; /* bytes of the engine's files on disk (0 for memory) */
};

int stor_stats(struct stor_engine *e, struct stor_stats *out) KV_MUST_USE;

#endif
