/* test_raft.c -- unit tests for src/raft: directed scenarios for each
 * feature (election, PreVote, CheckQuorum, replication and the Figure 8
 * commit rule, fast backtracking, ReadIndex on leader and follower,
 * leadership transfer, forwarding, learners, membership change, snapshot
 * catch-up), the wire codec, the memory log store, and allocation-failure
 * loops. The random schedules live in tests/sim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "alloc.h"
#include "raft.h"
#include "raft_memlog.h"
#include "rng.h"

#define CL_NODES_MAX   5
#define CL_MSGS_MAX    4096
#define CL_APPLIED_MAX 512

/* A tiny cluster harness: nodes 1..n, a FIFO network with a cut matrix,
 * and a record of what each node applied. */
struct cluster {
    uint32_t n;
    struct raft *r[CL_NODES_MAX];
    struct raft_memlog *ml[CL_NODES_MAX];
    struct kv_rng rng[CL_NODES_MAX];
    struct raft_config cfg[CL_NODES_MAX];
    bool cut[CL_NODES_MAX][CL_NODES_MAX];
    bool down[CL_NODES_MAX];
    struct raft_msg net[CL_MSGS_MAX];
    uint32_t n_net;
    uint64_t applied[CL_NODES_MAX][CL_APPLIED_MAX]; /* term of each applied index */
    uint64_t n_applied[CL_NODES_MAX];
    uint64_t read_index[CL_NODES_MAX]; /* last read state index, per node */
    uint32_t n_reads[CL_NODES_MAX];
    uint64_t last_snapshot[CL_NODES_MAX];
};

static void cl_config(struct cluster *c, uint32_t i, const struct raft_conf_state *conf)
{
    struct raft_config *cfg = &c->cfg[i];
    memset(cfg, 0, sizeof *cfg);
    cfg->id = i + 1;
    cfg->group_id = 1;
    cfg->store = raft_memlog_store(c->ml[i]);
    cfg->rng = &c->rng[i];
    cfg->initial_conf = *conf;
    cfg->election_ticks = 10;
    cfg->heartbeat_ticks = 1;
}

static void cl_init(struct cluster *c, uint32_t n, uint32_t voters)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    struct raft_conf_state conf = {0};
    for (uint32_t i = 0; i < n; i++) {
        if (i < voters) {
            conf.voters[conf.n_voters++] = i + 1;
        } else {
            conf.learners[conf.n_learners++] = i + 1;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(raft_memlog_new(&c->ml[i]), KV_OK);
        kv_rng_seed(&c->rng[i], 100 + i);
        cl_config(c, i, &conf);
    }
}

static void cl_start(struct cluster *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        assert_int_equal(raft_new(&c->cfg[i], &c->r[i]), KV_OK);
    }
}

static void cl_close(struct cluster *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        raft_free(c->r[i]);
        raft_memlog_free(c->ml[i]);
    }
    for (uint32_t k = 0; k < c->n_net; k++) {
        raft_msg_clear(&c->net[k]);
    }
}

static void cl_ready(struct cluster *c, uint32_t i)
{
    for (int round = 0; round < 16 && !c->down[i] && raft_has_ready(c->r[i]); round++) {
        struct raft_ready rd;
        assert_int_equal(raft_ready(c->r[i], &rd), KV_OK);
        if (rd.has_snapshot) {
            c->n_applied[i] = rd.snapshot.index;
            c->last_snapshot[i] = rd.snapshot.index;
        }
        assert_int_equal(raft_memlog_persist(c->ml[i], &rd), KV_OK);
        for (size_t k = 0; k < rd.n_msgs; k++) {
            uint32_t to = (uint32_t)rd.msgs[k].to - 1;
            if (c->cut[i][to] || c->n_net == CL_MSGS_MAX) {
                continue;
            }
            assert_int_equal(raft_msg_copy(&c->net[c->n_net++], &rd.msgs[k]), KV_OK);
        }
        for (size_t k = 0; k < rd.n_committed; k++) {
            assert_int_equal(rd.committed[k].index, c->n_applied[i] + 1);
            assert_true(rd.committed[k].index < CL_APPLIED_MAX);
            c->applied[i][rd.committed[k].index] = rd.committed[k].term;
            c->n_applied[i] = rd.committed[k].index;
        }
        for (size_t k = 0; k < rd.n_reads; k++) {
            c->read_index[i] = rd.reads[k].index;
            c->n_reads[i]++;
        }
        raft_advance(c->r[i], &rd);
    }
}

