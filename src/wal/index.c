/* index.c -- the WAL's in-memory state: the table of groups, each group's
 * index from entry index to file position, and the byte-bounded FIFO cache
 * of recent payloads. Callers hold w->lock. */
#include "wal_int.h"

#include <string.h>

#include "alloc.h"
#include "hash.h"

#define TABLE_CAP_MIN 16
#define LOCS_CAP_MIN  16

static size_t slot_of(const struct wal__table *t, uint64_t id)
{
    return (size_t)kv_hash64(&id, sizeof id) & (t->cap - 1);
}

void wal__table_close(struct wal__table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i] != NULL) {
            kv_free(t->slots[i]->locs);
            kv_free(t->slots[i]);
        }
    }
    kv_free(t->slots);
    memset(t, 0, sizeof *t);
}

struct wal__group *wal__table_find(const struct wal__table *t, uint64_t id)
{
    if (t->cap == 0) {
        return NULL;
    }
    for (size_t i = slot_of(t, id);; i = (i + 1) & (t->cap - 1)) {
        struct wal__group *g = t->slots[i];
        if (g == NULL || g->id == id) {
            return g;
        }
    }
}

static int table_grow(struct wal__table *t)
{
    size_t cap = t->cap ? t->cap * 2 : TABLE_CAP_MIN;
    struct wal__group **slots = kv_calloc(cap, sizeof *slots);
    if (slots == NULL) {
        return KV_ENOMEM;
    }
    struct wal__table nt = {.slots = slots, .cap = cap, .count = t->count};
    for (size_t i = 0; i < t->cap; i++) {
        struct wal__group *g = t->slots[i];
        if (g != NULL) {
            size_t j = slot_of(&nt, g->id);
            while (slots[j] != NULL) {
                j = (j + 1) & (cap - 1);
            }
            slots[j] = g;
        }
    }
    kv_free(t->slots);
    *t = nt;
    return KV_OK;
}

int wal__table_get(struct wal__table *t, uint64_t id, struct wal__group **out)
{
    struct wal__group *g = wal__table_find(t, id);
    if (g != NULL) {
        *out = g;
        return KV_OK;
    }
    /* Keep the load factor under 1/2 so probes stay short. */
    if ((t->count + 1) * 2 > t->cap && table_grow(t) != KV_OK) {
        return KV_ENOMEM;
    }
    g = kv_calloc(1, sizeof *g);
    if (g == NULL) {
        return KV_ENOMEM;
    }
    g->id = id;
    g->first_index = 1;
    g->last_index = 0;
    g->pend_first = 1;
    g->pend_last = 0;
    size_t i = slot_of(t, id);
    while (t->slots[i] != NULL) {
        i = (i + 1) & (t->cap - 1);
    }
    t->slots[i] = g;
    t->count++;
    *out = g;
    return KV_OK;
}

void wal__table_remove(struct wal *w, uint64_t id)
{
    struct wal__table *t = &w->groups;
    if (t->cap == 0) {
        return;
    }
    size_t i = slot_of(t, id);
    while (t->slots[i] != NULL && t->slots[i]->id != id) {
        i = (i + 1) & (t->cap - 1);
    }
    struct wal__group *g = t->slots[i];
    if (g == NULL) {
        return;
    }
    wal__group_reset(w, g);
    kv_free(g->locs);
    kv_free(g);
    t->slots[i] = NULL;
    t->count--;
    /* Backward-shift: move later members of the probe run into the hole so
     * lookups never stop early at it. */
    size_t hole = i;
    for (size_t j = (i + 1) & (t->cap - 1); t->slots[j] != NULL; j = (j + 1) & (t->cap - 1)) {
        size_t home = slot_of(t, t->slots[j]->id);
        int movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            t->slots[hole] = t->slots[j];
            t->slots[j] = NULL;
            hole = j;
        }
    }
}

/* ---- Cache ---- */

#define CACHED_HEAD_SIZE (sizeof(struct wal__cached))

/* Ring bytes of a record with `size` payload bytes (8-aligned). */
static uint64_t rec_total(uint64_t size)
{
    return (CACHED_HEAD_SIZE + size + 7) & ~(uint64_t)7;
}

