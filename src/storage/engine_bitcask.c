/* engine_bitcask.c -- the bitcask engine (after Sheehy & Smith, Basho 2010):
 * numbered append-only data files, an in-memory hash table (the keydir)
 * from each live key to the place of its latest record, hint files beside
 * merged files for a fast start-up, and merge to reclaim dead records.
 *
 * Additions to the paper, needed by RaftKV: atomic batches (a run of
 * records ending in a commit record; recovery applies a batch only when its
 * commit is present), a sequence number in every record (so recovery keeps
 * the newest record of a key whatever file holds it, which makes merge
 * crash-safe without ordering tricks), and point-in-time views (a copy of
 * the keydir's slot array sharing its immutable, reference-counted entries).
 *
 * Locking: write_lock serialises writers and merges (a merge blocks writes,
 * never reads); `lock` (a rwlock) guards the keydir and the file table.
 * Only the thread holding write_lock changes either, so it may read them
 * without `lock`. The format and the crash argument are in
 * docs/storage-bitcask.md. */
#include "bitcask_int.h"
#include "stor_int.h"
#include "alloc.h"
#include "crc32c.h"
#include "hash.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Data files roll at this size unless the options say otherwise. */
#define BITCASK_FILE_BYTES_DEFAULT (256ull * 1024u * 1024u)
/* Smaller settings are raised to this (tests use small files; a file per
 * record would only burn file descriptors). */
#define BITCASK_FILE_BYTES_MIN 256u
/* Merge the immutable files when this percentage of their bytes is dead
 * (overwritten, deleted, tombstones, commit records). */
#define BITCASK_MERGE_DEAD_PCT 50u
/* ...and they hold at least this many bytes, so tiny stores don't churn. */
#define BITCASK_MERGE_MIN_BYTES (64u * 1024u)
/* The keydir grows before its load passes this percentage. */
#define BITCASK_LOAD_PCT_MAX   75u
#define BITCASK_KEYDIR_CAP_MIN 16u
/* Most data + merge files a directory may hold (each keeps an fd open). */
#define BITCASK_FILE_COUNT_MAX 4096u
/* Read size while scanning a data file at start-up. */
#define BITCASK_SCAN_CHUNK_BYTES (1024u * 1024u)
/* Merge buffers output and flushes it in writes of about this size. */
#define BITCASK_MERGE_FLUSH_BYTES (1024u * 1024u)
#define BITCASK_PATH_SIZE_MAX     4096u
/* Hint file: header magic/version and trailer magic. */
#define BITCASK_HINT_MAGIC        0x484b4252u /* "RBKH" */
#define BITCASK_HINT_VERSION      1u
#define BITCASK_HINT_HEADER_SIZE  12u
#define BITCASK_HINT_ENTRY_SIZE   22u
#define BITCASK_HINT_TRAILER_SIZE 16u

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

struct bc_view {
    struct stor_view base;
    struct kd_entry **slots; /* copy of the keydir slots, entries referenced */
    size_t cap;
    struct bc_file **files; /* referenced files */
    size_t file_count;
};

struct bc_iter {
    struct stor_iter base;
    const struct bc_view *view;
    size_t slot; /* next slot to look at */
    struct kv_buf start;
    struct kv_buf end;
    int has_start;
    int has_end;
    struct kv_buf rec; /* the current record */
};

/* ---- record codec -------------------------------------------------------- */

void stor__bitcask_record_encode(uint8_t *dst, enum bitcask_type type, uint64_t seq,
                                 const void *key, size_t key_size, const void *value,
                                 size_t value_size)
{
    KV_ASSERT(key_size <= STOR_KEY_SIZE_MAX && value_size <= STOR_VALUE_SIZE_MAX);
    dst[4] = (uint8_t)type;
    dst[5] = 0;
    dst[6] = (uint8_t)key_size;
    dst[7] = (uint8_t)(key_size >> 8);
    kv_store_u32(dst + 8, (uint32_t)value_size);
    kv_store_u64(dst + 12, seq);
    if (key_size > 0) {
        memcpy(dst + BITCASK_RECORD_HEADER_SIZE, key, key_size);
    }
    if (value_size > 0) {
        memcpy(dst + BITCASK_RECORD_HEADER_SIZE + key_size, value, value_size);
    }
    size_t n = stor__bitcask_record_size(key_size, value_size);
    kv_store_u32(dst, kv_crc32c(0, dst + 4, n - 4));
}

/* 1 when the sizes are possible for the type. */
static int header_plausible(uint8_t type, uint8_t reserved, uint32_t key_size, uint32_t value_size)
{
    if (reserved != 0) {
        return 0;
    }
    switch (type) {
    case BITCASK_PUT:
        return key_size >= 1 && key_size <= STOR_KEY_SIZE_MAX && value_size <= STOR_VALUE_SIZE_MAX;
    case BITCASK_TOMBSTONE:
        return key_size >= 1 && key_size <= STOR_KEY_SIZE_MAX && value_size == 0;
    case BITCASK_COMMIT:
        return key_size == 0 && value_size == BITCASK_COMMIT_VALUE_SIZE;
    }
    return 0;
}

int stor__bitcask_record_decode(const uint8_t *src, size_t avail, struct bitcask_record *out)
{
    out->record_size = 0;
    if (avail < BITCASK_RECORD_HEADER_SIZE) {
        return KV_EOF;
    }
    uint8_t type = src[4];
    uint32_t key_size = (uint32_t)src[6] | (uint32_t)src[7] << 8;
    uint32_t value_size = kv_load_u32(src + 8);
    if (!header_plausible(type, src[5], key_size, value_size)) {
        return KV_ECORRUPT;
    }
    size_t n = stor__bitcask_record_size(key_size, value_size);
    out->record_size = n;
    if (avail < n) {
        return KV_EOF;
    }
    if (kv_crc32c(0, src + 4, n - 4) != kv_load_u32(src)) {
        return KV_ECORRUPT;
    }
    out->type = type;
    out->seq = kv_load_u64(src + 12);
    out->key = src + BITCASK_RECORD_HEADER_SIZE;
    out->key_size = key_size;
    out->value = src + BITCASK_RECORD_HEADER_SIZE + key_size;
    out->value_size = value_size;
    return KV_OK;
}

/* ---- entries and the keydir ----------------------------------------------- */

static struct kd_entry *entry_new(const void *key, size_t key_size, uint64_t hash)
{
    struct kd_entry *en = kv_malloc(sizeof *en + key_size);
    if (en == NULL) {
        return NULL;
    }
    memset(en, 0, sizeof *en);
    atomic_init(&en->refs, 1);
    en->key_size = (uint16_t)key_size;
    en->hash = hash;
    memcpy(en->key, key, key_size);
    return en;
}

static void entry_unref(struct kd_entry *en)
{
    if (en != NULL && atomic_fetch_sub(&en->refs, 1) == 1) {
        kv_free(en);
    }
}

static size_t entry_record_size(const struct kd_entry *en)
{
    return stor__bitcask_record_size(en->key_size, en->value_size);
}

static void kd_init(struct keydir *kd)
{
    kd->slots = NULL;
    kd->cap = 0;
    kd->count = 0;
}

/* Drops every entry and frees the table. */
static void kd_close(struct keydir *kd)
{
    for (size_t i = 0; i < kd->cap; i++) {
        entry_unref(kd->slots[i]);
    }
    kv_free(kd->slots);
    kd_init(kd);
}

/* Drops every entry, keeping the table's storage. */
static void kd_clear(struct keydir *kd)
{
    for (size_t i = 0; i < kd->cap; i++) {
        entry_unref(kd->slots[i]);
        kd->slots[i] = NULL;
    }
    kd->count = 0;
}

