/* logstore.c -- one Raft group's log store over the shared WAL. The WAL is
 * the source of truth; the store caches its durable view of the group
 * (first/last index, hard state, snapshot metadata) so that the core's
 * frequent first_index/last_index calls take no lock, and keeps a small
 * read-ahead buffer of entries for the core's entry(i) calls.
 *
 * Snapshot metadata (index, term, membership) lives as entry 1 of a
 * companion WAL group (group | NODE_LOGSTORE_META_BIT), rewritten in place
 * at every compaction or install, and always staged *before* the
 * compaction mark it describes. A crash can therefore leave the metadata
 * ahead of the mark (never behind it); node_logstore_new finishes such a
 * half-done step. An install whose snapshot index is still inside the held
 * log must also drop the stale tail: the WAL has no truncate record, so the
 * store writes a placeholder entry at the snapshot index (replacing the
 * tail from there) and then the compaction mark at the same index, which
 * leaves the log empty. The placeholder is never visible: the mark follows
 * it in the same write, and if a crash cuts between them the open finishes
 * the step. */
#include "logstore.h"

#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "log.h"

#define META_VERSION 1
/* Flag of a metadata record: the step was a snapshot install, which
 * discards every held entry (a local compaction keeps the tail). */
#define META_FLAG_DISCARD_TAIL 1u
/* version, flags, index, term, two counts and the member ids. */
#define META_BYTES_MAX (1 + 1 + 8 + 8 + 4 + 4 + 2 * 8 * RAFT_MEMBERS_MAX)
/* Type of the placeholder entry an install writes (never a Raft type). */
#define PLACEHOLDER_TYPE 0x504c4348u
/* Entries converted per wal_batch_entries call when staging (a stack
 * array, so staging allocates nothing of its own). */
#define STAGE_CHUNK_ENTRIES 64u
/* Bytes the read buffer owns from the start (see node_logstore_new). */
#define READ_BUF_BYTES_INITIAL 4096u

struct node_logstore {
    struct raft_log_store store; /* the interface handed to the core */
    struct wal *w;               /* borrowed; outlives the store */
    uint64_t group;              /* the Raft group */
    uint64_t meta_group;         /* companion group holding the snapshot meta */
    /* Durable view of the group, refreshed after each write. */
    uint64_t first;                 /* first held entry */
    uint64_t last;                  /* last held entry; first - 1 when empty */
    struct raft_hard_state hs;      /* zeros until one is written */
    struct raft_snapshot_meta snap; /* index 0: no snapshot yet */
    /* A staged step, waiting for node_logstore_written. */
    bool staged;                            /* a stage or compact is in a batch */
    bool staged_snap;                       /* it carries new snapshot metadata */
    struct raft_snapshot_meta pending_snap; /* that metadata */
    /* Read-ahead buffer: entries [rb_lo, rb_lo + rb.count) when valid. */
    struct wal_read rb;
    uint64_t rb_lo;
    bool rb_valid;
};

bool node_logstore_is_meta_group(uint64_t wal_group)
{
    return (wal_group & NODE_LOGSTORE_META_BIT) != 0;
}

/* ---- Snapshot metadata records ---- */

static size_t meta_encode(const struct raft_snapshot_meta *m, uint8_t flags,
                          uint8_t out[META_BYTES_MAX])
{
    size_t n = 0;
    out[n++] = META_VERSION;
    out[n++] = flags;
    kv_store_u64(out + n, m->index);
    n += 8;
    kv_store_u64(out + n, m->term);
    n += 8;
    kv_store_u32(out + n, m->conf.n_voters);
    n += 4;
    for (uint32_t i = 0; i < m->conf.n_voters; i++) {
        kv_store_u64(out + n, m->conf.voters[i]);
        n += 8;
    }
    kv_store_u32(out + n, m->conf.n_learners);
    n += 4;
    for (uint32_t i = 0; i < m->conf.n_learners; i++) {
        kv_store_u64(out + n, m->conf.learners[i]);
        n += 8;
    }
    KV_ASSERT(n <= META_BYTES_MAX);
    return n;
}

