/* raft.c -- the group's lifecycle, role changes, the outgoing message
 * queue, and raft_step's term checks and dispatch to the per-concern
 * handlers (election.c, replication.c, read_index.c, membership.c). */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"
#include "rng.h"

void raft_config_defaults(struct raft_config *cfg)
{
    if (cfg->election_ticks == 0) {
        cfg->election_ticks = RAFT_ELECTION_TICKS_DEFAULT;
    }
    if (cfg->heartbeat_ticks == 0) {
        cfg->heartbeat_ticks = RAFT_HEARTBEAT_TICKS_DEFAULT;
    }
    if (cfg->msg_bytes_max == 0) {
        cfg->msg_bytes_max = RAFT_MSG_BYTES_MAX_DEFAULT;
    }
    if (cfg->inflight_max == 0) {
        cfg->inflight_max = RAFT_INFLIGHT_MAX_DEFAULT;
    }
    if (cfg->uncommitted_bytes_max == 0) {
        cfg->uncommitted_bytes_max = RAFT_UNCOMMITTED_BYTES_MAX_DEFAULT;
    }
    if (cfg->read_queue_max == 0) {
        cfg->read_queue_max = RAFT_READ_QUEUE_MAX_DEFAULT;
    }
    if (cfg->apply_bytes_max == 0) {
        cfg->apply_bytes_max = RAFT_APPLY_BYTES_MAX_DEFAULT;
    }
}

void raft__trace(struct raft *r, uint32_t type, uint64_t a, uint64_t b)
{
    if (r->cfg.trace_cb != NULL) {
        struct raft_trace ev = {.id = r->id, .type = type, .a = a, .b = b};
        r->cfg.trace_cb(r->cfg.trace_data, &ev);
    }
}

static bool config_valid(const struct raft_config *cfg)
{
    return cfg->id != 0 && cfg->store != NULL && cfg->rng != NULL && cfg->election_ticks >= 3 &&
           cfg->heartbeat_ticks >= 1 && cfg->heartbeat_ticks < cfg->election_ticks &&
           cfg->inflight_max >= 1 && cfg->read_queue_max >= 1;
}

int raft_new(const struct raft_config *cfg_in, struct raft **out)
{
    struct raft_config cfg = *cfg_in;
    raft_config_defaults(&cfg);
    if (!config_valid(&cfg)) {
        return KV_EINVAL;
    }
    struct raft_hard_state hs = {0};
    struct raft_conf_state cs = {0};
    int rc = cfg.store->initial_state(cfg.store->data, &hs, &cs);
    if (rc != KV_OK) {
        return rc;
    }
    if (cs.n_voters == 0 && cs.n_learners == 0) {
        cs = cfg.initial_conf;
    }
    struct raft *r = kv_calloc(1, sizeof *r);
    if (r == NULL) {
        return KV_ENOMEM;
    }
    r->cfg = cfg;
    r->id = cfg.id;
    rc = raft__log_init(&r->log, cfg.store, hs.commit, cfg.applied);
    if (rc != KV_OK) {
        goto err_log;
    }
    if (hs.commit > raft__log_last(&r->log)) {
        rc = KV_ECORRUPT;
        goto err_conf;
    }
    rc = raft__conf_set(r, &cs);
    if (rc != KV_OK) {
        goto err_conf;
    }
    r->term = hs.term;
    r->vote = hs.vote;
    r->prev_hs = hs;
    raft__become_follower(r, r->term, 0);
    r->boot_lease = cfg.lease_read;
    *out = r;
    return KV_OK;

err_conf:
    raft__log_close(&r->log);
err_log:
    for (uint32_t i = 0; i < RAFT_MEMBERS_MAX; i++) {
        kv_free(r->prs[i].inflight);
    }
    kv_free(r->read_q);
    kv_free(r);
    return rc;
}

void raft__msg_free_owned(struct raft_msg *m)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        kv_free(m->entries[i].data);
    }
    kv_free(m->entries);
    kv_free(m->context);
    m->entries = NULL;
    m->n_entries = 0;
    m->context = NULL;
    m->context_size = 0;
}

static void free_msgs(struct raft_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        raft__msg_free_owned(&msgs[i]);
    }
}

static void free_reads(struct raft_read_state *reads, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        kv_free(reads[i].context);
    }
}

