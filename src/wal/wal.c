/* wal.c -- the shared log's life cycle and its group-commit writer.
 *
 * wal_write validates a batch and queues it; the first queued caller that
 * finds no write in flight becomes the leader: it takes every queued batch
 * (up to WAL_WRITE_BYTES_MAX), writes them as one write, syncs once, then
 * applies them to the in-memory index and wakes their callers. Callers that
 * arrive meanwhile queue up for the next leader, so under load each fsync
 * covers the pending writes of every group. A failed write or sync poisons
 * the log for good: the fsync is never retried, because after a failure the
 * kernel may have dropped the dirty pages and a retry could falsely
 * succeed. */
#include "wal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "log.h"

void wal__set_errmsg(struct wal *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->errmsg, sizeof w->errmsg, fmt, ap);
    va_end(ap);
}

const char *wal_errmsg(struct wal *w)
{
    return w->errmsg;
}

void wal_options_init(struct wal_options *o, const char *dir)
{
    memset(o, 0, sizeof *o);
    o->dir = dir;
    o->sync = WAL_SYNC_ALWAYS;
}

static const char *const sync_names[] = {"always", "batch", "none"};

int wal_sync_parse(const char *name, enum wal_sync *out)
{
    for (int i = 0; i <= WAL_SYNC_NONE; i++) {
        if (strcmp(name, sync_names[i]) == 0) {
            *out = (enum wal_sync)i;
            return KV_OK;
        }
    }
    return KV_EINVAL;
}

const char *wal_sync_name(enum wal_sync sync)
{
    return (unsigned)sync <= WAL_SYNC_NONE ? sync_names[sync] : "?";
}

/* ---- Open and close ---- */

static int lock_dir(struct wal *w, char *errmsg)
{
    char path[WAL_PATH_MAX];
    snprintf(path, sizeof path, "%s/LOCK", w->dir);
    w->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (w->lock_fd < 0) {
        int rc = kv_err_from_errno(errno);
        snprintf(errmsg, KV_ERRMSG_SIZE, "open %s: %s", path, kv_strerror(rc));
        return rc;
    }
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s is locked by another process", path);
        close(w->lock_fd);
        w->lock_fd = -1;
        return KV_ELOCKED;
    }
    return KV_OK;
}

static int check_options(const struct wal_options *o, char *errmsg)
{
    if (o->dir == NULL || strlen(o->dir) + WAL__SEG_DIGITS + 16 > WAL_PATH_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "wal: missing or too long directory");
        return KV_EINVAL;
    }
    if (o->sync > WAL_SYNC_NONE || o->batch_delay_us > WAL_BATCH_DELAY_US_MAX ||
        (o->segment_bytes != 0 && o->segment_bytes < WAL_SEGMENT_BYTES_MIN)) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "wal: bad sync policy, batch delay or segment size");
        return KV_EINVAL;
    }
    return KV_OK;
}

static void free_state(struct wal *w)
{
    wal__table_close(&w->groups);
    wal__cache_close(&w->cache);
    for (size_t i = 0; i < w->seg_count; i++) {
        w->fs->close(w->fs, w->segs[i].f);
    }
    kv_free(w->segs);
    kv_buf_close(&w->scratch);
}

