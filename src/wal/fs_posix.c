/* fs_posix.c -- the WAL's POSIX file layer: pwrite/pread loops that retry
 * EINTR and short transfers, fdatasync, and directory fsync. errno is mapped
 * to kv_err here, at the edge. */
#include "wal_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"

struct posix_file {
    int fd;
};

static int px_open(struct wal_fs *fs, const char *path, int create, struct wal_file **out)
{
    struct posix_file *pf = kv_malloc(sizeof *pf);
    if (pf == NULL) {
        return KV_ENOMEM;
    }
    int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
    pf->fd = open(path, flags, 0644);
    if (pf->fd < 0) {
        int rc = kv_err_from_errno(errno);
        kv_free(pf);
        return rc;
    }
    *out = (struct wal_file *)pf;
    return KV_OK;
}

static void px_close(struct wal_fs *fs, struct wal_file *f)
{
    struct posix_file *pf = (struct posix_file *)f;
    close(pf->fd);
    kv_free(pf);
}

static int px_pwrite(struct wal_fs *fs, struct wal_file *f, const void *buf, size_t size,
                     uint64_t offset)
{
    struct posix_file *pf = (struct posix_file *)f;
    const uint8_t *p = buf;
    while (size > 0) {
        ssize_t n = pwrite(pf->fd, p, size, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return kv_err_from_errno(errno);
        }
        if (n == 0) {
            return KV_EIO;
        }
        p += n;
        size -= (size_t)n;
        offset += (uint64_t)n;
    }
    return KV_OK;
}

static int px_pread(struct wal_fs *fs, struct wal_file *f, void *buf, size_t size, uint64_t offset,
                    size_t *got)
{
    struct posix_file *pf = (struct posix_file *)f;
    uint8_t *p = buf;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pread(pf->fd, p + done, size - done, (off_t)(offset + done));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return kv_err_from_errno(errno);
        }
        if (n == 0) {
            break;
        }
        done += (size_t)n;
    }
    *got = done;
    return KV_OK;
}

static int px_sync(struct wal_fs *fs, struct wal_file *f)
{
    struct posix_file *pf = (struct posix_file *)f;
    /* Never retried on failure: after a failed fdatasync the kernel may have
     * dropped the dirty pages, so a second call could falsely succeed. */
    return fdatasync(pf->fd) == 0 ? KV_OK : kv_err_from_errno(errno);
}

static int px_truncate(struct wal_fs *fs, struct wal_file *f, uint64_t size)
{
    struct posix_file *pf = (struct posix_file *)f;
    return ftruncate(pf->fd, (off_t)size) == 0 ? KV_OK : kv_err_from_errno(errno);
}

static int px_size(struct wal_fs *fs, struct wal_file *f, uint64_t *out)
{
    struct posix_file *pf = (struct posix_file *)f;
    struct stat st;
    if (fstat(pf->fd, &st) != 0) {
        return kv_err_from_errno(errno);
    }
    *out = (uint64_t)st.st_size;
    return KV_OK;
}

static int px_unlink(struct wal_fs *fs, const char *path)
{
    return unlink(path) == 0 ? KV_OK : kv_err_from_errno(errno);
}

static int px_list(struct wal_fs *fs, const char *dir, void *data,
                   int (*entry_cb)(void *data, const char *name))
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return kv_err_from_errno(errno);
    }
    int rc = KV_OK;
    struct dirent *de;
    while (rc == KV_OK && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            rc = entry_cb(data, de->d_name);
        }
    }
    closedir(d);
    return rc;
}

static int px_sync_dir(struct wal_fs *fs, const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return kv_err_from_errno(errno);
    }
    int rc = fsync(fd) == 0 ? KV_OK : kv_err_from_errno(errno);
    close(fd);
    return rc;
}

static int px_mkdir(struct wal_fs *fs, const char *dir)
{
    if (mkdir(dir, 0755) == 0 || errno == EEXIST) {
        return KV_OK;
    }
    return kv_err_from_errno(errno);
}

static struct wal_fs posix_fs = {
    .data = NULL,
    .open = px_open,
    .close = px_close,
    .pwrite = px_pwrite,
    .pread = px_pread,
    .sync = px_sync,
    .truncate = px_truncate,
    .size = px_size,
    .unlink = px_unlink,
    .list = px_list,
    .sync_dir = px_sync_dir,
    .mkdir = px_mkdir,
};

struct wal_fs *wal_fs_posix(void)
{
    return &posix_fs;
}
