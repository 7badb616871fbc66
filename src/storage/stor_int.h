/* stor_int.h -- internals of the storage layer shared by stor.c and the
 * engines: the engine vtable and the base structs engines embed. Nothing
 * outside src/storage includes this. */
#ifndef KV_STOR_INT_H
#define KV_STOR_INT_H

#include "stor.h"

/* What an engine implements. The generic layer (stor.c) has already checked
 * arguments (sizes, non-empty keys, poisoned state) before calling these. */
struct stor_engine_ops {
    const char *name; /* "rocksdb", ... */
    int ordered;      /* 1 when iteration is in key order */

    /* Opens; on failure fills errmsg (KV_ERRMSG_SIZE) naming the file and
     * the problem. The engine struct must embed `struct stor_engine` first. */
    int (*open)(const struct stor_options *o, struct stor_engine **out, char *errmsg);
    void (*close)(struct stor_engine *e);

    /* `view` may be NULL (latest state). */
    int (*get)(struct stor_engine *e, const struct stor_view *view, const void *key,
               size_t key_size, struct kv_buf *value);
    /* Applies a non-empty batch atomically; see stor_write. */
    int (*write)(struct stor_engine *e, const struct stor_batch *b);

    int (*view_new)(struct stor_engine *e, struct stor_view **out);
    void (*view_free)(struct stor_view *v);

    /* `view` is never NULL here: the generic layer makes one when the caller
     * passed none. start/end NULL mean unbounded. */
    int (*iter_new)(struct stor_engine *e, const struct stor_view *view, const void *start,
                    size_t start_size, const void *end, size_t end_size, struct stor_iter **out);
    int (*iter_next)(struct stor_iter *it, const uint8_t **key, size_t *key_size,
                     const uint8_t **value, size_t *value_size);
    void (*iter_free)(struct stor_iter *it);

    int (*stats)(struct stor_engine *e, struct stor_stats *out);
    /* Optional: NULL means compaction has nothing to do. */
    int (*compact)(struct stor_engine *e);
    /* Optional: 1 when `path` still holds this engine's essential files,
     * named by `store_files` for messages (RocksDB/LevelDB: CURRENT; LMDB:
     * a non-empty data.mdb; bitcask: a data or merge file). stor_open calls
     * it when the directory's RAFTKV_STORE marker says a store lives there,
     * and refuses to open (which would create an empty store over lost
     * data) when it says 0. Damaged but present files are the engine's to
     * diagnose. */
    int (*store_present)(const char *path);
    const char *store_files;
};

/* 1 when the regular file <dir>/<name> exists and has at least `size_min`
 * bytes; for store_present implementations. */
int stor__file_present(const char *dir, const char *name, uint64_t size_min);

/* Base of every engine instance; engines embed it as their first member. */
struct stor_engine {
    const struct stor_engine_ops *ops;
    int poisoned; /* a write or sync failed: refuse writes */
};

/* Base of every view; engines embed it first. */
struct stor_view {
    struct stor_engine *engine;
};

/* Base of every iterator; engines embed it first. */
struct stor_iter {
    struct stor_engine *engine;
    struct stor_view *owned_view; /* made by stor_iter_new when the caller gave
                                     none; freed with the iterator */
};

extern const struct stor_engine_ops stor__memory_ops;
extern const struct stor_engine_ops stor__rocksdb_ops;
extern const struct stor_engine_ops stor__leveldb_ops;
extern const struct stor_engine_ops stor__lmdb_ops;
extern const struct stor_engine_ops stor__bitcask_ops;

/* The calling thread's failure-message buffer (KV_ERRMSG_SIZE bytes) for
 * engine `e`; stor_errmsg(e) on the same thread reads it back. */
char *stor__errbuf(const struct stor_engine *e);

/* Records a formatted message in the calling thread's buffer for `e`. */
void stor__set_errmsg(struct stor_engine *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Bytewise key order (memcmp, then shorter first). */
int stor__key_cmp(const void *a, size_t a_size, const void *b, size_t b_size);

/* 1 when key is inside [start, end) (NULL bounds are open). */
int stor__key_in_range(const void *key, size_t key_size, const void *start, size_t start_size,
                       const void *end, size_t end_size);

/* Creates directory `path` and its parents (like mkdir -p). */
int stor__mkdirs(const char *path, char *errmsg);

/* Sums the sizes of the regular files under `path` (recursively). */
int stor__dir_bytes(const char *path, uint64_t *out);

/* Checks an LSM directory (RocksDB or LevelDB) before the library opens it:
 * refuses table files without CURRENT, a CURRENT naming a missing MANIFEST,
 * and a MANIFEST that ends inside a record, all of which the libraries would
 * otherwise "recover" by opening an older or empty database and deleting the
 * newer tables. Defined in engine_leveldb.c. */
int stor__lsm_check_dir(const char *engine, const char *path, char *errmsg);

/* Maps a RocksDB or LevelDB status message ("Corruption: ...", "IO error:
 * ...") to a kv_err; unknown ones are KV_EIO. Defined in engine_leveldb.c. */
int stor__lsm_status_code(const char *msg);

/* Creates the directory, takes its lock (*lock_fd, released with
 * stor__unlock_dir) and runs stor__lsm_check_dir; on failure nothing is held
 * and errmsg says why. Defined in engine_leveldb.c. */
int stor__lsm_prepare_dir(const char *engine, const char *path, int *lock_fd, char *errmsg);

/* fsyncs the directory itself, so file creations and renames in it are
 * durable. */
int stor__fsync_dir(const char *path);

/* Takes an exclusive advisory lock on <path>/LOCK so two processes never
 * open one directory; KV_ELOCKED when held elsewhere. *fd_out is released
 * with stor__unlock_dir. */
int stor__lock_dir(const char *path, int *fd_out, char *errmsg);
void stor__unlock_dir(int fd);

#endif