int wal_open(const struct wal_options *o, struct wal **out, char *errmsg)
{
    errmsg[0] = '\0';
    int rc = check_options(o, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct wal *w = kv_calloc(1, sizeof *w);
    if (w == NULL) {
        return KV_ENOMEM;
    }
    w->opt = *o;
    w->fs = o->fs ? o->fs : wal_fs_posix();
    w->opt.fs = w->fs;
    w->opt.segment_bytes = o->segment_bytes ? o->segment_bytes : WAL_SEGMENT_BYTES_DEFAULT;
    w->opt.cache_bytes = o->cache_bytes ? o->cache_bytes : WAL_CACHE_BYTES_DEFAULT;
    w->opt.rewrite_bytes = o->rewrite_bytes ? o->rewrite_bytes : WAL_REWRITE_BYTES_DEFAULT;
    snprintf(w->dir, sizeof w->dir, "%s", o->dir);
    w->opt.dir = w->dir;
    /* The ring is allocated at the first write, so a read-only open costs
     * nothing; UINT64_MAX turns the cache off. */
    w->cache.size = w->opt.cache_bytes == UINT64_MAX ? 0 : w->opt.cache_bytes & ~(uint64_t)7;
    kv_buf_init(&w->scratch);
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_cond_init(&w->gather_cond, &ca);
    pthread_condattr_destroy(&ca);
    rc = w->fs->mkdir(w->fs, w->dir);
    if (rc != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "mkdir %s: %s", w->dir, kv_strerror(rc));
        goto err_free;
    }
    rc = lock_dir(w, errmsg);
    if (rc != KV_OK) {
        goto err_free;
    }
    rc = wal__recover(w);
    if (rc != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s", w->errmsg[0] ? w->errmsg : kv_strerror(rc));
        goto err_unlock;
    }
    w->errmsg[0] = '\0';
    if (w->opt.sync == WAL_SYNC_NONE) {
        kv_warn("wal: dir=%s sync=none: acknowledged writes are lost on power failure", w->dir);
    }
    *out = w;
    return KV_OK;

err_unlock:
    close(w->lock_fd);
err_free:
    free_state(w);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->gather_cond);
    pthread_mutex_destroy(&w->lock);
    kv_free(w);
    return rc;
}

void wal_close(struct wal *w)
{
    if (w == NULL) {
        return;
    }
    KV_ASSERT(!w->writing && w->queue_head == NULL);
    if (!w->poisoned && w->seg_count > 0) {
        struct wal__seg *s = &w->segs[w->seg_count - 1];
        int rc = w->fs->sync(w->fs, s->f);
        if (rc != KV_OK) {
            kv_error("wal: dir=%s final sync failed: %s", w->dir, kv_strerror(rc));
        }
    }
    free_state(w);
    close(w->lock_fd);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->gather_cond);
    pthread_mutex_destroy(&w->lock);
    kv_free(w);
}

/* ---- Validation of a batch before it is queued ---- */

struct undo {
    struct wal__group *g;
    uint64_t pend_first;
    uint64_t pend_last;
};

static int validate_op(struct wal__group *g, const struct wal__op *op)
{
    switch (op->type) {
    case WAL__REC_ENTRIES:
        if (op->a < g->pend_first || op->a > g->pend_last + 1) {
            return KV_EINVAL;
        }
        g->pend_last = op->a + op->b - 1;
        return KV_OK;
    case WAL__REC_COMPACT:
        if (op->a >= g->pend_first) {
            g->pend_first = op->a + 1;
            if (op->a > g->pend_last) {
                g->pend_last = op->a;
            }
        }
        return KV_OK;
    case WAL__REC_REMOVE:
        g->pend_first = 1;
        g->pend_last = 0;
        return KV_OK;
    default:
        return KV_OK;
    }
}

/* Checks the batch against the log as queued batches will leave it, and on
 * success accounts its ops as pending. w->lock held. */
static int validate(struct wal *w, const struct wal_batch *b)
{
    const struct wal__op *ops = (const struct wal__op *)b->ops.data;
    size_t n = b->ops.size / sizeof *ops;
    struct undo *undo = kv_malloc(n * sizeof *undo);
    if (undo == NULL) {
        return KV_ENOMEM;
    }
    int rc = KV_OK;
    size_t i = 0;
    for (; i < n && rc == KV_OK; i++) {
        struct wal__group *g;
        rc = wal__table_get(&w->groups, ops[i].group, &g);
        if (rc != KV_OK) {
            break;
        }
        undo[i] = (struct undo){g, g->pend_first, g->pend_last};
        rc = validate_op(g, &ops[i]);
        if (rc != KV_OK) {
            wal__set_errmsg(w,
                            "group %" PRIu64 ": entries from %" PRIu64
                            " do not follow the log [%" PRIu64 ", %" PRIu64 "]",
                            ops[i].group, ops[i].a, g->pend_first, g->pend_last);
        }
    }
    if (rc != KV_OK) {
        while (i-- > 0) {
            undo[i].g->pend_first = undo[i].pend_first;
            undo[i].g->pend_last = undo[i].pend_last;
        }
    } else {
        for (i = 0; i < n; i++) {
            undo[i].g->pending++;
        }
    }
    kv_free(undo);
    return rc;
}

