/* stor.c -- the generic half of the storage layer: engine registry, argument
 * checks, dispatch through the engine vtable, write batches, and the file
 * helpers the engines share. */
#include "stor_int.h"
#include "alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The engines compiled in, in the order `--help` lists them. */
static const struct stor_engine_ops *const engines[] = {
    &stor__rocksdb_ops, &stor__leveldb_ops, &stor__lmdb_ops, &stor__bitcask_ops, &stor__memory_ops,
};
#define ENGINE_COUNT (sizeof engines / sizeof engines[0])

static const char *const engine_names[] = {"rocksdb", "leveldb", "lmdb", "bitcask", "memory", NULL};

void stor_options_init(struct stor_options *o)
{
    memset(o, 0, sizeof *o);
    o->cache_bytes = 64u * 1024u * 1024u;
    o->sync = STOR_SYNC_ALWAYS;
}

const char *const *stor_engine_names(void)
{
    return engine_names;
}

/* The marker file that tells stor_open a store already lives in a
 * directory, and of which engine: "raftkv-store 1 <engine>\n". */
#define STORE_MARKER        "RAFTKV_STORE"
#define STORE_MARKER_FORMAT "raftkv-store 1 %s\n"

/* Reads the marker: KV_OK with the engine name, KV_ENOENT when absent. */
static int read_marker(const char *dir, char *engine, size_t engine_size, char *errmsg)
{
    char path[4096];
    char text[128];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_MARKER);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return KV_ENOENT;
        }
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "open %s: %s", path, strerror(err));
        return kv_err_from_errno(err);
    }
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    char name[64];
    if (n > 0) {
        text[n] = '\0';
    }
    if (n <= 0 || sscanf(text, "raftkv-store 1 %63s", name) != 1) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s is damaged (expected \"raftkv-store 1 <engine>\")",
                 path);
        return KV_ECORRUPT;
    }
    snprintf(engine, engine_size, "%s", name);
    return KV_OK;
}

static int write_marker(const char *dir, const char *engine, char *errmsg)
{
    char path[4096];
    char tmp[4096];
    char text[128];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_MARKER);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int len = snprintf(text, sizeof text, STORE_MARKER_FORMAT, engine);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    if (fd >= 0) {
        close(fd);
    }
    ok = ok && rename(tmp, path) == 0 && stor__fsync_dir(dir) == KV_OK;
    if (!ok) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "write %s: %s", path, strerror(err));
        unlink(tmp);
        return kv_err_from_errno(err);
    }
    return KV_OK;
}

static const struct stor_engine_ops *find_engine(const char *name)
{
    for (size_t i = 0; name != NULL && i < ENGINE_COUNT; i++) {
        if (strcmp(name, engines[i]->name) == 0) {
            return engines[i];
        }
    }
    return NULL;
}

/* Before opening a persistent engine: the directory must not hold another
 * engine's store, nor a marker whose store files have vanished. */
static int check_marker(const struct stor_engine_ops *ops, const char *path, int *existing,
                        char *errmsg)
{
    char held[64];
    int rc = read_marker(path, held, sizeof held, errmsg);
    *existing = rc == KV_OK;
    if (rc == KV_ENOENT) {
        return KV_OK;
    }
    if (rc != KV_OK) {
        return rc;
    }
    if (find_engine(held) == NULL) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s/%s is damaged: names unknown engine '%s'", path,
                 STORE_MARKER, held);
        return KV_ECORRUPT;
    }
    if (strcmp(held, ops->name) != 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "%s holds a %s store, not %s: open it with engine %s, or use another directory",
                 path, held, ops->name, held);
        return KV_EINVAL;
    }
    if (ops->store_present != NULL && !ops->store_present(path)) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "%s/%s is missing (%s says a %s store lives here); refusing to create an empty "
                 "store over lost data",
                 path, ops->store_files, STORE_MARKER, ops->name);
        return KV_ECORRUPT;
    }
    return KV_OK;
}