void raft_free(struct raft *r)
{
    if (r == NULL) {
        return;
    }
    if (r->in_ready) {
        /* Free what the batch owns without marking anything stable. */
        for (size_t i = 0; i < r->n_ready_committed; i++) {
            kv_free(r->ready_committed[i].data);
        }
        kv_free(r->ready_committed);
        free_msgs(r->ready_msgs, r->n_ready_msgs);
        kv_free(r->ready_msgs);
        free_reads(r->ready_reads, r->n_ready_reads);
        kv_free(r->ready_reads);
    }
    free_msgs(r->msgs, r->n_msgs);
    kv_free(r->msgs);
    free_reads(r->reads, r->n_reads);
    kv_free(r->reads);
    raft__read_clear(r);
    kv_free(r->read_q);
    for (uint32_t i = 0; i < RAFT_MEMBERS_MAX; i++) {
        kv_free(r->prs[i].inflight);
    }
    raft__log_close(&r->log);
    kv_free(r);
}

struct raft_msg *raft__msg_new(struct raft *r, uint32_t type, uint64_t to)
{
    if (r->n_msgs == r->cap_msgs) {
        size_t cap = r->cap_msgs ? r->cap_msgs * 2 : 4;
        struct raft_msg *p = kv_realloc(r->msgs, cap * sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        r->msgs = p;
        r->cap_msgs = cap;
    }
    struct raft_msg *m = &r->msgs[r->n_msgs++];
    memset(m, 0, sizeof *m);
    m->type = type;
    m->group_id = r->cfg.group_id;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

struct raft_progress *raft__progress(struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == id) {
            return &r->prs[i];
        }
    }
    return NULL;
}

bool raft__is_voter(const struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->conf.n_voters; i++) {
        if (r->conf.voters[i] == id) {
            return true;
        }
    }
    return false;
}

uint32_t raft__quorum(const struct raft *r)
{
    return r->conf.n_voters / 2 + 1;
}

void raft__reset_timeout(struct raft *r)
{
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->randomized_timeout =
        r->cfg.election_ticks + (uint32_t)kv_rng_below(r->cfg.rng, r->cfg.election_ticks);
}

static void reset_term(struct raft *r, uint64_t term)
{
    if (r->term != term) {
        r->term = term;
        r->vote = 0;
    }
    r->leader = 0;
    raft__reset_timeout(r);
    r->transferee = 0;
    r->uncommitted_bytes = 0;
    r->lease_until = 0;
    r->lease_off = false;
    raft__read_clear(r);
    uint64_t last = raft__log_last(&r->log);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        raft__progress_reset(p, last + 1, RAFT_PROGRESS_PROBE);
        kv_free(p->inflight);
        p->inflight = NULL;
        p->vote_granted = false;
        p->vote_responded = false;
        if (p->id == r->id) {
            p->match = last;
        }
    }
}

void raft__become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    reset_term(r, term);
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    raft__trace(r, RAFT_TRACE_BECOME_FOLLOWER, term, leader);
}

void raft__become_leader(struct raft *r)
{
    KV_ASSERT(r->role == RAFT_CANDIDATE);
    reset_term(r, r->term);
    r->role = RAFT_LEADER;
    r->leader = r->id;
    uint64_t last = raft__log_last(&r->log);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct raft_progress *p = &r->prs[i];
        /* Our own entries count as replicated once persisted (advance). */
        if (p->id == r->id) {
            p->match = r->log.offset - 1 < last ? r->log.offset - 1 : last;
            p->state = RAFT_PROGRESS_REPLICATE;
        }
        p->recent_active = true;
    }
    /* No conf change may be proposed until everything already in the log
     * is applied (etcd's one-pending-change rule across leader changes). */
    r->pending_conf_index = last;
    raft__trace(r, RAFT_TRACE_BECOME_LEADER, r->term, 0);
    /* The no-op of the term: commits every earlier entry (Figure 8). */
    struct raft_entry noop = {.term = r->term, .index = last + 1, .type = RAFT_ENTRY_NORMAL};
    if (raft__append_local(r, &noop, 1) != KV_OK) {
        /* Out of memory: step down rather than lead without the no-op. */
        raft__become_follower(r, r->term, 0);
        return;
    }
    raft__broadcast_append(r);
}

void raft_tick(struct raft *r)
{
    KV_ASSERT(!r->in_ready);
    r->ticks++;
    if (r->role == RAFT_LEADER) {
        raft__tick_leader(r);
    } else {
        raft__tick_election(r);
    }
}

void raft_campaign(struct raft *r)
{
    KV_ASSERT(!r->in_ready);
    if (r->role != RAFT_LEADER && !r->learner && raft__is_voter(r, r->id)) {
        raft__campaign(r, r->cfg.pre_vote, false);
    }
}

