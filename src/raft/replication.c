/* replication.c -- log replication: the leader's APPENDs (batched up to
 * msg_bytes_max, pipelined up to inflight_max per follower, probing after
 * a rejection), the follower's log-matching check with fast backtracking
 * (a rejection carries a hint index and its term so the leader skips a
 * whole term per round trip), heartbeats, and the commit rule: only an
 * entry of the current term is committed by counting replicas. */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"

int raft__append_local(struct raft *r, const struct raft_entry *ents, size_t n)
{
    return raft__log_append(&r->log, ents, n);
}

int raft__leader_propose(struct raft *r, const struct raft_entry *ents, size_t n)
{
    if (n == 0) {
        return KV_OK;
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += ents[i].size;
    }
    /* An empty log of uncommitted work always accepts one batch, so a
     * single oversized proposal is not refused forever. */
    if (r->uncommitted_bytes > 0 && r->uncommitted_bytes + bytes > r->cfg.uncommitted_bytes_max) {
        return KV_EBUSY;
    }
    uint64_t last = raft__log_last(&r->log);
    struct raft_entry local[8];
    struct raft_entry *copy = n <= 8 ? local : kv_calloc(n, sizeof *copy);
    if (copy == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        copy[i] = ents[i];
        copy[i].term = r->term;
        copy[i].index = last + 1 + i;
        /* Conf changes travel only through raft_propose_conf_change. */
        copy[i].type = RAFT_ENTRY_NORMAL;
    }
    int rc = raft__append_local(r, copy, n);
    if (copy != local) {
        kv_free(copy);
    }
    if (rc != KV_OK) {
        return rc;
    }
    r->uncommitted_bytes += bytes;
    raft__broadcast_append(r);
    return KV_OK;
}

/* Fills m->entries with entries from `from` on, up to msg_bytes_max
 * (always at least one when any exists). */
static int fill_entries(struct raft *r, struct raft_msg *m, uint64_t from)
{
    uint64_t last = raft__log_last(&r->log);
    if (from > last) {
        return KV_OK;
    }
    size_t cap = 0;
    uint64_t bytes = 0;
    for (uint64_t i = from; i <= last; i++) {
        struct raft_entry e;
        int rc = raft__log_entry(&r->log, i, &e);
        if (rc != KV_OK) {
            return rc;
        }
        if (m->n_entries > 0 &&
            (bytes + e.size > r->cfg.msg_bytes_max || m->n_entries == RAFT_BATCH_ENTRIES_MAX)) {
            break;
        }
        if (m->n_entries == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct raft_entry *p = kv_realloc(m->entries, ncap * sizeof *p);
            if (p == NULL) {
                return KV_ENOMEM;
            }
            m->entries = p;
            cap = ncap;
        }
        struct raft_entry *c = &m->entries[m->n_entries];
        *c = e;
        c->data = NULL;
        if (e.size > 0) {
            c->data = kv_memdup(e.data, e.size);
            if (c->data == NULL) {
                return KV_ENOMEM;
            }
        }
        m->n_entries++;
        bytes += e.size;
    }
    return KV_OK;
}

static void send_snapshot(struct raft *r, struct raft_progress *p)
{
    struct raft_snapshot_meta meta;
    if (r->cfg.store->snapshot(r->cfg.store->data, &meta) != KV_OK || meta.index == 0) {
        return; /* the host has none yet; retried on the next heartbeat */
    }
    struct raft_msg *m = raft__msg_new(r, RAFT_MSG_SNAPSHOT, p->id);
    if (m == NULL) {
        return;
    }
    m->snap = meta;
    raft__progress_become_snapshot(p, meta.index);
    raft__trace(r, RAFT_TRACE_SNAPSHOT_SENT, p->id, meta.index);
}

void raft__send_append(struct raft *r, struct raft_progress *p, bool allow_empty)
{
    if (p->id == r->id || raft__progress_paused(p, r->cfg.inflight_max)) {
        return;
    }
    uint64_t prev = p->next - 1;
    uint64_t prev_term = 0;
    if (raft__log_term(&r->log, prev, &prev_term) != KV_OK) {
        send_snapshot(r, p);
        return;
    }
    if (!allow_empty && p->next > raft__log_last(&r->log)) {
        return;
    }
    if (p->state == RAFT_PROGRESS_REPLICATE && p->inflight == NULL) {
        /* Allocated on first use and freed when leadership ends, so an
         * idle follower group carries no pipeline state. */
        p->inflight = kv_calloc(r->cfg.inflight_max, sizeof *p->inflight);
        if (p->inflight == NULL) {
            return;
        }
    }
    struct raft_msg *m = raft__msg_new(r, RAFT_MSG_APPEND, p->id);
    if (m == NULL) {
        return;
    }
    m->index = prev;
    m->log_term = prev_term;
    m->commit = r->log.committed;
    int rc = fill_entries(r, m, p->next);
    if (rc == KV_ECOMPACTED) {
        r->n_msgs--;
        raft__msg_free_owned(m);
        send_snapshot(r, p);
        return;
    }
    if (rc != KV_OK) {
        /* Out of memory: send nothing; the next heartbeat retries. */
        r->n_msgs--;
        raft__msg_free_owned(m);
        return;
    }
    if (m->n_entries > 0) {
        raft__progress_sent(p, m->entries[m->n_entries - 1].index, r->cfg.inflight_max);
    } else if (p->state == RAFT_PROGRESS_PROBE) {
        p->probe_sent = true;
    }
}