/* Slot holding `key`, or the empty slot where it would go. */
static size_t kd_probe(const struct keydir *kd, const void *key, size_t key_size, uint64_t hash)
{
    size_t mask = kd->cap - 1;
    size_t i = (size_t)hash & mask;
    for (;;) {
        const struct kd_entry *en = kd->slots[i];
        if (en == NULL ||
            (en->hash == hash && en->key_size == key_size && memcmp(en->key, key, key_size) == 0)) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

static struct kd_entry *kd_find(const struct keydir *kd, const void *key, size_t key_size,
                                uint64_t hash)
{
    if (kd->cap == 0) {
        return NULL;
    }
    return kd->slots[kd_probe(kd, key, key_size, hash)];
}

/* Makes room for `extra` more keys within the load limit. KV_ENOMEM leaves
 * the table unchanged. */
static int kd_reserve(struct keydir *kd, size_t extra)
{
    size_t need = kd->count + extra;
    size_t cap = kd->cap ? kd->cap : BITCASK_KEYDIR_CAP_MIN;
    while (need * 100u > cap * BITCASK_LOAD_PCT_MAX) {
        cap *= 2;
    }
    if (cap == kd->cap) {
        return KV_OK;
    }
    struct kd_entry **slots = kv_calloc(cap, sizeof *slots);
    if (slots == NULL) {
        return KV_ENOMEM;
    }
    struct keydir grown = {.slots = slots, .cap = cap, .count = kd->count};
    for (size_t i = 0; i < kd->cap; i++) {
        struct kd_entry *en = kd->slots[i];
        if (en != NULL) {
            grown.slots[kd_probe(&grown, en->key, en->key_size, en->hash)] = en;
        }
    }
    kv_free(kd->slots);
    *kd = grown;
    return KV_OK;
}

/* Puts `en` (ownership passes to the table) in place of any entry with its
 * key; returns the replaced entry (the caller's now) or NULL. Room must have
 * been reserved. */
static struct kd_entry *kd_put(struct keydir *kd, struct kd_entry *en)
{
    KV_ASSERT(kd->cap > 0);
    size_t i = kd_probe(kd, en->key, en->key_size, en->hash);
    struct kd_entry *old = kd->slots[i];
    kd->slots[i] = en;
    if (old == NULL) {
        kd->count++;
        KV_ASSERT(kd->count < kd->cap);
    }
    return old;
}

/* Removes the entry in slot `i` (returned, the caller's now), shifting
 * later members of its probe run back so lookups never stop early. */
static struct kd_entry *kd_remove_slot(struct keydir *kd, size_t i)
{
    size_t mask = kd->cap - 1;
    struct kd_entry *old = kd->slots[i];
    KV_ASSERT(old != NULL);
    kd->slots[i] = NULL;
    kd->count--;
    size_t hole = i;
    for (size_t j = (i + 1) & mask; kd->slots[j] != NULL; j = (j + 1) & mask) {
        size_t home = (size_t)kd->slots[j]->hash & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            kd->slots[hole] = kd->slots[j];
            kd->slots[j] = NULL;
            hole = j;
        }
    }
    return old;
}

static struct kd_entry *kd_remove(struct keydir *kd, const void *key, size_t key_size,
                                  uint64_t hash)
{
    if (kd->cap == 0) {
        return NULL;
    }
    size_t i = kd_probe(kd, key, key_size, hash);
    return kd->slots[i] ? kd_remove_slot(kd, i) : NULL;
}

/* ---- files ------------------------------------------------------------------ */

static void file_ref(struct bc_file *f)
{
    atomic_fetch_add(&f->refs, 1);
}

static void file_unref(struct bc_file *f)
{
    if (f != NULL && atomic_fetch_sub(&f->refs, 1) == 1) {
        close(f->fd);
        kv_free(f);
    }
}

static const char *kind_suffix(enum file_kind kind)
{
    return kind == FILE_WRITE ? "data" : "merge";
}

static void file_path(const struct bc_engine *e, uint32_t id, const char *suffix, char *out)
{
    snprintf(out, BITCASK_PATH_SIZE_MAX, "%s/%010" PRIu32 ".%s", e->path, id, suffix);
}

/* Maps a failed write/fsync errno: no space is KV_ENOSPC, anything else
 * KV_EIO (the generic layer poisons the engine on either). */
static int write_err(int err)
{
    return err == ENOSPC || err == EDQUOT ? KV_ENOSPC : KV_EIO;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off, const char *what,
                     char *errmsg)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int err = w < 0 ? errno : EIO;
            snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: write %s at offset %" PRIu64 ": %s", what,
                     off, strerror(err));
            return write_err(err);
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return KV_OK;
}

/* Reads up to `n` bytes at `off`; *got says how many (short only at EOF). */
static int read_full(int fd, uint8_t *p, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return KV_EIO;
        }
        if (r == 0) {
            break;
        }
        done += (size_t)r;
    }
    *got = done;
    return KV_OK;
}

static int sync_file(int fd, const char *what, char *errmsg)
{
    if (fdatasync(fd) != 0) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: fdatasync %s: %s", what, strerror(err));
        return write_err(err);
    }
    return KV_OK;
}

/* Makes room in the file table for `extra` more files. Caller holds `lock`
 * for writing, or is opening. */
static int table_reserve(struct bc_engine *e, size_t extra)
{
    if (e->file_count + extra <= e->file_cap) {
        return KV_OK;
    }
    size_t cap = e->file_cap ? e->file_cap : 16;
    while (cap < e->file_count + extra) {
        cap *= 2;
    }
    struct bc_file **files = kv_realloc(e->files, cap * sizeof *files);
    if (files == NULL) {
        return KV_ENOMEM;
    }
    e->files = files;
    e->file_cap = cap;
    return KV_OK;
}

/* Adds `f` (its reference passes to the table) keeping ids sorted. Caller
 * holds `lock` for writing, or is opening. */
static int table_add(struct bc_engine *e, struct bc_file *f)
{
    int rc = table_reserve(e, 1);
    if (rc != KV_OK) {
        return rc;
    }
    size_t i = e->file_count;
    while (i > 0 && e->files[i - 1]->id > f->id) {
        e->files[i] = e->files[i - 1];
        i--;
    }
    e->files[i] = f;
    e->file_count++;
    return KV_OK;
}

static struct bc_file *file_new(uint32_t id, enum file_kind kind, int fd)
{
    struct bc_file *f = kv_calloc(1, sizeof *f);
    if (f != NULL) {
        atomic_init(&f->refs, 1);
        f->id = id;
        f->kind = kind;
        f->fd = fd;
    }
    return f;
}

/* Creates an empty file `<id>.<suffix>` for reading and appending. */
static int create_file(struct bc_engine *e, uint32_t id, const char *suffix, int *fd_out,
                       char *errmsg)
{
    char p[BITCASK_PATH_SIZE_MAX];
    file_path(e, id, suffix, p);
    /* O_EXCL: ids are never reused, so an existing file means a bug; never
     * truncate data. */
    int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: create %s: %s", p, strerror(err));
        return write_err(err);
    }
    *fd_out = fd;
    return KV_OK;
}

/* Starts a new write file and makes it the active one. The old active file
 * is synced first so that only the newest write file can ever have a torn
 * tail (recovery relies on it). */
static int roll(struct bc_engine *e)
{
    char *errmsg = e->base.errmsg;
    if (e->file_count >= BITCASK_FILE_COUNT_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: %s holds %u files, the limit; compact", e->path,
                 BITCASK_FILE_COUNT_MAX);
        return KV_EBUSY;
    }
    if (e->active != NULL && e->sync == STOR_SYNC_NONE) {
        int rc = sync_file(e->active->fd, "data file", errmsg);
        if (rc != KV_OK) {
            return rc;
        }
    }
    int fd;
    int rc = create_file(e, e->next_file_id, "data", &fd, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct bc_file *f = file_new(e->next_file_id, FILE_WRITE, fd);
    if (f == NULL) {
        rc = KV_ENOMEM;
        goto err_file;
    }
    if (stor__fsync_dir(e->path) != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: fsync directory %s failed", e->path);
        rc = KV_EIO;
        goto err_file;
    }
    pthread_rwlock_wrlock(&e->lock);
    rc = table_add(e, f);
    if (rc == KV_OK) {
        e->active = f;
    }
    pthread_rwlock_unlock(&e->lock);
    if (rc != KV_OK) {
        goto err_file;
    }
    e->next_file_id++;
    return KV_OK;

err_file:
    kv_free(f);
    close(fd);
    {
        char p[BITCASK_PATH_SIZE_MAX];
        file_path(e, e->next_file_id, "data", p);
        unlink(p);
    }
    return rc;
}

/* ---- reading a value ------------------------------------------------------- */