/* ---- Applying durable ops ---- */

int wal__apply_op(struct wal *w, const struct wal_batch *b, const struct wal__op *op, uint64_t seg,
                  uint64_t base, unsigned flags)
{
    struct wal__group *g = wal__table_find(&w->groups, op->group);
    if (g == NULL) {
        int rc = wal__table_get(&w->groups, op->group, &g);
        if (rc != KV_OK) {
            return rc;
        }
    }
    if (flags & WAL__APPLY_PENDING) {
        KV_ASSERT(g->pending > 0);
        g->pending--;
    }
    if (op->type == WAL__REC_REMOVE) {
        w->gc_wanted = 1;
        if (g->pending == 0) {
            wal__table_remove(w, op->group);
        } else {
            wal__group_reset(w, g); /* a queued batch already reuses the id */
        }
        return KV_OK;
    }
    g->exists = 1;
    if (op->type == WAL__REC_HARD_STATE) {
        g->hs = (struct wal_hard_state){.term = op->a, .vote = op->b, .commit = op->c};
        g->has_hs = 1;
        g->hs_seg = seg;
        return KV_OK;
    }
    if (op->type == WAL__REC_COMPACT) {
        wal__group_compact(w, g, op->a, op->b, seg);
        w->gc_wanted = 1;
        return KV_OK;
    }
    uint64_t first = op->a;
    if (op->type == WAL__REC_RESET) {
        wal__group_reset_to(w, g, op->a, op->c, op->has_hs ? &op->hs : NULL, seg);
        first = op->a + 1;
    }
    const struct wal__ent *ents = (const struct wal__ent *)b->ents.data + op->ent_start;
    for (uint64_t k = 0; k < op->b; k++) {
        struct wal__loc loc = {.term = ents[k].term,
                               .seg = seg,
                               .offset = base + ents[k].data_off,
                               .size = ents[k].size,
                               .type = ents[k].type};
        const void *data = (flags & WAL__APPLY_CACHE) ? b->bytes.data + ents[k].data_off : NULL;
        int rc = wal__group_put(w, g, first + k, &loc, data, 0);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* ---- The leader's write ---- */

static void poison(struct wal *w, int rc, const char *what)
{
    if (!w->poisoned) {
        w->poisoned = rc;
        kv_error("wal: dir=%s %s failed: %s; the log is poisoned", w->dir, what, kv_strerror(rc));
        wal__set_errmsg(w, "%s failed: %s", what, kv_strerror(rc));
    }
}

/* Starts a new segment when the active one is full. w->lock held; dropped
 * during the I/O. */
static int maybe_rotate(struct wal *w)
{
    struct wal__seg *s = &w->segs[w->seg_count - 1];
    if (s->size < w->opt.segment_bytes) {
        return KV_OK;
    }
    uint64_t seq = s->seq + 1;
    struct wal_file *f = s->f;
    pthread_mutex_unlock(&w->lock);
    /* Under `none` the full segment was never synced: sync it before a newer
     * one exists, so recovery never meets damage in a segment that is not
     * the last. Under the other policies this sync finds nothing to do. */
    int rc = w->opt.sync == WAL_SYNC_NONE ? w->fs->sync(w->fs, f) : KV_OK;
    if (rc == KV_OK) {
        rc = wal__seg_create(w, seq);
    }
    pthread_mutex_lock(&w->lock);
    if (rc != KV_OK) {
        poison(w, rc, "segment rotation");
        return rc;
    }
    w->stats.syncs += w->opt.sync == WAL_SYNC_NONE ? 2 : 1;
    w->gc_wanted = 1;
    return KV_OK;
}

/* Writes the batches of `list` (waiters taken off the queue) as one write
 * at the end of the active segment -- a WRITE record, then the batches back
 * to back -- syncs per policy, then applies them. Returns the result for
 * all of them. w->lock held, dropped during the I/O. */
static int write_batches(struct wal *w, struct wal__waiter *list, unsigned flags)
{
    int rc = maybe_rotate(w);
    if (rc != KV_OK) {
        return rc;
    }
    struct wal__seg *s = &w->segs[w->seg_count - 1];
    uint64_t seq = s->seq;
    uint64_t base = s->size;
    struct wal_file *f = s->f;
    pthread_mutex_unlock(&w->lock);
    /* The write is the WRITE record and the batches back to back, copied
     * into the scratch buffer so that one pwrite carries it; only a lone
     * large batch is written in place, by a second call. */
    size_t total = 0;
    for (struct wal__waiter *x = list; x != NULL; x = x->next) {
        total += x->batch->bytes.size;
    }
    int in_place = list->next == NULL && total > WAL__COPY_BYTES_MAX;
    kv_buf_clear(&w->scratch);
    rc = kv_buf_reserve(&w->scratch, WAL__WRITE_REC_SIZE + (in_place ? 0 : total));
    if (rc == KV_OK) {
        wal__write_rec_encode(w->scratch.data, WAL__WRITE_REC_SIZE + total);
        w->scratch.size = WAL__WRITE_REC_SIZE;
        for (struct wal__waiter *x = list; x != NULL && !in_place; x = x->next) {
            memcpy(w->scratch.data + w->scratch.size, x->batch->bytes.data, x->batch->bytes.size);
            w->scratch.size += x->batch->bytes.size;
        }
    }
    const char *what = "write";
    uint64_t t0 = kv_clock_ns();
    if (rc == KV_OK) {
        rc = w->fs->pwrite(w->fs, f, w->scratch.data, w->scratch.size, base);
    }
    if (rc == KV_OK && in_place) {
        rc = w->fs->pwrite(w->fs, f, list->batch->bytes.data, total, base + WAL__WRITE_REC_SIZE);
    }
    if (rc == KV_OK && w->opt.sync != WAL_SYNC_NONE) {
        what = "fdatasync";
        rc = w->fs->sync(w->fs, f);
    }
    uint64_t took = kv_clock_ns() - t0;
    pthread_mutex_lock(&w->lock);
    w->write_ns_avg = w->write_ns_avg - w->write_ns_avg / 8 + took / 8;
    w->stats.writes++;
    w->stats.syncs += w->opt.sync != WAL_SYNC_NONE;
    if (rc != KV_OK) {
        /* Even a failed allocation poisons: the queued batches were
         * validated against a log that now will not exist. */
        poison(w, rc, what);
        return rc;
    }
    total += WAL__WRITE_REC_SIZE;
    w->stats.bytes_written += total;
    s = wal__seg_find(w, seq);
    s->size = base + total;
    uint64_t pos = base + WAL__WRITE_REC_SIZE;
    for (struct wal__waiter *x = list; x != NULL; x = x->next) {
        const struct wal__op *ops = (const struct wal__op *)x->batch->ops.data;
        size_t n = x->batch->ops.size / sizeof *ops;
        for (size_t i = 0; i < n && rc == KV_OK; i++) {
            rc = wal__apply_op(w, x->batch, &ops[i], seq, pos, flags);
        }
        if (rc != KV_OK) {
            /* The index no longer matches the disk: refuse more work until a
             * reopen rebuilds it from the segments. */
            poison(w, rc, "index update");
            return rc;
        }
        pos += x->batch->bytes.size;
    }
    return KV_OK;
}

int wal__write_locked(struct wal *w, const struct wal_batch *b, unsigned flags)
{
    struct wal__waiter me = {.batch = b};
    return write_batches(w, &me, flags);
}

/* The CLOCK_MONOTONIC time `ns` from now, for the timed waits. */
static struct timespec deadline_after(uint64_t ns)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ns += (uint64_t)now.tv_nsec;
    return (struct timespec){.tv_sec = now.tv_sec + (time_t)(ns / 1000000000u),
                             .tv_nsec = (long)(ns % 1000000000u)};
}

/* Waits for more writers under WAL_SYNC_BATCH, up to the configured delay
 * or until the queue alone fills a write. */
static void batch_delay(struct wal *w)
{
    if (w->opt.sync != WAL_SYNC_BATCH || w->opt.batch_delay_us == 0) {
        return;
    }
    struct timespec until = deadline_after((uint64_t)w->opt.batch_delay_us * 1000);
    while (w->queue_bytes < WAL_WRITE_BYTES_MAX / 2) {
        if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT) {
            break;
        }
    }
}

