/* recover.c -- start-up: scan the segments in order, verify every record's
 * checksum and replay it into the per-group state. A damaged record at the
 * tail of the last segment is a write that a crash cut short and is cut off;
 * damage anywhere else stops start-up with the file and offset, because
 * skipping it could silently drop committed entries. */
#include "wal_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

static int collect_cb(void *data, const char *name)
{
    uint64_t seq;
    if (!wal__seg_parse_name(name, &seq)) {
        return KV_OK; /* LOCK and anything else that is not a segment */
    }
    return kv_buf_append(data, &seq, sizeof seq);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Puts the entries of an ENTRIES or RESET record, the first being `first`,
 * the entry area starting `head` bytes into the payload. */
static int replay_entries(struct wal *w, struct wal__group *g, const struct wal__rec *r,
                          uint64_t first, uint64_t seq, uint64_t rec_off, size_t head)
{
    struct wal__entry_cursor c = {.area = r->entries, .size = r->entries_size, .pos = 0};
    uint64_t area_off = rec_off + WAL__REC_HEADER_SIZE + head;
    for (uint64_t k = 0; k < r->b; k++) {
        struct wal__loc loc = {.seg = seq};
        size_t data_off;
        int rc = wal__rec_entry_next(&c, &loc.term, &loc.type, &loc.size, &data_off);
        KV_ASSERT(rc == KV_OK); /* the decoder validated the area */
        loc.offset = area_off + data_off;
        rc = wal__group_put(w, g, first + k, &loc, NULL, 1);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

static int replay(struct wal *w, const struct wal__rec *r, uint64_t seq, uint64_t rec_off)
{
    if (r->type == WAL__REC_WRITE) {
        return KV_OK; /* framing only: see scan() */
    }
    if (r->type == WAL__REC_REMOVE) {
        wal__table_remove(w, r->group);
        return KV_OK;
    }
    struct wal__group *g;
    int rc = wal__table_get(&w->groups, r->group, &g);
    if (rc != KV_OK) {
        return rc;
    }
    g->exists = 1;
    switch (r->type) {
    case WAL__REC_ENTRIES:
        return replay_entries(w, g, r, r->a, seq, rec_off, WAL__ENTRIES_HEAD_SIZE);
    case WAL__REC_RESET:
        wal__group_reset_to(w, g, r->a, r->c, r->has_hs ? &r->hs : NULL, seq);
        return replay_entries(w, g, r, r->a + 1, seq, rec_off, WAL__RESET_HEAD_SIZE);
    case WAL__REC_HARD_STATE:
        g->hs = (struct wal_hard_state){.term = r->a, .vote = r->b, .commit = r->c};
        g->has_hs = 1;
        g->hs_seg = seq;
        return KV_OK;
    default:
        wal__group_compact(w, g, r->a, r->b, seq);
        return KV_OK;
    }
}

/* 1 when a valid WRITE record starts anywhere in (off, size): a write
 * that began after the damage, so the damage is not in the final write.
 * WRITE records only ever open writes, so none can lie inside the torn
 * final write itself. */
static int later_write_exists(const uint8_t *buf, uint64_t off, uint64_t size)
{
    for (uint64_t y = off + 1; y + WAL__WRITE_REC_SIZE <= size; y++) {
        if (buf[y + 8] != WAL__REC_WRITE || kv_load_u32(buf + y + 4) != WAL__WRITE_SIZE) {
            continue;
        }
        struct wal__rec r;
        const char *why;
        if (wal__rec_decode(buf + y, WAL__WRITE_REC_SIZE, &r, &why) == KV_OK) {
            return 1;
        }
    }
    return 0;
}

/* Whether damage at `off` of the last segment is the torn final write:
 * it lies inside the last write begun ([start, end)) and that write reaches
 * the end of the file; or it lies right where that write ended (the next
 * write's opening record is damaged), what follows fits one write, and no
 * later write begins after it. Damage in an earlier write is not torn. */
static int is_torn(const uint8_t *buf, uint64_t off, uint64_t size, uint64_t start, uint64_t end)
{
    if (off >= start && off < end) {
        return end >= size;
    }
    return off == end && size - off <= WAL_WRITE_BYTES_MAX && !later_write_exists(buf, off, size);
}

/* Replays the records of one segment held in `buf`; *valid gets the bytes
 * that are sound. A torn final write in the last segment ends the scan;
 * any other damage is KV_ECORRUPT. */
static int scan(struct wal *w, const char *path, uint64_t seq, const uint8_t *buf, uint64_t size,
                int last, uint64_t *valid)
{
    uint64_t off = WAL__SEG_HEADER_SIZE;
    uint64_t write_start = off; /* the last write begun */
    uint64_t write_end = off;
    while (off < size) {
        struct wal__rec r;
        const char *why = "";
        int rc = wal__rec_decode(buf + off, (size_t)(size - off), &r, &why);
        if (rc == KV_OK) {
            if (r.type == WAL__REC_WRITE) {
                write_start = off;
                write_end = off + r.a;
            }
            rc = replay(w, &r, seq, off);
            if (rc == KV_ECORRUPT) {
                wal__set_errmsg(w, "%s offset %" PRIu64 ": entries leave a gap in group %" PRIu64,
                                path, off, r.group);
                return rc;
            }
            if (rc != KV_OK) {
                return rc;
            }
            off += r.size;
            continue;
        }
        if (last && is_torn(buf, off, size, write_start, write_end)) {
            kv_warn("wal: torn write at the tail: file=%s offset=%" PRIu64 " bytes=%" PRIu64
                    " reason=\"%s\", cut off",
                    path, off, size - off, why);
            break;
        }
        wal__set_errmsg(w, "%s offset %" PRIu64 ": %s", path, off, why);
        return KV_ECORRUPT;
    }
    *valid = off;
    return KV_OK;
}

static int read_all(struct wal *w, struct wal_file *f, uint64_t size, uint8_t **out)
{
    uint8_t *buf = kv_malloc((size_t)size);
    if (buf == NULL) {
        return KV_ENOMEM;
    }
    size_t got;
    int rc = w->fs->pread(w->fs, f, buf, (size_t)size, 0, &got);
    if (rc == KV_OK && got != size) {
        rc = KV_EIO;
    }
    if (rc != KV_OK) {
        kv_free(buf);
        return rc;
    }
    *out = buf;
    return KV_OK;
}

/* Opens, verifies and replays one segment, then adopts it. */
static int recover_segment(struct wal *w, uint64_t seq, int last)
{
    char path[WAL_PATH_MAX];
    wal__seg_path(w, seq, path, sizeof path);
    struct wal_file *f;
    uint64_t size = 0;
    uint8_t *buf = NULL;
    int rc = w->fs->open(w->fs, path, 0, &f);
    if (rc != KV_OK) {
        wal__set_errmsg(w, "open %s: %s", path, kv_strerror(rc));
        return rc;
    }
    rc = w->fs->size(w->fs, f, &size);
    if (rc == KV_OK) {
        rc = read_all(w, f, size, &buf);
    }
    if (rc != KV_OK) {
        wal__set_errmsg(w, "read %s: %s", path, kv_strerror(rc));
        goto err_close;
    }
    int header_ok = size >= WAL__SEG_HEADER_SIZE && wal__seg_header_check(buf, seq) == KV_OK;
    if (!header_ok && last && size <= WAL__SEG_HEADER_SIZE) {
        /* A segment whose creation a crash interrupted: its header is synced
         * before any record is written to it, so it holds nothing that was
         * acknowledged. */
        kv_warn("wal: removing a segment cut short at creation: file=%s bytes=%" PRIu64, path,
                size);
        kv_free(buf);
        w->fs->close(w->fs, f);
        rc = w->fs->unlink(w->fs, path);
        return rc == KV_OK ? w->fs->sync_dir(w->fs, w->dir) : rc;
    }
    if (!header_ok) {
        wal__set_errmsg(w, "%s offset 0: bad segment header", path);
        rc = KV_ECORRUPT;
        goto err_free;
    }
    uint64_t valid;
    rc = scan(w, path, seq, buf, size, last, &valid);
    if (rc != KV_OK) {
        goto err_free;
    }
    kv_free(buf);
    buf = NULL;
    if (valid < size) {
        rc = w->fs->truncate(w->fs, f, valid);
        if (rc == KV_OK) {
            rc = w->fs->sync(w->fs, f);
        }
        if (rc != KV_OK) {
            wal__set_errmsg(w, "truncate %s: %s", path, kv_strerror(rc));
            goto err_close;
        }
    }
    rc = wal__seg_adopt(w, seq, f, valid);
    if (rc != KV_OK) {
        goto err_close;
    }
    return KV_OK;

err_free:
    kv_free(buf);
err_close:
    w->fs->close(w->fs, f);
    return rc;
}

/* The marker that says a log lives in this directory. Written once, after
 * the first successful recovery; when it is there but no segment is, the
 * segments were lost or deleted, and starting with an empty log would
 * forget the terms and votes Raft promised to keep: refuse instead. */
#define WAL_MARKER      "RAFTKV_WAL"
#define WAL_MARKER_TEXT "raftkv-wal 1\n"

static int marker_present(struct wal *w, int *present)
{
    char path[WAL_PATH_MAX + 16];
    struct wal_file *f;
    snprintf(path, sizeof path, "%s/%s", w->dir, WAL_MARKER);
    int rc = w->fs->open(w->fs, path, 0, &f);
    *present = rc == KV_OK;
    if (rc == KV_OK) {
        w->fs->close(w->fs, f);
    }
    return rc == KV_ENOENT ? KV_OK : rc;
}

static int marker_write(struct wal *w)
{
    char path[WAL_PATH_MAX + 16];
    struct wal_file *f;
    snprintf(path, sizeof path, "%s/%s", w->dir, WAL_MARKER);
    int rc = w->fs->open(w->fs, path, 1, &f);
    if (rc != KV_OK) {
        wal__set_errmsg(w, "create %s: %s", path, kv_strerror(rc));
        return rc;
    }
    rc = w->fs->pwrite(w->fs, f, WAL_MARKER_TEXT, sizeof WAL_MARKER_TEXT - 1, 0);
    if (rc == KV_OK) {
        rc = w->fs->sync(w->fs, f);
    }
    w->fs->close(w->fs, f);
    if (rc == KV_OK) {
        rc = w->fs->sync_dir(w->fs, w->dir);
    }
    if (rc != KV_OK) {
        wal__set_errmsg(w, "write %s: %s", path, kv_strerror(rc));
    }
    return rc;
}

int wal__recover(struct wal *w)
{
    struct kv_buf seqs;
    kv_buf_init(&seqs);
    int rc = w->fs->list(w->fs, w->dir, &seqs, collect_cb);
    if (rc != KV_OK) {
        wal__set_errmsg(w, "list %s: %s", w->dir, kv_strerror(rc));
        goto out;
    }
    size_t n = seqs.size / sizeof(uint64_t);
    uint64_t *v = (uint64_t *)seqs.data;
    int marked;
    rc = marker_present(w, &marked);
    if (rc != KV_OK) {
        wal__set_errmsg(w, "%s/%s: %s", w->dir, WAL_MARKER, kv_strerror(rc));
        goto out;
    }
    if (marked && n == 0) {
        wal__set_errmsg(w,
                        "%s: every segment is missing (%s says a log lives here); refusing to "
                        "start with an empty log, which would forget Raft's terms and votes",
                        w->dir, WAL_MARKER);
        rc = KV_ECORRUPT;
        goto out;
    }
    if (n > 0) {
        qsort(v, n, sizeof *v, cmp_u64);
    }
    for (size_t i = 0; i < n && rc == KV_OK; i++) {
        rc = recover_segment(w, v[i], i + 1 == n);
    }
    if (rc != KV_OK) {
        goto out;
    }
    /* Queued-batch validation starts from the durable state. */
    for (size_t i = 0; i < w->groups.cap; i++) {
        struct wal__group *g = w->groups.slots[i];
        if (g != NULL) {
            g->pend_first = g->first_index;
            g->pend_last = g->last_index;
        }
    }
    if (w->seg_count == 0) {
        uint64_t seq = n > 0 ? v[n - 1] + 1 : 1;
        rc = wal__seg_create(w, seq);
    }
    if (rc == KV_OK && !marked) {
        rc = marker_write(w);
    }
out:
    kv_buf_close(&seqs);
    return rc;
}
