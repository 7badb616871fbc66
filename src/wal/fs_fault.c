/* fs_fault.c -- a fault-injecting file layer for tests: it wraps another
 * layer, fails a chosen write or sync (EIO, ENOSPC, short or torn writes),
 * and remembers how much of each file was synced so that a simulated power
 * loss can drop what was not. The idea is SQLite's test VFS. */
#include "wal_int.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "rng.h"

/* A file this layer has seen, by path, across opens. */
struct tracked {
    char path[WAL_PATH_MAX];
    uint64_t synced; /* bytes known durable */
    struct tracked *next;
};

struct fault_file {
    struct wal_file *inner;
    struct tracked *t;
};

struct fault_fs {
    struct wal_fs fs; /* first: the layer callers see */
    struct wal_fs *inner;
    pthread_mutex_t lock;
    enum wal_fault fault; /* armed fault, WAL_FAULT_NONE when none */
    uint64_t skip;        /* matching operations to let pass first */
    struct tracked *files;
    uint64_t syncs;
    uint64_t writes;
    struct kv_rng rng;
};

static struct fault_fs *fault_of(struct wal_fs *fs)
{
    return (struct fault_fs *)fs->data;
}

static struct tracked *track(struct fault_fs *f, const char *path)
{
    for (struct tracked *t = f->files; t != NULL; t = t->next) {
        if (strcmp(t->path, path) == 0) {
            return t;
        }
    }
    struct tracked *t = kv_calloc(1, sizeof *t);
    if (t != NULL) {
        snprintf(t->path, sizeof t->path, "%s", path);
        t->next = f->files;
        f->files = t;
    }
    return t;
}