static void cl_ready_all(struct cluster *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        if (!c->down[i]) {
            cl_ready(c, i);
        }
    }
}

/* Delivers the first queued message; false when the network is empty. */
static bool cl_deliver_one(struct cluster *c)
{
    if (c->n_net == 0) {
        return false;
    }
    struct raft_msg m = c->net[0];
    memmove(c->net, c->net + 1, (c->n_net - 1) * sizeof c->net[0]);
    c->n_net--;
    uint32_t to = (uint32_t)m.to - 1;
    uint32_t from = (uint32_t)m.from - 1;
    if (!c->down[to] && !c->cut[from][to]) {
        assert_int_equal(raft_step(c->r[to], &m), KV_OK);
        if (m.type == RAFT_MSG_SNAPSHOT && !c->down[from]) {
            cl_ready(c, to);
            raft_report_snapshot(c->r[from], m.to, true);
        }
    }
    raft_msg_clear(&m);
    cl_ready_all(c);
    return true;
}

static void cl_settle(struct cluster *c)
{
    cl_ready_all(c);
    for (int k = 0; k < 100000 && cl_deliver_one(c); k++) {
    }
}

static void cl_tick(struct cluster *c, uint32_t ticks)
{
    for (uint32_t t = 0; t < ticks; t++) {
        for (uint32_t i = 0; i < c->n; i++) {
            if (!c->down[i]) {
                raft_tick(c->r[i]);
            }
        }
        cl_settle(c);
    }
}

static struct raft_status cl_status(struct cluster *c, uint32_t i)
{
    struct raft_status st;
    raft_status(c->r[i], &st);
    return st;
}

/* Index of the single leader among running nodes; fails on two. */
static int cl_leader(struct cluster *c)
{
    int leader = -1;
    uint64_t term = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->down[i]) {
            continue;
        }
        struct raft_status st = cl_status(c, i);
        if (st.role == RAFT_LEADER) {
            if (leader >= 0 && st.term == term) {
                fail_msg("two leaders in term %llu", (unsigned long long)term);
            }
            if (st.term >= term) {
                leader = (int)i;
                term = st.term;
            }
        }
    }
    return leader;
}

static void cl_isolate(struct cluster *c, uint32_t i, bool cut)
{
    for (uint32_t j = 0; j < c->n; j++) {
        if (j != i) {
            c->cut[i][j] = cut;
            c->cut[j][i] = cut;
        }
    }
}

static void propose_n(struct cluster *c, int leader, int n)
{
    for (int k = 0; k < n; k++) {
        uint8_t data[16];
        memset(data, k, sizeof data);
        uint64_t hint;
        assert_int_equal(raft_propose(c->r[leader], data, sizeof data, &hint), KV_OK);
    }
}

/* ---- tests ---- */

static void test_single_node_commits(void **state)
{
    struct cluster c;
    cl_init(&c, 1, 1);
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    assert_int_equal(cl_status(&c, 0).role, RAFT_LEADER);
    propose_n(&c, 0, 3);
    cl_settle(&c);
    /* No-op plus three entries, all of term 1, applied in order. */
    assert_int_equal(c.n_applied[0], 4);
    assert_int_equal(c.applied[0][4], 1);
    assert_int_equal(cl_status(&c, 0).commit, 4);
    cl_close(&c);
}

static void test_election_and_replication(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    cl_start(&c);
    cl_tick(&c, 40);
    int leader = cl_leader(&c);
    assert_true(leader >= 0);
    uint64_t term = cl_status(&c, (uint32_t)leader).term;
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(cl_status(&c, i).leader, (uint64_t)leader + 1);
        assert_int_equal(cl_status(&c, i).term, term);
    }
    propose_n(&c, leader, 20);
    cl_settle(&c);
    cl_tick(&c, 2); /* heartbeats carry the final commit index */
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(c.n_applied[i], 21);
        assert_memory_equal(c.applied[i], c.applied[leader], sizeof c.applied[i]);
    }
    cl_close(&c);
}