static int read_ids(struct kv_reader *r, uint64_t *ids, uint32_t *count, uint32_t room)
{
    uint32_t n;
    if (kv_reader_u32(r, &n) != KV_OK || n > room) {
        return KV_ECORRUPT;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (kv_reader_u64(r, &ids[i]) != KV_OK || ids[i] == 0) {
            return KV_ECORRUPT;
        }
    }
    *count = n;
    return KV_OK;
}

static int meta_decode(const void *data, size_t size, struct raft_snapshot_meta *m, uint8_t *flags)
{
    struct kv_reader r;
    kv_reader_init(&r, data, size);
    uint8_t version;
    memset(m, 0, sizeof *m);
    if (kv_reader_u8(&r, &version) != KV_OK || version != META_VERSION ||
        kv_reader_u8(&r, flags) != KV_OK || kv_reader_u64(&r, &m->index) != KV_OK ||
        kv_reader_u64(&r, &m->term) != KV_OK) {
        return KV_ECORRUPT;
    }
    if (read_ids(&r, m->conf.voters, &m->conf.n_voters, RAFT_MEMBERS_MAX) != KV_OK ||
        read_ids(&r, m->conf.learners, &m->conf.n_learners, RAFT_MEMBERS_MAX - m->conf.n_voters) !=
            KV_OK ||
        r.left != 0) {
        return KV_ECORRUPT;
    }
    return KV_OK;
}

/* Stages the metadata record (entry 1 of the companion group, replacing
 * the previous one) and the compaction mark, in that order; with
 * `discard_tail`, a placeholder at the snapshot index first empties the
 * held tail (see the file comment). `last` is the group's last index as the
 * batch finds it. */
