/* engine_rocksdb.c -- the RocksDB engine: the stor.h contract on top of
 * RocksDB's C API (librocksdb 7.8).
 *
 * Mapping: a stor_batch becomes one rocksdb_writebatch_t (delete-range is
 * native), so RocksDB's WAL makes it atomic; a view is a RocksDB snapshot
 * plus read options pointing at it; an iterator is a RocksDB iterator with
 * iterate_upper_bound set to the end of the range. Every option below is
 * chosen on purpose; docs/storage-lsm.md gives the reasons.
 *
 * RocksDB reports failures as malloc'd "Code: detail" strings; they are
 * mapped onto kv_err codes by their prefix, copied into the errmsg with the
 * engine name and path in front, and freed with rocksdb_free. */
#include "stor_int.h"
#include "alloc.h"

#include <rocksdb/c.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* Block cache when the caller asks for the default (cache_bytes == 0). */
#define RDB_CACHE_BYTES_DEFAULT (64u * 1024u * 1024u)
/* One memtable; up to RDB_WRITE_BUFFER_COUNT of them (one active, the rest
 * waiting to flush) bound memtable memory at 96 MiB. */
#define RDB_WRITE_BUFFER_BYTES (32u * 1024u * 1024u)
#define RDB_WRITE_BUFFER_COUNT 3
/* Flushes and compactions together: one of each on a 2-core machine, so
 * background work never takes both cores from the Raft and RPC threads. */
#define RDB_BACKGROUND_JOBS 2
/* Bloom filter density: ~1% false positives (RocksDB's full filter). */
#define RDB_BLOOM_BITS_PER_KEY 10.0
/* Uncompressed bytes per data block. */
#define RDB_BLOCK_BYTES (16u * 1024u)
/* Table files kept open; bounds descriptors (the server also needs them for
 * sockets and the Raft log) at the cost of reopening cold tables. */
#define RDB_OPEN_FILES_MAX 512
/* Info LOG files: rolled at this size, this many kept (RocksDB's default
 * keeps 1000, which fills a small disk over months of restarts). */
#define RDB_INFO_LOG_BYTES_MAX (8u * 1024u * 1024u)
#define RDB_INFO_LOG_FILES_MAX 4
/* Background writeback of table and WAL files every this many bytes, so
 * an fsync never has a whole memtable of dirty pages to push at once. */
#define RDB_BYTES_PER_SYNC (1024u * 1024u)
/* BottommostLevelCompaction::kForceOptimized (rocksdb/options.h): a manual
 * compaction rewrites the bottom level too, so deleted data is reclaimed,
 * but not the files it has just written. */
#define RDB_BOTTOMMOST_FORCE_OPTIMIZED 3

struct rdb_engine {
    struct stor_engine base;
    rocksdb_t *db;
    rocksdb_writeoptions_t *wopts; /* sync per stor_options.sync */
    rocksdb_readoptions_t *ropts;  /* latest state (no snapshot) */
    char *path;                    /* kv_strdup'd directory */
    int lock_fd;                   /* stor__lock_dir's flock on LOCK */
    atomic_int open_objects;       /* views + iterators not yet freed */
};

struct rdb_view {
    struct stor_view base;
    const rocksdb_snapshot_t *snap;
    rocksdb_readoptions_t *ropts; /* reads at `snap` */
};

struct rdb_iter {
    struct stor_iter base;
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ropts; /* snapshot + upper bound; lives as long
                                     as `it`, which points into it */
    struct kv_buf end;            /* the upper bound's bytes: RocksDB keeps
                                     only a pointer to them */
    int started;                  /* the first next() reads the seek result */
    int empty;                    /* the range is empty: always KV_EOF */
};

/* Takes ownership of `err` (a RocksDB message): writes "rocksdb: <path>:
 * <what>: <err>" into `out` (KV_ERRMSG_SIZE bytes), frees `err`, and returns
 * the mapped code. */
static int take_error(char *err, const char *path, const char *what, char *out)
{
    int rc = stor__lsm_status_code(err);
    snprintf(out, KV_ERRMSG_SIZE, "rocksdb: %s: %s: %s", path, what, err);
    rocksdb_free(err);
    return rc;
}

/* Builds the options of docs/storage-lsm.md. The caller destroys the result
 * once rocksdb_open returns: the DB keeps copies (and its own references to
 * the cache and filter policy). */