/* Reads and verifies the record of `en` into `rec`. */
static int read_record(struct stor_engine *base, const struct kd_entry *en, const struct bc_file *f,
                       uint64_t offset, struct kv_buf *rec)
{
    size_t n = entry_record_size(en);
    kv_buf_clear(rec);
    int rc = kv_buf_reserve(rec, n);
    if (rc != KV_OK) {
        return rc;
    }
    size_t got;
    rc = read_full(f->fd, rec->data, n, offset, &got);
    struct bitcask_record r;
    if (rc == KV_OK && got == n) {
        rc = stor__bitcask_record_decode(rec->data, n, &r);
        if (rc == KV_OK && (r.type != BITCASK_PUT || r.key_size != en->key_size ||
                            r.value_size != en->value_size || r.seq != en->seq)) {
            rc = KV_ECORRUPT;
        }
    } else if (rc == KV_OK) {
        rc = KV_ECORRUPT; /* shorter than the keydir says */
    }
    if (rc != KV_OK) {
        stor__set_errmsg(base,
                         "bitcask: bad record in file %010" PRIu32 ".%s at offset %" PRIu64 ": %s",
                         f->id, kind_suffix(f->kind), offset, kv_strerror(rc));
        return rc == KV_EIO ? KV_EIO : KV_ECORRUPT;
    }
    rec->size = n;
    return KV_OK;
}

/* ---- the write path ---------------------------------------------------------- */

/* Appends one record to the batch buffer and notes the key's new state in
 * the overlay (which takes a fresh entry: it becomes the keydir's entry
 * once the batch is durable). */
static int batch_add(struct bc_engine *e, enum bitcask_type type, const uint8_t *key,
                     size_t key_size, const uint8_t *value, size_t value_size)
{
    size_t n = stor__bitcask_record_size(key_size, value_size);
    uint64_t hash = kv_hash64(key, key_size);
    int rc = kv_buf_reserve(&e->wbuf, n);
    if (rc == KV_OK && kd_find(&e->overlay, key, key_size, hash) == NULL) {
        /* Only a new key can grow (and so rehash) the overlay. */
        rc = kd_reserve(&e->overlay, 1);
    }
    struct kd_entry *en = rc == KV_OK ? entry_new(key, key_size, hash) : NULL;
    if (en == NULL) {
        return KV_ENOMEM;
    }
    en->dead = type == BITCASK_TOMBSTONE;
    en->value_size = (uint32_t)value_size;
    en->offset = e->wbuf.size; /* relative to the batch for now */
    en->seq = e->next_seq++;
    stor__bitcask_record_encode(e->wbuf.data + e->wbuf.size, type, en->seq, key, key_size, value,
                                value_size);
    e->wbuf.size += n;
    entry_unref(kd_put(&e->overlay, en));
    return KV_OK;
}

/* 1 when `key` is live as seen by the batch so far. */
static int batch_key_live(const struct bc_engine *e, const uint8_t *key, size_t key_size)
{
    uint64_t hash = kv_hash64(key, key_size);
    const struct kd_entry *en = kd_find(&e->overlay, key, key_size, hash);
    if (en != NULL) {
        return !en->dead;
    }
    return kd_find(&e->kd, key, key_size, hash) != NULL;
}

/* Tombstones every live key of [start, end): keys the batch put, then keys
 * of the keydir the batch has not touched. */
static int batch_delete_range(struct bc_engine *e, const struct stor_batch_op *op)
{
    /* Overlay first: these keys are in the overlay already, so batch_add
     * replaces each in its own slot and the table never moves under us. */
    for (size_t i = 0; i < e->overlay.cap; i++) {
        const struct kd_entry *en = e->overlay.slots[i];
        if (en != NULL && !en->dead &&
            stor__key_in_range(en->key, en->key_size, op->key, op->key_size, op->value,
                               op->value_size)) {
            int rc = batch_add(e, BITCASK_TOMBSTONE, en->key, en->key_size, NULL, 0);
            if (rc != KV_OK) {
                return rc;
            }
        }
    }
    for (size_t i = 0; i < e->kd.cap; i++) {
        const struct kd_entry *en = e->kd.slots[i];
        if (en != NULL &&
            stor__key_in_range(en->key, en->key_size, op->key, op->key_size, op->value,
                               op->value_size) &&
            kd_find(&e->overlay, en->key, en->key_size, en->hash) == NULL) {
            int rc = batch_add(e, BITCASK_TOMBSTONE, en->key, en->key_size, NULL, 0);
            if (rc != KV_OK) {
                return rc;
            }
        }
    }
    return KV_OK;
}

/* Encodes the batch into e->wbuf (with its commit record) and e->overlay;
 * *records_out is the number of data records (0: nothing to write). */
static int batch_encode(struct bc_engine *e, const struct stor_batch *b, uint32_t *records_out)
{
    uint64_t first_seq = e->next_seq;
    struct stor_batch_op op;
    size_t pos = 0;
    int rc;
    while ((rc = stor_batch_next(b, &pos, &op)) == KV_OK) {
        if (op.op == STOR_OP_PUT) {
            rc = batch_add(e, BITCASK_PUT, op.key, op.key_size, op.value, op.value_size);
        } else if (op.op == STOR_OP_DELETE) {
            if (batch_key_live(e, op.key, op.key_size)) {
                rc = batch_add(e, BITCASK_TOMBSTONE, op.key, op.key_size, NULL, 0);
            }
        } else {
            rc = batch_delete_range(e, &op);
        }
        if (rc != KV_OK) {
            return rc;
        }
        if (e->next_seq - first_seq >= UINT32_MAX) {
            stor__set_errmsg(&e->base, "bitcask: batch expands to too many records");
            return KV_ETOOBIG;
        }
    }
    if (rc != KV_EOF) {
        return rc;
    }
    uint32_t records = (uint32_t)(e->next_seq - first_seq);
    *records_out = records;
    if (records == 0) {
        return KV_OK;
    }
    size_t n = stor__bitcask_record_size(0, BITCASK_COMMIT_VALUE_SIZE);
    rc = kv_buf_reserve(&e->wbuf, n);
    if (rc != KV_OK) {
        return rc;
    }
    uint8_t count[BITCASK_COMMIT_VALUE_SIZE];
    kv_store_u32(count, records);
    stor__bitcask_record_encode(e->wbuf.data + e->wbuf.size, BITCASK_COMMIT, first_seq, NULL, 0,
                                count, sizeof count);
    e->wbuf.size += n;
    return KV_OK;
}

/* Moves the overlay's entries into the keydir (the batch is on disk at
 * `base_offset` of the active file). Cannot fail: room was reserved. */
static void batch_apply(struct bc_engine *e, uint64_t base_offset)
{
    struct bc_file *f = e->active;
    pthread_rwlock_wrlock(&e->lock);
    for (size_t i = 0; i < e->overlay.cap; i++) {
        struct kd_entry *en = e->overlay.slots[i];
        if (en == NULL) {
            continue;
        }
        e->overlay.slots[i] = NULL;
        struct kd_entry *old;
        if (en->dead) {
            old = kd_remove(&e->kd, en->key, en->key_size, en->hash);
            entry_unref(en);
        } else {
            en->offset += base_offset;
            en->file = f;
            f->live_bytes += entry_record_size(en);
            old = kd_put(&e->kd, en);
        }
        if (old != NULL) {
            old->file->live_bytes -= entry_record_size(old);
            entry_unref(old);
        }
    }
    e->overlay.count = 0;
    if (e->next_seq - 1 > f->max_seq) {
        f->max_seq = e->next_seq - 1;
    }
    pthread_rwlock_unlock(&e->lock);
}

static int merge_if_needed(struct bc_engine *e);