/* Waits briefly for the writers the previous write released to queue their
 * next batch. Without it, writers split into two cohorts that alternate:
 * whoever re-queues first is taken by the next leader before the rest have
 * woken, and each sync carries half the writers. The wait is bounded by half
 * a typical write + sync and by WAL__GATHER_US_MAX, so an idle writer costs
 * little. */
static void gather(struct wal *w)
{
    if (w->opt.sync == WAL_SYNC_NONE || w->queue_count >= w->last_released) {
        return;
    }
    uint64_t wait_ns = w->write_ns_avg / 2;
    if (wait_ns > (uint64_t)WAL__GATHER_US_MAX * 1000) {
        wait_ns = (uint64_t)WAL__GATHER_US_MAX * 1000;
    }
    struct timespec until = deadline_after(wait_ns);
    w->gathering = 1;
    while (w->queue_count < w->last_released) {
        if (pthread_cond_timedwait(&w->gather_cond, &w->lock, &until) == ETIMEDOUT) {
            break;
        }
    }
    w->gathering = 0;
}

/* One round of leadership by `me`, the head of the queue: take queued
 * batches, write, sync, apply, collect garbage, hand leadership to the new
 * head of the queue if any, and wake the callers one by one (a broadcast
 * would wake every queued writer for nothing). Called with w->lock held;
 * returns with it released, so the woken callers do not pile up on it. */