static int ft_open(struct wal_fs *fs, const char *path, int create, struct wal_file **out)
{
    struct fault_fs *f = fault_of(fs);
    struct fault_file *ff = kv_malloc(sizeof *ff);
    if (ff == NULL) {
        return KV_ENOMEM;
    }
    int rc = f->inner->open(f->inner, path, create, &ff->inner);
    if (rc != KV_OK) {
        kv_free(ff);
        return rc;
    }
    pthread_mutex_lock(&f->lock);
    ff->t = track(f, path);
    if (ff->t != NULL && !create) {
        /* A file found on disk at open is as durable as it will get. */
        uint64_t size = 0;
        if (f->inner->size(f->inner, ff->inner, &size) == KV_OK) {
            ff->t->synced = size;
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (ff->t == NULL) {
        f->inner->close(f->inner, ff->inner);
        kv_free(ff);
        return KV_ENOMEM;
    }
    *out = (struct wal_file *)ff;
    return KV_OK;
}

static void ft_close(struct wal_fs *fs, struct wal_file *file)
{
    struct fault_file *ff = (struct fault_file *)file;
    fault_of(fs)->inner->close(fault_of(fs)->inner, ff->inner);
    kv_free(ff);
}

/* Consumes the armed fault when `op` matches it; returns the fault to
 * inject now. */
static enum wal_fault take_fault(struct fault_fs *f, int is_sync)
{
    pthread_mutex_lock(&f->lock);
    enum wal_fault fault = WAL_FAULT_NONE;
    int matches = f->fault != WAL_FAULT_NONE && (f->fault == WAL_FAULT_SYNC_EIO) == is_sync;
    if (matches) {
        if (f->skip == 0) {
            fault = f->fault;
            f->fault = WAL_FAULT_NONE;
        } else {
            f->skip--;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return fault;
}

static int ft_pwrite(struct wal_fs *fs, struct wal_file *file, const void *buf, size_t size,
                     uint64_t offset)
{
    struct fault_fs *f = fault_of(fs);
    struct fault_file *ff = (struct fault_file *)file;
    enum wal_fault fault = take_fault(f, 0);
    if (fault == WAL_FAULT_WRITE_EIO) {
        return KV_EIO;
    }
    if (fault == WAL_FAULT_WRITE_ENOSPC) {
        return KV_ENOSPC;
    }
    if (fault == WAL_FAULT_WRITE_SHORT || fault == WAL_FAULT_WRITE_TORN) {
        size_t part = size / 2;
        int rc = f->inner->pwrite(f->inner, ff->inner, buf, part, offset);
        if (rc == KV_OK && fault == WAL_FAULT_WRITE_TORN && size - part > 0) {
            uint8_t junk[512];
            size_t n = size - part < sizeof junk ? size - part : sizeof junk;
            pthread_mutex_lock(&f->lock);
            kv_rng_fill(&f->rng, junk, n);
            pthread_mutex_unlock(&f->lock);
            rc = f->inner->pwrite(f->inner, ff->inner, junk, n, offset + part);
        }
        return rc == KV_OK ? (fault == WAL_FAULT_WRITE_SHORT ? KV_ENOSPC : KV_EIO) : rc;
    }
    int rc = f->inner->pwrite(f->inner, ff->inner, buf, size, offset);
    if (rc == KV_OK) {
        pthread_mutex_lock(&f->lock);
        f->writes++;
        pthread_mutex_unlock(&f->lock);
    }
    return rc;
}

static int ft_pread(struct wal_fs *fs, struct wal_file *file, void *buf, size_t size,
                    uint64_t offset, size_t *got)
{
    struct fault_file *ff = (struct fault_file *)file;
    return fault_of(fs)->inner->pread(fault_of(fs)->inner, ff->inner, buf, size, offset, got);
}

static int ft_sync(struct wal_fs *fs, struct wal_file *file)
{
    struct fault_fs *f = fault_of(fs);
    struct fault_file *ff = (struct fault_file *)file;
    if (take_fault(f, 1) == WAL_FAULT_SYNC_EIO) {
        return KV_EIO;
    }
    uint64_t size;
    int rc = f->inner->sync(f->inner, ff->inner);
    if (rc == KV_OK) {
        rc = f->inner->size(f->inner, ff->inner, &size);
    }
    if (rc == KV_OK) {
        pthread_mutex_lock(&f->lock);
        ff->t->synced = size;
        f->syncs++;
        pthread_mutex_unlock(&f->lock);
    }
    return rc;
}

static int ft_truncate(struct wal_fs *fs, struct wal_file *file, uint64_t size)
{
    struct fault_fs *f = fault_of(fs);
    struct fault_file *ff = (struct fault_file *)file;
    int rc = f->inner->truncate(f->inner, ff->inner, size);
    if (rc == KV_OK) {
        pthread_mutex_lock(&f->lock);
        if (ff->t->synced > size) {
            ff->t->synced = size;
        }
        pthread_mutex_unlock(&f->lock);
    }
    return rc;
}

static int ft_size(struct wal_fs *fs, struct wal_file *file, uint64_t *out)
{
    struct fault_file *ff = (struct fault_file *)file;
    return fault_of(fs)->inner->size(fault_of(fs)->inner, ff->inner, out);
}

static int ft_unlink(struct wal_fs *fs, const char *path)
{
    struct fault_fs *f = fault_of(fs);
    int rc = f->inner->unlink(f->inner, path);
    pthread_mutex_lock(&f->lock);
    for (struct tracked **p = &f->files; *p != NULL; p = &(*p)->next) {
        if (strcmp((*p)->path, path) == 0) {
            struct tracked *t = *p;
            *p = t->next;
            kv_free(t);
            break;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int ft_list(struct wal_fs *fs, const char *dir, void *data,
                   int (*entry_cb)(void *data, const char *name))
{
    return fault_of(fs)->inner->list(fault_of(fs)->inner, dir, data, entry_cb);
}

static int ft_sync_dir(struct wal_fs *fs, const char *dir)
{
    return fault_of(fs)->inner->sync_dir(fault_of(fs)->inner, dir);
}

static int ft_mkdir(struct wal_fs *fs, const char *dir)
{
    return fault_of(fs)->inner->mkdir(fault_of(fs)->inner, dir);
}

struct wal_fs *wal_fs_fault_new(struct wal_fs *inner)
{
    struct fault_fs *f = kv_calloc(1, sizeof *f);
    if (f == NULL) {
        return NULL;
    }
    f->fs = (struct wal_fs){.data = f,
                            .open = ft_open,
                            .close = ft_close,
                            .pwrite = ft_pwrite,
                            .pread = ft_pread,
                            .sync = ft_sync,
                            .truncate = ft_truncate,
                            .size = ft_size,
                            .unlink = ft_unlink,
                            .list = ft_list,
                            .sync_dir = ft_sync_dir,
                            .mkdir = ft_mkdir};
    f->inner = inner;
    pthread_mutex_init(&f->lock, NULL);
    kv_rng_seed(&f->rng, 1);
    return &f->fs;
}

void wal_fs_fault_free(struct wal_fs *fs)
{
    if (fs == NULL) {
        return;
    }
    struct fault_fs *f = fault_of(fs);
    while (f->files != NULL) {
        struct tracked *t = f->files;
        f->files = t->next;
        kv_free(t);
    }
    pthread_mutex_destroy(&f->lock);
    kv_free(f);
}

void wal_fs_fault_arm(struct wal_fs *fs, enum wal_fault fault, uint64_t skip)
{
    struct fault_fs *f = fault_of(fs);
    pthread_mutex_lock(&f->lock);
    f->fault = fault;
    f->skip = skip;
    pthread_mutex_unlock(&f->lock);
}

/* Cuts one file back to what a power loss could leave of it. */
static int crash_file(struct fault_fs *f, struct tracked *t, uint64_t seed)
{
    struct wal_file *file;
    int rc = f->inner->open(f->inner, t->path, 0, &file);
    if (rc == KV_ENOENT) {
        return KV_OK;
    }
    if (rc != KV_OK) {
        return rc;
    }
    uint64_t size;
    rc = f->inner->size(f->inner, file, &size);
    if (rc == KV_OK && size > t->synced) {
        uint64_t keep = t->synced;
        if (seed != 0) {
            keep += kv_rng_below(&f->rng, size - t->synced + 1);
        }
        rc = f->inner->truncate(f->inner, file, keep);
        if (rc == KV_OK && seed != 0 && keep > t->synced && kv_rng_below(&f->rng, 2)) {
            /* The last sector that made it may hold garbage. */
            uint8_t junk[16];
            size_t n = keep - t->synced < sizeof junk ? (size_t)(keep - t->synced) : sizeof junk;
            kv_rng_fill(&f->rng, junk, n);
            rc = f->inner->pwrite(f->inner, file, junk, n, keep - n);
        }
        t->synced = keep;
    }
    f->inner->close(f->inner, file);
    return rc;
}

int wal_fs_fault_crash(struct wal_fs *fs, uint64_t seed)
{
    struct fault_fs *f = fault_of(fs);
    pthread_mutex_lock(&f->lock);
    if (seed != 0) {
        kv_rng_seed(&f->rng, seed);
    }
    int rc = KV_OK;
    for (struct tracked *t = f->files; t != NULL && rc == KV_OK; t = t->next) {
        rc = crash_file(f, t, seed);
    }
    f->fault = WAL_FAULT_NONE;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

uint64_t wal_fs_fault_syncs(struct wal_fs *fs)
{
    struct fault_fs *f = fault_of(fs);
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->syncs;
    pthread_mutex_unlock(&f->lock);
    return n;
}

uint64_t wal_fs_fault_writes(struct wal_fs *fs)
{
    struct fault_fs *f = fault_of(fs);
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->writes;
    pthread_mutex_unlock(&f->lock);
    return n;
}
