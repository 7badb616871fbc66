/* gc.c -- garbage collection of segments. A group needs the segment of its
 * first held entry, and the segments of its latest hard state and
 * compaction mark; every segment older than the oldest one any group needs
 * is deleted (always a prefix, so a record that supersedes another is never
 * deleted before it). When one slow or idle group alone keeps old segments
 * alive, its few live records are rewritten forward into the active segment
 * so that disk use stays bounded under a steady workload. */
#include "wal_int.h"

#include <inttypes.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

/* Oldest segment the group needs, 0 for none. */
static uint64_t group_min_seg(struct wal__group *g)
{
    uint64_t min = 0;
    if (g->last_index >= g->first_index) {
        min = wal__group_loc(g, g->first_index)->seg;
    }
    if (g->hs_seg != 0 && (min == 0 || g->hs_seg < min)) {
        min = g->hs_seg;
    }
    if (g->mark_seg != 0 && (min == 0 || g->mark_seg < min)) {
        min = g->mark_seg;
    }
    return min;
}

static uint64_t needed_min(struct wal *w)
{
    uint64_t min = w->segs[w->seg_count - 1].seq;
    for (size_t i = 0; i < w->groups.cap; i++) {
        struct wal__group *g = w->groups.slots[i];
        uint64_t need = g ? group_min_seg(g) : 0;
        if (need != 0 && need < min) {
            min = need;
        }
    }
    return min;
}

/* Deletes every segment older than the oldest needed one. */
static int delete_unneeded(struct wal *w)
{
    uint64_t min = needed_min(w);
    size_t n = 0;
    int rc = KV_OK;
    while (n < w->seg_count - 1 && w->segs[n].seq < min) {
        char path[WAL_PATH_MAX];
        wal__seg_path(w, w->segs[n].seq, path, sizeof path);
        w->fs->close(w->fs, w->segs[n].f);
        n++;
        rc = w->fs->unlink(w->fs, path);
        if (rc != KV_OK) {
            wal__set_errmsg(w, "unlink %s: %s", path, kv_strerror(rc));
            break;
        }
        kv_debug("wal: deleted segment file=%s", path);
    }
    if (n == 0) {
        return rc;
    }
    memmove(w->segs, w->segs + n, (w->seg_count - n) * sizeof *w->segs);
    w->seg_count -= n;
    w->stats.segments_deleted += n;
    int drc = w->fs->sync_dir(w->fs, w->dir);
    return rc != KV_OK ? rc : drc;
}

/* Bytes of the RESET record that would rewrite g. */
static uint64_t rewrite_size(struct wal__group *g)
{
    uint64_t count = g->last_index + 1 - g->first_index;
    return WAL__REC_HEADER_SIZE + WAL__RESET_HEAD_SIZE + count * WAL__ENTRY_HEAD_SIZE +
           g->live_bytes;
}

/* Adds group g's live state to the rewrite batch as one RESET record, so a
 * crash in the middle of the rewrite leaves the old records in charge. */
static int add_group(struct wal *w, struct wal__group *g, struct wal_batch *b, struct wal_read *rd)
{
    rd->count = 0;
    if (g->last_index >= g->first_index) {
        int rc = wal__read_locked(w, g, g->first_index, g->last_index + 1, UINT64_MAX, rd);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return wal__batch_reset(b, g->id, g->first_index - 1, g->compact_term,
                            g->has_hs ? &g->hs : NULL, rd->entries, rd->count);
}

/* Rewrites forward the small groups that pin the oldest segment. Returns
 * how many were rewritten through *count. */
static int rewrite_oldest(struct wal *w, size_t *count)
{
    uint64_t oldest = w->segs[0].seq;
    struct wal_batch b;
    struct wal_read rd;
    wal_batch_init(&b);
    wal_read_init(&rd);
    int rc = KV_OK;
    *count = 0;
    for (size_t i = 0; i < w->groups.cap && rc == KV_OK; i++) {
        struct wal__group *g = w->groups.slots[i];
        if (g == NULL || group_min_seg(g) != oldest || rewrite_size(g) > w->opt.rewrite_bytes ||
            rewrite_size(g) > WAL_RECORD_BYTES_MAX) {
            continue;
        }
        if (b.bytes.size + rewrite_size(g) > WAL_BATCH_BYTES_MAX / 2) {
            break; /* the rest waits for the next round */
        }
        rc = add_group(w, g, &b, &rd);
        *count += rc == KV_OK;
    }
    if (rc == KV_OK && b.ops.size > 0) {
        rc = wal__write_locked(w, &b, 0);
    }
    wal_read_close(&rd);
    wal_batch_close(&b);
    return rc;
}

int wal__gc(struct wal *w)
{
    w->gc_wanted = 0;
    int rc = delete_unneeded(w);
    if (rc != KV_OK || w->seg_count < WAL__GC_SEGMENTS_KEEP || w->opt.rewrite_bytes == UINT64_MAX ||
        w->poisoned) {
        return rc;
    }
    size_t count;
    rc = rewrite_oldest(w, &count);
    if (rc != KV_OK || count == 0) {
        return rc;
    }
    w->stats.rewrites += count;
    kv_debug("wal: rewrote groups=%zu pinning the oldest segment", count);
    return delete_unneeded(w);
}
