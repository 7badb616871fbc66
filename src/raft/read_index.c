/* read_index.c -- linearizable reads without log writes (ReadIndex, Raft
 * dissertation 6.4). The leader records its commit index for the read,
 * then proves it is still the leader with a heartbeat round: each read
 * gets the number of a round (read_seq), heartbeats carry the newest
 * round, followers echo it, and once a quorum has echoed a round >= the
 * read's, every read of that round or earlier is safe at its index. A
 * follower asks the leader for the index (READ_INDEX) and serves the read
 * locally once it has applied that far. */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"

int raft__read_ready_push(struct raft *r, uint64_t index, const uint8_t *ctx, size_t size)
{
    if (r->n_reads == r->cap_reads) {
        size_t cap = r->cap_reads ? r->cap_reads * 2 : 4;
        struct raft_read_state *p = kv_realloc(r->reads, cap * sizeof *p);
        if (p == NULL) {
            return KV_ENOMEM;
        }
        r->reads = p;
        r->cap_reads = cap;
    }
    struct raft_read_state *rs = &r->reads[r->n_reads];
    rs->index = index;
    rs->context_size = size;
    rs->context = NULL;
    if (size > 0) {
        rs->context = kv_memdup(ctx, size);
        if (rs->context == NULL) {
            return KV_ENOMEM;
        }
    }
    r->n_reads++;
    return KV_OK;
}

/* Delivers a confirmed read to whoever asked. */
static int deliver(struct raft *r, uint64_t from, uint64_t index, const uint8_t *ctx, size_t size)
{
    if (from == r->id) {
        return raft__read_ready_push(r, index, ctx, size);
    }
    struct raft_msg *m = raft__msg_new(r, RAFT_MSG_READ_INDEX_RESP, from);
    if (m == NULL) {
        return KV_ENOMEM;
    }
    m->index = index;
    if (size > 0) {
        m->context = kv_memdup(ctx, size);
        if (m->context == NULL) {
            r->n_msgs--;
            return KV_ENOMEM;
        }
        m->context_size = size;
    }
    return KV_OK;
}

/* A lease read is safe while followers that acknowledged a round still
 * refuse to vote: they wait election_ticks from receipt, so the leader may
 * serve locally for half of that from the round's send time, which allows
 * clocks that run up to twice as fast as the leader's (the host's promise
 * when it sets lease_read). CheckQuorum makes followers keep the lease. */
static bool lease_valid(const struct raft *r)
{
    return r->cfg.lease_read && r->cfg.check_quorum && !r->lease_off && r->transferee == 0 &&
           r->ticks < r->lease_until;
}

static void lease_extend(struct raft *r, uint64_t acked)
{
    uint32_t slot = (uint32_t)(acked % RAFT_LEASE_ROUNDS);
    if (!r->cfg.lease_read || r->round_seq[slot] != acked) {
        return;
    }
    uint64_t until = r->round_tick[slot] + r->cfg.election_ticks / 2;
    if (until > r->lease_until) {
        r->lease_until = until;
    }
}

/* Doubles the ring (up to read_queue_max), unrolling it to start at 0. */
static int grow_queue(struct raft *r)
{
    uint32_t cap = r->read_q_cap ? r->read_q_cap * 2 : 4;
    if (cap > r->cfg.read_queue_max) {
        cap = r->cfg.read_queue_max;
    }
    struct raft_read_req *q = kv_calloc(cap, sizeof *q);
    if (q == NULL) {
        return KV_ENOMEM;
    }
    for (uint32_t i = 0; i < r->read_q_count; i++) {
        q[i] = r->read_q[(r->read_q_start + i) % r->read_q_cap];
    }
    kv_free(r->read_q);
    r->read_q = q;
    r->read_q_cap = cap;
    r->read_q_start = 0;
    return KV_OK;
}

int raft__read_request(struct raft *r, uint64_t from, const uint8_t *ctx, size_t size)
{
    if (size > RAFT_CONTEXT_BYTES_MAX) {
        return KV_EINVAL;
    }
    /* Until an entry of this term commits, our commit index may lag the
     * true one (entries of earlier leaders are not yet known committed). */
    if (raft__log_term_or0(&r->log, r->log.committed) != r->term) {
        return KV_EBUSY;
    }
    if (raft__quorum(r) == 1 || lease_valid(r)) {
        return deliver(r, from, r->log.committed, ctx, size);
    }
    if (r->read_q_count == r->cfg.read_queue_max) {
        return KV_EBUSY;
    }
    if (r->read_q_count == r->read_q_cap && grow_queue(r) != KV_OK) {
        return KV_ENOMEM;
    }
    uint32_t slot = (r->read_q_start + r->read_q_count) % r->read_q_cap;
    struct raft_read_req *q = &r->read_q[slot];
    q->context = NULL;
    if (size > 0) {
        q->context = kv_memdup(ctx, size);
        if (q->context == NULL) {
            return KV_ENOMEM;
        }
    }
    q->context_size = size;
    q->seq = r->read_seq + 1; /* the round broadcast just below */
    q->index = r->log.committed;
    q->from = from;
    r->read_q_count++;
    raft__broadcast_heartbeat(r);
    return KV_OK;
}

/* The highest read round a quorum of voters has acknowledged. */
static uint64_t quorum_acked(const struct raft *r)
{
    uint64_t v[RAFT_MEMBERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct raft_progress *p = &r->prs[i];
        if (!p->learner) {
            v[n++] = p->id == r->id ? r->read_seq : p->read_acked;
        }
    }
    for (uint32_t i = 1; i < n; i++) {
        uint64_t x = v[i];
        uint32_t j = i;
        while (j > 0 && v[j - 1] < x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    return v[raft__quorum(r) - 1];
}

void raft__read_confirm(struct raft *r)
{
    uint64_t acked = quorum_acked(r);
    lease_extend(r, acked);
    while (r->read_q_count > 0) {
        struct raft_read_req *q = &r->read_q[r->read_q_start];
        if (q->seq > acked) {
            break;
        }
        /* On ENOMEM the read is dropped; the host times it out. */
        (void)deliver(r, q->from, q->index, q->context, q->context_size);
        kv_free(q->context);
        q->context = NULL;
        r->read_q_start = (r->read_q_start + 1) % r->read_q_cap;
        r->read_q_count--;
    }
}

void raft__read_clear(struct raft *r)
{
    while (r->read_q_count > 0) {
        kv_free(r->read_q[r->read_q_start].context);
        r->read_q[r->read_q_start].context = NULL;
        r->read_q_start = (r->read_q_start + 1) % r->read_q_cap;
        r->read_q_count--;
    }
    r->read_q_start = 0;
}

int raft_read_index(struct raft *r, const void *context, size_t size)
{
    KV_ASSERT(!r->in_ready);
    if (size > RAFT_CONTEXT_BYTES_MAX) {
        return KV_EINVAL;
    }
    if (r->role == RAFT_LEADER) {
        return raft__read_request(r, r->id, context, size);
    }
    if (r->leader == 0) {
        return KV_ENOTLEADER;
    }
    struct raft_msg *m = raft__msg_new(r, RAFT_MSG_READ_INDEX, r->leader);
    if (m == NULL) {
        return KV_ENOMEM;
    }
    if (size > 0) {
        m->context = kv_memdup(context, size);
        if (m->context == NULL) {
            r->n_msgs--;
            return KV_ENOMEM;
        }
        m->context_size = size;
    }
    return KV_OK;
}
