/* engine_leveldb.c -- the LevelDB engine: the stor.h contract on top of
 * LevelDB's C API (libleveldb 1.23).
 *
 * Mapping: a stor_batch becomes one leveldb_writebatch_t, made atomic by
 * LevelDB's log; a view is a LevelDB snapshot; an iterator is a LevelDB
 * iterator that stops at the end key itself (LevelDB has no upper bound).
 *
 * LevelDB has no delete-range either. A STOR_OP_DELETE_RANGE is expanded,
 * inside the same leveldb_writebatch_t so the batch stays atomic, into one
 * delete per key in the range: the keys the DB holds now, and the keys put
 * by earlier operations of the same batch. The DB scan is consistent
 * because writes are serialised here by `write_lock`: nothing changes the
 * DB between the scan and the write. Options are explained in
 * docs/storage-lsm.md. */
#include "stor_int.h"
#include "alloc.h"

#include <leveldb/c.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Block cache when the caller asks for the default (cache_bytes == 0). */
#define LDB_CACHE_BYTES_DEFAULT (64u * 1024u * 1024u)
/* One memtable (LevelDB keeps at most one more, being flushed). */
#define LDB_WRITE_BUFFER_BYTES (16u * 1024u * 1024u)
/* Bloom filter density: ~1% false positives. */
#define LDB_BLOOM_BITS_PER_KEY 10
/* Uncompressed bytes per data block. */
#define LDB_BLOCK_BYTES (16u * 1024u)
/* Size at which LevelDB starts a new table file: larger than the 2 MiB
 * default so a large store needs fewer files (and descriptors). */
#define LDB_FILE_BYTES (8u * 1024u * 1024u)
/* Table files kept open (descriptors are shared with sockets and the log). */
#define LDB_OPEN_FILES_MAX 512
/* Largest expanded batch, counted as key and value bytes plus a per-op
 * overhead: a delete-range over a huge range becomes a delete per key, and
 * LevelDB holds the whole batch in memory, in its log and in one memtable. */
#define LDB_BATCH_BYTES_MAX   (1024u * 1024u * 1024u)
#define LDB_OP_OVERHEAD_BYTES 12u /* tag and two varint lengths */

struct ldb_engine {
    struct stor_engine base;
    leveldb_t *db;
    leveldb_options_t *opts;           /* holds raw pointers to cache and
                                          filter: freed after the DB */
    leveldb_cache_t *cache;            /* block cache */
    leveldb_filterpolicy_t *filter;    /* bloom filter policy */
    leveldb_writeoptions_t *wopts;     /* sync per stor_options.sync */
    leveldb_readoptions_t *ropts;      /* latest state, checksums verified */
    leveldb_readoptions_t *scan_ropts; /* whole-range scans: checksums
                                          verified, cache not filled */
    pthread_mutex_t write_lock;        /* serialises writes (see top) */
    char *path;                        /* kv_strdup'd directory */
    int lock_fd;                       /* stor__lock_dir's flock on LOCK */
    atomic_int open_objects;           /* views + iterators not yet freed */
};

struct ldb_view {
    struct stor_view base;
    const leveldb_snapshot_t *snap;
    leveldb_readoptions_t *ropts; /* reads at `snap` */
};

struct ldb_iter {
    struct stor_iter base;
    leveldb_iterator_t *it;
    struct kv_buf end; /* exclusive end key */
    int has_end;
    int started; /* the first next() reads the seek result */
    int done;    /* reached the end: always KV_EOF */
};

/* Status prefixes of the Status::ToString both libraries share (RocksDB's
 * are a superset; LevelDB never produces the extra ones), most specific
 * first. */
static const struct {
    const char *prefix;
    int code;
} status_map[] = {
    {"Corruption", KV_ECORRUPT},
    {"IO error: While lock", KV_ELOCKED}, /* RocksDB: another process holds LOCK */
    {"IO error: lock", KV_ELOCKED},       /* LOCK held by this or another process */
    {"IO error: No space", KV_ENOSPC},
    {"IO error", KV_EIO},
    {"Invalid argument", KV_EINVAL},
    {"Not implemented", KV_EUNSUPPORTED},
    {"NotFound", KV_ENOENT},
    {"Resource busy", KV_EBUSY},
    {"Operation timed out", KV_ETIMEDOUT},
    {"Operation aborted", KV_ECANCELED},
    {"Shutdown in progress", KV_ECLOSED},
};