/* Whether we still promise a leader not to elect anyone else. With lease
 * reads a freshly started replica also waits one election timeout, since
 * it cannot know what it promised before the restart. */
static bool in_lease(const struct raft *r)
{
    return r->cfg.check_quorum && (r->leader != 0 || r->boot_lease) &&
           r->election_elapsed < r->cfg.election_ticks;
}

/* Handles a message from a higher term. Returns true to continue with
 * the message, false to drop it. */
static bool step_higher_term(struct raft *r, const struct raft_msg *m)
{
    bool vote = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
    if (vote && !m->transfer && in_lease(r)) {
        /* A live leader exists: a disruptive candidate (rejoining after a
         * partition) must not depose it. */
        return false;
    }
    if (m->type == RAFT_MSG_PREVOTE) {
        return true; /* no term change for a PreVote */
    }
    if (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject) {
        return true; /* the future term is ours to take if we win */
    }
    uint64_t leader = 0;
    if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
        m->type == RAFT_MSG_SNAPSHOT) {
        leader = m->from;
    }
    raft__become_follower(r, m->term, leader);
    return true;
}

static void step_lower_term(struct raft *r, const struct raft_msg *m)
{
    if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
        (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
        /* A stale leader cut off by a partition: tell it our term so it
         * steps down; with PreVote our term would never reach it else. */
        struct raft_msg *resp = raft__msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
        (void)resp;
    } else if (m->type == RAFT_MSG_PREVOTE) {
        struct raft_msg *resp = raft__msg_new(r, RAFT_MSG_PREVOTE_RESP, m->from);
        if (resp != NULL) {
            resp->reject = true;
        }
    }
}

static int step_leader(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND_RESP:
        raft__step_append_resp(r, m);
        return KV_OK;
    case RAFT_MSG_HEARTBEAT_RESP:
        raft__step_heartbeat_resp(r, m);
        return KV_OK;
    case RAFT_MSG_PROPOSE:
        if (r->transferee != 0) {
            return KV_OK; /* dropped; the proposer times out and retries */
        }
        return raft__leader_propose(r, m->entries, m->n_entries);
    case RAFT_MSG_READ_INDEX:
        if (raft__read_request(r, m->from, m->context, m->context_size) != KV_OK) {
            struct raft_msg *resp = raft__msg_new(r, RAFT_MSG_READ_INDEX_RESP, m->from);
            if (resp != NULL) {
                resp->reject = true;
            }
        }
        return KV_OK;
    case RAFT_MSG_TRANSFER_LEADER: {
        /* A request from a non-voter is the sender's mistake, not a
         * malformed message: ignore it. */
        int rc = raft_transfer_leader(r, m->from);
        return rc == KV_ENOMEM ? rc : KV_OK;
    }
    default:
        return KV_OK;
    }
}

static int step_follower(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
        r->election_elapsed = 0;
        r->leader = m->from;
        return raft__step_append(r, m);
    case RAFT_MSG_HEARTBEAT:
        r->election_elapsed = 0;
        r->leader = m->from;
        raft__step_heartbeat(r, m);
        return KV_OK;
    case RAFT_MSG_SNAPSHOT:
        r->election_elapsed = 0;
        r->leader = m->from;
        raft__step_snapshot(r, m);
        return KV_OK;
    case RAFT_MSG_TIMEOUT_NOW:
        if (!r->learner && raft__is_voter(r, r->id)) {
            raft__campaign(r, false, true);
        }
        return KV_OK;
    case RAFT_MSG_READ_INDEX_RESP:
        if (!m->reject) {
            return raft__read_ready_push(r, m->index, m->context, m->context_size);
        }
        return KV_OK;
    default:
        return KV_OK;
    }
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    KV_ASSERT(!r->in_ready);
    if (m->group_id != r->cfg.group_id || m->to != r->id || m->from == 0 || m->from == r->id) {
        return KV_EINVAL;
    }
    if (m->term > r->term) {
        if (!step_higher_term(r, m)) {
            return KV_OK;
        }
    } else if (m->term < r->term) {
        step_lower_term(r, m);
        return KV_OK;
    }
    switch (m->type) {
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        return raft__step_vote(r, m);
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        raft__step_vote_resp(r, m);
        return KV_OK;
    default:
        break;
    }
    if (r->role == RAFT_LEADER) {
        return step_leader(r, m);
    }
    if ((r->role == RAFT_CANDIDATE || r->role == RAFT_PRE_CANDIDATE) &&
        (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
         m->type == RAFT_MSG_SNAPSHOT)) {
        /* A leader of our term exists: we lost. */
        raft__become_follower(r, r->term, m->from);
    }
    return step_follower(r, m);
}