static void lead(struct wal *w, struct wal__waiter *me)
{
    KV_ASSERT(w->writing && w->queue_head == me);
    batch_delay(w);
    gather(w);
    struct wal__waiter *list = w->queue_head;
    struct wal__waiter *last = list;
    size_t bytes = list->batch->bytes.size;
    size_t taken = 1;
    while (last->next != NULL && bytes + last->next->batch->bytes.size <= WAL_WRITE_BYTES_MAX) {
        last = last->next;
        bytes += last->batch->bytes.size;
        taken++;
    }
    w->queue_count -= taken;
    w->last_released = taken;
    w->queue_head = last->next;
    if (w->queue_head == NULL) {
        w->queue_tail = NULL;
    }
    last->next = NULL;
    w->queue_bytes -= bytes;
    int rc =
        w->poisoned ? KV_EPOISONED : write_batches(w, list, WAL__APPLY_CACHE | WAL__APPLY_PENDING);
    w->stats.batches += rc == KV_OK ? taken : 0;
    if (rc == KV_OK && w->gc_wanted) {
        int grc = wal__gc(w);
        if (grc != KV_OK) {
            kv_error("wal: dir=%s garbage collection failed: %s", w->dir, kv_strerror(grc));
        }
    }
    if (w->queue_head != NULL) {
        w->queue_head->state = WAL__WAITER_LEAD; /* writing stays set */
        sem_post(&w->queue_head->sem);
    } else {
        w->writing = 0;
    }
    /* The taken waiters are off the queue: only this thread sees them. */
    pthread_mutex_unlock(&w->lock);
    for (struct wal__waiter *x = list; x != NULL;) {
        struct wal__waiter *next = x->next;
        x->rc = rc;
        x->state = WAL__WAITER_DONE;
        if (x != me) {
            sem_post(&x->sem); /* x may vanish from here on */
        }
        x = next;
    }
}