static rocksdb_options_t *make_options(const struct stor_options *o)
{
    size_t cache_bytes = o->cache_bytes ? o->cache_bytes : RDB_CACHE_BYTES_DEFAULT;
    rocksdb_cache_t *cache = rocksdb_cache_create_lru(cache_bytes);
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(t, cache);
    rocksdb_block_based_options_set_block_size(t, RDB_BLOCK_BYTES);
    /* Takes ownership of the policy. */
    rocksdb_block_based_options_set_filter_policy(
        t, rocksdb_filterpolicy_create_bloom_full(RDB_BLOOM_BITS_PER_KEY));
    /* Index and filter blocks count against the cache budget, so memory is
     * bounded by cache_bytes; L0's stay pinned, as every read checks them. */
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(t, 1);

    rocksdb_options_t *opts = rocksdb_options_create();
    rocksdb_options_set_block_based_table_factory(opts, t); /* copies t */
    rocksdb_block_based_options_destroy(t);
    rocksdb_cache_destroy(cache); /* the table factory holds a reference */

    rocksdb_options_set_create_if_missing(opts, 1);
    rocksdb_options_set_paranoid_checks(opts, 1);
    rocksdb_options_set_compaction_style(opts, rocksdb_level_compaction);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(opts, 1);
    rocksdb_options_set_compression(opts, rocksdb_lz4_compression);
    rocksdb_options_set_bottommost_compression(opts, rocksdb_zstd_compression);
    rocksdb_options_set_write_buffer_size(opts, RDB_WRITE_BUFFER_BYTES);
    rocksdb_options_set_max_write_buffer_number(opts, RDB_WRITE_BUFFER_COUNT);
    rocksdb_options_set_max_background_jobs(opts, RDB_BACKGROUND_JOBS);
    rocksdb_options_set_max_open_files(opts, RDB_OPEN_FILES_MAX);
    rocksdb_options_set_bytes_per_sync(opts, RDB_BYTES_PER_SYNC);
    rocksdb_options_set_wal_bytes_per_sync(opts, RDB_BYTES_PER_SYNC);
    rocksdb_options_set_max_log_file_size(opts, RDB_INFO_LOG_BYTES_MAX);
    rocksdb_options_set_keep_log_file_num(opts, RDB_INFO_LOG_FILES_MAX);
    /* WAL replay after a crash. With sync always every acknowledged batch
     * was fsynced, so only an incomplete last record is a crash artefact;
     * damage before it fails the open with Corruption instead of silently
     * dropping everything after it (LevelDB with paranoid checks does the
     * same). With sync none the contract allows losing recent writes, and
     * after a power loss the unsynced tail may hold garbage anywhere, so
     * replay stops at the first bad record and keeps the consistent prefix
     * (RocksDB's default, point-in-time recovery). */
    rocksdb_options_set_wal_recovery_mode(
        opts, o->sync == STOR_SYNC_ALWAYS ? rocksdb_tolerate_corrupted_tail_records_recovery
                                          : rocksdb_point_in_time_recovery);
    return opts;
}

/* ---- vtable -------------------------------------------------------------- */

static int rdb_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    /* Our flock on LOCK (RocksDB's own is an fcntl lock on the same file;
     * the two do not interact) is taken first so that no other process is
     * writing the MANIFEST while the checks read it. */
    int lock_fd;
    int rc = stor__lsm_prepare_dir("rocksdb", o->path, &lock_fd, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct rdb_engine *r = kv_calloc(1, sizeof *r);
    if (r == NULL) {
        rc = KV_ENOMEM;
        snprintf(errmsg, KV_ERRMSG_SIZE, "rocksdb: %s: open: out of memory", o->path);
        goto err_check;
    }
    r->lock_fd = lock_fd;
    r->base.ops = &stor__rocksdb_ops;
    atomic_init(&r->open_objects, 0);
    r->path = kv_strdup(o->path);
    if (r->path == NULL) {
        rc = KV_ENOMEM;
        snprintf(errmsg, KV_ERRMSG_SIZE, "rocksdb: %s: open: out of memory", o->path);
        goto err_path;
    }
    rocksdb_options_t *opts = make_options(o);
    char *err = NULL;
    r->db = rocksdb_open(opts, o->path, &err);
    rocksdb_options_destroy(opts);
    if (err != NULL) {
        rc = take_error(err, o->path, "open", errmsg);
        goto err_db;
    }
    r->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wopts, o->sync == STOR_SYNC_ALWAYS);
    r->ropts = rocksdb_readoptions_create(); /* verifies checksums by default */
    *out = &r->base;
    return KV_OK;

err_db:
    kv_free(r->path);
err_path:
    kv_free(r);
err_check:
    stor__unlock_dir(lock_fd);
    return rc;
}

static void rdb_close(struct stor_engine *e)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    /* A snapshot or iterator outliving its DB would use freed memory. */
    KV_ASSERT(atomic_load(&r->open_objects) == 0);
    rocksdb_close(r->db); /* waits for background flushes and compactions */
    stor__unlock_dir(r->lock_fd);
    rocksdb_readoptions_destroy(r->ropts);
    rocksdb_writeoptions_destroy(r->wopts);
    kv_free(r->path);
    kv_free(r);
}