int stor__lsm_status_code(const char *msg)
{
    if (strstr(msg, "No space left on device") != NULL) {
        return KV_ENOSPC; /* whatever the wrapping ("While appending ...") */
    }
    for (size_t i = 0; i < sizeof status_map / sizeof status_map[0]; i++) {
        if (strncmp(msg, status_map[i].prefix, strlen(status_map[i].prefix)) == 0) {
            return status_map[i].code;
        }
    }
    return KV_EIO;
}

/* Takes ownership of `err` (a LevelDB message): writes "leveldb: <path>:
 * <what>: <err>" into `out` (KV_ERRMSG_SIZE bytes), frees `err`, and returns
 * the mapped code. */
static int take_error(char *err, const char *path, const char *what, char *out)
{
    int rc = stor__lsm_status_code(err);
    snprintf(out, KV_ERRMSG_SIZE, "leveldb: %s: %s: %s", path, what, err);
    leveldb_free(err);
    return rc;
}

/* ---- Checks before open (shared with engine_rocksdb.c) ------------------
 * Both libraries, asked to create_if_missing, turn some damage into a
 * silently empty database, and then delete the old table files as
 * obsolete: total loss with no error. Two shapes were seen:
 * - CURRENT gone: a new database is created over the old files (RocksDB
 *   fails the first open but leaves a fresh CURRENT, so a retry succeeds
 *   empty);
 * - the MANIFEST cut short: its tail reads as a torn last write, so the
 *   version it describes loses every later edit (files added by flushes
 *   and compactions), and those files are deleted.
 * So before opening we refuse a directory that holds database files but no
 * CURRENT, a CURRENT naming a MANIFEST that does not exist, and a MANIFEST
 * that ends inside a record. The last also refuses a MANIFEST torn by a
 * power loss in the middle of an append, and (rarely) one torn by kill -9
 * in an edit over a block long, which LevelDB writes in several write()
 * calls; the message says how to recover. A cut exactly at a
 * record boundary cannot be told from a shorter history and is not caught.
 *
 * The MANIFEST is in the log format both libraries share: 32 KiB blocks;
 * records (fragments) that never cross a block, each with a header of
 * masked CRC-32C (4 bytes), length (2, little-endian) and type (1: full,
 * 2: first, 3: middle, 4: last; RocksDB's recyclable types 5-8 add a 4-byte
 * log number); fewer than 7 bytes left in a block are zero padding. */
#define LSM_LOG_BLOCK_BYTES             32768u
#define LSM_LOG_HEADER_BYTES            7u
#define LSM_LOG_RECYCLABLE_HEADER_BYTES 11u
#define LSM_CURRENT_BYTES_MAX           256u

enum { LOG_ZERO = 0, LOG_FULL = 1, LOG_FIRST = 2, LOG_MIDDLE = 3, LOG_LAST = 4 };

/* 1 when `name` looks like a table, WAL or MANIFEST file of either
 * library (numbered .sst/.ldb/.log; MANIFEST-*). */
static int is_db_file(const char *name)
{
    size_t len = strlen(name);
    if (strncmp(name, "MANIFEST-", 9) == 0) {
        return 1;
    }
    if (len <= 4 || name[0] < '0' || name[0] > '9') {
        return 0;
    }
    const char *ext = name + len - 4;
    return strcmp(ext, ".sst") == 0 || strcmp(ext, ".ldb") == 0 || strcmp(ext, ".log") == 0;
}

/* Checks the framing of the log-format file `fd` (`file` names it in
 * messages): KV_ECORRUPT when it ends inside a record. */