void raft__broadcast_append(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        raft__send_append(r, &r->prs[i], true);
    }
}

void raft__send_heartbeat(struct raft *r, struct raft_progress *p)
{
    struct raft_msg *m = raft__msg_new(r, RAFT_MSG_HEARTBEAT, p->id);
    if (m == NULL) {
        return;
    }
    /* Never tell a follower to commit past what it is known to hold. */
    m->commit = p->match < r->log.committed ? p->match : r->log.committed;
    m->read_seq = r->read_seq;
}

void raft__broadcast_heartbeat(struct raft *r)
{
    /* Every broadcast is a new round: a quorum acknowledging it confirms
     * leadership for the reads queued before it, and (lease reads) dates
     * the followers' promise not to elect anyone else. */
    r->read_seq++;
    r->round_seq[r->read_seq % RAFT_LEASE_ROUNDS] = r->read_seq;
    r->round_tick[r->read_seq % RAFT_LEASE_ROUNDS] = r->ticks;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id != r->id) {
            raft__send_heartbeat(r, &r->prs[i]);
        }
    }
}

bool raft__maybe_commit(struct raft *r)
{
    /* The quorum-th highest match among voters, by selection (n <= 9). */
    uint64_t m[RAFT_MEMBERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (!r->prs[i].learner) {
            m[n++] = r->prs[i].match;
        }
    }
    for (uint32_t i = 1; i < n; i++) {
        uint64_t v = m[i];
        uint32_t j = i;
        while (j > 0 && m[j - 1] < v) {
            m[j] = m[j - 1];
            j--;
        }
        m[j] = v;
    }
    uint64_t index = m[raft__quorum(r) - 1];
    if (index <= r->log.committed) {
        return false;
    }
    /* Figure 8: an entry of an earlier term is committed only indirectly,
     * by committing one of ours after it. */
    if (raft__log_term_or0(&r->log, index) != r->term) {
        return false;
    }
    raft__log_commit_to(&r->log, index);
    raft__trace(r, RAFT_TRACE_COMMIT, index, 0);
    return true;
}

static void reply_append(struct raft *r, const struct raft_msg *m, uint64_t index)
{
    struct raft_msg *resp = raft__msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
    if (resp != NULL) {
        resp->index = index;
    }
}

static int accept_append(struct raft *r, const struct raft_msg *m)
{
    uint64_t last_new = m->index + m->n_entries;
    uint64_t conflict = raft__log_find_conflict(&r->log, m->entries, m->n_entries);
    if (conflict != 0) {
        /* Never overwrite a committed entry: that would be a safety bug
         * in the leader, so fail loudly. */
        KV_ASSERT(conflict > r->log.committed);
        size_t skip = (size_t)(conflict - m->entries[0].index);
        int rc = raft__log_append(&r->log, m->entries + skip, m->n_entries - skip);
        if (rc != KV_OK) {
            return rc;
        }
    }
    uint64_t commit = m->commit < last_new ? m->commit : last_new;
    raft__log_commit_to(&r->log, commit);
    reply_append(r, m, last_new);
    return KV_OK;
}

int raft__step_append(struct raft *r, const struct raft_msg *m)
{
    if (m->index < r->log.committed) {
        /* Everything up to our commit is known to match. */
        reply_append(r, m, r->log.committed);
        return KV_OK;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        if (m->entries[i].index != m->index + 1 + i) {
            return KV_EINVAL;
        }
    }
    if (raft__log_match_term(&r->log, m->index, m->log_term)) {
        return accept_append(r, m);
    }
    /* Reject with a hint: the last index at or below the probe whose term
     * is at most the leader's term there. The leader resumes from it. */
    uint64_t hint = m->index < raft__log_last(&r->log) ? m->index : raft__log_last(&r->log);
    hint = raft__log_find_conflict_by_term(&r->log, hint, m->log_term);
    struct raft_msg *resp = raft__msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
    if (resp == NULL) {
        return KV_ENOMEM;
    }
    resp->index = m->index;
    resp->reject = true;
    resp->reject_hint = hint;
    resp->log_term = raft__log_term_or0(&r->log, hint);
    return KV_OK;
}