int raft_propose(struct raft *r, const void *data, size_t size, uint64_t *leader_hint)
{
    KV_ASSERT(!r->in_ready);
    struct raft_entry e = {.type = RAFT_ENTRY_NORMAL, .data = (uint8_t *)data, .size = size};
    if (leader_hint != NULL) {
        *leader_hint = r->leader;
    }
    if (r->role == RAFT_LEADER) {
        if (r->transferee != 0) {
            return KV_EBUSY;
        }
        return raft__leader_propose(r, &e, 1);
    }
    if (!r->cfg.forward_proposals || r->leader == 0) {
        return KV_ENOTLEADER;
    }
    struct raft_msg *m = raft__msg_new(r, RAFT_MSG_PROPOSE, r->leader);
    if (m == NULL) {
        return KV_ENOMEM;
    }
    m->entries = kv_calloc(1, sizeof *m->entries);
    if (m->entries == NULL) {
        r->n_msgs--;
        return KV_ENOMEM;
    }
    m->n_entries = 1;
    m->entries[0] = e;
    m->entries[0].data = NULL;
    if (size > 0) {
        m->entries[0].data = kv_memdup(data, size);
        if (m->entries[0].data == NULL) {
            kv_free(m->entries);
            r->n_msgs--;
            return KV_ENOMEM;
        }
    }
    return KV_OK;
}

int raft_transfer_leader(struct raft *r, uint64_t target)
{
    if (!raft__is_voter(r, target)) {
        return KV_EINVAL;
    }
    if (r->role != RAFT_LEADER) {
        if (r->leader == 0) {
            return KV_ENOTLEADER;
        }
        /* Forwarded as if the target asked (etcd does the same). */
        if (target != r->id) {
            return KV_ENOTLEADER;
        }
        return raft__msg_new(r, RAFT_MSG_TRANSFER_LEADER, r->leader) ? KV_OK : KV_ENOMEM;
    }
    if (target == r->id || target == r->transferee) {
        return KV_OK;
    }
    struct raft_progress *p = raft__progress(r, target);
    KV_ASSERT(p != NULL);
    r->transferee = target;
    /* The target campaigns past the followers' lease: no lease reads for
     * the rest of this term. */
    r->lease_off = true;
    /* The transfer must finish within one election timeout. */
    r->election_elapsed = 0;
    if (p->match == raft__log_last(&r->log)) {
        return raft__msg_new(r, RAFT_MSG_TIMEOUT_NOW, target) ? KV_OK : KV_ENOMEM;
    }
    raft__send_append(r, p, false);
    return KV_OK;
}

void raft_status(const struct raft *r, struct raft_status *st)
{
    st->id = r->id;
    st->role = r->role;
    st->term = r->term;
    st->vote = r->vote;
    st->leader = r->leader;
    st->commit = r->log.committed;
    st->applied = r->log.applied;
    st->last_index = raft__log_last(&r->log);
    st->first_index = raft__log_first(&r->log);
    st->learner = r->learner;
}

int raft_term_at(const struct raft *r, uint64_t index, uint64_t *term)
{
    return raft__log_term(&r->log, index, term);
}

void raft_conf(const struct raft *r, struct raft_conf_state *cs)
{
    *cs = r->conf;
}

void raft_report_unreachable(struct raft *r, uint64_t to)
{
    struct raft_progress *p = raft__progress(r, to);
    if (r->role == RAFT_LEADER && p != NULL && p->state == RAFT_PROGRESS_REPLICATE) {
        raft__progress_become_probe(p);
    }
}

void raft_report_snapshot(struct raft *r, uint64_t to, bool ok)
{
    struct raft_progress *p = raft__progress(r, to);
    if (r->role != RAFT_LEADER || p == NULL || p->state != RAFT_PROGRESS_SNAPSHOT) {
        return;
    }
    if (!ok) {
        p->pending_snapshot = 0;
    }
    raft__progress_become_probe(p);
    /* Wait for the follower's response (or the next heartbeat) to probe. */
    p->probe_sent = true;
}

void raft_compacted(struct raft *r, uint64_t index)
{
    (void)r;
    (void)index;
}