int wal_write(struct wal *w, const struct wal_batch *b)
{
    if (b->ops.size == 0) {
        return KV_OK;
    }
    if (b->bytes.size > WAL_BATCH_BYTES_MAX) {
        return KV_ETOOBIG;
    }
    pthread_mutex_lock(&w->lock);
    if (w->poisoned) {
        pthread_mutex_unlock(&w->lock);
        return KV_EPOISONED;
    }
    int rc = validate(w, b);
    if (rc != KV_OK) {
        pthread_mutex_unlock(&w->lock);
        return rc;
    }
    struct wal__waiter me = {.batch = b, .state = WAL__WAITER_QUEUED};
    sem_init(&me.sem, 0, 0);
    if (w->queue_tail != NULL) {
        w->queue_tail->next = &me;
    } else {
        w->queue_head = &me;
    }
    w->queue_tail = &me;
    w->queue_bytes += b->bytes.size;
    w->queue_count++;
    if (w->gathering && w->queue_count >= w->last_released) {
        pthread_cond_signal(&w->gather_cond); /* only when the wait is over */
    }
    if (!w->writing) {
        w->writing = 1; /* the queue was empty: we are its head */
        lead(w, &me);
    } else {
        /* Sleep without the mutex until a leader finished our write or
         * handed us the leadership. */
        pthread_mutex_unlock(&w->lock);
        while (sem_wait(&me.sem) != 0) {
        }
        if (me.state == WAL__WAITER_LEAD) {
            pthread_mutex_lock(&w->lock);
            lead(w, &me);
        }
    }
    KV_ASSERT(me.state == WAL__WAITER_DONE);
    sem_destroy(&me.sem);
    return me.rc;
}

/* ---- Reads ---- */

void wal_read_init(struct wal_read *r)
{
    memset(r, 0, sizeof *r);
    kv_buf_init(&r->bytes);
}

void wal_read_close(struct wal_read *r)
{
    kv_free(r->entries);
    kv_buf_close(&r->bytes);
    memset(r, 0, sizeof *r);
}

static int read_reserve(struct wal_read *r, size_t count)
{
    if (count <= r->cap) {
        return KV_OK;
    }
    size_t cap = r->cap ? r->cap : 16;
    while (cap < count) {
        cap *= 2;
    }
    struct wal_entry *e = kv_realloc(r->entries, cap * sizeof *e);
    if (e == NULL) {
        return KV_ENOMEM;
    }
    r->entries = e;
    r->cap = cap;
    return KV_OK;
}

/* Appends one entry's payload to out->bytes (from the cache or the file). */
static int read_one(struct wal *w, const struct wal__loc *loc, struct wal_read *out)
{
    int rc = kv_buf_reserve(&out->bytes, loc->size);
    if (rc != KV_OK) {
        return rc;
    }
    /* An empty payload may meet a buffer with no storage yet: no pointer
     * arithmetic on NULL (undefined even with a zero offset). */
    uint8_t *dst = loc->size > 0 ? out->bytes.data + out->bytes.size : NULL;
    if (loc->cached != NULL) {
        if (loc->size > 0) {
            memcpy(dst, loc->cached->data, loc->size);
        }
        w->stats.cache_hits++;
    } else if (loc->size > 0) {
        rc = wal__seg_read(w, loc->seg, loc->offset, dst, loc->size);
        w->stats.cache_misses++;
    }
    if (rc == KV_OK) {
        out->bytes.size += loc->size;
    }
    return rc;
}

