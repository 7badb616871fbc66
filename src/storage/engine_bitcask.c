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
 * This file holds the record codec, the data files, the write path, reads,
 * views, iterators, stats and the vtable. The keydir is in
 * bitcask_keydir.c, start-up in bitcask_recover.c, merge and hint writing
 * in bitcask_merge.c; what they share is in bitcask_int.h, which also
 * states the locking rules. The format and the crash argument are in
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
#include <string.h>
#include <unistd.h>

/* Data files roll at this size unless the options say otherwise. */
#define BITCASK_FILE_BYTES_DEFAULT (256ull * 1024u * 1024u)
/* Smaller settings are raised to this (tests use small files; a file per
 * record would only burn file descriptors). */
#define BITCASK_FILE_BYTES_MIN 256u

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

/* ---- files ------------------------------------------------------------------ */

static void file_ref(struct bc_file *f)
{
    atomic_fetch_add(&f->refs, 1);
}

void stor__bitcask_file_unref(struct bc_file *f)
{
    if (f != NULL && atomic_fetch_sub(&f->refs, 1) == 1) {
        close(f->fd);
        kv_free(f);
    }
}

const char *stor__bitcask_kind_suffix(enum file_kind kind)
{
    return kind == FILE_WRITE ? "data" : "merge";
}

void stor__bitcask_file_path(const struct bc_engine *e, uint32_t id, const char *suffix, char *out)
{
    snprintf(out, BITCASK_PATH_SIZE_MAX, "%s/%010" PRIu32 ".%s", e->path, id, suffix);
}

/* Maps a failed write/fsync errno: no space is KV_ENOSPC, anything else
 * KV_EIO (the generic layer poisons the engine on either). */
static int write_err(int err)
{
    return err == ENOSPC || err == EDQUOT ? KV_ENOSPC : KV_EIO;
}

int stor__bitcask_write_all(int fd, const uint8_t *p, size_t n, uint64_t off, const char *what,
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
int stor__bitcask_read_full(int fd, uint8_t *p, size_t n, uint64_t off, size_t *got)
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

int stor__bitcask_sync_file(int fd, const char *what, char *errmsg)
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
int stor__bitcask_table_reserve(struct bc_engine *e, size_t extra)
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
int stor__bitcask_table_add(struct bc_engine *e, struct bc_file *f)
{
    int rc = stor__bitcask_table_reserve(e, 1);
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

struct bc_file *stor__bitcask_file_new(uint32_t id, enum file_kind kind, int fd)
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
int stor__bitcask_create_file(struct bc_engine *e, uint32_t id, const char *suffix, int *fd_out,
                              char *errmsg)
{
    char p[BITCASK_PATH_SIZE_MAX];
    stor__bitcask_file_path(e, id, suffix, p);
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
int stor__bitcask_roll(struct bc_engine *e)
{
    char *errmsg = stor__errbuf(&e->base);
    if (e->file_count >= BITCASK_FILE_COUNT_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: %s holds %u files, the limit; compact", e->path,
                 BITCASK_FILE_COUNT_MAX);
        return KV_EBUSY;
    }
    if (e->active != NULL && e->sync == STOR_SYNC_NONE) {
        int rc = stor__bitcask_sync_file(e->active->fd, "data file", errmsg);
        if (rc != KV_OK) {
            return rc;
        }
    }
    int fd;
    int rc = stor__bitcask_create_file(e, e->next_file_id, "data", &fd, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct bc_file *f = stor__bitcask_file_new(e->next_file_id, FILE_WRITE, fd);
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
    rc = stor__bitcask_table_add(e, f);
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
        stor__bitcask_file_path(e, e->next_file_id, "data", p);
        unlink(p);
    }
    return rc;
}

/* ---- reading a value ------------------------------------------------------- */

/* Reads and verifies the record of `en` into `rec`. */
int stor__bitcask_read_record(struct stor_engine *base, const struct kd_entry *en,
                              const struct bc_file *f, uint64_t offset, struct kv_buf *rec)
{
    size_t n = stor__bitcask_entry_record_size(en);
    kv_buf_clear(rec);
    int rc = kv_buf_reserve(rec, n);
    if (rc != KV_OK) {
        return rc;
    }
    size_t got;
    rc = stor__bitcask_read_full(f->fd, rec->data, n, offset, &got);
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
                         f->id, stor__bitcask_kind_suffix(f->kind), offset, kv_strerror(rc));
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
    if (rc == KV_OK && stor__bitcask_kd_find(&e->overlay, key, key_size, hash) == NULL) {
        /* Only a new key can grow (and so rehash) the overlay. */
        rc = stor__bitcask_kd_reserve(&e->overlay, 1);
    }
    struct kd_entry *en = rc == KV_OK ? stor__bitcask_entry_new(key, key_size, hash) : NULL;
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
    stor__bitcask_entry_unref(stor__bitcask_kd_put(&e->overlay, en));
    return KV_OK;
}

/* 1 when `key` is live as seen by the batch so far. */
static int batch_key_live(const struct bc_engine *e, const uint8_t *key, size_t key_size)
{
    uint64_t hash = kv_hash64(key, key_size);
    const struct kd_entry *en = stor__bitcask_kd_find(&e->overlay, key, key_size, hash);
    if (en != NULL) {
        return !en->dead;
    }
    return stor__bitcask_kd_find(&e->kd, key, key_size, hash) != NULL;
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
            stor__bitcask_kd_find(&e->overlay, en->key, en->key_size, en->hash) == NULL) {
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
            old = stor__bitcask_kd_remove(&e->kd, en->key, en->key_size, en->hash);
            stor__bitcask_entry_unref(en);
        } else {
            en->offset += base_offset;
            en->file = f;
            f->live_bytes += stor__bitcask_entry_record_size(en);
            old = stor__bitcask_kd_put(&e->kd, en);
        }
        if (old != NULL) {
            old->file->live_bytes -= stor__bitcask_entry_record_size(old);
            stor__bitcask_entry_unref(old);
        }
    }
    e->overlay.count = 0;
    if (e->next_seq - 1 > f->max_seq) {
        f->max_seq = e->next_seq - 1;
    }
    pthread_rwlock_unlock(&e->lock);
}