int stor_open(const char *name, const struct stor_options *o, struct stor_engine **out,
              char errmsg[KV_ERRMSG_SIZE])
{
    errmsg[0] = '\0';
    *out = NULL;
    const struct stor_engine_ops *ops = find_engine(name);
    if (ops == NULL) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "unknown storage engine '%s' (valid: rocksdb, leveldb, lmdb, bitcask, memory)",
                 name ? name : "(null)");
        return KV_EINVAL;
    }
    if (o->read_only) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "read-only open is not supported yet");
        return KV_EINVAL;
    }
    int persistent = ops != &stor__memory_ops;
    int existing = 0;
    if (persistent && o->path == NULL) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "engine %s needs a path", name);
        return KV_EINVAL;
    }
    int rc = persistent ? check_marker(ops, o->path, &existing, errmsg) : KV_OK;
    if (rc == KV_OK) {
        rc = ops->open(o, out, errmsg);
    }
    if (rc == KV_OK && persistent && !existing) {
        rc = write_marker(o->path, ops->name, errmsg);
        if (rc != KV_OK) {
            ops->close(*out);
            *out = NULL;
        }
    }
    if (rc == KV_OK) {
        KV_ASSERT((*out)->ops == ops);
        stor__errbuf(*out)[0] = '\0';
        (*out)->poisoned = 0;
    } else if (errmsg[0] == '\0') {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s: open %s: %s", name, o->path ? o->path : "(memory)",
                 kv_strerror(rc));
    }
    return rc;
}

void stor_close(struct stor_engine *e)
{
    if (e != NULL) {
        e->ops->close(e);
    }
}

const char *stor_name(const struct stor_engine *e)
{
    return e->ops->name;
}

int stor_is_ordered(const struct stor_engine *e)
{
    return e->ops->ordered;
}

/* The last failure message of the calling thread, and the engine it is
 * about. Per thread, because readers on many threads fail independently
 * and a shared buffer would mix their messages. */
static _Thread_local struct {
    const struct stor_engine *engine;
    char msg[KV_ERRMSG_SIZE];
} last_error;

char *stor__errbuf(const struct stor_engine *e)
{
    if (last_error.engine != e) {
        last_error.engine = e;
        last_error.msg[0] = '\0';
    }
    return last_error.msg;
}

const char *stor_errmsg(const struct stor_engine *e)
{
    return last_error.engine == e ? last_error.msg : "";
}

