/* election.c -- leader election: randomized timeouts, PreVote (a dry run
 * that does not bump terms, so a partitioned node cannot disrupt the
 * cluster when it returns), real votes with the up-to-date log check,
 * CheckQuorum on the leader, and the leader's heartbeat clock. */
#include "raft_int.h"

static bool promotable(const struct raft *r)
{
    return !r->learner && raft__is_voter(r, r->id);
}

void raft__tick_election(struct raft *r)
{
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks) {
        r->boot_lease = false;
    }
    if (promotable(r) && r->election_elapsed >= r->randomized_timeout) {
        r->election_elapsed = 0;
        raft__campaign(r, r->cfg.pre_vote, false);
    }
}

static uint32_t count_active(struct raft *r)
{
    uint32_t active = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        if (p->learner) {
            continue;
        }
        if (p->id == r->id || p->recent_active) {
            active++;
        }
        p->recent_active = false;
    }
    return active;
}

void raft__tick_leader(struct raft *r)
{
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum && count_active(r) < raft__quorum(r)) {
            raft__trace(r, RAFT_TRACE_STEP_DOWN_QUORUM, r->term, 0);
            raft__become_follower(r, r->term, 0);
            return;
        }
        /* A transfer that did not finish in time is abandoned. */
        r->transferee = 0;
    }
    if (r->role == RAFT_LEADER && r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        raft__broadcast_heartbeat(r);
    }
}

/* Counts granted and refused votes among voters. */
static void tally(const struct raft *r, uint32_t *granted, uint32_t *refused)
{
    *granted = 0;
    *refused = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct raft_progress *p = &r->prs[i];
        if (p->learner || !p->vote_responded) {
            continue;
        }
        if (p->vote_granted) {
            (*granted)++;
        } else {
            (*refused)++;
        }
    }
}

static void record_vote(struct raft *r, uint64_t id, bool granted)
{
    struct raft_progress *p = raft__progress(r, id);
    if (p != NULL && !p->vote_responded) {
        p->vote_responded = true;
        p->vote_granted = granted;
    }
}

static void win(struct raft *r, bool pre_vote)
{
    if (pre_vote) {
        raft__campaign(r, false, false);
    } else {
        raft__become_leader(r);
    }
}

void raft__campaign(struct raft *r, bool pre_vote, bool transfer)
{
    uint64_t term;
    if (pre_vote) {
        raft__become_follower(r, r->term, 0);
        r->role = RAFT_PRE_CANDIDATE;
        term = r->term + 1;
        raft__trace(r, RAFT_TRACE_BECOME_PRE_CANDIDATE, r->term, 0);
    } else {
        raft__become_follower(r, r->term + 1, 0);
        r->role = RAFT_CANDIDATE;
        r->vote = r->id;
        term = r->term;
        raft__trace(r, RAFT_TRACE_BECOME_CANDIDATE, r->term, 0);
    }
    record_vote(r, r->id, true);
    uint32_t granted, refused;
    tally(r, &granted, &refused);
    if (granted >= raft__quorum(r)) {
        win(r, pre_vote);
        return;
    }
    uint64_t last = raft__log_last(&r->log);
    uint64_t last_term = raft__log_last_term(&r->log);
    /* Learners are asked too (etcd does): they are never counted, but a
     * learner that was just promoted without knowing it yet can vote. */
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        if (p->id == r->id || p->learner) {
            continue;
        }
        struct raft_msg *m = raft__msg_new(r, pre_vote ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE, p->id);
        if (m == NULL) {
            return; /* the election times out and is retried */
        }
        m->term = term;
        m->index = last;
        m->log_term = last_term;
        m->transfer = transfer;
    }
}

int raft__step_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    /* We may vote for a candidate we already voted for (a repeat), for
     * anyone when we have neither voted nor seen a leader this term, and
     * PreVote for any future term. */
    bool can_vote =
        r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    bool grant = can_vote && raft__log_up_to_date(&r->log, m->index, m->log_term);
    struct raft_msg *resp =
        raft__msg_new(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from);
    if (resp == NULL) {
        return KV_ENOMEM;
    }
    if (grant) {
        /* A PreVote reply carries the term asked about, so the candidate
         * does not mistake it for a stale message. */
        resp->term = m->term;
        if (!pre) {
            r->vote = m->from;
            r->election_elapsed = 0;
        }
    } else {
        resp->reject = true;
    }
    return KV_OK;
}

void raft__step_vote_resp(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE_RESP;
    if ((pre && r->role != RAFT_PRE_CANDIDATE) || (!pre && r->role != RAFT_CANDIDATE)) {
        return;
    }
    record_vote(r, m->from, !m->reject);
    uint32_t granted, refused;
    tally(r, &granted, &refused);
    if (granted >= raft__quorum(r)) {
        win(r, pre);
    } else if (refused >= raft__quorum(r)) {
        raft__become_follower(r, r->term, 0);
    }
}