static int check_log_framing(const char *engine, const char *file, int fd, char *errmsg)
{
    uint8_t block[LSM_LOG_BLOCK_BYTES];
    uint64_t offset = 0;
    int in_fragments = 0; /* a FIRST was seen and no LAST yet */
    for (;;) {
        ssize_t got = pread(fd, block, sizeof block, (off_t)offset);
        if (got < 0) {
            int err = errno;
            snprintf(errmsg, KV_ERRMSG_SIZE, "%s: read %s: %s", engine, file, strerror(err));
            return kv_err_from_errno(err);
        }
        size_t n = (size_t)got;
        size_t pos = 0;
        while (pos + LSM_LOG_HEADER_BYTES <= n) {
            size_t length = (size_t)block[pos + 4] | (size_t)block[pos + 5] << 8;
            uint8_t type = block[pos + 6];
            if (type == LOG_ZERO && length == 0) {
                return KV_OK; /* preallocated zeros: the libraries stop here too */
            }
            size_t header =
                type >= 5 && type <= 8 ? LSM_LOG_RECYCLABLE_HEADER_BYTES : LSM_LOG_HEADER_BYTES;
            if (pos + header + length > n) {
                offset += pos;
                goto truncated; /* a record never crosses a block */
            }
            uint8_t kind = type >= 5 && type <= 8 ? (uint8_t)(type - 4) : type;
            if (kind == LOG_FIRST) {
                in_fragments = 1;
            } else if (kind == LOG_LAST || kind == LOG_FULL) {
                in_fragments = 0;
            }
            pos += header + length;
        }
        if (n < sizeof block) {
            /* End of file. Leftover bytes here are a header cut short (the
             * writer pads only a block's last < 7 bytes, and only before
             * starting the next block). */
            if (pos < n || in_fragments) {
                offset += pos;
                goto truncated;
            }
            return KV_OK;
        }
        offset += sizeof block;
    }
truncated:
    snprintf(errmsg, KV_ERRMSG_SIZE,
             "%s: %s is damaged: the record at byte %llu runs past the end of its block or of "
             "the file (cut short, overwritten, or torn by a power loss during an append); "
             "opening would silently drop table files. Restore it from a backup, or discard "
             "this replica's directory and let it resync",
             engine, file, (unsigned long long)offset);
    return KV_ECORRUPT;
}

/* Reads CURRENT in `path` into `out` without its newline. KV_ENOENT when
 * there is none; KV_OK with an empty name when it is malformed (the
 * library reports that better). */
static int read_current(const char *path, char *out, size_t out_size)
{
    char file[4096];
    snprintf(file, sizeof file, "%s/CURRENT", path);
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? KV_ENOENT : KV_OK;
    }
    ssize_t got = read(fd, out, out_size - 1);
    close(fd);
    if (got <= 1) {
        out[0] = '\0';
        return KV_OK;
    }
    out[got] = '\0';
    char *nl = memchr(out, '\n', (size_t)got);
    if (nl == NULL || nl != out + got - 1 || strchr(out, '/') != NULL) {
        out[0] = '\0';
        return KV_OK;
    }
    *nl = '\0';
    return KV_OK;
}

int stor__lsm_check_dir(const char *engine, const char *path, char *errmsg)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        return KV_OK; /* nothing yet: open creates it */
    }
    char evidence[256] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_db_file(de->d_name)) {
            snprintf(evidence, sizeof evidence, "%s", de->d_name);
            break;
        }
    }
    closedir(d);
    char current[LSM_CURRENT_BYTES_MAX];
    int rc = read_current(path, current, sizeof current);
    if (rc == KV_ENOENT) {
        if (evidence[0] == '\0') {
            return KV_OK; /* a new database */
        }
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "%s: %s: CURRENT is missing but database files (%s, ...) are present; "
                 "refusing to create an empty database over them",
                 engine, path, evidence);
        return KV_ECORRUPT;
    }
    if (current[0] == '\0') {
        return KV_OK; /* malformed: the library's own message is precise */
    }
    char manifest[4096 + LSM_CURRENT_BYTES_MAX];
    snprintf(manifest, sizeof manifest, "%s/%s", path, current);
    int fd = open(manifest, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s: %s/CURRENT names %s, which cannot be opened: %s",
                 engine, path, current, strerror(err));
        return err == ENOENT ? KV_ECORRUPT : kv_err_from_errno(err);
    }
    rc = check_log_framing(engine, manifest, fd, errmsg);
    close(fd);
    return rc;
}