static int bc_write(struct stor_engine *base, const struct stor_batch *b)
{
    struct bc_engine *e = (struct bc_engine *)base;
    pthread_mutex_lock(&e->write_lock);
    uint64_t seq_mark = e->next_seq;
    int rc = KV_OK;
    if (e->active->size >= e->file_bytes_max) {
        rc = stor__bitcask_roll(e);
        if (rc == KV_OK) {
            rc = stor__bitcask_merge_if_needed(e);
        }
    }
    kv_buf_clear(&e->wbuf);
    stor__bitcask_kd_clear(&e->overlay);
    uint32_t records = 0;
    if (rc == KV_OK) {
        rc = batch_encode(e, b, &records);
    }
    if (rc == KV_OK && records > 0) {
        /* Room for every new key before the write, so applying it after the
         * write cannot fail half-way. */
        rc = stor__bitcask_kd_reserve(&e->kd, e->overlay.count);
    }
    if (rc != KV_OK || records == 0) {
        e->next_seq = seq_mark;
        stor__bitcask_kd_clear(&e->overlay);
        if (rc == KV_ENOMEM) {
            stor__set_errmsg(base, "bitcask: out of memory encoding a batch");
        }
        goto out;
    }
    uint64_t offset = e->active->size;
    rc = stor__bitcask_write_all(e->active->fd, e->wbuf.data, e->wbuf.size, offset, "data file",
                                 stor__errbuf(base));
    if (rc == KV_OK && e->sync == STOR_SYNC_ALWAYS) {
        rc = stor__bitcask_sync_file(e->active->fd, "data file", stor__errbuf(base));
    }
    if (rc != KV_OK) {
        /* Poisoned from here (the generic layer); a reopen truncates any
         * partial batch at the tail. */
        stor__bitcask_kd_clear(&e->overlay);
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

/* ---- compaction (the merge itself is in bitcask_merge.c) ------------------ */

static int bc_compact(struct stor_engine *base)
{
    struct bc_engine *e = (struct bc_engine *)base;
    pthread_mutex_lock(&e->write_lock);
    int rc = KV_OK;
    if (e->active->size > 0) {
        rc = stor__bitcask_roll(e); /* so the active file's dead records are merged too */
    }
    if (rc == KV_OK) {
        rc = stor__bitcask_merge_run(e);
    }
    pthread_mutex_unlock(&e->write_lock);
    return rc;
}

/* ---- vtable -------------------------------------------------------------- */

static void engine_free(struct bc_engine *e)
{
    stor__bitcask_kd_close(&e->kd);
    stor__bitcask_kd_close(&e->overlay);
    for (size_t i = 0; i < e->file_count; i++) {
        stor__bitcask_file_unref(e->files[i]);
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
    stor__bitcask_kd_init(&e->kd);
    stor__bitcask_kd_init(&e->overlay);
    kv_buf_init(&e->wbuf);
    int rc = stor__mkdirs(o->path, errmsg);
    if (rc == KV_OK) {
        rc = stor__lock_dir(o->path, &e->lock_fd, errmsg);
    }
    if (rc == KV_OK) {
        rc = stor__bitcask_recover(e, errmsg);
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
        en = stor__bitcask_kd_find(&kd, key, key_size, hash);
        if (en == NULL) {
            return KV_ENOTFOUND;
        }
        atomic_fetch_add(&en->refs, 1);
        file_ref(en->file); /* the view holds it too; keeps pairing simple */
    } else {
        pthread_rwlock_rdlock(&e->lock);
        en = stor__bitcask_kd_find(&e->kd, key, key_size, hash);
        if (en != NULL) {
            atomic_fetch_add(&en->refs, 1);
            file_ref(en->file);
        }
        pthread_rwlock_unlock(&e->lock);
        if (en == NULL) {
            return KV_ENOTFOUND;
        }
    }
    int rc = stor__bitcask_read_record(base, en, en->file, en->offset, value);
    if (rc == KV_OK) {
        memmove(value->data, value->data + BITCASK_RECORD_HEADER_SIZE + en->key_size,
                en->value_size);
        value->size = en->value_size;
    }
    stor__bitcask_file_unref(en->file);
    stor__bitcask_entry_unref(en);
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
        stor__bitcask_entry_unref(v->slots[i]);
    }
    for (size_t i = 0; i < v->file_count; i++) {
        stor__bitcask_file_unref(v->files[i]);
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
        int rc = stor__bitcask_read_record(iter->engine, en, en->file, en->offset, &it->rec);
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

/* The store is there while at least one data or merge file is: the engine
 * keeps an active data file from its first open on. */
static int bc_store_present(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    int found = 0;
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        const char *dot = strrchr(de->d_name, '.');
        found = dot != NULL && (strcmp(dot, ".data") == 0 || strcmp(dot, ".merge") == 0);
    }
    closedir(d);
    return found;
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
    .store_present = bc_store_present,
    .store_files = "*.data",
};