static void maybe_finish_transfer(struct raft *r, struct raft_progress *p)
{
    if (r->transferee == p->id && p->match == raft__log_last(&r->log)) {
        (void)raft__msg_new(r, RAFT_MSG_TIMEOUT_NOW, p->id);
    }
}

static void on_reject(struct raft *r, struct raft_progress *p, const struct raft_msg *m)
{
    uint64_t next_probe = m->reject_hint;
    if (m->log_term > 0) {
        /* The follower's log has term log_term at the hint: everything
         * past the last index where our term is <= that cannot match. */
        next_probe = raft__log_find_conflict_by_term(&r->log, m->reject_hint, m->log_term);
    }
    if (raft__progress_decr(p, m->index, next_probe + 1)) {
        if (p->state == RAFT_PROGRESS_REPLICATE) {
            raft__progress_become_probe(p);
            if (next_probe + 1 > p->match && next_probe + 1 < p->next) {
                p->next = next_probe + 1;
            }
        }
        raft__send_append(r, p, true);
    }
}

void raft__step_append_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *p = raft__progress(r, m->from);
    if (p == NULL || m->index > raft__log_last(&r->log)) {
        /* Unknown sender, or it claims entries we never sent: ignore. */
        return;
    }
    p->recent_active = true;
    if (m->reject) {
        on_reject(r, p, m);
        return;
    }
    bool was_paused = raft__progress_paused(p, r->cfg.inflight_max);
    if (!raft__progress_update(p, m->index)) {
        if (p->state == RAFT_PROGRESS_REPLICATE) {
            raft__progress_free_to(p, m->index, r->cfg.inflight_max);
        }
        return;
    }
    if (p->state == RAFT_PROGRESS_PROBE) {
        raft__progress_become_replicate(p);
    } else if (p->state == RAFT_PROGRESS_SNAPSHOT && p->match >= p->pending_snapshot) {
        raft__progress_become_probe(p);
        raft__progress_become_replicate(p);
    } else if (p->state == RAFT_PROGRESS_REPLICATE) {
        raft__progress_free_to(p, m->index, r->cfg.inflight_max);
    }
    if (raft__maybe_commit(r)) {
        raft__broadcast_append(r);
    } else if (was_paused || p->next <= raft__log_last(&r->log)) {
        raft__send_append(r, p, false);
    }
    /* Keep the pipe full: more entries may be waiting. */
    while (p->next <= raft__log_last(&r->log) && !raft__progress_paused(p, r->cfg.inflight_max)) {
        size_t before = r->n_msgs;
        raft__send_append(r, p, false);
        if (r->n_msgs == before) {
            break;
        }
    }
    maybe_finish_transfer(r, p);
}

void raft__step_heartbeat(struct raft *r, const struct raft_msg *m)
{
    if (m->commit > r->log.committed && m->commit <= raft__log_last(&r->log)) {
        raft__log_commit_to(&r->log, m->commit);
    }
    struct raft_msg *resp = raft__msg_new(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (resp != NULL) {
        resp->read_seq = m->read_seq;
    }
}

void raft__step_heartbeat_resp(struct raft *r, const struct raft_msg *m)
{
    struct raft_progress *p = raft__progress(r, m->from);
    if (p == NULL) {
        return;
    }
    p->recent_active = true;
    p->probe_sent = false;
    /* The follower is alive; if the pipe is full an APPEND was probably
     * lost: free one slot so replication resumes (a gap makes the
     * follower reject, which sends us back to probing). */
    if (p->state == RAFT_PROGRESS_REPLICATE && p->inflight_count >= r->cfg.inflight_max) {
        p->inflight_start = (p->inflight_start + 1) % r->cfg.inflight_max;
        p->inflight_count--;
    }
    if (p->match < raft__log_last(&r->log)) {
        /* Even with nothing new to send: an empty APPEND at next - 1 makes
         * a follower that lost our last APPEND reject, and we resend. */
        raft__send_append(r, p, true);
    }
    if (m->read_seq > p->read_acked) {
        p->read_acked = m->read_seq;
        raft__read_confirm(r);
    }
}

void raft__step_snapshot(struct raft *r, const struct raft_msg *m)
{
    const struct raft_snapshot_meta *s = &m->snap;
    if (s->index <= r->log.committed) {
        reply_append(r, m, r->log.committed);
        return;
    }
    if (raft__log_match_term(&r->log, s->index, s->term)) {
        /* We already hold the snapshot's last entry: just commit. */
        raft__log_commit_to(&r->log, s->index);
        reply_append(r, m, r->log.committed);
        return;
    }
    raft__log_restore(&r->log, s);
    if (raft__conf_set(r, &s->conf) != KV_OK) {
        /* Keep the old membership; the next snapshot retries. */
    }
    reply_append(r, m, s->index);
}