void wal__cache_close(struct wal__cache *c)
{
    kv_free(c->ring);
    memset(c, 0, sizeof *c);
}

static void loc_drop(struct wal *w, struct wal__loc *loc)
{
    if (loc->cached != NULL) {
        loc->cached->flags &= ~WAL__CACHED_LIVE;
        loc->cached = NULL;
    }
}

/* Evicts the oldest record (or the unusable end of the ring). */
static void evict_one(struct wal *w)
{
    struct wal__cache *c = &w->cache;
    KV_ASSERT(c->used > 0);
    uint64_t at_end = c->size - c->head;
    uint64_t total = at_end;
    if (at_end >= CACHED_HEAD_SIZE) {
        struct wal__cached *r = (struct wal__cached *)(c->ring + c->head);
        if (r->flags & WAL__CACHED_LIVE) {
            struct wal__group *g = wal__table_find(&w->groups, r->group);
            struct wal__loc *loc = g ? wal__group_loc(g, r->index) : NULL;
            KV_ASSERT(loc != NULL && loc->cached == r);
            loc->cached = NULL;
        }
        if (!(r->flags & WAL__CACHED_PAD)) {
            total = rec_total(r->size);
        }
    }
    c->head += total;
    c->used -= total;
    if (c->head == c->size) {
        c->head = 0;
    }
}

/* Room for `need` contiguous bytes at the tail, evicting the oldest records
 * as needed; the end of the ring is skipped when too short. */
static struct wal__cached *ring_alloc(struct wal *w, uint64_t need)
{
    struct wal__cache *c = &w->cache;
    for (;;) {
        if (c->used == 0) {
            c->head = c->tail = 0;
        }
        int full = c->used > 0 && c->tail == c->head;
        if (!full && c->tail >= c->head) {
            uint64_t end = c->size - c->tail;
            if (need <= end) {
                break;
            }
            if (end >= CACHED_HEAD_SIZE) {
                struct wal__cached *pad = (struct wal__cached *)(c->ring + c->tail);
                *pad = (struct wal__cached){.flags = WAL__CACHED_PAD};
            }
            c->used += end;
            c->tail = 0;
            continue;
        }
        if (!full && c->head - c->tail >= need) {
            break;
        }
        evict_one(w);
    }
    struct wal__cached *r = (struct wal__cached *)(c->ring + c->tail);
    c->tail += need;
    c->used += need;
    if (c->tail == c->size) {
        c->tail = 0;
    }
    return r;
}

static void cache_put(struct wal *w, struct wal__group *g, uint64_t index, struct wal__loc *loc,
                      const void *data)
{
    struct wal__cache *c = &w->cache;
    if (c->ring == NULL && c->size > 0) {
        c->ring = kv_malloc((size_t)c->size);
        if (c->ring == NULL) {
            c->size = 0; /* the cache is an optimisation: run without it */
        }
    }
    uint64_t need = rec_total(loc->size);
    if (c->size == 0 || need > c->size / 2) {
        return;
    }
    struct wal__cached *r = ring_alloc(w, need);
    *r = (struct wal__cached){
        .group = g->id, .index = index, .size = loc->size, .flags = WAL__CACHED_LIVE};
    memcpy(r->data, data, loc->size);
    loc->cached = r;
}

/* ---- Groups ---- */

struct wal__loc *wal__group_loc(struct wal__group *g, uint64_t index)
{
    if (index < g->first_index || index > g->last_index) {
        return NULL;
    }
    return &g->locs[g->head + (size_t)(index - g->first_index)];
}

/* Drops entries [index, last]. */
static void truncate_from(struct wal *w, struct wal__group *g, uint64_t index)
{
    for (uint64_t i = index; i <= g->last_index; i++) {
        struct wal__loc *loc = wal__group_loc(g, i);
        g->live_bytes -= loc->size;
        loc_drop(w, loc);
    }
    g->last_index = index - 1;
}

/* Makes room for one more loc at the tail, sliding the window to the start
 * of the array first when compaction left room at the front. */