/* Creates the options objects of docs/storage-lsm.md into `l`. */
static void make_options(struct ldb_engine *l, const struct stor_options *o)
{
    size_t cache_bytes = o->cache_bytes ? o->cache_bytes : LDB_CACHE_BYTES_DEFAULT;
    l->cache = leveldb_cache_create_lru(cache_bytes);
    l->filter = leveldb_filterpolicy_create_bloom(LDB_BLOOM_BITS_PER_KEY);
    l->opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(l->opts, 1);
    leveldb_options_set_paranoid_checks(l->opts, 1);
    leveldb_options_set_cache(l->opts, l->cache);
    leveldb_options_set_filter_policy(l->opts, l->filter);
    /* Snappy; LevelDB stores a block uncompressed if snappy is not built
     * in or does not shrink it, so this is never wrong. */
    leveldb_options_set_compression(l->opts, leveldb_snappy_compression);
    leveldb_options_set_write_buffer_size(l->opts, LDB_WRITE_BUFFER_BYTES);
    leveldb_options_set_block_size(l->opts, LDB_BLOCK_BYTES);
    leveldb_options_set_max_file_size(l->opts, LDB_FILE_BYTES);
    leveldb_options_set_max_open_files(l->opts, LDB_OPEN_FILES_MAX);

    l->wopts = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(l->wopts, o->sync == STOR_SYNC_ALWAYS);
    l->ropts = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(l->ropts, 1);
    l->scan_ropts = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(l->scan_ropts, 1);
    leveldb_readoptions_set_fill_cache(l->scan_ropts, 0);
}

static void free_options(struct ldb_engine *l)
{
    leveldb_readoptions_destroy(l->scan_ropts);
    leveldb_readoptions_destroy(l->ropts);
    leveldb_writeoptions_destroy(l->wopts);
    leveldb_options_destroy(l->opts);
    leveldb_filterpolicy_destroy(l->filter);
    leveldb_cache_destroy(l->cache);
}

int stor__lsm_prepare_dir(const char *engine, const char *path, int *lock_fd, char *errmsg)
{
    char msg[KV_ERRMSG_SIZE];
    int rc = stor__mkdirs(path, msg);
    if (rc == KV_OK) {
        rc = stor__lock_dir(path, lock_fd, msg);
    }
    if (rc != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s: %s", engine, msg);
        return rc;
    }
    rc = stor__lsm_check_dir(engine, path, errmsg);
    if (rc != KV_OK) {
        stor__unlock_dir(*lock_fd);
    }
    return rc;
}

/* ---- vtable -------------------------------------------------------------- */

static int ldb_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    /* Our own lock, taken before anything reads the directory. LevelDB's
     * fcntl lock alone is not enough: a second open in the same process
     * closes its descriptor of LOCK on failure, and closing any descriptor
     * drops a process's fcntl locks, so the directory would then be open
     * to other processes. A flock is per open file, immune to that. */
    int lock_fd;
    int rc = stor__lsm_prepare_dir("leveldb", o->path, &lock_fd, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct ldb_engine *l = kv_calloc(1, sizeof *l);
    if (l == NULL) {
        rc = KV_ENOMEM;
        snprintf(errmsg, KV_ERRMSG_SIZE, "leveldb: %s: open: out of memory", o->path);
        goto err_check;
    }
    l->lock_fd = lock_fd;
    l->base.ops = &stor__leveldb_ops;
    atomic_init(&l->open_objects, 0);
    l->path = kv_strdup(o->path);
    if (l->path == NULL) {
        rc = KV_ENOMEM;
        snprintf(errmsg, KV_ERRMSG_SIZE, "leveldb: %s: open: out of memory", o->path);
        goto err_path;
    }
    make_options(l, o);
    char *err = NULL;
    l->db = leveldb_open(l->opts, o->path, &err);
    if (err != NULL) {
        rc = take_error(err, o->path, "open", errmsg);
        goto err_db;
    }
    pthread_mutex_init(&l->write_lock, NULL);
    *out = &l->base;
    return KV_OK;

err_db:
    free_options(l);
    kv_free(l->path);
err_path:
    kv_free(l);
err_check:
    stor__unlock_dir(lock_fd);
    return rc;
}

