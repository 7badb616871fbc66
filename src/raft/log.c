/* log.c -- the Raft log as the core sees it: the host's persisted store
 * plus the unstable tail of entries appended here but not yet persisted
 * (etcd's raftLog and unstable). The core never writes the store; it hands
 * the unstable entries out in a ready batch and marks them stable when the
 * host advances. */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"

int raft__log_init(struct raft_log *l, struct raft_log_store *store, uint64_t committed,
                   uint64_t applied)
{
    memset(l, 0, sizeof *l);
    l->store = store;
    l->offset = store->last_index(store->data) + 1;
    uint64_t snap_index = store->first_index(store->data) - 1;
    l->committed = committed > snap_index ? committed : snap_index;
    l->applied = applied > snap_index ? applied : snap_index;
    if (l->applied > l->committed) {
        return KV_EINVAL;
    }
    return KV_OK;
}

static void free_entries(struct raft_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kv_free(ents[i].data);
        ents[i].data = NULL;
    }
}

void raft__log_close(struct raft_log *l)
{
    free_entries(l->unstable, l->n_unstable);
    kv_free(l->unstable);
    memset(l, 0, sizeof *l);
}

uint64_t raft__log_first(const struct raft_log *l)
{
    if (l->has_snapshot) {
        return l->snap.index + 1;
    }
    return l->store->first_index(l->store->data);
}

uint64_t raft__log_last(const struct raft_log *l)
{
    if (l->n_unstable > 0) {
        return l->offset + l->n_unstable - 1;
    }
    if (l->has_snapshot) {
        return l->snap.index;
    }
    /* offset - 1 rather than the store's last: a truncation that is still
     * unstable (offset moved back, tail empty) is not possible, because a
     * truncation always comes with at least one new entry. */
    return l->store->last_index(l->store->data);
}

int raft__log_term(const struct raft_log *l, uint64_t index, uint64_t *term)
{
    if (l->n_unstable > 0 && index >= l->offset && index < l->offset + l->n_unstable) {
        *term = l->unstable[index - l->offset].term;
        return KV_OK;
    }
    if (l->has_snapshot) {
        if (index == l->snap.index) {
            *term = l->snap.term;
            return KV_OK;
        }
        return index < l->snap.index ? KV_ECOMPACTED : KV_EUNAVAILABLE;
    }
    if (index >= l->offset) {
        return KV_EUNAVAILABLE;
    }
    if (index == 0) {
        *term = 0;
        return KV_OK;
    }
    return l->store->term(l->store->data, index, term);
}

uint64_t raft__log_term_or0(const struct raft_log *l, uint64_t index)
{
    uint64_t t = 0;
    if (raft__log_term(l, index, &t) != KV_OK) {
        return 0;
    }
    return t;
}

uint64_t raft__log_last_term(const struct raft_log *l)
{
    uint64_t t = 0;
    int rc = raft__log_term(l, raft__log_last(l), &t);
    KV_ASSERT(rc == KV_OK);
    return t;
}

int raft__log_entry(const struct raft_log *l, uint64_t index, struct raft_entry *out)
{
    if (l->n_unstable > 0 && index >= l->offset && index < l->offset + l->n_unstable) {
        *out = l->unstable[index - l->offset];
        return KV_OK;
    }
    if (l->has_snapshot) {
        return index <= l->snap.index ? KV_ECOMPACTED : KV_EUNAVAILABLE;
    }
    if (index >= l->offset) {
        return KV_EUNAVAILABLE;
    }
    return l->store->entry(l->store->data, index, out);
}

static int reserve(struct raft_log *l, size_t want)
{
    if (want <= l->cap_unstable) {
        return KV_OK;
    }
    size_t cap = l->cap_unstable ? l->cap_unstable * 2 : 8;
    while (cap < want) {
        cap *= 2;
    }
    struct raft_entry *p = kv_realloc(l->unstable, cap * sizeof *p);
    if (p == NULL) {
        return KV_ENOMEM;
    }
    l->unstable = p;
    l->cap_unstable = cap;
    return KV_OK;
}