static int locs_reserve(struct wal__group *g)
{
    size_t count = (size_t)(g->last_index + 1 - g->first_index);
    if (g->head + count < g->cap) {
        return KV_OK;
    }
    if (g->head > 0 && count < g->cap / 2) {
        memmove(g->locs, g->locs + g->head, count * sizeof *g->locs);
        g->head = 0;
        return KV_OK;
    }
    size_t cap = g->cap ? g->cap * 2 : LOCS_CAP_MIN;
    struct wal__loc *locs = kv_malloc(cap * sizeof *locs);
    if (locs == NULL) {
        return KV_ENOMEM;
    }
    if (count > 0) {
        memcpy(locs, g->locs + g->head, count * sizeof *locs);
    }
    kv_free(g->locs);
    g->locs = locs;
    g->cap = cap;
    g->head = 0;
    return KV_OK;
}

int wal__group_put(struct wal *w, struct wal__group *g, uint64_t index, const struct wal__loc *loc,
                   const void *cache_data, int replay)
{
    if (index < g->first_index) {
        /* Only replay can meet an entry below the compaction point (an old
         * record that a later mark made garbage); the writer validates. */
        KV_ASSERT(replay);
        return KV_OK;
    }
    if (index <= g->last_index) {
        truncate_from(w, g, index);
    } else if (index > g->last_index + 1) {
        /* A gap. In replay an empty log may start anywhere: the segments
         * before it were garbage collected, and the compaction mark that
         * made them garbage follows. Anything else is damage. */
        if (!replay || g->last_index >= g->first_index) {
            return KV_ECORRUPT;
        }
        g->first_index = index;
        g->last_index = index - 1;
        g->head = 0;
    }
    int rc = locs_reserve(g);
    if (rc != KV_OK) {
        return rc;
    }
    g->last_index = index;
    struct wal__loc *dst = wal__group_loc(g, index);
    *dst = *loc;
    dst->cached = NULL;
    g->live_bytes += loc->size;
    if (cache_data != NULL) {
        cache_put(w, g, index, dst, cache_data);
    }
    return KV_OK;
}

void wal__group_compact(struct wal *w, struct wal__group *g, uint64_t index, uint64_t term,
                        uint64_t seg)
{
    g->mark_seg = seg;
    if (index < g->first_index) {
        /* An older mark: nothing more becomes garbage. One at exactly
         * first - 1 still tells the term there, which recovery needs when
         * the mark was written after the entries that follow it and the
         * segment of the earlier mark is gone (found by node/logstore's
         * cluster test). */
        if (index + 1 == g->first_index) {
            g->compact_term = term;
        }
        return;
    }
    if (index >= g->last_index) {
        truncate_from(w, g, g->first_index);
        g->first_index = index + 1;
        g->last_index = index;
        g->head = 0;
    } else {
        for (uint64_t i = g->first_index; i <= index; i++) {
            struct wal__loc *loc = wal__group_loc(g, i);
            g->live_bytes -= loc->size;
            loc_drop(w, loc);
        }
        g->head += (size_t)(index + 1 - g->first_index);
        g->first_index = index + 1;
    }
    g->compact_term = term;
}

void wal__group_reset(struct wal *w, struct wal__group *g)
{
    if (g->last_index >= g->first_index) {
        truncate_from(w, g, g->first_index);
    }
    g->exists = 0;
    g->first_index = 1;
    g->last_index = 0;
    g->compact_term = 0;
    g->head = 0;
    g->has_hs = 0;
    memset(&g->hs, 0, sizeof g->hs);
    g->hs_seg = 0;
    g->mark_seg = 0;
    g->live_bytes = 0;
}

void wal__group_reset_to(struct wal *w, struct wal__group *g, uint64_t compact_index,
                         uint64_t compact_term, const struct wal_hard_state *hs, uint64_t seg)
{
    wal__group_reset(w, g);
    g->exists = 1;
    g->first_index = compact_index + 1;
    g->last_index = compact_index;
    g->compact_term = compact_term;
    g->mark_seg = seg;
    if (hs != NULL) {
        g->hs = *hs;
        g->has_hs = 1;
        g->hs_seg = seg;
    }
}