static void ldb_close(struct stor_engine *e)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    /* A snapshot or iterator outliving its DB would use freed memory. */
    KV_ASSERT(atomic_load(&l->open_objects) == 0);
    leveldb_close(l->db); /* waits for the background compaction */
    stor__unlock_dir(l->lock_fd);
    free_options(l);
    pthread_mutex_destroy(&l->write_lock);
    kv_free(l->path);
    kv_free(l);
}

static int ldb_get(struct stor_engine *e, const struct stor_view *view, const void *key,
                   size_t key_size, struct kv_buf *value)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    const leveldb_readoptions_t *ro = view ? ((const struct ldb_view *)view)->ropts : l->ropts;
    char *err = NULL;
    size_t size = 0;
    /* NULL without an error means not found; a found empty value is a
     * malloc(0) block, which glibc never returns as NULL. */
    char *data = leveldb_get(l->db, ro, key, key_size, &size, &err);
    if (err != NULL) {
        return take_error(err, l->path, "get", stor__errbuf(e));
    }
    if (data == NULL) {
        return KV_ENOTFOUND;
    }
    int rc = kv_buf_set(value, data, size);
    leveldb_free(data);
    return rc;
}

/* Adds `bytes` of operations to the running total; KV_ETOOBIG past the
 * limit. */
static int charge(struct ldb_engine *l, size_t *total, size_t bytes)
{
    *total += bytes + LDB_OP_OVERHEAD_BYTES;
    if (*total > LDB_BATCH_BYTES_MAX) {
        stor__set_errmsg(&l->base,
                         "leveldb: %s: write: batch expands to over %u bytes (delete-range "
                         "over too many keys); split it",
                         l->path, LDB_BATCH_BYTES_MAX);
        return KV_ETOOBIG;
    }
    return KV_OK;
}

/* Adds a delete to `wb` for every key the DB holds in [op->key, op->value).
 * Caller holds write_lock, so the DB cannot change before the write. */
static int expand_range_db(struct ldb_engine *l, leveldb_writebatch_t *wb,
                           const struct stor_batch_op *op, size_t *total)
{
    leveldb_iterator_t *it = leveldb_create_iterator(l->db, l->scan_ropts);
    int rc = KV_OK;
    for (leveldb_iter_seek(it, (const char *)op->key, op->key_size); leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t size;
        const char *k = leveldb_iter_key(it, &size);
        if (stor__key_cmp(k, size, op->value, op->value_size) >= 0) {
            break;
        }
        rc = charge(l, total, size);
        if (rc != KV_OK) {
            break;
        }
        leveldb_writebatch_delete(wb, k, size);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err != NULL) {
        rc = take_error(err, l->path, "write: delete-range scan", stor__errbuf(&l->base));
    }
    leveldb_iter_destroy(it);
    return rc;
}

/* Adds a delete to `wb` for every key put by the operations of `b` before
 * byte offset `stop` that falls in [range->key, range->value). */
static int expand_range_batch(struct ldb_engine *l, leveldb_writebatch_t *wb,
                              const struct stor_batch *b, size_t stop,
                              const struct stor_batch_op *range, size_t *total)
{
    struct stor_batch_op op;
    size_t pos = 0;
    while (pos < stop) {
        int rc = stor_batch_next(b, &pos, &op);
        KV_ASSERT(rc == KV_OK); /* this prefix was decoded once already */
        if (op.op == STOR_OP_PUT &&
            stor__key_in_range(op.key, op.key_size, range->key, range->key_size, range->value,
                               range->value_size)) {
            rc = charge(l, total, op.key_size);
            if (rc != KV_OK) {
                return rc;
            }
            leveldb_writebatch_delete(wb, (const char *)op.key, op.key_size);
        }
    }
    return KV_OK;
}