static void test_batching_and_pipelining_limits(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    for (uint32_t i = 0; i < 3; i++) {
        c.cfg[i].msg_bytes_max = 40; /* two 16-byte entries per APPEND */
        c.cfg[i].inflight_max = 2;
    }
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    assert_int_equal(cl_leader(&c), 0);
    propose_n(&c, 0, 30);
    cl_ready(&c, 0);
    /* Check every queued APPEND against the limits before delivering. */
    uint32_t appends_to_2 = 0;
    for (uint32_t k = 0; k < c.n_net; k++) {
        const struct raft_msg *m = &c.net[k];
        if (m->type == RAFT_MSG_APPEND) {
            size_t bytes = 0;
            for (size_t e = 0; e < m->n_entries; e++) {
                bytes += m->entries[e].size;
            }
            assert_true(bytes <= 40 || m->n_entries == 1);
            appends_to_2 += m->to == 2;
        }
    }
    assert_true(appends_to_2 <= 2);
    cl_settle(&c);
    cl_tick(&c, 2);
    assert_int_equal(c.n_applied[1], 31);
    cl_close(&c);
}

/* Figure 8 of the Raft paper: an entry from an earlier term stored on a
 * majority is not committed until an entry of the current term is. */
static void test_no_commit_of_previous_term_by_counting(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    /* Node 1 holds (1,t1) (2,t2) with a big entry 2; nodes 2, 3 hold (1,t1). */
    uint8_t big[64] = {0};
    struct raft_entry e1 = {.term = 1, .index = 1};
    struct raft_entry e2 = {.term = 2, .index = 2, .data = big, .size = sizeof big};
    struct raft_entry both[2] = {e1, e2};
    for (uint32_t i = 0; i < 3; i++) {
        struct raft_ready rd = {0};
        rd.entries = i == 0 ? both : &e1;
        rd.n_entries = i == 0 ? 2 : 1;
        rd.has_hard_state = true;
        rd.hard_state = (struct raft_hard_state){.term = 2, .vote = 0, .commit = 1};
        assert_int_equal(raft_memlog_persist(c.ml[i], &rd), KV_OK);
        c.cfg[i].msg_bytes_max = 8; /* one entry per APPEND */
        c.cfg[i].applied = 1;
        c.n_applied[i] = 1;
    }
    cl_start(&c);
    raft_campaign(c.r[0]);
    /* Deliver one message at a time and watch the commit index: while
     * the leader's no-op (index 3) is not on a majority, it must not
     * commit index 2 even once node 2 acknowledged it. */
    cl_ready_all(&c);
    bool saw_ack_of_2_only = false;
    bool acked2[4] = {false};
    for (int k = 0; k < 1000 && c.n_net > 0; k++) {
        const struct raft_msg *m = &c.net[0];
        bool carries_noop = false;
        for (size_t e = 0; e < m->n_entries; e++) {
            carries_noop = carries_noop || m->entries[e].index == 3;
        }
        if (m->type == RAFT_MSG_APPEND && carries_noop && acked2[m->to]) {
            /* Once a follower holds entry 2, hold back the no-op. */
            struct raft_msg dropped = c.net[0];
            memmove(c.net, c.net + 1, (c.n_net - 1) * sizeof c.net[0]);
            c.n_net--;
            raft_msg_clear(&dropped);
            continue;
        }
        if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index == 2) {
            saw_ack_of_2_only = true;
            acked2[m->from] = true;
        }
        cl_deliver_one(&c);
        if (cl_status(&c, 0).role == RAFT_LEADER) {
            uint64_t commit = cl_status(&c, 0).commit;
            assert_true(commit == 1 || commit >= 3);
        }
    }
    assert_true(saw_ack_of_2_only);
    assert_int_equal(cl_status(&c, 0).commit, 1);
    /* Heartbeats let replication resume; now 2 commits with 3. */
    cl_tick(&c, 3);
    assert_true(cl_status(&c, 0).commit >= 3);
    cl_close(&c);
}