static int bc_write(struct stor_engine *base, const struct stor_batch *b)
{
    struct bc_engine *e = (struct bc_engine *)base;
    pthread_mutex_lock(&e->write_lock);
    uint64_t seq_mark = e->next_seq;
    int rc = KV_OK;
    if (e->active->size >= e->file_bytes_max) {
        rc = roll(e);
        if (rc == KV_OK) {
            rc = merge_if_needed(e);
        }
    }
    kv_buf_clear(&e->wbuf);
    kd_clear(&e->overlay);
    uint32_t records = 0;
    if (rc == KV_OK) {
        rc = batch_encode(e, b, &records);
    }
    if (rc == KV_OK && records > 0) {
        /* Room for every new key before the write, so applying it after the
         * write cannot fail half-way. */
        rc = kd_reserve(&e->kd, e->overlay.count);
    }
    if (rc != KV_OK || records == 0) {
        e->next_seq = seq_mark;
        kd_clear(&e->overlay);
        if (rc == KV_ENOMEM) {
            stor__set_errmsg(base, "bitcask: out of memory encoding a batch");
        }
        goto out;
    }
    uint64_t offset = e->active->size;
    rc = write_all(e->active->fd, e->wbuf.data, e->wbuf.size, offset, "data file", base->errmsg);
    if (rc == KV_OK && e->sync == STOR_SYNC_ALWAYS) {
        rc = sync_file(e->active->fd, "data file", base->errmsg);
    }
    if (rc != KV_OK) {
        /* Poisoned from here (the generic layer); a reopen truncates any
         * partial batch at the tail. */
        kd_clear(&e->overlay);
        goto out;
    }
    e->active->size += e->wbuf.size;
    batch_apply(e, offset);
out:
    if (e->wbuf.cap > BITCASK_MERGE_FLUSH_BYTES * 4) {
        kv_buf_close(&e->wbuf); /* don't keep a huge batch's buffer around */
    }
    pthread_mutex_unlock(&e->write_lock);
    return rc;
}

/* ---- merge ------------------------------------------------------------------- */

/* One output file of a merge in progress. */
struct merge_out {
    struct bc_file *file;
    struct kv_buf data; /* records not yet written */
    struct kv_buf hint; /* the whole hint file */
    uint64_t entries;
};

/* Pairs of (keydir entry, its replacement in the output). */
struct merge_move {
    struct kd_entry *old;
    struct kd_entry *fresh;
};

struct merge {
    struct bc_engine *e;
    struct bc_file **inputs;
    size_t input_count;
    struct merge_out *outs;
    size_t out_count;
    struct merge_move *moves;
    size_t move_count;
    size_t move_cap;
    struct kv_buf rec;
};

static int merge_flush(struct merge *m, struct merge_out *o)
{
    int rc = write_all(o->file->fd, o->data.data, o->data.size, o->file->size - o->data.size,
                       "merge file", m->e->base.errmsg);
    kv_buf_clear(&o->data);
    return rc;
}