static int stage_snapshot(struct wal_batch *b, uint64_t group, uint64_t meta_group,
                          const struct raft_snapshot_meta *m, bool discard_tail, uint64_t last)
{
    uint8_t rec[META_BYTES_MAX];
    size_t size = meta_encode(m, discard_tail ? META_FLAG_DISCARD_TAIL : 0, rec);
    struct wal_entry me = {.index = 1, .term = m->term, .type = 0, .data = rec, .size = size};
    int rc = wal_batch_entries(b, meta_group, &me, 1);
    if (rc != KV_OK) {
        return rc;
    }
    if (discard_tail && m->index <= last) {
        struct wal_entry ph = {.index = m->index, .term = m->term, .type = PLACEHOLDER_TYPE};
        rc = wal_batch_entries(b, group, &ph, 1);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return wal_batch_compact(b, group, m->index, m->term);
}

/* ---- Durable state ---- */

/* Reloads first/last/hard state from the WAL and checks the compaction
 * mark against ls->snap. */
static int load_state(struct node_logstore *ls, uint64_t *compact_index, uint64_t *compact_term)
{
    struct wal_group_state gs;
    int rc = wal_group_state(ls->w, ls->group, &gs);
    if (rc == KV_ENOTFOUND) {
        ls->first = 1;
        ls->last = 0;
        memset(&ls->hs, 0, sizeof ls->hs);
        *compact_index = 0;
        *compact_term = 0;
        return KV_OK;
    }
    if (rc != KV_OK) {
        return rc;
    }
    ls->first = gs.first_index;
    ls->last = gs.last_index;
    ls->hs.term = gs.hard_state.term;
    ls->hs.vote = gs.hard_state.vote;
    ls->hs.commit = gs.hard_state.commit;
    *compact_index = gs.compact_index;
    *compact_term = gs.compact_term;
    return KV_OK;
}

/* Reads the companion group's metadata record into ls->snap. */
static int load_meta(struct node_logstore *ls, uint8_t *flags)
{
    struct wal_group_state gs;
    memset(&ls->snap, 0, sizeof ls->snap);
    *flags = 0;
    int rc = wal_group_state(ls->w, ls->meta_group, &gs);
    if (rc == KV_ENOTFOUND) {
        return KV_OK;
    }
    if (rc != KV_OK) {
        return rc;
    }
    if (gs.last_index != 1 || gs.first_index != 1) {
        return KV_ECORRUPT;
    }
    rc = wal_entries(ls->w, ls->meta_group, 1, 2, UINT64_MAX, &ls->rb);
    if (rc != KV_OK) {
        return rc;
    }
    KV_ASSERT(ls->rb.count == 1);
    return meta_decode(ls->rb.entries[0].data, ls->rb.entries[0].size, &ls->snap, flags);
}

/* Finishes a snapshot step whose metadata is durable but whose compaction
 * mark is not (a crash between the two records of one write). */
static int roll_forward(struct node_logstore *ls, uint8_t flags)
{
    kv_warn("logstore group=%llu finishing snapshot step at index=%llu term=%llu after a crash",
            (unsigned long long)ls->group, (unsigned long long)ls->snap.index,
            (unsigned long long)ls->snap.term);
    struct wal_batch b;
    wal_batch_init(&b);
    int rc = stage_snapshot(&b, ls->group, ls->meta_group, &ls->snap,
                            (flags & META_FLAG_DISCARD_TAIL) != 0, ls->last);
    if (rc == KV_OK) {
        rc = wal_write(ls->w, &b);
    }
    wal_batch_close(&b);
    return rc;
}

static int recover(struct node_logstore *ls)
{
    uint8_t flags;
    uint64_t ci, ct;
    int rc = load_meta(ls, &flags);
    if (rc == KV_OK) {
        rc = load_state(ls, &ci, &ct);
    }
    if (rc != KV_OK) {
        return rc;
    }
    if (ls->snap.index > ci) {
        rc = roll_forward(ls, flags);
        if (rc == KV_OK) {
            rc = load_state(ls, &ci, &ct);
        }
        if (rc != KV_OK) {
            return rc;
        }
    }
    if (ls->snap.index == ci && ci > 0 && ct == 0) {
        /* The WAL can reopen a compacted group with the right first index
         * but compaction term 0 (reported to the WAL's owner with a seed
         * that shows it). The metadata record carries the term, and
         * cb_term answers first - 1 from it, so nothing here depends on
         * the WAL's copy. */
        kv_warn("logstore group=%llu WAL lost compaction term at index=%llu; using term=%llu "
                "from the snapshot metadata",
                (unsigned long long)ls->group, (unsigned long long)ci,
                (unsigned long long)ls->snap.term);
        ct = ls->snap.term;
    }
    if (ls->snap.index != ci || ls->snap.term != ct) {
        kv_error("logstore group=%llu snapshot meta index=%llu term=%llu but WAL mark "
                 "index=%llu term=%llu",
                 (unsigned long long)ls->group, (unsigned long long)ls->snap.index,
                 (unsigned long long)ls->snap.term, (unsigned long long)ci, (unsigned long long)ct);
        return KV_ECORRUPT;
    }
    return KV_OK;
}

/* ---- The raft_log_store callbacks ---- */

static int cb_initial_state(void *data, struct raft_hard_state *hs, struct raft_conf_state *cs)
{
    struct node_logstore *ls = data;
    *hs = ls->hs;
    *cs = ls->snap.conf;
    return KV_OK;
}

static uint64_t cb_first_index(void *data)
{
    struct node_logstore *ls = data;
    return ls->first;
}

static uint64_t cb_last_index(void *data)
{
    struct node_logstore *ls = data;
    return ls->last;
}

static bool rb_holds(const struct node_logstore *ls, uint64_t index)
{
    return ls->rb_valid && index >= ls->rb_lo && index - ls->rb_lo < ls->rb.count;
}

static int cb_entry(void *data, uint64_t index, struct raft_entry *out)
{
    struct node_logstore *ls = data;
    if (index < ls->first) {
        return KV_ECOMPACTED;
    }
    if (index > ls->last) {
        return KV_EUNAVAILABLE;
    }
    if (!rb_holds(ls, index)) {
        uint64_t hi = ls->last + 1;
        if (hi - index > NODE_LOGSTORE_READ_ENTRIES_MAX) {
            hi = index + NODE_LOGSTORE_READ_ENTRIES_MAX;
        }
        ls->rb_valid = false;
        int rc = wal_entries(ls->w, ls->group, index, hi, NODE_LOGSTORE_READ_BYTES_MAX, &ls->rb);
        if (rc != KV_OK) {
            return rc;
        }
        ls->rb_lo = index;
        ls->rb_valid = true;
    }
    const struct wal_entry *e = &ls->rb.entries[index - ls->rb_lo];
    KV_ASSERT(e->index == index);
    if (e->type == PLACEHOLDER_TYPE) {
        return KV_ECORRUPT; /* an install's placeholder outlived its mark */
    }
    out->index = e->index;
    out->term = e->term;
    out->type = e->type;
    /* Borrowed: the core copies it before calling the store again. */
    out->data = e->size > 0 ? (uint8_t *)(uintptr_t)e->data : NULL;
    out->size = e->size;
    return KV_OK;
}

static int cb_term(void *data, uint64_t index, uint64_t *term)
{
    struct node_logstore *ls = data;
    if (index + 1 < ls->first) {
        return KV_ECOMPACTED;
    }
    if (index + 1 == ls->first) {
        *term = ls->snap.term;
        return KV_OK;
    }
    if (index > ls->last) {
        return KV_EUNAVAILABLE;
    }
    if (rb_holds(ls, index)) {
        *term = ls->rb.entries[index - ls->rb_lo].term;
        return KV_OK;
    }
    return wal_term(ls->w, ls->group, index, term);
}

static int cb_snapshot(void *data, struct raft_snapshot_meta *meta)
{
    struct node_logstore *ls = data;
    *meta = ls->snap;
    return KV_OK;
}

/* ---- Lifecycle ---- */

int node_logstore_new(struct wal *w, uint64_t group, struct node_logstore **out)
{
    KV_ASSERT(w != NULL && out != NULL);
    KV_ASSERT(!node_logstore_is_meta_group(group));
    struct node_logstore *ls = kv_calloc(1, sizeof *ls);
    if (ls == NULL) {
        return KV_ENOMEM;
    }
    ls->w = w;
    ls->group = group;
    ls->meta_group = group | NODE_LOGSTORE_META_BIT;
    wal_read_init(&ls->rb);
    /* wal_entries computes each entry's data as bytes.data + offset; with
     * a never-allocated buffer and only empty entries (leader no-ops) that
     * is NULL + 0, which UBSan rejects (reported to the WAL's owner).
     * Owning a buffer from the start avoids it. */
    int rc = kv_buf_reserve(&ls->rb.bytes, READ_BUF_BYTES_INITIAL);
    if (rc != KV_OK) {
        goto err_recover;
    }
    ls->store.data = ls;
    ls->store.initial_state = cb_initial_state;
    ls->store.entry = cb_entry;
    ls->store.term = cb_term;
    ls->store.first_index = cb_first_index;
    ls->store.last_index = cb_last_index;
    ls->store.snapshot = cb_snapshot;
    rc = recover(ls);
    if (rc != KV_OK) {
        goto err_recover;
    }
    ls->rb_valid = false;
    *out = ls;
    return KV_OK;

err_recover:
    wal_read_close(&ls->rb);
    kv_free(ls);
    return rc;
}

void node_logstore_free(struct node_logstore *ls)
{
    if (ls == NULL) {
        return;
    }
    wal_read_close(&ls->rb);
    kv_free(ls);
}

struct raft_log_store *node_logstore_store(struct node_logstore *ls)
{
    return &ls->store;
}

struct raft_hard_state node_logstore_hard_state(const struct node_logstore *ls)
{
    return ls->hs;
}

void node_logstore_snapshot_meta(const struct node_logstore *ls, struct raft_snapshot_meta *out)
{
    *out = ls->snap;
}

/* ---- Persisting ---- */

static int stage_entries(struct node_logstore *ls, const struct raft_entry *ents, size_t n,
                         struct wal_batch *b)
{
    struct wal_entry chunk[STAGE_CHUNK_ENTRIES];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done;
        if (k > STAGE_CHUNK_ENTRIES) {
            k = STAGE_CHUNK_ENTRIES;
        }
        for (size_t i = 0; i < k; i++) {
            const struct raft_entry *e = &ents[done + i];
            chunk[i] = (struct wal_entry){.index = e->index,
                                          .term = e->term,
                                          .type = e->type,
                                          .data = e->data,
                                          .size = e->size};
        }
        int rc = wal_batch_entries(b, ls->group, chunk, k);
        if (rc != KV_OK) {
            return rc;
        }
        done += k;
    }
    return KV_OK;
}