static void test_fast_backtracking(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    /* Node 3 has 50 entries of term 2 nobody else has; nodes 1 and 2 have
     * 50 entries of term 3 after a common (1,t1). */
    static struct raft_entry ents[51];
    for (uint32_t i = 0; i < 3; i++) {
        for (uint64_t k = 0; k < 51; k++) {
            ents[k] = (struct raft_entry){.term = k == 0 ? 1 : (i == 2 ? 2 : 3), .index = k + 1};
        }
        struct raft_ready rd = {0};
        rd.entries = ents;
        rd.n_entries = 51;
        rd.has_hard_state = true;
        rd.hard_state = (struct raft_hard_state){.term = 3, .commit = 1};
        assert_int_equal(raft_memlog_persist(c.ml[i], &rd), KV_OK);
        c.cfg[i].applied = 1;
        c.n_applied[i] = 1;
    }
    cl_start(&c);
    c.down[2] = true; /* elect 1 with 2 first */
    raft_campaign(c.r[0]);
    cl_settle(&c);
    assert_int_equal(cl_leader(&c), 0);
    c.down[2] = false;
    /* Count the rejections node 3 sends before it matches. */
    raft_campaign(c.r[0]); /* no-op: already leader */
    cl_tick(&c, 1);
    uint32_t rejects = 0;
    for (int k = 0; k < 10000 && c.n_net > 0; k++) {
        rejects += c.net[0].type == RAFT_MSG_APPEND_RESP && c.net[0].reject && c.net[0].from == 3;
        cl_deliver_one(&c);
    }
    cl_tick(&c, 2);
    /* One term to skip: a couple of round trips, not fifty. */
    assert_true(rejects <= 3);
    assert_int_equal(c.n_applied[2], c.n_applied[0]);
    uint64_t t = 0;
    assert_int_equal(raft_term_at(c.r[2], 51, &t), KV_OK);
    assert_int_equal(t, 3);
    cl_close(&c);
}

static void test_prevote_keeps_term(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    for (uint32_t i = 0; i < 3; i++) {
        c.cfg[i].pre_vote = true;
    }
    cl_start(&c);
    cl_tick(&c, 40);
    int leader = cl_leader(&c);
    assert_true(leader >= 0);
    uint64_t term = cl_status(&c, (uint32_t)leader).term;
    uint32_t loner = ((uint32_t)leader + 1) % 3;
    cl_isolate(&c, loner, true);
    cl_tick(&c, 100);
    /* The isolated node never won a PreVote, so it never bumped its term. */
    assert_int_equal(cl_status(&c, loner).term, term);
    cl_isolate(&c, loner, false);
    cl_tick(&c, 5);
    assert_int_equal(cl_leader(&c), leader);
    assert_int_equal(cl_status(&c, (uint32_t)leader).term, term);
    cl_close(&c);
}

static void test_check_quorum_steps_down(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    for (uint32_t i = 0; i < 3; i++) {
        c.cfg[i].check_quorum = true;
    }
    cl_start(&c);
    cl_tick(&c, 40);
    int leader = cl_leader(&c);
    assert_true(leader >= 0);
    cl_isolate(&c, (uint32_t)leader, true);
    cl_tick(&c, 25);
    assert_int_not_equal(cl_status(&c, (uint32_t)leader).role, RAFT_LEADER);
    cl_close(&c);
}