int wal__read_locked(struct wal *w, struct wal__group *g, uint64_t lo, uint64_t hi,
                     uint64_t max_bytes, struct wal_read *out)
{
    out->count = 0;
    kv_buf_clear(&out->bytes);
    if (lo > hi) {
        return KV_EINVAL;
    }
    if (lo < g->first_index) {
        return KV_ECOMPACTED;
    }
    if (hi > g->last_index + 1) {
        return KV_EUNAVAILABLE;
    }
    uint64_t bytes = 0;
    int rc = KV_OK;
    for (uint64_t i = lo; i < hi && rc == KV_OK; i++) {
        const struct wal__loc *loc = wal__group_loc(g, i);
        if (out->count > 0 && bytes + loc->size > max_bytes) {
            break;
        }
        bytes += loc->size;
        rc = read_reserve(out, out->count + 1);
        if (rc == KV_OK) {
            rc = read_one(w, loc, out);
        }
        if (rc == KV_OK) {
            /* data holds an offset until the buffer stops moving. */
            out->entries[out->count++] =
                (struct wal_entry){.index = i,
                                   .term = loc->term,
                                   .type = loc->type,
                                   .data = (const void *)(uintptr_t)(out->bytes.size - loc->size),
                                   .size = loc->size};
        }
    }
    for (size_t k = 0; k < out->count; k++) {
        /* Empty payloads get NULL: the buffer may have no storage at all,
         * and NULL + 0 is undefined. */
        out->entries[k].data =
            out->entries[k].size == 0 ? NULL : out->bytes.data + (uintptr_t)out->entries[k].data;
    }
    if (rc != KV_OK) {
        out->count = 0;
    }
    return rc;
}

int wal_entries(struct wal *w, uint64_t group, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                struct wal_read *out)
{
    pthread_mutex_lock(&w->lock);
    struct wal__group *g = wal__table_find(&w->groups, group);
    int rc = g != NULL && g->exists ? wal__read_locked(w, g, lo, hi, max_bytes, out) : KV_ENOTFOUND;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int wal_group_state(struct wal *w, uint64_t group, struct wal_group_state *out)
{
    pthread_mutex_lock(&w->lock);
    struct wal__group *g = wal__table_find(&w->groups, group);
    int rc = KV_ENOTFOUND;
    if (g != NULL && g->exists) {
        *out = (struct wal_group_state){.first_index = g->first_index,
                                        .last_index = g->last_index,
                                        .compact_index = g->first_index - 1,
                                        .compact_term = g->compact_term,
                                        .hard_state = g->hs,
                                        .has_hard_state = g->has_hs};
        rc = KV_OK;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int wal_term(struct wal *w, uint64_t group, uint64_t index, uint64_t *term)
{
    pthread_mutex_lock(&w->lock);
    struct wal__group *g = wal__table_find(&w->groups, group);
    int rc = KV_OK;
    if (g == NULL || !g->exists) {
        rc = KV_ENOTFOUND;
    } else if (index + 1 < g->first_index) {
        rc = KV_ECOMPACTED;
    } else if (index > g->last_index) {
        rc = KV_EUNAVAILABLE;
    } else if (index + 1 == g->first_index) {
        *term = g->compact_term;
    } else {
        *term = wal__group_loc(g, index)->term;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

size_t wal_groups(struct wal *w, uint64_t *ids, size_t cap)
{
    pthread_mutex_lock(&w->lock);
    size_t total = 0;
    for (size_t i = 0; i < w->groups.cap; i++) {
        struct wal__group *g = w->groups.slots[i];
        if (g != NULL && g->exists) {
            if (total < cap) {
                ids[total] = g->id;
            }
            total++;
        }
    }
    pthread_mutex_unlock(&w->lock);
    size_t n = total < cap ? total : cap;
    if (n > 0) {
        qsort(ids, n, sizeof *ids, cmp_u64);
    }
    return total;
}

void wal_stats(struct wal *w, struct wal_stats *out)
{
    pthread_mutex_lock(&w->lock);
    *out = w->stats;
    out->segments = w->seg_count;
    out->disk_bytes = 0;
    for (size_t i = 0; i < w->seg_count; i++) {
        out->disk_bytes += w->segs[i].size;
    }
    out->groups = 0;
    for (size_t i = 0; i < w->groups.cap; i++) {
        out->groups += w->groups.slots[i] != NULL && w->groups.slots[i]->exists;
    }
    out->cache_bytes = w->cache.used;
    pthread_mutex_unlock(&w->lock);
}