static int merge_new_out(struct merge *m)
{
    struct bc_engine *e = m->e;
    struct merge_out *outs = kv_realloc(m->outs, (m->out_count + 1) * sizeof *outs);
    if (outs == NULL) {
        return KV_ENOMEM;
    }
    m->outs = outs;
    struct merge_out *o = &outs[m->out_count];
    memset(o, 0, sizeof *o);
    kv_buf_init(&o->data);
    kv_buf_init(&o->hint);
    int fd;
    int rc = create_file(e, e->next_file_id, "merge.tmp", &fd, e->base.errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    o->file = file_new(e->next_file_id, FILE_MERGE, fd);
    if (o->file == NULL) {
        close(fd);
        char p[BITCASK_PATH_SIZE_MAX];
        file_path(e, e->next_file_id, "merge.tmp", p);
        unlink(p);
        return KV_ENOMEM;
    }
    e->next_file_id++;
    m->out_count++;
    uint8_t head[BITCASK_HINT_HEADER_SIZE];
    kv_store_u32(head, BITCASK_HINT_MAGIC);
    kv_store_u32(head + 4, BITCASK_HINT_VERSION);
    kv_store_u32(head + 8, o->file->id);
    return kv_buf_append(&o->hint, head, sizeof head);
}

static int hint_add(struct merge_out *o, const struct kd_entry *en)
{
    uint8_t h[BITCASK_HINT_ENTRY_SIZE];
    h[0] = (uint8_t)en->key_size;
    h[1] = (uint8_t)(en->key_size >> 8);
    kv_store_u32(h + 2, en->value_size);
    kv_store_u64(h + 6, en->offset);
    kv_store_u64(h + 14, en->seq);
    int rc = kv_buf_reserve(&o->hint, sizeof h + en->key_size);
    if (rc == KV_OK) {
        rc = kv_buf_append(&o->hint, h, sizeof h);
    }
    if (rc == KV_OK) {
        rc = kv_buf_append(&o->hint, en->key, en->key_size);
    }
    o->entries++;
    return rc;
}

/* Copies the record of `en` (in an input file) to the current output. */
static int merge_copy(struct merge *m, struct kd_entry *en)
{
    struct bc_engine *e = m->e;
    if (m->move_count == m->move_cap) {
        size_t cap = m->move_cap ? m->move_cap * 2 : 64;
        struct merge_move *moves = kv_realloc(m->moves, cap * sizeof *moves);
        if (moves == NULL) {
            return KV_ENOMEM;
        }
        m->moves = moves;
        m->move_cap = cap;
    }
    int rc = read_record(&e->base, en, en->file, en->offset, &m->rec);
    if (rc != KV_OK) {
        return rc;
    }
    struct merge_out *o = m->out_count ? &m->outs[m->out_count - 1] : NULL;
    if (o == NULL || o->file->size >= e->file_bytes_max) {
        rc = merge_new_out(m);
        if (rc != KV_OK) {
            return rc;
        }
        o = &m->outs[m->out_count - 1];
    }
    struct kd_entry *fresh = entry_new(en->key, en->key_size, en->hash);
    if (fresh == NULL) {
        return KV_ENOMEM;
    }
    fresh->value_size = en->value_size;
    fresh->seq = en->seq;
    fresh->offset = o->file->size;
    fresh->file = o->file;
    m->moves[m->move_count].old = en;
    m->moves[m->move_count].fresh = fresh;
    m->move_count++;
    rc = kv_buf_append(&o->data, m->rec.data, m->rec.size);
    if (rc != KV_OK) {
        return rc;
    }
    o->file->size += m->rec.size;
    o->file->live_bytes += m->rec.size;
    if (en->seq > o->file->max_seq) {
        o->file->max_seq = en->seq;
    }
    rc = hint_add(o, fresh);
    if (rc == KV_OK && o->data.size >= BITCASK_MERGE_FLUSH_BYTES) {
        rc = merge_flush(m, o);
    }
    return rc;
}

/* Flushes, writes the hints, syncs all outputs. */
static int merge_finish_outputs(struct merge *m)
{
    struct bc_engine *e = m->e;
    for (size_t i = 0; i < m->out_count; i++) {
        struct merge_out *o = &m->outs[i];
        int rc = merge_flush(m, o);
        if (rc == KV_OK) {
            rc = sync_file(o->file->fd, "merge file", e->base.errmsg);
        }
        uint8_t t[BITCASK_HINT_TRAILER_SIZE];
        kv_store_u32(t, BITCASK_HINT_MAGIC);
        kv_store_u64(t + 4, o->entries);
        kv_store_u32(t + 12, 0);
        if (rc == KV_OK) {
            rc = kv_buf_append(&o->hint, t, sizeof t);
        }
        if (rc != KV_OK) {
            return rc;
        }
        kv_store_u32(o->hint.data + o->hint.size - 4, kv_crc32c(0, o->hint.data, o->hint.size - 4));
        int fd;
        rc = create_file(e, o->file->id, "hint.tmp", &fd, e->base.errmsg);
        if (rc != KV_OK) {
            return rc;
        }
        rc = write_all(fd, o->hint.data, o->hint.size, 0, "hint file", e->base.errmsg);
        if (rc == KV_OK) {
            rc = sync_file(fd, "hint file", e->base.errmsg);
        }
        close(fd);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* Renames each output's temporary files to their final names. */
static int merge_rename(struct merge *m)
{
    static const char *const names[][2] = {{"merge.tmp", "merge"}, {"hint.tmp", "hint"}};
    for (size_t i = 0; i < m->out_count; i++) {
        for (size_t k = 0; k < 2; k++) {
            char from[BITCASK_PATH_SIZE_MAX];
            char to[BITCASK_PATH_SIZE_MAX];
            file_path(m->e, m->outs[i].file->id, names[k][0], from);
            file_path(m->e, m->outs[i].file->id, names[k][1], to);
            if (rename(from, to) != 0) {
                int err = errno;
                snprintf(m->e->base.errmsg, KV_ERRMSG_SIZE, "bitcask: rename %s: %s", from,
                         strerror(err));
                return KV_EIO;
            }
        }
    }
    if (stor__fsync_dir(m->e->path) != KV_OK) {
        snprintf(m->e->base.errmsg, KV_ERRMSG_SIZE, "bitcask: fsync directory %s failed",
                 m->e->path);
        return KV_EIO;
    }
    return KV_OK;
}

static int cmp_max_seq(const void *a, const void *b)
{
    const struct bc_file *fa = *(struct bc_file *const *)a;
    const struct bc_file *fb = *(struct bc_file *const *)b;
    return fa->max_seq < fb->max_seq ? -1 : fa->max_seq > fb->max_seq;
}

/* The merge is durable: point the keydir at the outputs, swap the file
 * table, and unlink the inputs oldest-content first (see the doc for why
 * that order never resurrects a deleted key). Cannot fail. */
static void merge_publish(struct merge *m)
{
    struct bc_engine *e = m->e;
    pthread_rwlock_wrlock(&e->lock);
    for (size_t i = 0; i < m->move_count; i++) {
        struct kd_entry *old = m->moves[i].old;
        size_t slot = kd_probe(&e->kd, old->key, old->key_size, old->hash);
        KV_ASSERT(e->kd.slots[slot] == old);
        e->kd.slots[slot] = m->moves[i].fresh;
        m->moves[i].fresh = NULL;
        entry_unref(old);
    }
    size_t kept = 0;
    for (size_t i = 0; i < e->file_count; i++) {
        if (!e->files[i]->merging) {
            e->files[kept++] = e->files[i];
        }
    }
    e->file_count = kept;
    for (size_t i = 0; i < m->out_count; i++) {
        int rc = table_add(e, m->outs[i].file); /* room reserved: cannot fail */
        KV_ASSERT(rc == KV_OK);
        m->outs[i].file = NULL;
    }
    pthread_rwlock_unlock(&e->lock);
    qsort(m->inputs, m->input_count, sizeof *m->inputs, cmp_max_seq);
    for (size_t i = 0; i < m->input_count; i++) {
        struct bc_file *f = m->inputs[i];
        char p[BITCASK_PATH_SIZE_MAX];
        /* The hint goes first: a crash in between leaves a merge file
         * without a hint (scanned), never an orphan hint. */
        file_path(e, f->id, "hint", p);
        unlink(p); /* a write file has none */
        file_path(e, f->id, kind_suffix(f->kind), p);
        if (unlink(p) != 0) {
            kv_warn("bitcask: unlink path=%s err=%s", p, strerror(errno));
        }
        file_unref(f); /* the table's reference; views may hold more */
    }
    if (stor__fsync_dir(e->path) != KV_OK) {
        kv_warn("bitcask: fsync dir path=%s failed after merge", e->path);
    }
}

static void merge_close(struct merge *m, int published)
{
    for (size_t i = 0; i < m->move_count; i++) {
        entry_unref(m->moves[i].fresh);
    }
    for (size_t i = 0; i < m->out_count; i++) {
        struct merge_out *o = &m->outs[i];
        if (o->file != NULL) {
            char p[BITCASK_PATH_SIZE_MAX];
            file_path(m->e, o->file->id, "merge.tmp", p);
            unlink(p);
            file_path(m->e, o->file->id, "hint.tmp", p);
            unlink(p);
            file_unref(o->file);
        }
        kv_buf_close(&o->data);
        kv_buf_close(&o->hint);
    }
    if (!published) {
        for (size_t i = 0; i < m->input_count; i++) {
            m->inputs[i]->merging = 0;
        }
    }
    kv_free(m->outs);
    kv_free(m->moves);
    kv_free(m->inputs);
    kv_buf_close(&m->rec);
}

/* Merges every immutable file (all but the active one) into new merge files
 * holding only live records. Tombstones are dropped: every older record of a
 * key lives in an input, so nothing left on disk can resurrect it. Caller
 * holds write_lock. */
static int merge_run(struct bc_engine *e)
{
    struct merge m;
    memset(&m, 0, sizeof m);
    m.e = e;
    kv_buf_init(&m.rec);
    m.inputs = kv_malloc((e->file_count ? e->file_count : 1) * sizeof *m.inputs);
    if (m.inputs == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < e->file_count; i++) {
        if (e->files[i] != e->active) {
            e->files[i]->merging = 1;
            m.inputs[m.input_count++] = e->files[i];
        }
    }
    int rc = KV_OK;
    for (size_t i = 0; i < e->kd.cap && rc == KV_OK; i++) {
        struct kd_entry *en = e->kd.slots[i];
        if (en != NULL && en->file->merging) {
            rc = merge_copy(&m, en);
        }
    }
    if (rc == KV_OK) {
        rc = merge_finish_outputs(&m);
    }
    if (rc == KV_OK) {
        pthread_rwlock_wrlock(&e->lock);
        rc = table_reserve(e, m.out_count);
        pthread_rwlock_unlock(&e->lock);
    }
    if (rc == KV_OK) {
        rc = merge_rename(&m);
    }
    if (rc == KV_OK) {
        uint64_t before = 0;
        for (size_t i = 0; i < m.input_count; i++) {
            before += m.inputs[i]->size;
        }
        kv_info(
            "bitcask: merged path=%s inputs=%zu outputs=%zu live_records=%zu bytes_before=%" PRIu64,
            e->path, m.input_count, m.out_count, m.move_count, before);
        merge_publish(&m);
    } else if (rc == KV_ENOMEM) {
        stor__set_errmsg(&e->base, "bitcask: out of memory during merge");
    }
    merge_close(&m, rc == KV_OK);
    return rc;
}

/* Auto-merge after a roll when enough of the immutable bytes are dead. A
 * failed merge changes nothing, so it is logged, not returned. */
static int merge_if_needed(struct bc_engine *e)
{
    uint64_t total = 0;
    uint64_t live = 0;
    for (size_t i = 0; i < e->file_count; i++) {
        if (e->files[i] != e->active) {
            total += e->files[i]->size;
            live += e->files[i]->live_bytes;
        }
    }
    if (total < BITCASK_MERGE_MIN_BYTES || (total - live) * 100u < total * BITCASK_MERGE_DEAD_PCT) {
        return KV_OK;
    }
    int rc = merge_run(e);
    if (rc != KV_OK) {
        kv_warn("bitcask: auto-merge failed path=%s err=%s msg=%s", e->path, kv_strerror(rc),
                e->base.errmsg);
        e->base.errmsg[0] = '\0';
    }
    return KV_OK;
}

static int bc_compact(struct stor_engine *base)
{
    struct bc_engine *e = (struct bc_engine *)base;
    pthread_mutex_lock(&e->write_lock);
    int rc = KV_OK;
    if (e->active->size > 0) {
        rc = roll(e); /* so the active file's dead records are merged too */
    }
    if (rc == KV_OK) {
        rc = merge_run(e);
    }
    pthread_mutex_unlock(&e->write_lock);
    return rc;
}

/* ---- recovery -------------------------------------------------------------- */

/* Sequential reader over one file, used by the start-up scan. */
struct scan {
    struct bc_file *file;
    uint64_t file_size;
    struct kv_buf win; /* bytes [win_off, win_off + win.size) of the file */
    uint64_t win_off;
};

/* Makes [off, off + need) available (clamped at EOF); *p and *avail give
 * the bytes from `off`. */
static int scan_window(struct scan *s, uint64_t off, size_t need, const uint8_t **p, size_t *avail)
{
    if (off < s->win_off || off + need > s->win_off + s->win.size) {
        size_t want = need > BITCASK_SCAN_CHUNK_BYTES ? need : BITCASK_SCAN_CHUNK_BYTES;
        if (want > s->file_size - off) {
            want = (size_t)(s->file_size - off);
        }
        kv_buf_clear(&s->win);
        int rc = kv_buf_reserve(&s->win, want);
        if (rc != KV_OK) {
            return rc;
        }
        size_t got;
        rc = read_full(s->file->fd, s->win.data, want, off, &got);
        if (rc != KV_OK) {
            return rc;
        }
        s->win.size = got;
        s->win_off = off;
    }
    *p = s->win.data + (off - s->win_off);
    *avail = (size_t)(s->win_off + s->win.size - off);
    return KV_OK;
}

/* Decodes the record at `off`: KV_OK, KV_EOF (runs past the end of the
 * file), KV_ECORRUPT, or an I/O error. */
static int scan_record(struct scan *s, uint64_t off, struct bitcask_record *r)
{
    const uint8_t *p;
    size_t avail;
    int rc = scan_window(s, off, BITCASK_RECORD_HEADER_SIZE, &p, &avail);
    if (rc != KV_OK) {
        return rc;
    }
    rc = stor__bitcask_record_decode(p, avail, r);
    if (rc == KV_EOF && r->record_size > 0 && off + r->record_size <= s->file_size) {
        rc = scan_window(s, off, r->record_size, &p, &avail);
        if (rc == KV_OK) {
            rc = stor__bitcask_record_decode(p, avail, r);
        }
    }
    return rc;
}

/* Applies one recovered record to the keydir: the newest seq of a key wins,
 * whatever file it is in. Tombstones stay as dead entries until the end. */
static int recover_apply(struct bc_engine *e, struct bc_file *f, const uint8_t *key,
                         size_t key_size, uint32_t value_size, uint64_t offset, uint64_t seq,
                         int dead)
{
    uint64_t hash = kv_hash64(key, key_size);
    struct kd_entry *cur = kd_find(&e->kd, key, key_size, hash);
    if (seq >= e->next_seq) {
        e->next_seq = seq + 1;
    }
    if (seq > f->max_seq) {
        f->max_seq = seq;
    }
    if (cur != NULL && cur->seq >= seq) {
        return KV_OK; /* an older record: dead on arrival */
    }
    int rc = kd_reserve(&e->kd, 1);
    struct kd_entry *en = rc == KV_OK ? entry_new(key, key_size, hash) : NULL;
    if (en == NULL) {
        snprintf(e->base.errmsg, KV_ERRMSG_SIZE, "bitcask: out of memory loading the keydir");
        return KV_ENOMEM;
    }
    en->value_size = value_size;
    en->offset = offset;
    en->seq = seq;
    en->file = f;
    en->dead = (uint8_t)dead;
    if (!dead) {
        f->live_bytes += entry_record_size(en);
    }
    struct kd_entry *old = kd_put(&e->kd, en);
    if (old != NULL) {
        if (!old->dead) {
            old->file->live_bytes -= entry_record_size(old);
        }
        entry_unref(old);
    }
    return KV_OK;
}

/* Pending records of a write file's unfinished batch: `recs` holds
 * struct pending, `keys` their keys back to back. */
struct pending {
    uint64_t offset;
    uint64_t seq;
    size_t key_pos; /* in keys */
    uint32_t value_size;
    uint16_t key_size;
    uint8_t dead;
};

struct pendings {
    struct kv_buf recs;
    struct kv_buf keys;
};

/* Looks for any whole, valid record starting in (from, EOF): if one exists,
 * the damage at `from` is not a torn tail but corruption. */
static int valid_record_after(struct scan *s, uint64_t from, int *found)
{
    *found = 0;
    for (uint64_t off = from + 1; off + BITCASK_RECORD_HEADER_SIZE <= s->file_size; off++) {
        struct bitcask_record r;
        int rc = scan_record(s, off, &r);
        if (rc == KV_OK) {
            *found = 1;
            return KV_OK;
        }
        if (rc != KV_EOF && rc != KV_ECORRUPT) {
            return rc;
        }
    }
    return KV_OK;
}

static int recover_commit(struct bc_engine *e, struct bc_file *f, struct pendings *pend,
                          const struct bitcask_record *r)
{
    size_t count = pend->recs.size / sizeof(struct pending);
    const struct pending *ps = (const struct pending *)(const void *)pend->recs.data;
    if (kv_load_u32(r->value) != count || count == 0 || ps[0].seq != r->seq) {
        return KV_ECORRUPT;
    }
    for (size_t i = 0; i < count; i++) {
        if (ps[i].seq != r->seq + i) {
            return KV_ECORRUPT;
        }
        int rc = recover_apply(e, f, pend->keys.data + ps[i].key_pos, ps[i].key_size,
                               ps[i].value_size, ps[i].offset, ps[i].seq, ps[i].dead);
        if (rc != KV_OK) {
            return rc;
        }
    }
    if (r->seq + count > e->next_seq) {
        e->next_seq = r->seq + count;
    }
    kv_buf_clear(&pend->recs);
    kv_buf_clear(&pend->keys);
    return KV_OK;
}

/* Scans one data or merge file, applying whole batches (write files) or
 * every record (merge files). *good_end is the end of the last whole batch;
 * *bad_off where scanning stopped on damage (== size when none); *torn is 1
 * when the record there has a sound header but runs past the end of the
 * file (a write cut short, not garbage). */
static int scan_records(struct bc_engine *e, struct scan *s, uint64_t *good_end, uint64_t *bad_off,
                        int *torn, struct pendings *pend)
{
    struct bc_file *f = s->file;
    uint64_t off = 0;
    *good_end = 0;
    *torn = 0;
    while (off < s->file_size) {
        struct bitcask_record r;
        int rc = scan_record(s, off, &r);
        if (rc == KV_EOF || rc == KV_ECORRUPT) {
            *torn = rc == KV_EOF;
            break;
        }
        if (rc != KV_OK) {
            return rc;
        }
        if (f->kind == FILE_MERGE) {
            if (r.type != BITCASK_PUT) {
                break;
            }
            rc = recover_apply(e, f, r.key, r.key_size, r.value_size, off, r.seq, 0);
            *good_end = off + r.record_size;
        } else if (r.type == BITCASK_COMMIT) {
            rc = recover_commit(e, f, pend, &r);
            if (rc == KV_ECORRUPT) {
                break;
            }
            *good_end = off + r.record_size;
        } else {
            struct pending p = {.offset = off,
                                .seq = r.seq,
                                .key_pos = pend->keys.size,
                                .value_size = r.value_size,
                                .key_size = (uint16_t)r.key_size,
                                .dead = r.type == BITCASK_TOMBSTONE};
            rc = kv_buf_append(&pend->keys, r.key, r.key_size);
            if (rc == KV_OK) {
                rc = kv_buf_append(&pend->recs, &p, sizeof p);
            }
        }
        if (rc != KV_OK) {
            return rc;
        }
        off += r.record_size;
    }
    *bad_off = off;
    return KV_OK;
}

static int scan_file(struct bc_engine *e, struct bc_file *f, int newest_write, char *errmsg)
{
    struct scan s = {.file = f, .file_size = f->size, .win_off = 0};
    struct pendings pend;
    kv_buf_init(&s.win);
    kv_buf_init(&pend.recs);
    kv_buf_init(&pend.keys);
    uint64_t good_end;
    uint64_t bad_off;
    int torn;
    int rc = scan_records(e, &s, &good_end, &bad_off, &torn, &pend);
    char p[BITCASK_PATH_SIZE_MAX];
    file_path(e, f->id, kind_suffix(f->kind), p);
    if (rc == KV_OK && good_end < f->size) {
        int found = 0;
        if (newest_write && bad_off < f->size && !torn) {
            rc = valid_record_after(&s, bad_off, &found);
        }
        if (rc != KV_OK) {
            /* I/O error, reported below */
        } else if (!newest_write || found) {
            snprintf(errmsg, KV_ERRMSG_SIZE,
                     "bitcask: %s: bad or incomplete record at byte offset %" PRIu64
                     " (file size %" PRIu64 ")",
                     p, bad_off < f->size ? bad_off : good_end, f->size);
            rc = KV_ECORRUPT;
        } else {
            kv_warn("bitcask: truncating torn tail path=%s offset=%" PRIu64
                    " dropped_bytes=%" PRIu64,
                    p, good_end, f->size - good_end);
            if (ftruncate(f->fd, (off_t)good_end) != 0 || fdatasync(f->fd) != 0) {
                snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: truncate %s: %s", p, strerror(errno));
                rc = KV_EIO;
            }
            f->size = good_end;
        }
    }
    if (rc == KV_EIO && errmsg[0] == '\0') {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: read %s failed", p);
    }
    kv_buf_close(&s.win);
    kv_buf_close(&pend.recs);
    kv_buf_close(&pend.keys);
    return rc;
}

/* Checks (apply 0) or applies (apply 1) the entries of a hint file whose
 * `n` bytes at `d` passed their checksum. */
static int hint_walk(struct bc_engine *e, struct bc_file *f, const uint8_t *d, size_t n, int apply)
{
    uint64_t entries = 0;
    size_t end = n - BITCASK_HINT_TRAILER_SIZE;
    size_t pos = BITCASK_HINT_HEADER_SIZE;
    while (pos < end) {
        if (end - pos < BITCASK_HINT_ENTRY_SIZE) {
            return KV_ECORRUPT;
        }
        const uint8_t *x = d + pos;
        uint32_t ks = (uint32_t)x[0] | (uint32_t)x[1] << 8;
        uint32_t vs = kv_load_u32(x + 2);
        uint64_t off = kv_load_u64(x + 6);
        if (ks == 0 || ks > STOR_KEY_SIZE_MAX || vs > STOR_VALUE_SIZE_MAX ||
            end - pos - BITCASK_HINT_ENTRY_SIZE < ks || off > f->size ||
            f->size - off < stor__bitcask_record_size(ks, vs)) {
            return KV_ECORRUPT;
        }
        if (apply) {
            int rc = recover_apply(e, f, x + BITCASK_HINT_ENTRY_SIZE, ks, vs, off,
                                   kv_load_u64(x + 14), 0);
            if (rc != KV_OK) {
                return rc;
            }
        }
        pos += BITCASK_HINT_ENTRY_SIZE + ks;
        entries++;
    }
    return entries == kv_load_u64(d + n - 12) ? KV_OK : KV_ECORRUPT;
}

/* Loads a merge file's hint; KV_ECORRUPT (or KV_ENOENT) means "scan
 * instead", anything else fails the open. */
static int load_hint(struct bc_engine *e, struct bc_file *f)
{
    char p[BITCASK_PATH_SIZE_MAX];
    file_path(e, f->id, "hint", p);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return KV_ENOENT;
    }
    struct kv_buf h;
    kv_buf_init(&h);
    off_t size = lseek(fd, 0, SEEK_END);
    int rc = KV_ECORRUPT;
    size_t got = 0;
    if (size >= (off_t)(BITCASK_HINT_HEADER_SIZE + BITCASK_HINT_TRAILER_SIZE)) {
        rc = kv_buf_reserve(&h, (size_t)size);
        if (rc == KV_OK) {
            rc = read_full(fd, h.data, (size_t)size, 0, &got);
        }
        if (rc == KV_OK && got != (size_t)size) {
            rc = KV_ECORRUPT;
        }
    }
    close(fd);
    const uint8_t *d = h.data;
    size_t n = got;
    if (rc == KV_OK &&
        (kv_load_u32(d) != BITCASK_HINT_MAGIC || kv_load_u32(d + 4) != BITCASK_HINT_VERSION ||
         kv_load_u32(d + 8) != f->id || kv_load_u32(d + n - 16) != BITCASK_HINT_MAGIC ||
         kv_crc32c(0, d, n - 4) != kv_load_u32(d + n - 4))) {
        rc = KV_ECORRUPT;
    }
    /* The checksum held; still check every entry against the data file
     * before applying any, so a hint can never point the keydir outside it
     * nor be half applied when it turns out bad. */
    if (rc == KV_OK) {
        rc = hint_walk(e, f, d, n, 0);
    }
    if (rc == KV_OK) {
        rc = hint_walk(e, f, d, n, 1);
    }
    kv_buf_close(&h);
    return rc;
}

/* A directory entry of ours: id and suffix parsed from the name. */
static int parse_name(const char *name, uint32_t *id, const char **suffix)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (name[10] != '.' || v > UINT32_MAX - 1) {
        return 0;
    }
    *id = (uint32_t)v;
    *suffix = name + 11;
    return 1;
}

/* Opens every data and merge file into the table; removes leftovers of an
 * interrupted merge (*.tmp) and hints without their merge file. */
static int list_files(struct bc_engine *e, char *errmsg)
{
    DIR *d = opendir(e->path);
    if (d == NULL) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: opendir %s: %s", e->path, strerror(err));
        return kv_err_from_errno(err);
    }
    int rc = KV_OK;
    struct dirent *de;
    while (rc == KV_OK && (de = readdir(d)) != NULL) {
        uint32_t id;
        const char *suffix;
        if (!parse_name(de->d_name, &id, &suffix)) {
            continue;
        }
        char p[BITCASK_PATH_SIZE_MAX];
        snprintf(p, sizeof p, "%s/%s", e->path, de->d_name);
        if (strcmp(suffix, "merge.tmp") == 0 || strcmp(suffix, "hint.tmp") == 0) {
            kv_info("bitcask: removing unfinished merge output path=%s", p);
            unlink(p);
            continue;
        }
        if (id >= e->next_file_id) {
            e->next_file_id = id + 1;
        }
        int is_data = strcmp(suffix, "data") == 0;
        if (!is_data && strcmp(suffix, "merge") != 0) {
            continue;
        }
        if (e->file_count >= BITCASK_FILE_COUNT_MAX) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: %s holds more than %u files", e->path,
                     BITCASK_FILE_COUNT_MAX);
            rc = KV_ETOOBIG;
            break;
        }
        int fd = open(p, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: open %s: %s", p, strerror(err));
            rc = kv_err_from_errno(err);
            break;
        }
        struct bc_file *f = file_new(id, is_data ? FILE_WRITE : FILE_MERGE, fd);
        off_t size = lseek(fd, 0, SEEK_END);
        if (f == NULL || size < 0 || table_add(e, f) != KV_OK) {
            rc = f == NULL || size >= 0 ? KV_ENOMEM : KV_EIO;
            kv_free(f);
            close(fd);
            break;
        }
        f->size = (uint64_t)size;
    }
    closedir(d);
    return rc;
}