static void test_read_index_leader_and_follower(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    assert_int_equal(cl_leader(&c), 0);
    propose_n(&c, 0, 5);
    cl_settle(&c);
    /* Leader read: not safe until a quorum answered the heartbeat. */
    uint64_t ctx = 42;
    assert_int_equal(raft_read_index(c.r[0], &ctx, sizeof ctx), KV_OK);
    cl_ready(&c, 0);
    assert_int_equal(c.n_reads[0], 0);
    cl_settle(&c);
    assert_int_equal(c.n_reads[0], 1);
    assert_int_equal(c.read_index[0], 6);
    /* An isolated leader cannot confirm: the read never completes. */
    cl_isolate(&c, 0, true);
    assert_int_equal(raft_read_index(c.r[0], &ctx, sizeof ctx), KV_OK);
    cl_settle(&c);
    assert_int_equal(c.n_reads[0], 1);
    cl_isolate(&c, 0, false);
    /* Follower read: asks the leader, gets its commit index. */
    assert_int_equal(raft_read_index(c.r[1], &ctx, sizeof ctx), KV_OK);
    cl_settle(&c);
    assert_int_equal(c.n_reads[1], 1);
    assert_int_equal(c.read_index[1], 6);
    cl_close(&c);
}

static void test_lease_read(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    for (uint32_t i = 0; i < 3; i++) {
        c.cfg[i].check_quorum = true;
        c.cfg[i].lease_read = true;
    }
    cl_start(&c);
    cl_tick(&c, 40);
    int leader = cl_leader(&c);
    assert_true(leader >= 0);
    propose_n(&c, leader, 2);
    cl_settle(&c);
    cl_tick(&c, 1); /* a heartbeat round acknowledged: the lease starts */
    /* Within the lease the read is answered with no round trip. */
    uint64_t ctx = 7;
    uint32_t before = c.n_reads[leader];
    cl_isolate(&c, (uint32_t)leader, true);
    assert_int_equal(raft_read_index(c.r[leader], &ctx, sizeof ctx), KV_OK);
    cl_ready(&c, (uint32_t)leader);
    assert_int_equal(c.n_reads[leader], before + 1);
    /* Cut off for longer than half an election timeout: the lease is
     * gone and a read must wait for a round that never completes. */
    for (int t = 0; t < 6; t++) {
        raft_tick(c.r[leader]);
        cl_ready(&c, (uint32_t)leader);
    }
    assert_int_equal(raft_read_index(c.r[leader], &ctx, sizeof ctx), KV_OK);
    cl_ready(&c, (uint32_t)leader);
    assert_int_equal(c.n_reads[leader], before + 1);
    cl_close(&c);
}

static void test_leader_transfer(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    propose_n(&c, 0, 3);
    cl_settle(&c);
    assert_int_equal(raft_transfer_leader(c.r[0], 3), KV_OK);
    cl_settle(&c);
    assert_int_equal(cl_leader(&c), 2);
    /* A follower may ask to become leader itself (forwarded). */
    assert_int_equal(raft_transfer_leader(c.r[1], 2), KV_OK);
    cl_settle(&c);
    assert_int_equal(cl_leader(&c), 1);
    cl_close(&c);
}

static void test_forward_or_reject_proposals(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    c.cfg[1].forward_proposals = true;
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    uint64_t hint = 0;
    uint8_t data[4] = {1, 2, 3, 4};
    assert_int_equal(raft_propose(c.r[2], data, sizeof data, &hint), KV_ENOTLEADER);
    assert_int_equal(hint, 1);
    assert_int_equal(raft_propose(c.r[1], data, sizeof data, &hint), KV_OK);
    cl_settle(&c);
    cl_tick(&c, 2);
    assert_int_equal(c.n_applied[2], 2);
    cl_close(&c);
}

static void test_learner_replicates_but_never_votes(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 2); /* voters 1, 2; learner 3 */
    cl_start(&c);
    assert_true(cl_status(&c, 2).learner);
    cl_tick(&c, 60);
    int leader = cl_leader(&c);
    assert_true(leader == 0 || leader == 1);
    propose_n(&c, leader, 4);
    cl_settle(&c);
    cl_tick(&c, 2);
    assert_int_equal(c.n_applied[2], 5);
    /* With the other voter down the learner cannot make a quorum. */
    c.down[1 - leader] = true;
    propose_n(&c, leader, 1);
    cl_settle(&c);
    assert_int_equal(c.n_applied[leader], 5);
    cl_close(&c);
}

