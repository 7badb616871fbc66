/* bitcask_int.h -- internals of the bitcask engine shared by its files
 * (engine_bitcask.c: vtable, files, write path, reads, views; bitcask_keydir.c:
 * the in-memory hash table; bitcask_recover.c: start-up; bitcask_merge.c:
 * merge and hints) and by its unit tests: the on-disk record codec, the
 * limits, the engine's structs, and the module-private functions, all named
 * stor__bitcask_*. Nothing else includes this; the format is described in
 * docs/storage-bitcask.md.
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
 *                  commit: the sequence number of the batch's first record
 *
 * Locking: write_lock serialises writers and merges (a merge blocks writes,
 * never reads); `lock` (a rwlock) guards the keydir and the file table.
 * Only the thread holding write_lock changes either, so it may read them
 * without `lock`. */
#ifndef KV_BITCASK_INT_H
#define KV_BITCASK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "stor_int.h"

#define BITCASK_RECORD_HEADER_SIZE 20u
#define BITCASK_COMMIT_VALUE_SIZE  4u

/* Most data + merge files a directory may hold (each keeps an fd open). */
#define BITCASK_FILE_COUNT_MAX 4096u
/* Merge buffers output and flushes it in writes of about this size. */
#define BITCASK_MERGE_FLUSH_BYTES (1024u * 1024u)
#define BITCASK_PATH_SIZE_MAX     4096u
/* Hint file: header magic/version and trailer magic. */
#define BITCASK_HINT_MAGIC        0x484b4252u /* "RBKH" */
#define BITCASK_HINT_VERSION      1u
#define BITCASK_HINT_HEADER_SIZE  12u
#define BITCASK_HINT_ENTRY_SIZE   22u
#define BITCASK_HINT_TRAILER_SIZE 16u

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

enum file_kind {
    FILE_WRITE = 0, /* NNNNNNNNNN.data: written by stor_write, batches */
    FILE_MERGE = 1, /* NNNNNNNNNN.merge: written by merge, lone put records */
};

/* One open data file. Reference-counted: the engine's table holds one
 * reference, each view one more; the fd closes with the last. A merged-away
 * file is unlinked at once (see merge_publish) and lives on through its fd. */
struct bc_file {
    atomic_uint refs;
    uint32_t id;
    enum file_kind kind;
    int fd;
    uint64_t size;       /* bytes of whole records (writer's view) */
    uint64_t live_bytes; /* bytes of records the keydir points at */
    uint64_t max_seq;    /* newest record inside: orders deletion after merge */
    int merging;         /* input of the merge in progress (writer only) */
};

/* A keydir entry: immutable once in a table, shared by the keydir and
 * views through `refs`. */
struct kd_entry {
    atomic_uint refs;
    uint16_t key_size;
    uint8_t dead; /* a tombstone: only during recovery and in batch overlays */
    uint32_t value_size;
    uint64_t hash;
    uint64_t offset; /* of the record in `file` */
    uint64_t seq;
    struct bc_file *file;
    uint8_t key[];
};

/* Open addressing with linear probing; deletion shifts back (no tombstone
 * slots). cap is a power of two. */
struct keydir {
    struct kd_entry **slots;
    size_t cap;
    size_t count;
};

struct bc_engine {
    struct stor_engine base;
    char path[BITCASK_PATH_SIZE_MAX];
    int lock_fd;
    enum stor_sync sync;
    uint64_t file_bytes_max;
    pthread_mutex_t write_lock;
    pthread_rwlock_t lock;
    struct keydir kd;
    struct bc_file **files; /* sorted by id */
    size_t file_count;
    size_t file_cap;
    struct bc_file *active; /* the write file appended to */
    uint32_t next_file_id;
    uint64_t next_seq;
    struct kv_buf wbuf;    /* encoded batch (writer only) */
    struct keydir overlay; /* the batch's own view of its keys (writer only) */
};

/* ---- record codec (engine_bitcask.c) ------------------------------------- */

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

/* ---- entries and the keydir (bitcask_keydir.c) --------------------------- */

/* Bytes the record of `en` occupies on disk. */
static inline size_t stor__bitcask_entry_record_size(const struct kd_entry *en)
{
    return stor__bitcask_record_size(en->key_size, en->value_size);
}

/* A new entry for `key` (copied) with one reference and every other field
 * zero; NULL when out of memory. */
struct kd_entry *stor__bitcask_entry_new(const void *key, size_t key_size, uint64_t hash);

/* Drops one reference to `en` (NULL is ignored); frees it with the last. */
void stor__bitcask_entry_unref(struct kd_entry *en);

/* An empty table that owns no memory. */
void stor__bitcask_kd_init(struct keydir *kd);

/* Drops every entry and frees the table; it is empty (initialised) after. */
void stor__bitcask_kd_close(struct keydir *kd);

/* Drops every entry, keeping the table's storage. */
void stor__bitcask_kd_clear(struct keydir *kd);

/* Slot holding `key`, or the empty slot where it would go. The table must
 * have a capacity (cap > 0). */
size_t stor__bitcask_kd_probe(const struct keydir *kd, const void *key, size_t key_size,
                              uint64_t hash);

