/* bitcask_merge.c -- the bitcask engine's merge: copies the live records of
 * every immutable file into new merge files, writes a hint file beside each
 * for a fast start-up, publishes the result atomically (rename, then swap
 * the keydir's entries and the file table), and deletes the inputs in an
 * order that never resurrects a deleted key. Runs under write_lock, from
 * stor_compact or automatically after a roll. The crash argument is in
 * docs/storage-bitcask.md. */
#include "bitcask_int.h"
#include "alloc.h"
#include "crc32c.h"
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Merge the immutable files when this percentage of their bytes is dead
 * (overwritten, deleted, tombstones, commit records). */
#define BITCASK_MERGE_DEAD_PCT 50u
/* ...and they hold at least this many bytes, so tiny stores don't churn. */
#define BITCASK_MERGE_MIN_BYTES (64u * 1024u)

/* ---- merge ------------------------------------------------------------------- */

/* One output file of a merge in progress. */
struct merge_out {
    struct bc_file *file;
    struct kv_buf data; /* records not yet written */
    struct kv_buf hint; /* the whole hint file */
    uint64_t entries;
};

/* Pairs of (keydir entry, its replacement in the output). */
struct merge_move {
    struct kd_entry *old;
    struct kd_entry *fresh;
};

struct merge {
    struct bc_engine *e;
    struct bc_file **inputs;
    size_t input_count;
    struct merge_out *outs;
    size_t out_count;
    struct merge_move *moves;
    size_t move_count;
    size_t move_cap;
    struct kv_buf rec;
};

static int merge_flush(struct merge *m, struct merge_out *o)
{
    int rc = stor__bitcask_write_all(o->file->fd, o->data.data, o->data.size,
                                     o->file->size - o->data.size, "merge file",
                                     stor__errbuf(&m->e->base));
    kv_buf_clear(&o->data);
    return rc;
}

static int merge_new_out(struct merge *m)
{
    struct bc_engine *e = m->e;
    struct merge_out *outs = kv_realloc(m->outs, (m->out_count + 1) * sizeof *outs);
    if (outs == NULL) {
        return KV_ENOMEM;
    }
    m->outs = outs;
    struct merge_out *o = &outs[m->out_count];
    memset(o, 0, sizeof *o);
    kv_buf_init(&o->data);
    kv_buf_init(&o->hint);
    int fd;
    int rc =
        stor__bitcask_create_file(e, e->next_file_id, "merge.tmp", &fd, stor__errbuf(&e->base));
    if (rc != KV_OK) {
        return rc;
    }
    o->file = stor__bitcask_file_new(e->next_file_id, FILE_MERGE, fd);
    if (o->file == NULL) {
        close(fd);
        char p[BITCASK_PATH_SIZE_MAX];
        stor__bitcask_file_path(e, e->next_file_id, "merge.tmp", p);
        unlink(p);
        return KV_ENOMEM;
    }
    e->next_file_id++;
    m->out_count++;
    uint8_t head[BITCASK_HINT_HEADER_SIZE];
    kv_store_u32(head, BITCASK_HINT_MAGIC);
    kv_store_u32(head + 4, BITCASK_HINT_VERSION);
    kv_store_u32(head + 8, o->file->id);
    return kv_buf_append(&o->hint, head, sizeof head);
}

static int hint_add(struct merge_out *o, const struct kd_entry *en)
{
    uint8_t h[BITCASK_HINT_ENTRY_SIZE];
    h[0] = (uint8_t)en->key_size;
    h[1] = (uint8_t)(en->key_size >> 8);
    kv_store_u32(h + 2, en->value_size);
    kv_store_u64(h + 6, en->offset);
    kv_store_u64(h + 14, en->seq);
    int rc = kv_buf_reserve(&o->hint, sizeof h + en->key_size);
    if (rc == KV_OK) {
        rc = kv_buf_append(&o->hint, h, sizeof h);
    }
    if (rc == KV_OK) {
        rc = kv_buf_append(&o->hint, en->key, en->key_size);
    }
    o->entries++;
    return rc;
}

/* Copies the record of `en` (in an input file) to the current output. */
static int merge_copy(struct merge *m, struct kd_entry *en)
{
    struct bc_engine *e = m->e;
    if (m->move_count == m->move_cap) {
        size_t cap = m->move_cap ? m->move_cap * 2 : 64;
        struct merge_move *moves = kv_realloc(m->moves, cap * sizeof *moves);
        if (moves == NULL) {
            return KV_ENOMEM;
        }
        m->moves = moves;
        m->move_cap = cap;
    }
    int rc = stor__bitcask_read_record(&e->base, en, en->file, en->offset, &m->rec);
    if (rc != KV_OK) {
        return rc;
    }
    struct merge_out *o = m->out_count ? &m->outs[m->out_count - 1] : NULL;
    if (o == NULL || o->file->size >= e->file_bytes_max) {
        rc = merge_new_out(m);
        if (rc != KV_OK) {
            return rc;
        }
        o = &m->outs[m->out_count - 1];
    }
    struct kd_entry *fresh = stor__bitcask_entry_new(en->key, en->key_size, en->hash);
    if (fresh == NULL) {
        return KV_ENOMEM;
    }
    fresh->value_size = en->value_size;
    fresh->seq = en->seq;
    fresh->offset = o->file->size;
    fresh->file = o->file;
    m->moves[m->move_count].old = en;
    m->moves[m->move_count].fresh = fresh;
    m->move_count++;
    rc = kv_buf_append(&o->data, m->rec.data, m->rec.size);
    if (rc != KV_OK) {
        return rc;
    }
    o->file->size += m->rec.size;
    o->file->live_bytes += m->rec.size;
    if (en->seq > o->file->max_seq) {
        o->file->max_seq = en->seq;
    }
    rc = hint_add(o, fresh);
    if (rc == KV_OK && o->data.size >= BITCASK_MERGE_FLUSH_BYTES) {
        rc = merge_flush(m, o);
    }
    return rc;
}