static int recover(struct bc_engine *e, char *errmsg)
{
    int rc = list_files(e, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct bc_file *newest_write = NULL;
    for (size_t i = 0; i < e->file_count; i++) {
        if (e->files[i]->kind == FILE_WRITE) {
            newest_write = e->files[i];
        }
    }
    for (size_t i = 0; i < e->file_count && rc == KV_OK; i++) {
        struct bc_file *f = e->files[i];
        if (f->kind == FILE_MERGE) {
            rc = load_hint(e, f);
            if (rc == KV_OK) {
                continue;
            }
            if (rc != KV_ECORRUPT && rc != KV_ENOENT) {
                snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: loading hint of file %010" PRIu32 ": %s",
                         f->id, kv_strerror(rc));
                return rc;
            }
            /* Nothing of a bad hint was applied (hint_walk checks first). */
            kv_warn("bitcask: hint unusable, scanning path=%s id=%" PRIu32 " reason=%s", e->path,
                    f->id, rc == KV_ENOENT ? "missing" : "corrupt");
        }
        rc = scan_file(e, f, f == newest_write, errmsg);
    }
    if (rc != KV_OK) {
        return rc;
    }
    /* Drop the tombstones recovery kept to decide between files. */
    for (size_t i = 0; i < e->kd.cap;) {
        struct kd_entry *en = e->kd.slots[i];
        if (en != NULL && en->dead) {
            entry_unref(kd_remove_slot(&e->kd, i));
            continue; /* a shifted entry may now sit in slot i */
        }
        i++;
    }
    if (newest_write != NULL) {
        e->active = newest_write; /* rolled by the next write if full */
        return KV_OK;
    }
    rc = roll(e);
    if (rc != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s", e->base.errmsg);
    }
    return rc;
}