int raft__log_append(struct raft_log *l, const struct raft_entry *ents, size_t n)
{
    if (n == 0) {
        return KV_OK;
    }
    uint64_t after = ents[0].index;
    KV_ASSERT(after > l->committed);
    KV_ASSERT(after <= raft__log_last(l) + 1);
    /* Copy the payloads first so a failure leaves the log unchanged. */
    if (reserve(l, l->n_unstable + n) != KV_OK) {
        return KV_ENOMEM;
    }
    struct raft_entry *copies = kv_calloc(n, sizeof *copies);
    if (copies == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        KV_ASSERT(ents[i].index == after + i);
        copies[i] = ents[i];
        copies[i].data = NULL;
        if (ents[i].size > 0) {
            copies[i].data = kv_memdup(ents[i].data, ents[i].size);
            if (copies[i].data == NULL) {
                free_entries(copies, i);
                kv_free(copies);
                return KV_ENOMEM;
            }
        }
    }
    if (after <= l->offset) {
        /* Replaces the whole unstable tail and the stored suffix. Entries
         * already handed out in a ready are gone from our view; the host
         * persists the new ones after them, which overwrites them. */
        free_entries(l->unstable, l->n_unstable);
        l->n_unstable = 0;
        l->n_in_ready = 0;
        l->offset = after;
    } else if (after < l->offset + l->n_unstable) {
        size_t keep = (size_t)(after - l->offset);
        free_entries(l->unstable + keep, l->n_unstable - keep);
        l->n_unstable = keep;
        if (l->n_in_ready > keep) {
            l->n_in_ready = keep;
        }
    }
    if (reserve(l, l->n_unstable + n) != KV_OK) {
        /* Cannot happen: reserved above for at least this many. */
        KV_ASSERT(0);
    }
    memcpy(l->unstable + l->n_unstable, copies, n * sizeof *copies);
    l->n_unstable += n;
    kv_free(copies);
    return KV_OK;
}

uint64_t raft__log_find_conflict(const struct raft_log *l, const struct raft_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!raft__log_match_term(l, ents[i].index, ents[i].term)) {
            return ents[i].index;
        }
    }
    return 0;
}

uint64_t raft__log_find_conflict_by_term(const struct raft_log *l, uint64_t index, uint64_t term)
{
    /* Walks back over the entries whose term is above `term`: each step is
     * one term lookup, bounded by the distance to the first index. */
    for (;;) {
        uint64_t t = 0;
        if (raft__log_term(l, index, &t) != KV_OK) {
            return index;
        }
        if (t <= term || index == 0) {
            return index;
        }
        index--;
    }
}

bool raft__log_match_term(const struct raft_log *l, uint64_t index, uint64_t term)
{
    uint64_t t = 0;
    if (raft__log_term(l, index, &t) != KV_OK) {
        return false;
    }
    return t == term;
}

bool raft__log_up_to_date(const struct raft_log *l, uint64_t last_index, uint64_t last_term)
{
    uint64_t my_term = raft__log_last_term(l);
    return last_term > my_term || (last_term == my_term && last_index >= raft__log_last(l));
}

void raft__log_commit_to(struct raft_log *l, uint64_t index)
{
    if (index > l->committed) {
        KV_ASSERT(index <= raft__log_last(l));
        l->committed = index;
    }
}

void raft__log_stable(struct raft_log *l, size_t n)
{
    KV_ASSERT(n <= l->n_unstable);
    if (n == 0) {
        return;
    }
    free_entries(l->unstable, n);
    memmove(l->unstable, l->unstable + n, (l->n_unstable - n) * sizeof *l->unstable);
    l->n_unstable -= n;
    l->offset += n;
}

void raft__log_restore(struct raft_log *l, const struct raft_snapshot_meta *meta)
{
    free_entries(l->unstable, l->n_unstable);
    l->n_unstable = 0;
    l->n_in_ready = 0;
    l->offset = meta->index + 1;
    l->has_snapshot = true;
    l->snap = *meta;
    l->committed = meta->index;
    /* The state machine is replaced by the snapshot's. */
    l->applied = meta->index;
}
