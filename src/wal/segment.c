/* segment.c -- segment files: names, creation (header written and synced,
 * then the directory synced, so a segment never appears half-made after a
 * crash that follows its first acknowledged write), lookup and reads. */
#include "wal_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"

void wal__seg_path(const struct wal *w, uint64_t seq, char *out, size_t size)
{
    snprintf(out, size, "%s/%020" PRIu64 "%s", w->dir, seq, WAL__SEG_SUFFIX);
}

int wal__seg_parse_name(const char *name, uint64_t *seq)
{
    size_t len = strlen(name);
    if (len != WAL__SEG_DIGITS + strlen(WAL__SEG_SUFFIX) ||
        strcmp(name + WAL__SEG_DIGITS, WAL__SEG_SUFFIX) != 0) {
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < WAL__SEG_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return 0;
        }
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0;
        }
        v = v * 10 + d;
    }
    *seq = v;
    return v > 0;
}

static int segs_push(struct wal *w, uint64_t seq, struct wal_file *f, uint64_t size)
{
    if (w->seg_count == w->seg_cap) {
        size_t cap = w->seg_cap ? w->seg_cap * 2 : 8;
        struct wal__seg *segs = kv_realloc(w->segs, cap * sizeof *segs);
        if (segs == NULL) {
            return KV_ENOMEM;
        }
        w->segs = segs;
        w->seg_cap = cap;
    }
    KV_ASSERT(w->seg_count == 0 || w->segs[w->seg_count - 1].seq < seq);
    w->segs[w->seg_count++] = (struct wal__seg){.seq = seq, .f = f, .size = size};
    return KV_OK;
}

int wal__seg_create(struct wal *w, uint64_t seq)
{
    char path[WAL_PATH_MAX];
    wal__seg_path(w, seq, path, sizeof path);
    struct wal_file *f;
    int rc = w->fs->open(w->fs, path, 1, &f);
    if (rc != KV_OK) {
        wal__set_errmsg(w, "create %s: %s", path, kv_strerror(rc));
        return rc;
    }
    uint8_t header[WAL__SEG_HEADER_SIZE];
    wal__seg_header_encode(header, seq);
    rc = w->fs->truncate(w->fs, f, 0);
    if (rc == KV_OK) {
        rc = w->fs->pwrite(w->fs, f, header, sizeof header, 0);
    }
    if (rc == KV_OK) {
        rc = w->fs->sync(w->fs, f);
    }
    if (rc == KV_OK) {
        rc = w->fs->sync_dir(w->fs, w->dir);
    }
    if (rc != KV_OK) {
        wal__set_errmsg(w, "write header of %s: %s", path, kv_strerror(rc));
        w->fs->close(w->fs, f);
        return rc;
    }
    pthread_mutex_lock(&w->lock);
    rc = segs_push(w, seq, f, WAL__SEG_HEADER_SIZE);
    pthread_mutex_unlock(&w->lock);
    if (rc != KV_OK) {
        w->fs->close(w->fs, f);
    }
    return rc;
}

/* Used by recovery, which runs before any other thread can see `w`. */
int wal__seg_adopt(struct wal *w, uint64_t seq, struct wal_file *f, uint64_t size)
{
    return segs_push(w, seq, f, size);
}

struct wal__seg *wal__seg_find(struct wal *w, uint64_t seq)
{
    size_t lo = 0;
    size_t hi = w->seg_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->segs[mid].seq < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < w->seg_count && w->segs[lo].seq == seq ? &w->segs[lo] : NULL;
}

int wal__seg_read(struct wal *w, uint64_t seq, uint64_t offset, void *buf, size_t size)
{
    struct wal__seg *s = wal__seg_find(w, seq);
    KV_ASSERT(s != NULL);
    size_t got;
    int rc = w->fs->pread(w->fs, s->f, buf, size, offset, &got);
    if (rc == KV_OK && got != size) {
        rc = KV_EIO;
    }
    if (rc != KV_OK) {
        char path[WAL_PATH_MAX];
        wal__seg_path(w, seq, path, sizeof path);
        wal__set_errmsg(w, "read %s offset %" PRIu64 ": %s", path, offset, kv_strerror(rc));
    }
    return rc;
}