/* Translates `b` into `wb`, expanding delete-ranges (see top). */
static int fill_batch(struct ldb_engine *l, leveldb_writebatch_t *wb, const struct stor_batch *b)
{
    struct stor_batch_op op;
    size_t total = 0;
    size_t pos = 0;
    size_t op_pos = 0; /* offset of `op` in the batch */
    int rc;
    while ((rc = stor_batch_next(b, &pos, &op)) == KV_OK) {
        switch (op.op) {
        case STOR_OP_PUT:
            rc = charge(l, &total, op.key_size + op.value_size);
            if (rc == KV_OK) {
                leveldb_writebatch_put(wb, (const char *)op.key, op.key_size,
                                       (const char *)op.value, op.value_size);
            }
            break;
        case STOR_OP_DELETE:
            rc = charge(l, &total, op.key_size);
            if (rc == KV_OK) {
                leveldb_writebatch_delete(wb, (const char *)op.key, op.key_size);
            }
            break;
        case STOR_OP_DELETE_RANGE:
            rc = expand_range_db(l, wb, &op, &total);
            if (rc == KV_OK) {
                rc = expand_range_batch(l, wb, b, op_pos, &op, &total);
            }
            break;
        default:
            rc = KV_ECORRUPT;
            stor__set_errmsg(&l->base, "leveldb: %s: write: malformed batch", l->path);
            break;
        }
        if (rc != KV_OK) {
            return rc;
        }
        op_pos = pos;
    }
    if (rc != KV_EOF) {
        stor__set_errmsg(&l->base, "leveldb: %s: write: malformed batch", l->path);
        return rc;
    }
    return KV_OK;
}

static int ldb_write(struct stor_engine *e, const struct stor_batch *b)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    pthread_mutex_lock(&l->write_lock);
    int rc = fill_batch(l, wb, b);
    if (rc == KV_OK) {
        char *err = NULL;
        leveldb_write(l->db, l->wopts, wb, &err);
        if (err != NULL) {
            rc = take_error(err, l->path, "write", stor__errbuf(e));
        }
    }
    pthread_mutex_unlock(&l->write_lock);
    leveldb_writebatch_destroy(wb);
    return rc;
}

static int ldb_view_new(struct stor_engine *e, struct stor_view **out)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    struct ldb_view *v = kv_malloc(sizeof *v);
    if (v == NULL) {
        stor__set_errmsg(e, "leveldb: %s: view: out of memory", l->path);
        return KV_ENOMEM;
    }
    v->snap = leveldb_create_snapshot(l->db);
    v->ropts = leveldb_readoptions_create();
    leveldb_readoptions_set_verify_checksums(v->ropts, 1);
    leveldb_readoptions_set_snapshot(v->ropts, v->snap);
    atomic_fetch_add(&l->open_objects, 1);
    *out = &v->base;
    return KV_OK;
}

static void ldb_view_free(struct stor_view *view)
{
    struct ldb_view *v = (struct ldb_view *)view;
    struct ldb_engine *l = (struct ldb_engine *)view->engine;
    leveldb_readoptions_destroy(v->ropts);
    leveldb_release_snapshot(l->db, v->snap);
    atomic_fetch_sub(&l->open_objects, 1);
    kv_free(v);
}

static int ldb_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                        size_t start_size, const void *end, size_t end_size, struct stor_iter **out)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    struct ldb_iter *it = kv_calloc(1, sizeof *it);
    if (it == NULL) {
        goto err_alloc;
    }
    kv_buf_init(&it->end);
    if (end != NULL && kv_buf_set(&it->end, end, end_size) != KV_OK) {
        goto err_end;
    }
    it->has_end = end != NULL;
    /* LevelDB copies the snapshot's sequence number into the iterator, so
     * the view's read options serve as they are. */
    it->it = leveldb_create_iterator(l->db, ((const struct ldb_view *)view)->ropts);
    if (start != NULL) {
        leveldb_iter_seek(it->it, start, start_size);
    } else {
        leveldb_iter_seek_to_first(it->it);
    }
    atomic_fetch_add(&l->open_objects, 1);
    *out = &it->base;
    return KV_OK;

err_end:
    kv_free(it);
err_alloc:
    stor__set_errmsg(e, "leveldb: %s: iterator: out of memory", l->path);
    return KV_ENOMEM;
}