static int rdb_get(struct stor_engine *e, const struct stor_view *view, const void *key,
                   size_t key_size, struct kv_buf *value)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    const rocksdb_readoptions_t *ro = view ? ((const struct rdb_view *)view)->ropts : r->ropts;
    char *err = NULL;
    /* Pinned: the value is read in place from the block cache or memtable
     * and copied once, into `value`. */
    rocksdb_pinnableslice_t *p = rocksdb_get_pinned(r->db, ro, key, key_size, &err);
    if (err != NULL) {
        return take_error(err, r->path, "get", stor__errbuf(e));
    }
    if (p == NULL) {
        return KV_ENOTFOUND;
    }
    size_t size;
    const char *data = rocksdb_pinnableslice_value(p, &size);
    int rc = kv_buf_set(value, data, size);
    rocksdb_pinnableslice_destroy(p);
    return rc;
}

/* Appends the stor_batch's operations, in order, to `wb`. Each operation of
 * a RocksDB batch gets its own sequence number, so a delete-range covers
 * the puts before it in the same batch and not those after it. */
static int fill_batch(rocksdb_writebatch_t *wb, const struct stor_batch *b)
{
    struct stor_batch_op op;
    size_t pos = 0;
    int rc;
    while ((rc = stor_batch_next(b, &pos, &op)) == KV_OK) {
        const char *k = (const char *)op.key;
        const char *v = (const char *)op.value;
        switch (op.op) {
        case STOR_OP_PUT:
            rocksdb_writebatch_put(wb, k, op.key_size, v, op.value_size);
            break;
        case STOR_OP_DELETE:
            rocksdb_writebatch_delete(wb, k, op.key_size);
            break;
        case STOR_OP_DELETE_RANGE:
            rocksdb_writebatch_delete_range(wb, k, op.key_size, v, op.value_size);
            break;
        default:
            return KV_ECORRUPT;
        }
    }
    return rc == KV_EOF ? KV_OK : rc;
}

static int rdb_write(struct stor_engine *e, const struct stor_batch *b)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    int rc = fill_batch(wb, b);
    if (rc != KV_OK) {
        stor__set_errmsg(e, "rocksdb: %s: write: malformed batch: %s", r->path, kv_strerror(rc));
        goto out;
    }
    /* RocksDB serialises concurrent writers itself (and groups them into
     * one WAL write), so no lock of ours is needed. */
    char *err = NULL;
    rocksdb_write(r->db, r->wopts, wb, &err);
    if (err != NULL) {
        rc = take_error(err, r->path, "write", stor__errbuf(e));
    }
out:
    rocksdb_writebatch_destroy(wb);
    return rc;
}

static int rdb_view_new(struct stor_engine *e, struct stor_view **out)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    struct rdb_view *v = kv_malloc(sizeof *v);
    if (v == NULL) {
        stor__set_errmsg(e, "rocksdb: %s: view: out of memory", r->path);
        return KV_ENOMEM;
    }
    v->snap = rocksdb_create_snapshot(r->db);
    v->ropts = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(v->ropts, v->snap);
    atomic_fetch_add(&r->open_objects, 1);
    *out = &v->base;
    return KV_OK;
}

static void rdb_view_free(struct stor_view *view)
{
    struct rdb_view *v = (struct rdb_view *)view;
    struct rdb_engine *r = (struct rdb_engine *)view->engine;
    rocksdb_readoptions_destroy(v->ropts);
    rocksdb_release_snapshot(r->db, v->snap);
    atomic_fetch_sub(&r->open_objects, 1);
    kv_free(v);
}

static int rdb_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                        size_t start_size, const void *end, size_t end_size, struct stor_iter **out)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    const struct rdb_view *v = (const struct rdb_view *)view;
    struct rdb_iter *it = kv_calloc(1, sizeof *it);
    if (it == NULL) {
        goto err_alloc;
    }
    kv_buf_init(&it->end);
    if (end != NULL && kv_buf_set(&it->end, end, end_size) != KV_OK) {
        goto err_end;
    }
    /* An empty end key bounds nothing in RocksDB's API (a NULL pointer
     * clears the bound), but [start, "") is empty. */
    it->empty = end != NULL && end_size == 0;
    it->ropts = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(it->ropts, v->snap);
    if (end != NULL && end_size > 0) {
        rocksdb_readoptions_set_iterate_upper_bound(it->ropts, (const char *)it->end.data,
                                                    it->end.size);
    }
    it->it = rocksdb_create_iterator(r->db, it->ropts);
    if (start != NULL) {
        rocksdb_iter_seek(it->it, start, start_size);
    } else {
        rocksdb_iter_seek_to_first(it->it);
    }
    atomic_fetch_add(&r->open_objects, 1);
    *out = &it->base;
    return KV_OK;