void stor__set_errmsg(struct stor_engine *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(stor__errbuf(e), KV_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

static int check_key(struct stor_engine *e, size_t key_size)
{
    if (key_size == 0) {
        stor__set_errmsg(e, "empty key");
        return KV_EINVAL;
    }
    if (key_size > STOR_KEY_SIZE_MAX) {
        stor__set_errmsg(e, "key of %zu bytes exceeds the maximum of %u", key_size,
                         STOR_KEY_SIZE_MAX);
        return KV_ETOOBIG;
    }
    return KV_OK;
}

int stor_get(struct stor_engine *e, const struct stor_view *view, const void *key, size_t key_size,
             struct kv_buf *value)
{
    int rc = check_key(e, key_size);
    if (rc != KV_OK) {
        return rc;
    }
    KV_ASSERT(view == NULL || view->engine == e);
    return e->ops->get(e, view, key, key_size, value);
}

int stor_put(struct stor_engine *e, const void *key, size_t key_size, const void *value,
             size_t value_size)
{
    struct stor_batch b;
    stor_batch_init(&b);
    int rc = stor_batch_put(&b, key, key_size, value, value_size);
    if (rc == KV_OK) {
        rc = stor_write(e, &b);
    } else {
        stor__set_errmsg(e, "put: %s", kv_strerror(rc));
    }
    stor_batch_close(&b);
    return rc;
}

int stor_delete(struct stor_engine *e, const void *key, size_t key_size)
{
    struct stor_batch b;
    stor_batch_init(&b);
    int rc = stor_batch_delete(&b, key, key_size);
    if (rc == KV_OK) {
        rc = stor_write(e, &b);
    } else {
        stor__set_errmsg(e, "delete: %s", kv_strerror(rc));
    }
    stor_batch_close(&b);
    return rc;
}

int stor_write(struct stor_engine *e, const struct stor_batch *b)
{
    if (e->poisoned) {
        stor__set_errmsg(e, "%s: an earlier write failed; reopen the engine", e->ops->name);
        return KV_EPOISONED;
    }
    if (b->count == 0) {
        return KV_OK;
    }
    int rc = e->ops->write(e, b);
    if (rc == KV_EIO || rc == KV_ENOSPC) {
        e->poisoned = 1;
    }
    return rc;
}

/* ---- batches ------------------------------------------------------------ */

void stor_batch_init(struct stor_batch *b)
{
    kv_buf_init(&b->rep);
    b->count = 0;
}

void stor_batch_close(struct stor_batch *b)
{
    kv_buf_close(&b->rep);
    b->count = 0;
}

void stor_batch_clear(struct stor_batch *b)
{
    kv_buf_clear(&b->rep);
    b->count = 0;
}

/* Appends one encoded op: u8 op, varint key size, key, and for puts and
 * ranges varint value size, value. Rolls back on allocation failure. */
static int batch_add(struct stor_batch *b, enum stor_op op, const void *key, size_t key_size,
                     const void *value, size_t value_size)
{
    size_t mark = b->rep.size;
    int rc = kv_buf_reserve(&b->rep, 1 + 10 + key_size + 10 + value_size);
    if (rc != KV_OK) {
        return rc;
    }
    /* Room is reserved, so the appends below cannot fail. */
    rc = kv_buf_put_u8(&b->rep, (uint8_t)op);
    rc |= kv_buf_put_varint(&b->rep, key_size);
    rc |= kv_buf_append(&b->rep, key, key_size);
    if (op != STOR_OP_DELETE) {
        rc |= kv_buf_put_varint(&b->rep, value_size);
        rc |= kv_buf_append(&b->rep, value, value_size);
    }
    if (rc != KV_OK) {
        b->rep.size = mark;
        return KV_ENOMEM;
    }
    b->count++;
    return KV_OK;
}

int stor_batch_put(struct stor_batch *b, const void *key, size_t key_size, const void *value,
                   size_t value_size)
{
    if (key_size == 0) {
        return KV_EINVAL;
    }
    if (key_size > STOR_KEY_SIZE_MAX || value_size > STOR_VALUE_SIZE_MAX) {
        return KV_ETOOBIG;
    }
    return batch_add(b, STOR_OP_PUT, key, key_size, value, value_size);
}

int stor_batch_delete(struct stor_batch *b, const void *key, size_t key_size)
{
    if (key_size == 0) {
        return KV_EINVAL;
    }
    if (key_size > STOR_KEY_SIZE_MAX) {
        return KV_ETOOBIG;
    }
    return batch_add(b, STOR_OP_DELETE, key, key_size, NULL, 0);
}

int stor_batch_delete_range(struct stor_batch *b, const void *start, size_t start_size,
                            const void *end, size_t end_size)
{
    if (start_size == 0 || end_size == 0) {
        return KV_EINVAL;
    }
    if (start_size > STOR_KEY_SIZE_MAX || end_size > STOR_KEY_SIZE_MAX) {
        return KV_ETOOBIG;
    }
    if (stor__key_cmp(start, start_size, end, end_size) >= 0) {
        return KV_EINVAL;
    }
    return batch_add(b, STOR_OP_DELETE_RANGE, start, start_size, end, end_size);
}

int stor_batch_next(const struct stor_batch *b, size_t *pos, struct stor_batch_op *op)
{
    if (*pos >= b->rep.size) {
        return KV_EOF;
    }
    struct kv_reader r;
    uint8_t kind;
    uint64_t size;
    kv_reader_init(&r, b->rep.data + *pos, b->rep.size - *pos);
    if (kv_reader_u8(&r, &kind) || kv_reader_varint(&r, &size) ||
        kv_reader_bytes(&r, size, &op->key)) {
        return KV_ECORRUPT;
    }
    op->op = kind;
    op->key_size = size;
    op->value = NULL;
    op->value_size = 0;
    if (kind == STOR_OP_PUT || kind == STOR_OP_DELETE_RANGE) {
        if (kv_reader_varint(&r, &size) || kv_reader_bytes(&r, size, &op->value)) {
            return KV_ECORRUPT;
        }
        op->value_size = size;
    } else if (kind != STOR_OP_DELETE) {
        return KV_ECORRUPT;
    }
    *pos = b->rep.size - r.left;
    return KV_OK;
}

/* ---- views and iterators -------------------------------------------------- */

int stor_view_new(struct stor_engine *e, struct stor_view **out)
{
    int rc = e->ops->view_new(e, out);
    if (rc == KV_OK) {
        (*out)->engine = e;
    }
    return rc;
}

void stor_view_free(struct stor_view *v)
{
    if (v != NULL) {
        v->engine->ops->view_free(v);
    }
}

int stor_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                  size_t start_size, const void *end, size_t end_size, struct stor_iter **out)
{
    struct stor_view *owned = NULL;
    *out = NULL;
    if (view == NULL) {
        int rc = stor_view_new(e, &owned);
        if (rc != KV_OK) {
            return rc;
        }
        view = owned;
    }
    KV_ASSERT(view->engine == e);
    int rc = e->ops->iter_new(e, view, start, start_size, end, end_size, out);
    if (rc != KV_OK) {
        stor_view_free(owned);
        return rc;
    }
    (*out)->engine = e;
    (*out)->owned_view = owned;
    return KV_OK;
}

int stor_iter_next(struct stor_iter *it, const uint8_t **key, size_t *key_size,
                   const uint8_t **value, size_t *value_size)
{
    return it->engine->ops->iter_next(it, key, key_size, value, value_size);
}

void stor_iter_free(struct stor_iter *it)
{
    if (it == NULL) {
        return;
    }
    struct stor_view *owned = it->owned_view;
    it->engine->ops->iter_free(it);
    stor_view_free(owned);
}

int stor_stats(struct stor_engine *e, struct stor_stats *out)
{
    memset(out, 0, sizeof *out);
    return e->ops->stats(e, out);
}

int stor_compact(struct stor_engine *e)
{
    if (e->ops->compact == NULL) {
        return KV_OK;
    }
    if (e->poisoned) {
        stor__set_errmsg(e, "%s: an earlier write failed; reopen the engine", e->ops->name);
        return KV_EPOISONED;
    }
    return e->ops->compact(e);
}

/* ---- shared helpers --------------------------------------------------------- */

int stor__key_cmp(const void *a, size_t a_size, const void *b, size_t b_size)
{
    size_t n = a_size < b_size ? a_size : b_size;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return a_size < b_size ? -1 : a_size > b_size ? 1 : 0;
}

int stor__key_in_range(const void *key, size_t key_size, const void *start, size_t start_size,
                       const void *end, size_t end_size)
{
    if (start != NULL && stor__key_cmp(key, key_size, start, start_size) < 0) {
        return 0;
    }
    if (end != NULL && stor__key_cmp(key, key_size, end, end_size) >= 0) {
        return 0;
    }
    return 1;
}

int stor__mkdirs(const char *path, char *errmsg)
{
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bad path '%s'", path);
        return KV_EINVAL;
    }
    memcpy(tmp, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char saved = tmp[i];
            tmp[i] = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                int err = errno;
                snprintf(errmsg, KV_ERRMSG_SIZE, "mkdir %s: %s", tmp, strerror(err));
                return kv_err_from_errno(err);
            }
            tmp[i] = saved;
        }
    }
    return KV_OK;
}