/* ---- vtable -------------------------------------------------------------- */

static void engine_free(struct bc_engine *e)
{
    kd_close(&e->kd);
    kd_close(&e->overlay);
    for (size_t i = 0; i < e->file_count; i++) {
        file_unref(e->files[i]);
    }
    kv_free(e->files);
    kv_buf_close(&e->wbuf);
    stor__unlock_dir(e->lock_fd);
    pthread_mutex_destroy(&e->write_lock);
    pthread_rwlock_destroy(&e->lock);
    kv_free(e);
}

static int bc_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    if (strlen(o->path) + 32 > BITCASK_PATH_SIZE_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: path too long: %s", o->path);
        return KV_EINVAL;
    }
    struct bc_engine *e = kv_calloc(1, sizeof *e);
    if (e == NULL) {
        return KV_ENOMEM;
    }
    e->base.ops = &stor__bitcask_ops;
    snprintf(e->path, sizeof e->path, "%s", o->path);
    e->lock_fd = -1;
    e->sync = o->sync;
    e->file_bytes_max = o->file_bytes_max ? o->file_bytes_max : BITCASK_FILE_BYTES_DEFAULT;
    if (e->file_bytes_max < BITCASK_FILE_BYTES_MIN) {
        e->file_bytes_max = BITCASK_FILE_BYTES_MIN;
    }
    e->next_file_id = 1;
    e->next_seq = 1;
    pthread_mutex_init(&e->write_lock, NULL);
    pthread_rwlock_init(&e->lock, NULL);
    kd_init(&e->kd);
    kd_init(&e->overlay);
    kv_buf_init(&e->wbuf);
    int rc = stor__mkdirs(o->path, errmsg);
    if (rc == KV_OK) {
        rc = stor__lock_dir(o->path, &e->lock_fd, errmsg);
    }
    if (rc == KV_OK) {
        rc = recover(e, errmsg);
    }
    if (rc != KV_OK) {
        engine_free(e);
        return rc;
    }
    kv_info("bitcask: opened path=%s files=%zu keys=%zu next_seq=%" PRIu64, e->path, e->file_count,
            e->kd.count, e->next_seq);
    *out = &e->base;
    return KV_OK;
}