/* The entry of `key` (borrowed: lives while it stays in the table) or NULL. */
struct kd_entry *stor__bitcask_kd_find(const struct keydir *kd, const void *key, size_t key_size,
                                       uint64_t hash);

/* Makes room for `extra` more keys within the load limit. KV_ENOMEM leaves
 * the table unchanged. */
int stor__bitcask_kd_reserve(struct keydir *kd, size_t extra);

/* Puts `en` (ownership passes to the table) in place of any entry with its
 * key; returns the replaced entry (the caller's now) or NULL. Room must have
 * been reserved. */
struct kd_entry *stor__bitcask_kd_put(struct keydir *kd, struct kd_entry *en);

/* Removes the entry in slot `i` (returned, the caller's now), shifting
 * later members of its probe run back so lookups never stop early. */
struct kd_entry *stor__bitcask_kd_remove_slot(struct keydir *kd, size_t i);

/* Removes the entry of `key` and returns it (the caller's now), or NULL. */
struct kd_entry *stor__bitcask_kd_remove(struct keydir *kd, const void *key, size_t key_size,
                                         uint64_t hash);

/* ---- files (engine_bitcask.c) ------------------------------------------- */

/* Drops one reference to `f` (NULL is ignored); closes and frees it with
 * the last. */
void stor__bitcask_file_unref(struct bc_file *f);

/* The file name suffix of a kind: "data" or "merge" (static storage). */
const char *stor__bitcask_kind_suffix(enum file_kind kind);

/* Writes "<dir>/<id, 10 digits>.<suffix>" into `out`, which holds
 * BITCASK_PATH_SIZE_MAX bytes. */
void stor__bitcask_file_path(const struct bc_engine *e, uint32_t id, const char *suffix, char *out);

/* Writes all `n` bytes at `off`. On failure fills errmsg (KV_ERRMSG_SIZE,
 * naming `what`) and returns KV_ENOSPC (no space) or KV_EIO. */
int stor__bitcask_write_all(int fd, const uint8_t *p, size_t n, uint64_t off, const char *what,
                            char *errmsg);

/* Reads up to `n` bytes at `off`; *got says how many (short only at EOF).
 * KV_EIO on a read error. */
int stor__bitcask_read_full(int fd, uint8_t *p, size_t n, uint64_t off, size_t *got);

/* fdatasyncs `fd`; on failure fills errmsg and returns KV_ENOSPC or KV_EIO. */
int stor__bitcask_sync_file(int fd, const char *what, char *errmsg);

/* Makes room in the file table for `extra` more files (KV_ENOMEM). Caller
 * holds `lock` for writing, or is opening. */
int stor__bitcask_table_reserve(struct bc_engine *e, size_t extra);

/* Adds `f` (its reference passes to the table on KV_OK) keeping ids sorted;
 * KV_ENOMEM. Caller holds `lock` for writing, or is opening. */
int stor__bitcask_table_add(struct bc_engine *e, struct bc_file *f);

/* A file object for `fd` (owned by it from now on) with one reference;
 * NULL when out of memory (the caller still owns fd). */
struct bc_file *stor__bitcask_file_new(uint32_t id, enum file_kind kind, int fd);

/* Creates an empty file `<id>.<suffix>` for reading and appending; never
 * truncates an existing one. On failure fills errmsg. */
int stor__bitcask_create_file(struct bc_engine *e, uint32_t id, const char *suffix, int *fd_out,
                              char *errmsg);

/* Starts a new write file and makes it the active one; syncs the old one
 * first. Caller holds write_lock, or is opening. On failure fills
 * e->base.errmsg: KV_EBUSY at BITCASK_FILE_COUNT_MAX files, KV_ENOMEM,
 * KV_ENOSPC, KV_EIO. */
int stor__bitcask_roll(struct bc_engine *e);

/* Reads and verifies the record of `en` (at `offset` of `f`) into `rec`.
 * KV_ENOMEM, KV_EIO or KV_ECORRUPT (with base->errmsg set for the last two). */
int stor__bitcask_read_record(struct stor_engine *base, const struct kd_entry *en,
                              const struct bc_file *f, uint64_t offset, struct kv_buf *rec);

/* ---- merge (bitcask_merge.c) --------------------------------------------- */

/* Merges every immutable file (all but the active one) into new merge files
 * with hints. Caller holds write_lock. A failure changes nothing and leaves
 * context in e->base.errmsg. */
int stor__bitcask_merge_run(struct bc_engine *e);

/* Merges when enough of the immutable bytes are dead; a failed merge is
 * logged, not returned, so this returns KV_OK. Caller holds write_lock. */
int stor__bitcask_merge_if_needed(struct bc_engine *e);

/* ---- recovery (bitcask_recover.c) ---------------------------------------- */

/* Loads the directory of a freshly initialised engine: opens every file,
 * fills the keydir from hints and scans, truncates a torn tail of the
 * newest write file, and sets the active file (creating one if none).
 * On failure errmsg (KV_ERRMSG_SIZE) says why where it can; KV_ECORRUPT
 * for damage that is not a torn tail. The caller frees the engine on
 * failure. */
int stor__bitcask_recover(struct bc_engine *e, char *errmsg);

#endif