int stor__dir_bytes(const char *path, uint64_t *out)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        return kv_err_from_errno(errno);
    }
    struct dirent *de;
    int rc = KV_OK;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char child[4096];
        struct stat st;
        snprintf(child, sizeof child, "%s/%s", path, de->d_name);
        if (lstat(child, &st) != 0) {
            continue; /* removed meanwhile (compaction): not an error */
        }
        if (S_ISREG(st.st_mode)) {
            *out += (uint64_t)st.st_size;
        } else if (S_ISDIR(st.st_mode)) {
            rc = stor__dir_bytes(child, out);
            if (rc != KV_OK) {
                break;
            }
        }
    }
    closedir(d);
    return rc;
}

int stor__file_present(const char *dir, const char *name, uint64_t size_min)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size >= size_min;
}

int stor__fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        return kv_err_from_errno(errno);
    }
    int rc = fsync(fd) == 0 ? KV_OK : KV_EIO;
    close(fd);
    return rc;
}

int stor__lock_dir(const char *path, int *fd_out, char *errmsg)
{
    char lock_path[4096];
    snprintf(lock_path, sizeof lock_path, "%s/LOCK", path);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "open %s: %s", lock_path, strerror(err));
        return kv_err_from_errno(err);
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "%s is locked (another process, or another open engine in this process, owns the "
                 "directory)",
                 lock_path);
        close(fd);
        return KV_ELOCKED;
    }
    *fd_out = fd;
    return KV_OK;
}

void stor__unlock_dir(int fd)
{
    if (fd >= 0) {
        close(fd); /* closing releases the flock */
    }
}
