/* raft_memlog.c -- the in-memory reference log store: a growable array of
 * entries [first, last] with owned payloads, the snapshot's metadata (the
 * entry before first) and the hard state. */
#include "raft_memlog.h"

#include <string.h>

#include "alloc.h"

struct raft_memlog {
    struct raft_log_store store; /* the interface handed to the core */
    struct raft_entry *ents;     /* ents[i] is index snap.index + 1 + i */
    size_t n;
    size_t cap;
    struct raft_snapshot_meta snap; /* index 0: none */
    struct raft_hard_state hs;
    uint64_t bytes;
};

static int ml_initial_state(void *data, struct raft_hard_state *hs, struct raft_conf_state *cs)
{
    struct raft_memlog *ml = data;
    *hs = ml->hs;
    *cs = ml->snap.conf;
    return KV_OK;
}

static uint64_t ml_first(void *data)
{
    struct raft_memlog *ml = data;
    return ml->snap.index + 1;
}

static uint64_t ml_last(void *data)
{
    struct raft_memlog *ml = data;
    return ml->snap.index + ml->n;
}

static int ml_entry(void *data, uint64_t index, struct raft_entry *out)
{
    struct raft_memlog *ml = data;
    if (index <= ml->snap.index) {
        return KV_ECOMPACTED;
    }
    if (index > ml_last(ml)) {
        return KV_EUNAVAILABLE;
    }
    *out = ml->ents[index - ml->snap.index - 1];
    return KV_OK;
}

static int ml_term(void *data, uint64_t index, uint64_t *term)
{
    struct raft_memlog *ml = data;
    if (index < ml->snap.index) {
        return KV_ECOMPACTED;
    }
    if (index == ml->snap.index) {
        *term = ml->snap.term;
        return KV_OK;
    }
    if (index > ml_last(ml)) {
        return KV_EUNAVAILABLE;
    }
    *term = ml->ents[index - ml->snap.index - 1].term;
    return KV_OK;
}

static int ml_snapshot(void *data, struct raft_snapshot_meta *meta)
{
    struct raft_memlog *ml = data;
    *meta = ml->snap;
    return KV_OK;
}

int raft_memlog_new(struct raft_memlog **out)
{
    struct raft_memlog *ml = kv_calloc(1, sizeof *ml);
    if (ml == NULL) {
        return KV_ENOMEM;
    }
    ml->store.data = ml;
    ml->store.initial_state = ml_initial_state;
    ml->store.entry = ml_entry;
    ml->store.term = ml_term;
    ml->store.first_index = ml_first;
    ml->store.last_index = ml_last;
    ml->store.snapshot = ml_snapshot;
    *out = ml;
    return KV_OK;
}

static void truncate_from(struct raft_memlog *ml, size_t pos)
{
    for (size_t i = pos; i < ml->n; i++) {
        ml->bytes -= ml->ents[i].size;
        kv_free(ml->ents[i].data);
    }
    if (pos < ml->n) {
        ml->n = pos;
    }
}

void raft_memlog_free(struct raft_memlog *ml)
{
    if (ml == NULL) {
        return;
    }
    truncate_from(ml, 0);
    kv_free(ml->ents);
    kv_free(ml);
}

struct raft_log_store *raft_memlog_store(struct raft_memlog *ml)
{
    return &ml->store;
}

static int append(struct raft_memlog *ml, const struct raft_entry *ents, size_t n)
{
    if (n == 0) {
        return KV_OK;
    }
    uint64_t first = ents[0].index;
    if (first <= ml->snap.index || first > ml_last(ml) + 1) {
        return KV_EINVAL;
    }
    size_t pos = (size_t)(first - ml->snap.index - 1);
    size_t need = pos + n;
    if (need > ml->cap) {
        size_t cap = ml->cap ? ml->cap : 16;
        while (cap < need) {
            cap *= 2;
        }
        struct raft_entry *p = kv_realloc(ml->ents, cap * sizeof *p);
        if (p == NULL) {
            return KV_ENOMEM;
        }
        ml->ents = p;
        ml->cap = cap;
    }
    /* Copy payloads before truncating so ENOMEM leaves the log intact. */
    uint8_t **copies = kv_calloc(n, sizeof *copies);
    if (copies == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (ents[i].size > 0) {
            copies[i] = kv_memdup(ents[i].data, ents[i].size);
            if (copies[i] == NULL) {
                for (size_t j = 0; j < i; j++) {
                    kv_free(copies[j]);
                }
                kv_free(copies);
                return KV_ENOMEM;
            }
        }
    }
    truncate_from(ml, pos);
    for (size_t i = 0; i < n; i++) {
        ml->ents[pos + i] = ents[i];
        ml->ents[pos + i].data = copies[i];
        ml->bytes += ents[i].size;
    }
    ml->n = pos + n;
    kv_free(copies);
    return KV_OK;
}

int raft_memlog_persist(struct raft_memlog *ml, const struct raft_ready *rd)
{
    if (rd->has_snapshot) {
        truncate_from(ml, 0);
        ml->snap = rd->snapshot;
    }
    int rc = append(ml, rd->entries, rd->n_entries);
    if (rc != KV_OK) {
        return rc;
    }
    if (rd->has_hard_state) {
        ml->hs = rd->hard_state;
    }
    return KV_OK;
}

int raft_memlog_compact(struct raft_memlog *ml, uint64_t index, const struct raft_conf_state *conf)
{
    if (index <= ml->snap.index) {
        return KV_OK;
    }
    if (index > ml_last(ml)) {
        return KV_EINVAL;
    }
    size_t drop = (size_t)(index - ml->snap.index);
    uint64_t term = ml->ents[drop - 1].term;
    for (size_t i = 0; i < drop; i++) {
        ml->bytes -= ml->ents[i].size;
        kv_free(ml->ents[i].data);
    }
    memmove(ml->ents, ml->ents + drop, (ml->n - drop) * sizeof *ml->ents);
    ml->n -= drop;
    ml->snap.index = index;
    ml->snap.term = term;
    ml->snap.conf = *conf;
    return KV_OK;
}

struct raft_hard_state raft_memlog_hard_state(const struct raft_memlog *ml)
{
    return ml->hs;
}

uint64_t raft_memlog_bytes(const struct raft_memlog *ml)
{
    return ml->bytes;
}