/* Flushes, writes the hints, syncs all outputs. */
static int merge_finish_outputs(struct merge *m)
{
    struct bc_engine *e = m->e;
    for (size_t i = 0; i < m->out_count; i++) {
        struct merge_out *o = &m->outs[i];
        int rc = merge_flush(m, o);
        if (rc == KV_OK) {
            rc = stor__bitcask_sync_file(o->file->fd, "merge file", stor__errbuf(&e->base));
        }
        uint8_t t[BITCASK_HINT_TRAILER_SIZE];
        kv_store_u32(t, BITCASK_HINT_MAGIC);
        kv_store_u64(t + 4, o->entries);
        kv_store_u32(t + 12, 0);
        if (rc == KV_OK) {
            rc = kv_buf_append(&o->hint, t, sizeof t);
        }
        if (rc != KV_OK) {
            return rc;
        }
        kv_store_u32(o->hint.data + o->hint.size - 4, kv_crc32c(0, o->hint.data, o->hint.size - 4));
        int fd;
        rc = stor__bitcask_create_file(e, o->file->id, "hint.tmp", &fd, stor__errbuf(&e->base));
        if (rc != KV_OK) {
            return rc;
        }
        rc = stor__bitcask_write_all(fd, o->hint.data, o->hint.size, 0, "hint file",
                                     stor__errbuf(&e->base));
        if (rc == KV_OK) {
            rc = stor__bitcask_sync_file(fd, "hint file", stor__errbuf(&e->base));
        }
        close(fd);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* Renames each output's temporary files to their final names. */
static int merge_rename(struct merge *m)
{
    static const char *const names[][2] = {{"merge.tmp", "merge"}, {"hint.tmp", "hint"}};
    for (size_t i = 0; i < m->out_count; i++) {
        for (size_t k = 0; k < 2; k++) {
            char from[BITCASK_PATH_SIZE_MAX];
            char to[BITCASK_PATH_SIZE_MAX];
            stor__bitcask_file_path(m->e, m->outs[i].file->id, names[k][0], from);
            stor__bitcask_file_path(m->e, m->outs[i].file->id, names[k][1], to);
            if (rename(from, to) != 0) {
                int err = errno;
                snprintf(stor__errbuf(&m->e->base), KV_ERRMSG_SIZE, "bitcask: rename %s: %s", from,
                         strerror(err));
                return KV_EIO;
            }
        }
    }
    if (stor__fsync_dir(m->e->path) != KV_OK) {
        snprintf(stor__errbuf(&m->e->base), KV_ERRMSG_SIZE, "bitcask: fsync directory %s failed",
                 m->e->path);
        return KV_EIO;
    }
    return KV_OK;
}

static int cmp_max_seq(const void *a, const void *b)
{
    const struct bc_file *fa = *(struct bc_file *const *)a;
    const struct bc_file *fb = *(struct bc_file *const *)b;
    return fa->max_seq < fb->max_seq ? -1 : fa->max_seq > fb->max_seq;
}

/* The merge is durable: point the keydir at the outputs, swap the file
 * table, and unlink the inputs oldest-content first (see the doc for why
 * that order never resurrects a deleted key). Cannot fail. */
static void merge_publish(struct merge *m)
{
    struct bc_engine *e = m->e;
    pthread_rwlock_wrlock(&e->lock);
    for (size_t i = 0; i < m->move_count; i++) {
        struct kd_entry *old = m->moves[i].old;
        size_t slot = stor__bitcask_kd_probe(&e->kd, old->key, old->key_size, old->hash);
        KV_ASSERT(e->kd.slots[slot] == old);
        e->kd.slots[slot] = m->moves[i].fresh;
        m->moves[i].fresh = NULL;
        stor__bitcask_entry_unref(old);
    }
    size_t kept = 0;
    for (size_t i = 0; i < e->file_count; i++) {
        if (!e->files[i]->merging) {
            e->files[kept++] = e->files[i];
        }
    }
    e->file_count = kept;
    for (size_t i = 0; i < m->out_count; i++) {
        int rc = stor__bitcask_table_add(e, m->outs[i].file); /* room reserved: cannot fail */
        KV_ASSERT(rc == KV_OK);
        m->outs[i].file = NULL;
    }
    pthread_rwlock_unlock(&e->lock);
    qsort(m->inputs, m->input_count, sizeof *m->inputs, cmp_max_seq);
    for (size_t i = 0; i < m->input_count; i++) {
        struct bc_file *f = m->inputs[i];
        char p[BITCASK_PATH_SIZE_MAX];
        /* The hint goes first: a crash in between leaves a merge file
         * without a hint (scanned), never an orphan hint. */
        stor__bitcask_file_path(e, f->id, "hint", p);
        unlink(p); /* a write file has none */
        stor__bitcask_file_path(e, f->id, stor__bitcask_kind_suffix(f->kind), p);
        if (unlink(p) != 0) {
            kv_warn("bitcask: unlink path=%s err=%s", p, strerror(errno));
        }
        stor__bitcask_file_unref(f); /* the table's reference; views may hold more */
    }
    if (stor__fsync_dir(e->path) != KV_OK) {
        kv_warn("bitcask: fsync dir path=%s failed after merge", e->path);
    }
}

static void merge_close(struct merge *m, int published)
{
    for (size_t i = 0; i < m->move_count; i++) {
        stor__bitcask_entry_unref(m->moves[i].fresh);
    }
    for (size_t i = 0; i < m->out_count; i++) {
        struct merge_out *o = &m->outs[i];
        if (o->file != NULL) {
            char p[BITCASK_PATH_SIZE_MAX];
            stor__bitcask_file_path(m->e, o->file->id, "merge.tmp", p);
            unlink(p);
            stor__bitcask_file_path(m->e, o->file->id, "hint.tmp", p);
            unlink(p);
            stor__bitcask_file_unref(o->file);
        }
        kv_buf_close(&o->data);
        kv_buf_close(&o->hint);
    }
    if (!published) {
        for (size_t i = 0; i < m->input_count; i++) {
            m->inputs[i]->merging = 0;
        }
    }
    kv_free(m->outs);
    kv_free(m->moves);
    kv_free(m->inputs);
    kv_buf_close(&m->rec);
}

/* Merges every immutable file (all but the active one) into new merge files
 * holding only live records. Tombstones are dropped: every older record of a
 * key lives in an input, so nothing left on disk can resurrect it. Caller
 * holds write_lock. */
int stor__bitcask_merge_run(struct bc_engine *e)
{
    struct merge m;
    memset(&m, 0, sizeof m);
    m.e = e;
    kv_buf_init(&m.rec);
    m.inputs = kv_malloc((e->file_count ? e->file_count : 1) * sizeof *m.inputs);
    if (m.inputs == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < e->file_count; i++) {
        if (e->files[i] != e->active) {
            e->files[i]->merging = 1;
            m.inputs[m.input_count++] = e->files[i];
        }
    }
    int rc = KV_OK;
    for (size_t i = 0; i < e->kd.cap && rc == KV_OK; i++) {
        struct kd_entry *en = e->kd.slots[i];
        if (en != NULL && en->file->merging) {
            rc = merge_copy(&m, en);
        }
    }
    if (rc == KV_OK) {
        rc = merge_finish_outputs(&m);
    }
    if (rc == KV_OK) {
        pthread_rwlock_wrlock(&e->lock);
        rc = stor__bitcask_table_reserve(e, m.out_count);
        pthread_rwlock_unlock(&e->lock);
    }
    if (rc == KV_OK) {
        rc = merge_rename(&m);
    }
    if (rc == KV_OK) {
        uint64_t before = 0;
        for (size_t i = 0; i < m.input_count; i++) {
            before += m.inputs[i]->size;
        }
        kv_info(
            "bitcask: merged path=%s inputs=%zu outputs=%zu live_records=%zu bytes_before=%" PRIu64,
            e->path, m.input_count, m.out_count, m.move_count, before);
        merge_publish(&m);
    } else if (rc == KV_ENOMEM) {
        stor__set_errmsg(&e->base, "bitcask: out of memory during merge");
    }
    merge_close(&m, rc == KV_OK);
    return rc;
}

/* Auto-merge after a roll when enough of the immutable bytes are dead. A
 * failed merge changes nothing, so it is logged, not returned. */
int stor__bitcask_merge_if_needed(struct bc_engine *e)
{
    uint64_t total = 0;
    uint64_t live = 0;
    for (size_t i = 0; i < e->file_count; i++) {
        if (e->files[i] != e->active) {
            total += e->files[i]->size;
            live += e->files[i]->live_bytes;
        }
    }
    if (total < BITCASK_MERGE_MIN_BYTES || (total - live) * 100u < total * BITCASK_MERGE_DEAD_PCT) {
        return KV_OK;
    }
    int rc = stor__bitcask_merge_run(e);
    if (rc != KV_OK) {
        kv_warn("bitcask: auto-merge failed path=%s err=%s msg=%s", e->path, kv_strerror(rc),
                stor__errbuf(&e->base));
        stor__errbuf(&e->base)[0] = '\0';
    }
    return KV_OK;
}