err_end:
    kv_free(it);
err_alloc:
    stor__set_errmsg(e, "rocksdb: %s: iterator: out of memory", r->path);
    return KV_ENOMEM;
}

static int rdb_iter_next(struct stor_iter *iter, const uint8_t **key, size_t *key_size,
                         const uint8_t **value, size_t *value_size)
{
    struct rdb_iter *it = (struct rdb_iter *)iter;
    if (it->empty) {
        return KV_EOF;
    }
    if (it->started) {
        rocksdb_iter_next(it->it);
    }
    it->started = 1;
    if (!rocksdb_iter_valid(it->it)) {
        char *err = NULL;
        rocksdb_iter_get_error(it->it, &err);
        if (err != NULL) {
            struct rdb_engine *r = (struct rdb_engine *)iter->engine;
            return take_error(err, r->path, "iterate", stor__errbuf(iter->engine));
        }
        it->empty = 1; /* stays at the end */
        return KV_EOF;
    }
    *key = (const uint8_t *)rocksdb_iter_key(it->it, key_size);
    *value = (const uint8_t *)rocksdb_iter_value(it->it, value_size);
    return KV_OK;
}

static void rdb_iter_free(struct stor_iter *iter)
{
    struct rdb_iter *it = (struct rdb_iter *)iter;
    struct rdb_engine *r = (struct rdb_engine *)iter->engine;
    rocksdb_iter_destroy(it->it);
    rocksdb_readoptions_destroy(it->ropts); /* after the iterator: it points in */
    kv_buf_close(&it->end);
    atomic_fetch_sub(&r->open_objects, 1);
    kv_free(it);
}

static int rdb_stats(struct stor_engine *e, struct stor_stats *out)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    uint64_t keys = 0;
    /* An estimate: RocksDB counts entries minus deletes per file and
     * memtable; overwrites and range deletions skew it until compaction. */
    if (rocksdb_property_int(r->db, "rocksdb.estimate-num-keys", &keys) != 0) {
        stor__set_errmsg(e, "rocksdb: %s: stats: property estimate-num-keys unavailable", r->path);
        return KV_EIO;
    }
    uint64_t bytes = 0;
    int rc = stor__dir_bytes(r->path, &bytes);
    if (rc != KV_OK) {
        stor__set_errmsg(e, "rocksdb: %s: stats: cannot sum file sizes: %s", r->path,
                         kv_strerror(rc));
        return rc;
    }
    out->key_count = keys;
    out->key_count_exact = 0;
    out->disk_bytes = bytes;
    return KV_OK;
}

/* RocksDB's C compaction call returns no status; a failed compaction shows
 * up as a background error, counted by this property. */
static uint64_t background_errors(struct rdb_engine *r)
{
    uint64_t n = 0;
    if (rocksdb_property_int(r->db, "rocksdb.background-errors", &n) != 0) {
        n = 0;
    }
    return n;
}

static int rdb_compact(struct stor_engine *e)
{
    struct rdb_engine *r = (struct rdb_engine *)e;
    uint64_t errors_before = background_errors(r);
    /* Flush first, through the call that does report errors, so the
     * memtable's deletes take part in the compaction. */
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    char *err = NULL;
    rocksdb_flush(r->db, fo, &err);
    rocksdb_flushoptions_destroy(fo);
    if (err != NULL) {
        return take_error(err, r->path, "compact: flush", stor__errbuf(e));
    }
    rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
    rocksdb_compactoptions_set_bottommost_level_compaction(co, RDB_BOTTOMMOST_FORCE_OPTIMIZED);
    rocksdb_compact_range_opt(r->db, co, NULL, 0, NULL, 0);
    rocksdb_compactoptions_destroy(co);
    if (background_errors(r) != errors_before) {
        stor__set_errmsg(e, "rocksdb: %s: compact: a background error occurred (see %s/LOG)",
                         r->path, r->path);
        return KV_EIO;
    }
    return KV_OK;
}

/* The store is there when CURRENT is (it names the live MANIFEST). */
static int rocks_store_present(const char *path)
{
    return stor__file_present(path, "CURRENT", 1);
}

const struct stor_engine_ops stor__rocksdb_ops = {
    .name = "rocksdb",
    .ordered = 1,
    .open = rdb_open,
    .close = rdb_close,
    .get = rdb_get,
    .write = rdb_write,
    .view_new = rdb_view_new,
    .view_free = rdb_view_free,
    .iter_new = rdb_iter_new,
    .iter_next = rdb_iter_next,
    .iter_free = rdb_iter_free,
    .stats = rdb_stats,
    .compact = rdb_compact,
    .store_present = rocks_store_present,
    .store_files = "CURRENT",
};
