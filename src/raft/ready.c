/* ready.c -- the ready/advance handshake: raft_ready gathers what the host
 * must do (persist, send, apply, serve reads) into one batch the core owns
 * until raft_advance, which marks entries stable, moves the applied index,
 * applies membership changes, and lets the leader count its own persisted
 * entries toward commitment. */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"

static struct raft_hard_state hard_state(const struct raft *r)
{
    struct raft_hard_state hs = {.term = r->term, .vote = r->vote, .commit = r->log.committed};
    return hs;
}

static bool hs_changed(const struct raft *r)
{
    struct raft_hard_state hs = hard_state(r);
    return hs.term != r->prev_hs.term || hs.vote != r->prev_hs.vote ||
           hs.commit != r->prev_hs.commit;
}

bool raft_has_ready(const struct raft *r)
{
    return r->n_msgs > 0 || r->log.n_unstable > 0 || r->log.has_snapshot || r->n_reads > 0 ||
           r->log.committed > r->log.applied || hs_changed(r);
}

/* Copies committed entries applied+1.. into owned memory, bounded by
 * apply_bytes_max (always at least one entry). */
static int collect_committed(struct raft *r, struct raft_entry **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (r->log.committed <= r->log.applied) {
        return KV_OK;
    }
    uint64_t count = r->log.committed - r->log.applied;
    if (count > RAFT_BATCH_ENTRIES_MAX) {
        count = RAFT_BATCH_ENTRIES_MAX;
    }
    struct raft_entry *ents = kv_calloc((size_t)count, sizeof *ents);
    if (ents == NULL) {
        return KV_ENOMEM;
    }
    size_t n = 0;
    uint64_t bytes = 0;
    for (uint64_t i = r->log.applied + 1; i <= r->log.applied + count; i++) {
        struct raft_entry e;
        int rc = raft__log_entry(&r->log, i, &e);
        if (rc != KV_OK || (n > 0 && bytes + e.size > r->cfg.apply_bytes_max)) {
            break;
        }
        ents[n] = e;
        ents[n].data = NULL;
        if (e.size > 0) {
            ents[n].data = kv_memdup(e.data, e.size);
            if (ents[n].data == NULL) {
                for (size_t j = 0; j < n; j++) {
                    kv_free(ents[j].data);
                }
                kv_free(ents);
                return KV_ENOMEM;
            }
        }
        bytes += e.size;
        n++;
    }
    *out = ents;
    *n_out = n;
    return KV_OK;
}

int raft_ready(struct raft *r, struct raft_ready *rd)
{
    KV_ASSERT(!r->in_ready);
    memset(rd, 0, sizeof *rd);
    int rc = collect_committed(r, &r->ready_committed, &r->n_ready_committed);
    if (rc != KV_OK) {
        return rc;
    }
    if (hs_changed(r)) {
        rd->has_hard_state = true;
        rd->hard_state = hard_state(r);
    }
    if (r->log.has_snapshot) {
        rd->has_snapshot = true;
        rd->snapshot = r->log.snap;
    }
    rd->entries = r->log.unstable;
    rd->n_entries = r->log.n_unstable;
    r->log.n_in_ready = r->log.n_unstable;
    /* Messages and reads move to the batch; new ones queue afresh. */
    r->ready_msgs = r->msgs;
    r->n_ready_msgs = r->n_msgs;
    r->msgs = NULL;
    r->n_msgs = 0;
    r->cap_msgs = 0;
    rd->msgs = r->ready_msgs;
    rd->n_msgs = r->n_ready_msgs;
    r->ready_reads = r->reads;
    r->n_ready_reads = r->n_reads;
    r->reads = NULL;
    r->n_reads = 0;
    r->cap_reads = 0;
    rd->reads = r->ready_reads;
    rd->n_reads = r->n_ready_reads;
    rd->committed = r->ready_committed;
    rd->n_committed = r->n_ready_committed;
    r->ready_snapshot = rd->has_snapshot;
    r->in_ready = true;
    return KV_OK;
}

static void apply_committed(struct raft *r, const struct raft_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        KV_ASSERT(ents[i].index == r->log.applied + 1);
        r->log.applied = ents[i].index;
        if (r->role == RAFT_LEADER) {
            r->uncommitted_bytes =
                r->uncommitted_bytes > ents[i].size ? r->uncommitted_bytes - ents[i].size : 0;
        }
        if (ents[i].type == RAFT_ENTRY_CONF_CHANGE) {
            raft__conf_apply_entry(r, &ents[i]);
        }
    }
}

void raft_advance(struct raft *r, struct raft_ready *rd)
{
    KV_ASSERT(r->in_ready);
    r->in_ready = false;
    if (rd->has_hard_state) {
        r->prev_hs = rd->hard_state;
    }
    if (r->ready_snapshot) {
        r->log.has_snapshot = false;
    }
    raft__log_stable(&r->log, r->log.n_in_ready);
    r->log.n_in_ready = 0;
    apply_committed(r, r->ready_committed, r->n_ready_committed);
    for (size_t i = 0; i < r->n_ready_committed; i++) {
        kv_free(r->ready_committed[i].data);
    }
    kv_free(r->ready_committed);
    r->ready_committed = NULL;
    r->n_ready_committed = 0;
    for (size_t i = 0; i < r->n_ready_msgs; i++) {
        raft__msg_free_owned(&r->ready_msgs[i]);
    }
    kv_free(r->ready_msgs);
    r->ready_msgs = NULL;
    r->n_ready_msgs = 0;
    for (size_t i = 0; i < r->n_ready_reads; i++) {
        kv_free(r->ready_reads[i].context);
    }
    kv_free(r->ready_reads);
    r->ready_reads = NULL;
    r->n_ready_reads = 0;
    memset(rd, 0, sizeof *rd);
    if (r->role == RAFT_LEADER) {
        /* Our own persisted entries now count toward the quorum. */
        struct raft_progress *self = raft__progress(r, r->id);
        if (self != NULL && raft__progress_update(self, r->log.offset - 1) &&
            raft__maybe_commit(r)) {
            raft__broadcast_append(r);
        }
    }
}