int node_logstore_stage(struct node_logstore *ls, const struct raft_ready *rd, struct wal_batch *b)
{
    KV_ASSERT(!ls->staged);
    int rc;
    if (rd->has_snapshot) {
        /* The core installs only snapshots past its commit index, which is
         * at or past our compaction point. */
        KV_ASSERT(rd->snapshot.index >= ls->first);
        rc = stage_snapshot(b, ls->group, ls->meta_group, &rd->snapshot, true, ls->last);
        if (rc != KV_OK) {
            return rc;
        }
        ls->pending_snap = rd->snapshot;
        ls->staged_snap = true;
    }
    if (rd->n_entries > 0) {
        rc = stage_entries(ls, rd->entries, rd->n_entries, b);
        if (rc != KV_OK) {
            return rc;
        }
    }
    if (rd->has_hard_state) {
        struct wal_hard_state hs = {.term = rd->hard_state.term,
                                    .vote = rd->hard_state.vote,
                                    .commit = rd->hard_state.commit};
        rc = wal_batch_hard_state(b, ls->group, &hs);
        if (rc != KV_OK) {
            return rc;
        }
    }
    ls->staged = true;
    return KV_OK;
}

int node_logstore_compact(struct node_logstore *ls, uint64_t index,
                          const struct raft_conf_state *conf, struct wal_batch *b)
{
    KV_ASSERT(!ls->staged);
    KV_ASSERT(conf != NULL);
    if (index <= ls->snap.index) {
        return KV_OK;
    }
    if (index > ls->last) {
        return KV_EINVAL;
    }
    struct raft_snapshot_meta m = {.index = index, .conf = *conf};
    int rc = cb_term(ls, index, &m.term);
    if (rc != KV_OK) {
        return rc;
    }
    rc = stage_snapshot(b, ls->group, ls->meta_group, &m, false, ls->last);
    if (rc != KV_OK) {
        return rc;
    }
    ls->pending_snap = m;
    ls->staged_snap = true;
    ls->staged = true;
    return KV_OK;
}

int node_logstore_written(struct node_logstore *ls, const struct raft_ready *rd)
{
    (void)rd; /* the WAL's state already reflects it; kept for symmetry */
    ls->rb_valid = false;
    if (ls->staged_snap) {
        ls->snap = ls->pending_snap;
    }
    ls->staged = false;
    ls->staged_snap = false;
    uint64_t ci, ct;
    int rc = load_state(ls, &ci, &ct);
    if (rc != KV_OK) {
        return rc;
    }
    KV_ASSERT(ci == ls->snap.index && (ct == ls->snap.term || ct == 0));
    return KV_OK;
}

int node_logstore_remove(struct node_logstore *ls, struct wal_batch *b)
{
    int rc = wal_batch_remove(b, ls->group);
    if (rc != KV_OK) {
        return rc;
    }
    return wal_batch_remove(b, ls->meta_group);
}