static void test_membership_change(void **state)
{
    struct cluster c;
    cl_init(&c, 4, 3); /* node 4 is a learner first */
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    uint64_t hint;
    struct raft_conf_change promote = {.type = RAFT_CONF_ADD_VOTER, .node_id = 4};
    assert_int_equal(raft_propose_conf_change(c.r[0], &promote, &hint), KV_OK);
    /* One change at a time. */
    struct raft_conf_change rm = {.type = RAFT_CONF_REMOVE, .node_id = 3};
    assert_int_equal(raft_propose_conf_change(c.r[0], &rm, &hint), KV_EBUSY);
    cl_settle(&c);
    cl_tick(&c, 2);
    struct raft_conf_state cs;
    raft_conf(c.r[3], &cs);
    assert_int_equal(cs.n_voters, 4);
    assert_int_equal(cs.n_learners, 0);
    assert_int_equal(raft_propose_conf_change(c.r[0], &rm, &hint), KV_OK);
    cl_settle(&c);
    cl_tick(&c, 2);
    raft_conf(c.r[0], &cs);
    assert_int_equal(cs.n_voters, 3);
    /* Voters 1, 2, 4 commit without node 3. */
    c.down[2] = true;
    propose_n(&c, 0, 2);
    cl_settle(&c);
    cl_tick(&c, 2);
    assert_int_equal(c.n_applied[3], c.n_applied[0]);
    assert_int_equal(raft_propose_conf_change(c.r[0], &rm, &hint), KV_EINVAL);
    cl_close(&c);
}

static void test_snapshot_catch_up(void **state)
{
    struct cluster c;
    cl_init(&c, 3, 3);
    cl_start(&c);
    raft_campaign(c.r[0]);
    cl_settle(&c);
    c.down[2] = true;
    propose_n(&c, 0, 10);
    cl_settle(&c);
    cl_tick(&c, 1);
    struct raft_conf_state cs;
    raft_conf(c.r[0], &cs);
    assert_int_equal(raft_memlog_compact(c.ml[0], 8, &cs), KV_OK);
    raft_compacted(c.r[0], 8);
    c.down[2] = false;
    cl_tick(&c, 3);
    assert_int_equal(c.last_snapshot[2], 8);
    assert_int_equal(c.n_applied[2], 11);
    cl_close(&c);
}

static void test_codec_roundtrip(void **state)
{
    uint8_t d1[3] = {1, 2, 3};
    struct raft_entry ents[2] = {{.term = 5, .index = 9, .data = d1, .size = 3},
                                 {.term = 5, .index = 10, .type = RAFT_ENTRY_CONF_CHANGE}};
    uint8_t ctx[5] = {9, 8, 7, 6, 5};
    struct raft_msg m = {.type = RAFT_MSG_APPEND,
                         .group_id = 77,
                         .from = 1,
                         .to = 2,
                         .term = 5,
                         .log_term = 4,
                         .index = 8,
                         .entries = ents,
                         .n_entries = 2,
                         .commit = 7,
                         .reject = true,
                         .reject_hint = 3,
                         .context = ctx,
                         .context_size = 5,
                         .read_seq = 11,
                         .transfer = true};
    uint8_t *buf;
    size_t size;
    assert_int_equal(raft_msg_encode(&m, &buf, &size), KV_OK);
    struct raft_msg d;
    assert_int_equal(raft_msg_decode(buf, size, &d), KV_OK);
    assert_int_equal(d.type, RAFT_MSG_APPEND);
    assert_int_equal(d.group_id, 77);
    assert_int_equal(d.term, 5);
    assert_int_equal(d.log_term, 4);
    assert_int_equal(d.index, 8);
    assert_int_equal(d.commit, 7);
    assert_true(d.reject && d.transfer);
    assert_int_equal(d.reject_hint, 3);
    assert_int_equal(d.read_seq, 11);
    assert_int_equal(d.n_entries, 2);
    assert_int_equal(d.entries[0].size, 3);
    assert_memory_equal(d.entries[0].data, d1, 3);
    assert_int_equal(d.entries[1].type, RAFT_ENTRY_CONF_CHANGE);
    assert_int_equal(d.context_size, 5);
    assert_memory_equal(d.context, ctx, 5);
    raft_msg_clear(&d);
    /* Truncations of a valid encoding fail cleanly or decode a prefix
     * of fields; they never read out of bounds (ASan watches). */
    for (size_t cut = 0; cut < size; cut++) {
        if (raft_msg_decode(buf, cut, &d) == KV_OK) {
            raft_msg_clear(&d);
        }
    }
    kv_free(buf);

    struct raft_msg s = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 3, .term = 2};
    s.snap.index = 100;
    s.snap.term = 2;
    s.snap.conf.voters[0] = 1;
    s.snap.conf.voters[1] = 3;
    s.snap.conf.n_voters = 2;
    s.snap.conf.learners[0] = 9;
    s.snap.conf.n_learners = 1;
    assert_int_equal(raft_msg_encode(&s, &buf, &size), KV_OK);
    assert_int_equal(raft_msg_decode(buf, size, &d), KV_OK);
    assert_int_equal(d.snap.index, 100);
    assert_int_equal(d.snap.conf.n_voters, 2);
    assert_int_equal(d.snap.conf.voters[1], 3);
    assert_int_equal(d.snap.conf.learners[0], 9);
    raft_msg_clear(&d);
    kv_free(buf);
    uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(raft_msg_decode(junk, sizeof junk, &d), KV_ECORRUPT);

    struct raft_conf_change cc = {.type = RAFT_CONF_REMOVE, .node_id = 12345}, cc2;
    uint8_t ccbuf[RAFT_CONF_CHANGE_BYTES_MAX];
    assert_int_equal(raft_conf_change_encode(&cc, ccbuf, sizeof ccbuf, &size), KV_OK);
    assert_int_equal(raft_conf_change_decode(ccbuf, size, &cc2), KV_OK);
    assert_int_equal(cc2.type, RAFT_CONF_REMOVE);
    assert_int_equal(cc2.node_id, 12345);
}