static int ldb_iter_next(struct stor_iter *iter, const uint8_t **key, size_t *key_size,
                         const uint8_t **value, size_t *value_size)
{
    struct ldb_iter *it = (struct ldb_iter *)iter;
    if (it->done) {
        return KV_EOF;
    }
    if (it->started) {
        leveldb_iter_next(it->it);
    }
    it->started = 1;
    if (!leveldb_iter_valid(it->it)) {
        char *err = NULL;
        leveldb_iter_get_error(it->it, &err);
        if (err != NULL) {
            struct ldb_engine *l = (struct ldb_engine *)iter->engine;
            return take_error(err, l->path, "iterate", stor__errbuf(iter->engine));
        }
        it->done = 1;
        return KV_EOF;
    }
    size_t ks;
    const char *k = leveldb_iter_key(it->it, &ks);
    if (it->has_end && stor__key_cmp(k, ks, it->end.data, it->end.size) >= 0) {
        it->done = 1;
        return KV_EOF;
    }
    *key = (const uint8_t *)k;
    *key_size = ks;
    *value = (const uint8_t *)leveldb_iter_value(it->it, value_size);
    return KV_OK;
}

static void ldb_iter_free(struct stor_iter *iter)
{
    struct ldb_iter *it = (struct ldb_iter *)iter;
    struct ldb_engine *l = (struct ldb_engine *)iter->engine;
    leveldb_iter_destroy(it->it);
    kv_buf_close(&it->end);
    atomic_fetch_sub(&l->open_objects, 1);
    kv_free(it);
}

/* Exact key count: a full scan, O(n) in the number of keys (and reading
 * every block once, without filling the cache). LevelDB keeps no count. */
static int count_keys(struct ldb_engine *l, uint64_t *out)
{
    leveldb_iterator_t *it = leveldb_create_iterator(l->db, l->scan_ropts);
    uint64_t n = 0;
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        n++;
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    if (err != NULL) {
        return take_error(err, l->path, "stats: key count scan", stor__errbuf(&l->base));
    }
    *out = n;
    return KV_OK;
}

static int ldb_stats(struct stor_engine *e, struct stor_stats *out)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    uint64_t keys = 0;
    int rc = count_keys(l, &keys);
    if (rc != KV_OK) {
        return rc;
    }
    uint64_t bytes = 0;
    rc = stor__dir_bytes(l->path, &bytes);
    if (rc != KV_OK) {
        stor__set_errmsg(e, "leveldb: %s: stats: cannot sum file sizes: %s", l->path,
                         kv_strerror(rc));
        return rc;
    }
    out->key_count = keys;
    out->key_count_exact = 1;
    out->disk_bytes = bytes;
    return KV_OK;
}

static int ldb_compact(struct stor_engine *e)
{
    struct ldb_engine *l = (struct ldb_engine *)e;
    /* Flushes the memtable, then compacts every level over the whole key
     * space. The call reports no status; a failure is kept by LevelDB as
     * its background error, which the next write returns, so an empty,
     * unsynced write surfaces it here. */
    leveldb_compact_range(l->db, NULL, 0, NULL, 0);
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    char *err = NULL;
    pthread_mutex_lock(&l->write_lock);
    leveldb_write(l->db, wo, wb, &err);
    pthread_mutex_unlock(&l->write_lock);
    leveldb_writeoptions_destroy(wo);
    leveldb_writebatch_destroy(wb);
    if (err != NULL) {
        return take_error(err, l->path, "compact", stor__errbuf(e));
    }
    return KV_OK;
}

/* The store is there when CURRENT is (it names the live MANIFEST). */
static int ldb_store_present(const char *path)
{
    return stor__file_present(path, "CURRENT", 1);
}

const struct stor_engine_ops stor__leveldb_ops = {
    .name = "leveldb",
    .ordered = 1,
    .open = ldb_open,
    .close = ldb_close,
    .get = ldb_get,
    .write = ldb_write,
    .view_new = ldb_view_new,
    .view_free = ldb_view_free,
    .iter_new = ldb_iter_new,
    .iter_next = ldb_iter_next,
    .iter_free = ldb_iter_free,
    .stats = ldb_stats,
    .compact = ldb_compact,
    .store_present = ldb_store_present,
    .store_files = "CURRENT",
};
