/* membership.c -- who the members are, and one-server membership changes.
 *
 * The approach is etcd's for simple changes: a change is an ordinary log
 * entry (RAFT_ENTRY_CONF_CHANGE) that takes effect on each replica when it
 * is applied (handed out committed and advanced), and a leader proposes a
 * new change only when (1) every earlier change in its log is applied and
 * (2) it has committed an entry of its own term. Rule 2 closes the gap
 * Ongaro found in single-server changes across leader changes; rule 1
 * means at most one change is in flight, so any two configurations in use
 * at once differ by one server and their majorities overlap. docs/raft.md
 * has the argument; the simulator checks it. */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"

static bool contains(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

int raft__conf_set(struct raft *r, const struct raft_conf_state *cs)
{
    if (cs->n_voters + cs->n_learners > RAFT_MEMBERS_MAX) {
        return KV_EINVAL;
    }
    struct raft_progress next[RAFT_MEMBERS_MAX];
    uint32_t n = 0;
    memset(next, 0, sizeof next);
    uint64_t last = raft__log_last(&r->log);
    for (uint32_t i = 0; i < cs->n_voters + cs->n_learners; i++) {
        bool learner = i >= cs->n_voters;
        uint64_t id = learner ? cs->learners[i - cs->n_voters] : cs->voters[i];
        KV_ASSERT(id != 0);
        struct raft_progress *old = raft__progress(r, id);
        if (old != NULL) {
            next[n] = *old;
        } else {
            next[n].id = id;
            raft__progress_reset(&next[n], last + 1, RAFT_PROGRESS_PROBE);
            next[n].recent_active = true;
            if (id == r->id) {
                next[n].match = r->log.offset - 1;
            }
        }
        next[n].learner = learner;
        n++;
    }
    /* Free the buffers of members that left. */
    for (uint32_t i = 0; i < r->n_prs; i++) {
        bool kept = false;
        for (uint32_t j = 0; j < n; j++) {
            kept = kept || next[j].id == r->prs[i].id;
        }
        if (!kept) {
            kv_free(r->prs[i].inflight);
        }
    }
    memset(r->prs, 0, sizeof r->prs);
    memcpy(r->prs, next, n * sizeof next[0]);
    r->n_prs = n;
    r->conf = *cs;
    r->learner = contains(cs->learners, cs->n_learners, r->id);
    return KV_OK;
}

/* Applies `cc` to `cs`; false when it changes nothing or is invalid. */
static bool conf_change_apply(struct raft_conf_state *cs, const struct raft_conf_change *cc)
{
    struct raft_conf_state out = {0};
    for (uint32_t i = 0; i < cs->n_voters; i++) {
        if (cs->voters[i] != cc->node_id) {
            out.voters[out.n_voters++] = cs->voters[i];
        }
    }
    for (uint32_t i = 0; i < cs->n_learners; i++) {
        if (cs->learners[i] != cc->node_id) {
            out.learners[out.n_learners++] = cs->learners[i];
        }
    }
    if (out.n_voters + out.n_learners >= RAFT_MEMBERS_MAX && cc->type != RAFT_CONF_REMOVE) {
        return false;
    }
    switch (cc->type) {
    case RAFT_CONF_ADD_VOTER:
        if (contains(cs->voters, cs->n_voters, cc->node_id)) {
            return false;
        }
        out.voters[out.n_voters++] = cc->node_id;
        break;
    case RAFT_CONF_ADD_LEARNER:
        if (contains(cs->learners, cs->n_learners, cc->node_id)) {
            return false;
        }
        out.learners[out.n_learners++] = cc->node_id;
        break;
    case RAFT_CONF_REMOVE:
        if (out.n_voters == cs->n_voters && out.n_learners == cs->n_learners) {
            return false;
        }
        break;
    default:
        return false;
    }
    if (out.n_voters == 0) {
        return false;
    }
    *cs = out;
    return true;
}

void raft__conf_apply_entry(struct raft *r, const struct raft_entry *e)
{
    struct raft_conf_change cc;
    if (raft_conf_change_decode(e->data, e->size, &cc) != KV_OK) {
        /* The leader encoded it and the decoder does not allocate, so
         * every replica reaches the same verdict: a garbled entry changes
         * nothing anywhere. */
        return;
    }
    struct raft_conf_state cs = r->conf;
    if (!conf_change_apply(&cs, &cc)) {
        return;
    }
    if (raft__conf_set(r, &cs) != KV_OK) {
        return;
    }
    raft__trace(r, RAFT_TRACE_CONF_APPLIED, cc.node_id, cc.type);
    if (r->role == RAFT_LEADER) {
        if (!raft__is_voter(r, r->id)) {
            /* Removed or demoted: hand over by stepping down; the others
             * time out and elect a leader among themselves. */
            raft__become_follower(r, r->term, 0);
            return;
        }
        if (r->transferee != 0 && !raft__is_voter(r, r->transferee)) {
            r->transferee = 0;
        }
        if (raft__maybe_commit(r)) {
            raft__broadcast_append(r);
        } else {
            raft__broadcast_append(r);
        }
    } else if ((r->role == RAFT_CANDIDATE || r->role == RAFT_PRE_CANDIDATE) &&
               !raft__is_voter(r, r->id)) {
        raft__become_follower(r, r->term, 0);
    }
}

int raft_propose_conf_change(struct raft *r, const struct raft_conf_change *cc,
                             uint64_t *leader_hint)
{
    KV_ASSERT(!r->in_ready);
    if (leader_hint != NULL) {
        *leader_hint = r->leader;
    }
    if (r->role != RAFT_LEADER) {
        return KV_ENOTLEADER;
    }
    if (r->transferee != 0 || r->pending_conf_index > r->log.applied ||
        raft__log_term_or0(&r->log, r->log.committed) != r->term) {
        return KV_EBUSY;
    }
    struct raft_conf_state cs = r->conf;
    if (!conf_change_apply(&cs, cc)) {
        return KV_EINVAL;
    }
    uint8_t buf[RAFT_CONF_CHANGE_BYTES_MAX];
    size_t size = 0;
    int rc = raft_conf_change_encode(cc, buf, sizeof buf, &size);
    if (rc != KV_OK) {
        return rc;
    }
    uint64_t last = raft__log_last(&r->log);
    struct raft_entry e = {.term = r->term,
                           .index = last + 1,
                           .type = RAFT_ENTRY_CONF_CHANGE,
                           .data = buf,
                           .size = size};
    rc = raft__append_local(r, &e, 1);
    if (rc != KV_OK) {
        return rc;
    }
    r->pending_conf_index = last + 1;
    raft__broadcast_append(r);
    return KV_OK;
}