/* Regression (sim seed 20027151 with allocation faults): applying a
 * committed conf change decoded it through the heap, an allocation
 * failure skipped the change on one replica, and two leaders were elected
 * in one term under diverged memberships. Decoding must not allocate. */
static void test_conf_change_decode_needs_no_heap(void **state)
{
    struct raft_conf_change cc = {.type = RAFT_CONF_ADD_LEARNER, .node_id = 4}, out;
    uint8_t buf[RAFT_CONF_CHANGE_BYTES_MAX];
    size_t size = 0;
    assert_int_equal(raft_conf_change_encode(&cc, buf, sizeof buf, &size), KV_OK);
    kv_alloc_fault_after(0);
    int rc = raft_conf_change_decode(buf, size, &out);
    long hits = kv_alloc_fault_hits();
    kv_alloc_fault_clear();
    assert_int_equal(rc, KV_OK);
    assert_int_equal(hits, 0);
    assert_int_equal(out.type, RAFT_CONF_ADD_LEARNER);
    assert_int_equal(out.node_id, 4);
}

static void test_memlog(void **state)
{
    struct raft_memlog *ml;
    assert_int_equal(raft_memlog_new(&ml), KV_OK);
    struct raft_log_store *st = raft_memlog_store(ml);
    assert_int_equal(st->first_index(st->data), 1);
    assert_int_equal(st->last_index(st->data), 0);
    uint8_t d[2] = {7, 8};
    struct raft_entry ents[3] = {{.term = 1, .index = 1, .data = d, .size = 2},
                                 {.term = 1, .index = 2},
                                 {.term = 2, .index = 3}};
    struct raft_ready rd = {.entries = ents, .n_entries = 3};
    assert_int_equal(raft_memlog_persist(ml, &rd), KV_OK);
    assert_int_equal(st->last_index(st->data), 3);
    /* Overwrite from index 2. */
    struct raft_entry over = {.term = 3, .index = 2};
    rd.entries = &over;
    rd.n_entries = 1;
    assert_int_equal(raft_memlog_persist(ml, &rd), KV_OK);
    assert_int_equal(st->last_index(st->data), 2);
    uint64_t t;
    assert_int_equal(st->term(st->data, 2, &t), KV_OK);
    assert_int_equal(t, 3);
    struct raft_conf_state cs = {.voters = {1}, .n_voters = 1};
    assert_int_equal(raft_memlog_compact(ml, 1, &cs), KV_OK);
    struct raft_entry e;
    assert_int_equal(st->entry(st->data, 1, &e), KV_ECOMPACTED);
    assert_int_equal(st->term(st->data, 1, &t), KV_OK);
    assert_int_equal(t, 1);
    assert_int_equal(st->term(st->data, 0, &t), KV_ECOMPACTED);
    assert_int_equal(st->entry(st->data, 3, &e), KV_EUNAVAILABLE);
    assert_int_equal(raft_memlog_compact(ml, 9, &cs), KV_EINVAL);
    raft_memlog_free(ml);
}