static void bc_close(struct stor_engine *base)
{
    struct bc_engine *e = (struct bc_engine *)base;
    if (e->sync == STOR_SYNC_NONE && e->active != NULL && fdatasync(e->active->fd) != 0) {
        kv_warn("bitcask: fdatasync at close failed path=%s err=%s", e->path, strerror(errno));
    }
    engine_free(e);
}

static int bc_get(struct stor_engine *base, const struct stor_view *view, const void *key,
                  size_t key_size, struct kv_buf *value)
{
    struct bc_engine *e = (struct bc_engine *)base;
    uint64_t hash = kv_hash64(key, key_size);
    struct kd_entry *en;
    if (view != NULL) {
        const struct bc_view *v = (const struct bc_view *)view;
        struct keydir kd = {.slots = v->slots, .cap = v->cap};
        en = kd_find(&kd, key, key_size, hash);
        if (en == NULL) {
            return KV_ENOTFOUND;
        }
        atomic_fetch_add(&en->refs, 1);
        file_ref(en->file); /* the view holds it too; keeps pairing simple */
    } else {
        pthread_rwlock_rdlock(&e->lock);
        en = kd_find(&e->kd, key, key_size, hash);
        if (en != NULL) {
            atomic_fetch_add(&en->refs, 1);
            file_ref(en->file);
        }
        pthread_rwlock_unlock(&e->lock);
        if (en == NULL) {
            return KV_ENOTFOUND;
        }
    }
    int rc = read_record(base, en, en->file, en->offset, value);
    if (rc == KV_OK) {
        memmove(value->data, value->data + BITCASK_RECORD_HEADER_SIZE + en->key_size,
                en->value_size);
        value->size = en->value_size;
    }
    file_unref(en->file);
    entry_unref(en);
    return rc;
}

static int bc_view_new(struct stor_engine *base, struct stor_view **out)
{
    struct bc_engine *e = (struct bc_engine *)base;
    struct bc_view *v = kv_calloc(1, sizeof *v);
    if (v == NULL) {
        return KV_ENOMEM;
    }
    pthread_rwlock_rdlock(&e->lock);
    v->cap = e->kd.cap;
    v->slots = kv_malloc((v->cap ? v->cap : 1) * sizeof *v->slots);
    v->files = kv_malloc((e->file_count ? e->file_count : 1) * sizeof *v->files);
    if (v->slots == NULL || v->files == NULL) {
        pthread_rwlock_unlock(&e->lock);
        kv_free(v->slots);
        kv_free(v->files);
        kv_free(v);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < v->cap; i++) {
        v->slots[i] = e->kd.slots[i];
        if (v->slots[i] != NULL) {
            atomic_fetch_add(&v->slots[i]->refs, 1);
        }
    }
    v->file_count = e->file_count;
    for (size_t i = 0; i < e->file_count; i++) {
        v->files[i] = e->files[i];
        file_ref(v->files[i]);
    }
    pthread_rwlock_unlock(&e->lock);
    *out = &v->base;
    return KV_OK;
}

static void bc_view_free(struct stor_view *view)
{
    struct bc_view *v = (struct bc_view *)view;
    for (size_t i = 0; i < v->cap; i++) {
        entry_unref(v->slots[i]);
    }
    for (size_t i = 0; i < v->file_count; i++) {
        file_unref(v->files[i]);
    }
    kv_free(v->slots);
    kv_free(v->files);
    kv_free(v);
}

static int bc_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                       size_t start_size, const void *end, size_t end_size, struct stor_iter **out)
{
    struct bc_iter *it = kv_calloc(1, sizeof *it);
    if (it == NULL) {
        return KV_ENOMEM;
    }
    kv_buf_init(&it->start);
    kv_buf_init(&it->end);
    kv_buf_init(&it->rec);
    it->view = (const struct bc_view *)view;
    it->has_start = start != NULL;
    it->has_end = end != NULL;
    if ((start != NULL && kv_buf_set(&it->start, start, start_size) != KV_OK) ||
        (end != NULL && kv_buf_set(&it->end, end, end_size) != KV_OK)) {
        kv_buf_close(&it->start);
        kv_free(it);
        return KV_ENOMEM;
    }
    *out = &it->base;
    return KV_OK;
}

static int bc_iter_next(struct stor_iter *iter, const uint8_t **key, size_t *key_size,
                        const uint8_t **value, size_t *value_size)
{
    struct bc_iter *it = (struct bc_iter *)iter;
    const struct bc_view *v = it->view;
    while (it->slot < v->cap) {
        const struct kd_entry *en = v->slots[it->slot++];
        if (en == NULL ||
            !stor__key_in_range(en->key, en->key_size, it->has_start ? it->start.data : NULL,
                                it->start.size, it->has_end ? it->end.data : NULL, it->end.size)) {
            continue;
        }
        int rc = read_record(iter->engine, en, en->file, en->offset, &it->rec);
        if (rc != KV_OK) {
            it->slot--; /* retrying returns the same error, never skips */
            return rc;
        }
        *key = en->key;
        *key_size = en->key_size;
        *value = it->rec.data + BITCASK_RECORD_HEADER_SIZE + en->key_size;
        *value_size = en->value_size;
        return KV_OK;
    }
    return KV_EOF;
}

static void bc_iter_free(struct stor_iter *iter)
{
    struct bc_iter *it = (struct bc_iter *)iter;
    kv_buf_close(&it->start);
    kv_buf_close(&it->end);
    kv_buf_close(&it->rec);
    kv_free(it);
}

static int bc_stats(struct stor_engine *base, struct stor_stats *out)
{
    struct bc_engine *e = (struct bc_engine *)base;
    pthread_rwlock_rdlock(&e->lock);
    out->key_count = e->kd.count;
    pthread_rwlock_unlock(&e->lock);
    out->key_count_exact = 1;
    out->disk_bytes = 0;
    int rc = stor__dir_bytes(e->path, &out->disk_bytes);
    if (rc != KV_OK) {
        stor__set_errmsg(base, "bitcask: stat %s: %s", e->path, kv_strerror(rc));
    }
    return rc;
}

const struct stor_engine_ops stor__bitcask_ops = {
    .name = "bitcask",
    .ordered = 0,
    .open = bc_open,
    .close = bc_close,
    .get = bc_get,
    .write = bc_write,
    .view_new = bc_view_new,
    .view_free = bc_view_free,
    .iter_new = bc_iter_new,
    .iter_next = bc_iter_next,
    .iter_free = bc_iter_free,
    .stats = bc_stats,
    .compact = bc_compact,
};