/* Every allocation the core makes may fail: a run of elections, writes
 * and reads with the Nth allocation failing must end in clean errors
 * (ASan checks that nothing leaks and nothing is used after free). */
static void test_alloc_failures_are_clean(void **state)
{
    long failed_runs = 0;
    for (long n = 0; n < 120; n++) {
        struct raft_memlog *ml = NULL;
        struct raft *r = NULL;
        struct kv_rng rng;
        kv_rng_seed(&rng, 1);
        if (raft_memlog_new(&ml) != KV_OK) {
            continue;
        }
        kv_alloc_fault_after(n);
        struct raft_config cfg = {
            .id = 1, .group_id = 1, .store = raft_memlog_store(ml), .rng = &rng};
        cfg.initial_conf.voters[0] = 1;
        cfg.initial_conf.voters[1] = 2;
        cfg.initial_conf.n_voters = 2;
        if (raft_new(&cfg, &r) == KV_OK) {
            for (int k = 0; k < 30; k++) {
                raft_tick(r);
                uint8_t d[8] = {0};
                uint64_t hint;
                int rc = raft_propose(r, d, sizeof d, &hint);
                assert_true(rc == KV_OK || rc == KV_ENOTLEADER || rc == KV_ENOMEM ||
                            rc == KV_EBUSY);
                rc = raft_read_index(r, d, sizeof d);
                (void)rc;
                struct raft_msg resp = {
                    .type = RAFT_MSG_VOTE_RESP, .group_id = 1, .from = 2, .to = 1};
                struct raft_status st;
                raft_status(r, &st);
                resp.term = st.term;
                rc = raft_step(r, &resp);
                assert_true(rc == KV_OK || rc == KV_ENOMEM);
                if (raft_has_ready(r)) {
                    struct raft_ready rd;
                    if (raft_ready(r, &rd) == KV_OK) {
                        if (raft_memlog_persist(ml, &rd) != KV_OK) {
                            /* The host would stop; here we just go on. */
                        }
                        raft_advance(r, &rd);
                    }
                }
            }
            raft_free(r);
        }
        failed_runs += kv_alloc_fault_hits() > 0;
        kv_alloc_fault_clear();
        raft_memlog_free(ml);
    }
    /* The loop really injected failures (most runs hit one). */
    print_message("alloc fault runs that hit a failure: %ld\n", failed_runs);
    assert_true(failed_runs > 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_node_commits),
        cmocka_unit_test(test_election_and_replication),
        cmocka_unit_test(test_batching_and_pipelining_limits),
        cmocka_unit_test(test_no_commit_of_previous_term_by_counting),
        cmocka_unit_test(test_fast_backtracking),
        cmocka_unit_test(test_prevote_keeps_term),
        cmocka_unit_test(test_check_quorum_steps_down),
        cmocka_unit_test(test_read_index_leader_and_follower),
        cmocka_unit_test(test_lease_read),
        cmocka_unit_test(test_leader_transfer),
        cmocka_unit_test(test_forward_or_reject_proposals),
        cmocka_unit_test(test_learner_replicates_but_never_votes),
        cmocka_unit_test(test_membership_change),
        cmocka_unit_test(test_snapshot_catch_up),
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_conf_change_decode_needs_no_heap),
        cmocka_unit_test(test_memlog),
        cmocka_unit_test(test_alloc_failures_are_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
