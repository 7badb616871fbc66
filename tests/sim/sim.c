/* sim.c -- the deterministic Raft simulator (see sim.h). Everything that
 * varies comes from one kv_rng seeded with the run's seed: the cluster
 * shape, the configuration flags, the schedule of actions and each
 * node's election jitter, so a failing seed replays exactly.
 *
 * The host loop for each node is the one the server will run: take a
 * ready batch, persist it into the node's memlog ("disk"), send its
 * messages into the network, apply its committed entries to the node's
 * state machine, note its reads, advance. A crash drops the Raft object
 * and everything not persisted; a restart rebuilds it from the memlog.
 *
 * Checks (each names the Raft property it guards):
 *  - election safety: at most one leader per term, ever;
 *  - log matching: if two logs hold an entry with the same index and term,
 *    they agree on every entry up to it;
 *  - leader completeness: a new leader holds every entry known committed;
 *  - state machine safety: every replica applies the same entry at each
 *    index (so applied sequences are prefixes of one history), which also
 *    means no acknowledged write is lost;
 *  - read linearizability: a ReadIndex read observes every write
 *    acknowledged before it was issued;
 *  - liveness: once faults stop, a leader is elected and a proposal is
 *    applied everywhere within a bounded number of ticks. */
#include "sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "raft.h"
#include "raft_memlog.h"
#include "rng.h"

#define NODES_MAX             5
#define NET_MSGS_MAX          512 /* in-flight messages; beyond, new ones drop */
#define TRACE_LINES           48  /* actions kept for the failure report */
#define TRACE_LINE_BYTES      160
#define READS_MAX             256  /* outstanding reads tracked */
#define LIVENESS_TICKS_MAX    400  /* ticks per node allowed to converge */
#define READY_ROUNDS_MAX      64   /* ready cycles per node per step */
#define CRASH_IN_READY_ONE_IN 3000 /* chance of a crash inside a ready cycle */
#define ALLOC_FAULT_PCT       5    /* calls with an armed allocation fault */
#define LOG_MATCH_EVERY       16   /* steps between full log-matching checks */
#define PAD_MAX               160  /* largest random padding of a write */

struct hist_entry {
    uint64_t term;
    /* Highest term any replica had when the entry was first applied: the
     * leader that committed it had a term no higher than this. */
    uint64_t commit_term_bound;
    uint64_t wid; /* write id, 0 for no-ops and conf changes */
    uint32_t type;
};

struct node {
    uint64_t id;
    bool up;
    bool exists; /* started at least once (added to the cluster) */
    uint32_t incarnation;
    struct raft *r;
    struct raft_memlog *ml;
    struct kv_rng rng;
    uint64_t applied; /* state machine: applied through this index */
};

struct net_msg {
    struct raft_msg m;
    uint32_t from_inc; /* sender's incarnation, for snapshot reports */
};

struct read_rec {
    uint64_t read_id;
    uint32_t node; /* slot */
    uint32_t incarnation;
    uint64_t acked_before; /* writes acknowledged when the read started */
    bool has_index;
    uint64_t index;
};

struct sim {
    struct sim_options opt;
    struct sim_stats *st;
    struct kv_rng rng;
    uint32_t n; /* node slots in use */
    struct node nodes[NODES_MAX];
    struct raft_conf_state initial_conf;
    bool pre_vote, check_quorum, forward;
    bool lease; /* lease reads: clocks then tick in lockstep (no drift) */
    uint64_t msg_bytes_max;
    uint32_t inflight_max;
    uint32_t pad_max; /* writes carry 8 + [0, pad_max] bytes */
    /* faults */
    bool cut[NODES_MAX][NODES_MAX]; /* cut[a][b]: a's messages to b drop */
    uint32_t drop_pct, dup_pct;
    struct net_msg net[NET_MSGS_MAX];
    uint32_t n_net;
    /* Snapshots the network refused at send time: the host reports the
     * failure to the sender once its ready cycle is over. */
    struct {
        uint32_t from_slot;
        uint32_t from_inc;
        uint64_t to;
    } snap_fail[NET_MSGS_MAX];
    uint32_t n_snap_fail;
    /* global history of applied entries: hist[i] for index i + 1 */
    struct hist_entry *hist;
    uint64_t n_hist;
    uint64_t cap_hist;
    /* writes */
    uint64_t next_wid;
    uint64_t *acked_idx; /* by write id: index where applied, 0 if not */
    uint64_t cap_acked;
    uint64_t n_acked;    /* acknowledged writes so far */
    uint64_t *ack_order; /* write ids in acknowledgement order */
    uint64_t cap_order;
    /* reads */
    struct read_rec reads[READS_MAX];
    uint32_t n_reads;
    uint64_t next_read_id;
    /* leaders per term */
    uint64_t *leader_of;
    uint64_t cap_leader;
    /* failure report */
    char trace[TRACE_LINES][TRACE_LINE_BYTES];
    uint32_t n_trace;
    uint64_t step;
    bool failed;
    bool oom;
    bool calm;         /* liveness phase: no more faults */
    bool alloc_faults; /* this run makes the core's allocations fail */
    bool armed;        /* an allocation fault is armed for this call */
};

static void note(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct sim *s, const char *fmt, ...)
{
    char *line = s->trace[s->n_trace % TRACE_LINES];
    int off = snprintf(line, TRACE_LINE_BYTES, "step=%llu ", (unsigned long long)s->step);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, TRACE_LINE_BYTES - (size_t)off, fmt, ap);
    va_end(ap);
    s->n_trace++;
    if (s->opt.verbose) {
        fprintf(stderr, "  %s\n", line);
    }
}

static void fail(struct sim *s, const char *fmt, ...)
{
    if (s->failed) {
        return;
    }
    s->failed = true;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL seed=%llu step=%llu: %s\n", (unsigned long long)s->opt.seed,
            (unsigned long long)s->step, msg);
    uint32_t first = s->n_trace > TRACE_LINES ? s->n_trace - TRACE_LINES : 0;
    fprintf(stderr, "last actions:\n");
    for (uint32_t i = first; i < s->n_trace; i++) {
        fprintf(stderr, "  %s\n", s->trace[i % TRACE_LINES]);
    }
    fprintf(stderr, "replay: raft_sim --start %llu --seeds 1 --verbose\n",
            (unsigned long long)s->opt.seed);
}

static bool grow(void **p, uint64_t *cap, uint64_t want, size_t elem)
{
    if (want <= *cap) {
        return true;
    }
    uint64_t ncap = *cap ? *cap : 64;
    while (ncap < want) {
        ncap *= 2;
    }
    /* The simulator's own memory bypasses kv_malloc: injected allocation
     * failures are meant for the core only. */
    void *q = realloc(*p, (size_t)(ncap * elem));
    if (q == NULL) {
        return false;
    }
    memset((char *)q + *cap * elem, 0, (size_t)((ncap - *cap) * elem));
    *p = q;
    *cap = ncap;
    return true;
}

static uint32_t pct(struct sim *s)
{
    return (uint32_t)kv_rng_below(&s->rng, 100);
}

/* Allocation-failure runs: before a call into the core, sometimes make
 * one of its next few allocations fail. The call must then end in a clean
 * KV_ENOMEM (or absorb the failure as a lost message) and every checker
 * must still hold. */
static void arm(struct sim *s)
{
    if (s->alloc_faults && !s->calm && pct(s) < ALLOC_FAULT_PCT) {
        kv_alloc_fault_after((long)kv_rng_below(&s->rng, 6));
        s->armed = true;
    }
}

/* Disarms; returns true when an injected failure happened. */
static bool disarm(struct sim *s)
{
    if (!s->armed) {
        return false;
    }
    bool hit = kv_alloc_fault_hits() > 0;
    s->st->alloc_faults += hit;
    kv_alloc_fault_clear();
    s->armed = false;
    return hit;
}

static int slot_of(const struct sim *s, uint64_t id)
{
    return id >= 1 && id <= s->n ? (int)(id - 1) : -1;
}

/* ---- network ---- */

static void net_push(struct sim *s, const struct raft_msg *m, uint32_t from_inc)
{
    int a = slot_of(s, m->from), b = slot_of(s, m->to);
    if (a < 0 || b < 0) {
        return;
    }
    if (s->cut[a][b] || s->n_net == NET_MSGS_MAX) {
        if (m->type == RAFT_MSG_SNAPSHOT && s->n_snap_fail < NET_MSGS_MAX) {
            s->snap_fail[s->n_snap_fail].from_slot = (uint32_t)a;
            s->snap_fail[s->n_snap_fail].from_inc = from_inc;
            s->snap_fail[s->n_snap_fail].to = m->to;
            s->n_snap_fail++;
        }
        return;
    }
    struct net_msg *nm = &s->net[s->n_net];
    if (raft_msg_copy(&nm->m, m) != KV_OK) {
        s->oom = true;
        return;
    }
    nm->from_inc = from_inc;
    s->n_net++;
}

static void net_remove(struct sim *s, uint32_t i)
{
    raft_msg_clear(&s->net[i].m);
    s->net[i] = s->net[s->n_net - 1];
    s->n_net--;
}

/* ---- state machine and history ---- */

static void ack_write(struct sim *s, uint64_t wid, uint64_t index)
{
    if (wid >= s->cap_acked || s->acked_idx[wid] != 0) {
        return;
    }
    s->acked_idx[wid] = index;
    if (!grow((void **)&s->ack_order, &s->cap_order, s->n_acked + 1, sizeof(uint64_t))) {
        s->oom = true;
        return;
    }
    s->ack_order[s->n_acked++] = wid;
    s->st->writes_acked++;
}

static uint64_t max_term(struct sim *s)
{
    uint64_t t = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];
        uint64_t term = 0;
        if (nd->up) {
            struct raft_status st;
            raft_status(nd->r, &st);
            term = st.term;
        } else if (nd->ml != NULL) {
            term = raft_memlog_hard_state(nd->ml).term;
        }
        t = term > t ? term : t;
    }
    return t;
}

static void apply_entry(struct sim *s, struct node *nd, const struct raft_entry *e)
{
    if (e->index != nd->applied + 1) {
        fail(s, "node %llu applied index %llu after %llu", (unsigned long long)nd->id,
             (unsigned long long)e->index, (unsigned long long)nd->applied);
        return;
    }
    uint64_t wid = 0;
    if (e->type == RAFT_ENTRY_NORMAL && e->size >= 8) {
        memcpy(&wid, e->data, 8);
    }
    if (e->index <= s->n_hist) {
        const struct hist_entry *h = &s->hist[e->index - 1];
        if (h->term != e->term || h->wid != wid || h->type != e->type) {
            fail(s,
                 "state machine safety: node %llu applied index %llu term %llu wid %llu, "
                 "history has term %llu wid %llu",
                 (unsigned long long)nd->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, (unsigned long long)wid, (unsigned long long)h->term,
                 (unsigned long long)h->wid);
            return;
        }
    } else {
        if (!grow((void **)&s->hist, &s->cap_hist, s->n_hist + 1, sizeof *s->hist)) {
            s->oom = true;
            return;
        }
        s->hist[s->n_hist++] = (struct hist_entry){
            .term = e->term, .commit_term_bound = max_term(s), .wid = wid, .type = e->type};
    }
    nd->applied = e->index;
    if (wid != 0) {
        ack_write(s, wid, e->index);
    }
}

static void check_read(struct sim *s, struct read_rec *rr, const struct node *nd)
{
    /* The read is served from nd's state machine now (applied >= index):
     * it must contain every write acknowledged before the read began. */
    for (uint64_t i = 0; i < rr->acked_before; i++) {
        uint64_t wid = s->ack_order[i];
        if (s->acked_idx[wid] > nd->applied) {
            fail(s,
                 "read linearizability: read %llu on node %llu at index %llu (applied %llu) "
                 "misses write %llu acknowledged at index %llu before the read",
                 (unsigned long long)rr->read_id, (unsigned long long)nd->id,
                 (unsigned long long)rr->index, (unsigned long long)nd->applied,
                 (unsigned long long)wid, (unsigned long long)s->acked_idx[wid]);
            return;
        }
    }
    s->st->reads_checked++;
}

static void reads_progress(struct sim *s)
{
    for (uint32_t i = 0; i < s->n_reads;) {
        struct read_rec *rr = &s->reads[i];
        struct node *nd = &s->nodes[rr->node];
        bool gone = !nd->up || nd->incarnation != rr->incarnation;
        if (!gone && rr->has_index && nd->applied >= rr->index) {
            check_read(s, rr, nd);
            gone = true;
        }
        if (gone) {
            s->reads[i] = s->reads[--s->n_reads];
        } else {
            i++;
        }
    }
}

static void read_ready(struct sim *s, struct node *nd, const struct raft_read_state *rs)
{
    uint64_t read_id = 0;
    if (rs->context_size != 8) {
        fail(s, "read state with a %zu-byte context", rs->context_size);
        return;
    }
    memcpy(&read_id, rs->context, 8);
    for (uint32_t i = 0; i < s->n_reads; i++) {
        struct read_rec *rr = &s->reads[i];
        if (rr->read_id == read_id && &s->nodes[rr->node] == nd && !rr->has_index) {
            rr->has_index = true;
            rr->index = rs->index;
            return;
        }
    }
}

/* ---- the host loop ---- */

static void node_crash(struct sim *s, struct node *nd);

static void install_snapshot_sm(struct sim *s, struct node *nd, uint64_t index)
{
    /* The snapshot's data is the history prefix (it was taken at an
     * applied index, and applied prefixes agree). */
    if (index > s->n_hist) {
        fail(s, "snapshot at %llu beyond history %llu", (unsigned long long)index,
             (unsigned long long)s->n_hist);
        return;
    }
    if (index > nd->applied) {
        nd->applied = index;
    }
}

static void handle_ready(struct sim *s, struct node *nd)
{
    for (int round = 0; round < READY_ROUNDS_MAX && nd->up && raft_has_ready(nd->r); round++) {
        struct raft_ready rd;
        arm(s);
        int rc = raft_ready(nd->r, &rd);
        bool injected = disarm(s);
        if (rc != KV_OK) {
            s->oom = !injected;
            return;
        }
        if (rd.has_snapshot) {
            install_snapshot_sm(s, nd, rd.snapshot.index);
            nd->applied = rd.snapshot.index;
            s->st->snapshots_installed++;
        }
        if (raft_memlog_persist(nd->ml, &rd) != KV_OK) {
            s->oom = true;
        }
        if (!s->calm && kv_rng_below(&s->rng, CRASH_IN_READY_ONE_IN) == 0) {
            /* Crash after the write reached the disk but before anything
             * was sent or applied: raft_free drops the unadvanced batch. */
            note(s, "crash %llu mid-ready (persisted, nothing sent)", (unsigned long long)nd->id);
            node_crash(s, nd);
            return;
        }
        for (size_t i = 0; i < rd.n_msgs; i++) {
            net_push(s, &rd.msgs[i], nd->incarnation);
        }
        for (size_t i = 0; i < rd.n_committed && !s->failed; i++) {
            apply_entry(s, nd, &rd.committed[i]);
        }
        for (size_t i = 0; i < rd.n_reads; i++) {
            read_ready(s, nd, &rd.reads[i]);
        }
        arm(s);
        raft_advance(nd->r, &rd);
        disarm(s);
    }
}

static bool record_leader(struct sim *s, uint64_t term, uint64_t id);
static void check_leader_completeness(struct sim *s, struct node *nd);

static void trace_cb(void *data, const struct raft_trace *ev)
{
    struct sim *s = data;
    if (ev->type == RAFT_TRACE_BECOME_LEADER) {
        s->st->leaders_elected++;
        struct node *nd = &s->nodes[ev->id - 1];
        /* Checked at the moment of election, before the no-op, against
         * everything committed in earlier terms. */
        if (nd->r != NULL && record_leader(s, ev->a, ev->id)) {
            check_leader_completeness(s, nd);
        }
        note(s, "node %llu leader term %llu", (unsigned long long)ev->id,
             (unsigned long long)ev->a);
    } else if (ev->type == RAFT_TRACE_CONF_APPLIED) {
        note(s, "node %llu applied conf change type %llu node %llu", (unsigned long long)ev->id,
             (unsigned long long)ev->b, (unsigned long long)ev->a);
    }
}

static int node_start(struct sim *s, struct node *nd)
{
    struct raft_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.id = nd->id;
    cfg.group_id = 7;
    cfg.store = raft_memlog_store(nd->ml);
    cfg.rng = &nd->rng;
    cfg.initial_conf = s->initial_conf;
    struct raft_snapshot_meta snap;
    (void)cfg.store->snapshot(cfg.store->data, &snap);
    cfg.applied = snap.index;
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 2;
    cfg.pre_vote = s->pre_vote;
    cfg.check_quorum = s->check_quorum;
    cfg.forward_proposals = s->forward;
    cfg.lease_read = s->lease;
    cfg.msg_bytes_max = s->msg_bytes_max;
    cfg.inflight_max = s->inflight_max;
    cfg.read_queue_max = 16;
    cfg.trace_cb = trace_cb;
    cfg.trace_data = s;
    int rc = raft_new(&cfg, &nd->r);
    if (rc != KV_OK) {
        return rc;
    }
    nd->up = true;
    nd->exists = true;
    nd->incarnation++;
    struct raft_hard_state hs = raft_memlog_hard_state(nd->ml);
    struct raft_conf_state cs;
    raft_conf(nd->r, &cs);
    note(s, "start %llu snap=%llu term=%llu vote=%llu commit=%llu voters=%u learners=%u",
         (unsigned long long)nd->id, (unsigned long long)snap.index, (unsigned long long)hs.term,
         (unsigned long long)hs.vote, (unsigned long long)hs.commit, cs.n_voters, cs.n_learners);
    nd->applied = snap.index;
    install_snapshot_sm(s, nd, snap.index);
    return KV_OK;
}

static void node_crash(struct sim *s, struct node *nd)
{
    raft_free(nd->r);
    nd->r = NULL;
    nd->up = false;
    s->st->crashes++;
}

/* ---- checks ---- */

static bool record_leader(struct sim *s, uint64_t term, uint64_t id)
{
    if (!grow((void **)&s->leader_of, &s->cap_leader, term + 1, sizeof(uint64_t))) {
        s->oom = true;
        return false;
    }
    if (s->leader_of[term] == 0) {
        s->leader_of[term] = id;
        return true;
    }
    if (s->leader_of[term] != id) {
        fail(s, "election safety: nodes %llu and %llu both leaders in term %llu",
             (unsigned long long)s->leader_of[term], (unsigned long long)id,
             (unsigned long long)term);
    }
    return false;
}

static void check_leader_completeness(struct sim *s, struct node *nd)
{
    struct raft_status st;
    raft_status(nd->r, &st);
    for (uint64_t i = st.first_index; i <= s->n_hist; i++) {
        if (s->hist[i - 1].commit_term_bound >= st.term) {
            continue; /* maybe committed in this term or later: not required */
        }
        uint64_t t = 0;
        if (raft_term_at(nd->r, i, &t) != KV_OK || t != s->hist[i - 1].term) {
            fail(s,
                 "leader completeness: leader %llu of term %llu lacks committed index %llu "
                 "(term %llu, has %llu)",
                 (unsigned long long)nd->id, (unsigned long long)st.term, (unsigned long long)i,
                 (unsigned long long)s->hist[i - 1].term, (unsigned long long)t);
            return;
        }
    }
}

static void check_log_matching(struct sim *s, struct node *a, struct node *b)
{
    struct raft_status sa, sb;
    raft_status(a->r, &sa);
    raft_status(b->r, &sb);
    uint64_t lo = sa.first_index > sb.first_index ? sa.first_index : sb.first_index;
    uint64_t hi = sa.last_index < sb.last_index ? sa.last_index : sb.last_index;
    bool matched = false;
    for (uint64_t i = hi; i >= lo && i > 0; i--) {
        uint64_t ta = 0, tb = 0;
        if (raft_term_at(a->r, i, &ta) != KV_OK || raft_term_at(b->r, i, &tb) != KV_OK) {
            return;
        }
        if (matched && ta != tb) {
            fail(s, "log matching: nodes %llu and %llu agree at a later index but differ at %llu",
                 (unsigned long long)a->id, (unsigned long long)b->id, (unsigned long long)i);
            return;
        }
        matched = matched || ta == tb;
    }
}

static void check_all(struct sim *s)
{
    for (uint32_t i = 0; i < s->n && !s->failed; i++) {
        struct node *nd = &s->nodes[i];
        if (!nd->up) {
            continue;
        }
        struct raft_status st;
        raft_status(nd->r, &st);
        if (st.role == RAFT_LEADER && record_leader(s, st.term, st.id)) {
            check_leader_completeness(s, nd);
        }
        if (st.commit < st.applied) {
            fail(s, "node %llu applied %llu past commit %llu", (unsigned long long)nd->id,
                 (unsigned long long)st.applied, (unsigned long long)st.commit);
        }
    }
    if (s->step % LOG_MATCH_EVERY == 0) {
        for (uint32_t i = 0; i < s->n && !s->failed; i++) {
            for (uint32_t j = i + 1; j < s->n && !s->failed; j++) {
                if (s->nodes[i].up && s->nodes[j].up) {
                    check_log_matching(s, &s->nodes[i], &s->nodes[j]);
                }
            }
        }
    }
    reads_progress(s);
}

/* ---- actions ---- */

static struct node *random_up(struct sim *s)
{
    uint32_t start = (uint32_t)kv_rng_below(&s->rng, s->n);
    for (uint32_t k = 0; k < s->n; k++) {
        struct node *nd = &s->nodes[(start + k) % s->n];
        if (nd->up) {
            return nd;
        }
    }
    return NULL;
}

static struct node *find_leader(struct sim *s)
{
    struct node *best = NULL;
    uint64_t best_term = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];
        if (!nd->up) {
            continue;
        }
        struct raft_status st;
        raft_status(nd->r, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = nd;
            best_term = st.term;
        }
    }
    return best;
}

static void deliver(struct sim *s, uint32_t i)
{
    struct net_msg *nm = &s->net[i];
    int b = slot_of(s, nm->m.to);
    struct node *to = &s->nodes[b];
    int a = slot_of(s, nm->m.from);
    /* A partition also swallows packets already on the wire. */
    bool drop = pct(s) < s->drop_pct || !to->up || s->cut[a][b];
    struct node *from = &s->nodes[a];
    bool report = nm->m.type == RAFT_MSG_SNAPSHOT && from->up && from->incarnation == nm->from_inc;
    if (drop) {
        if (report) {
            raft_report_snapshot(from->r, nm->m.to, false);
        }
        net_remove(s, i);
        return;
    }
    bool dup = pct(s) < s->dup_pct;
    struct raft_msg m;
    if (dup) {
        if (raft_msg_copy(&m, &nm->m) != KV_OK) {
            s->oom = true;
            return;
        }
    } else {
        m = nm->m;
        memset(&nm->m, 0, sizeof nm->m);
        net_remove(s, i);
    }
    if (m.type == RAFT_MSG_SNAPSHOT) {
        /* The host streamed the snapshot's data; the core gets the
         * metadata once the data is in place. */
        note(s, "snapshot %llu->%llu index %llu", (unsigned long long)m.from,
             (unsigned long long)m.to, (unsigned long long)m.snap.index);
    }
    arm(s);
    int rc = raft_step(to->r, &m);
    if (disarm(s) && rc == KV_ENOMEM) {
        rc = KV_OK; /* injected: as if the message was lost */
    }
    if (rc == KV_ENOMEM) {
        s->oom = true;
    }
    if (report && !dup) {
        raft_report_snapshot(from->r, m.to, true);
    }
    raft_msg_clear(&m);
    s->st->msgs_delivered++;
}

static void do_propose(struct sim *s)
{
    struct node *nd = random_up(s);
    if (nd == NULL) {
        return;
    }
    uint8_t buf[8 + PAD_MAX];
    uint64_t wid = ++s->next_wid;
    if (!grow((void **)&s->acked_idx, &s->cap_acked, wid + 1, sizeof(uint64_t))) {
        s->oom = true;
        return;
    }
    memcpy(buf, &wid, 8);
    size_t pad = (size_t)kv_rng_below(&s->rng, s->pad_max + 1);
    memset(buf + 8, (int)(wid & 0xff), pad);
    uint64_t hint = 0;
    arm(s);
    int rc = raft_propose(nd->r, buf, 8 + pad, &hint);
    disarm(s);
    note(s, "propose wid=%llu at %llu rc=%s", (unsigned long long)wid, (unsigned long long)nd->id,
         kv_errname(rc));
}

static void do_read(struct sim *s)
{
    struct node *nd = random_up(s);
    if (nd == NULL || s->n_reads == READS_MAX) {
        return;
    }
    uint64_t read_id = ++s->next_read_id;
    arm(s);
    int rc = raft_read_index(nd->r, &read_id, 8);
    disarm(s);
    note(s, "read %llu at %llu rc=%s acked=%llu", (unsigned long long)read_id,
         (unsigned long long)nd->id, kv_errname(rc), (unsigned long long)s->n_acked);
    if (rc != KV_OK) {
        return;
    }
    struct read_rec *rr = &s->reads[s->n_reads++];
    memset(rr, 0, sizeof *rr);
    rr->read_id = read_id;
    rr->node = (uint32_t)(nd - s->nodes);
    rr->incarnation = nd->incarnation;
    rr->acked_before = s->n_acked;
}

static void do_crash(struct sim *s)
{
    struct node *nd = random_up(s);
    if (nd != NULL) {
        note(s, "crash %llu", (unsigned long long)nd->id);
        node_crash(s, nd);
    }
}

static void do_restart(struct sim *s)
{
    uint32_t start = (uint32_t)kv_rng_below(&s->rng, s->n);
    for (uint32_t k = 0; k < s->n; k++) {
        struct node *nd = &s->nodes[(start + k) % s->n];
        if (!nd->up && nd->exists) {
            note(s, "restart %llu", (unsigned long long)nd->id);
            if (node_start(s, nd) != KV_OK) {
                s->oom = true;
            }
            return;
        }
    }
}

static void do_partition(struct sim *s)
{
    /* Split off a random minority (one or two nodes), both directions,
     * or cut one direction of one link. */
    memset(s->cut, 0, sizeof s->cut);
    if (pct(s) < 30) {
        uint32_t a = (uint32_t)kv_rng_below(&s->rng, s->n);
        uint32_t b = (uint32_t)kv_rng_below(&s->rng, s->n);
        s->cut[a][b] = a != b;
        note(s, "cut link %u->%u", a + 1, b + 1);
        return;
    }
    bool side[NODES_MAX] = {false};
    uint32_t k = 1 + (uint32_t)kv_rng_below(&s->rng, s->n / 2);
    struct node *ld = find_leader(s);
    if (ld != NULL && pct(s) < 50) {
        /* Cut the leader off: it keeps appending entries nobody else
         * gets, the raw material of Figure 8 histories. */
        side[ld - s->nodes] = true;
        k--;
    }
    for (uint32_t i = 0; i < k; i++) {
        side[kv_rng_below(&s->rng, s->n)] = true;
    }
    for (uint32_t a = 0; a < s->n; a++) {
        for (uint32_t b = 0; b < s->n; b++) {
            s->cut[a][b] = side[a] != side[b];
        }
    }
    note(s, "partition %d%d%d%d%d", side[0], side[1], side[2], side[3], side[4]);
}

static void do_transfer(struct sim *s)
{
    struct node *nd = find_leader(s);
    if (nd == NULL) {
        return;
    }
    uint64_t target = 1 + kv_rng_below(&s->rng, s->n);
    arm(s);
    int rc = raft_transfer_leader(nd->r, target);
    disarm(s);
    s->st->transfers++;
    note(s, "transfer %llu->%llu rc=%s", (unsigned long long)nd->id, (unsigned long long)target,
         kv_errname(rc));
}

static void do_conf_change(struct sim *s)
{
    struct node *nd = find_leader(s);
    if (nd == NULL) {
        return;
    }
    struct raft_conf_change cc = {.type = (uint32_t)kv_rng_below(&s->rng, 3),
                                  .node_id = 1 + kv_rng_below(&s->rng, s->n)};
    struct raft_conf_state cs;
    raft_conf(nd->r, &cs);
    /* Keep at least three voters so the cluster can lose one and live. */
    if (cc.type != RAFT_CONF_ADD_VOTER && cs.n_voters <= 3) {
        bool is_voter = false;
        for (uint32_t i = 0; i < cs.n_voters; i++) {
            is_voter = is_voter || cs.voters[i] == cc.node_id;
        }
        if (is_voter) {
            return;
        }
    }
    uint64_t hint;
    arm(s);
    int rc = raft_propose_conf_change(nd->r, &cc, &hint);
    disarm(s);
    note(s, "conf change type=%u node=%llu at %llu rc=%s", cc.type, (unsigned long long)cc.node_id,
         (unsigned long long)nd->id, kv_errname(rc));
    if (rc == KV_OK) {
        s->st->conf_changes++;
        struct node *t = &s->nodes[cc.node_id - 1];
        if (!t->exists) {
            /* A new server starts empty and learns everything from the
             * leader (log or snapshot). */
            if (node_start(s, t) != KV_OK) {
                s->oom = true;
            }
        }
    }
}

static void do_compact(struct sim *s)
{
    struct node *nd = random_up(s);
    if (nd == NULL || nd->applied == 0) {
        return;
    }
    struct raft_status st;
    raft_status(nd->r, &st);
    /* Compact at the applied index: the state machine's snapshot point,
     * where the membership is the core's current (apply-time) one. */
    uint64_t persisted_last = raft_memlog_store(nd->ml)->last_index(nd->ml);
    uint64_t index = st.applied;
    if (index > persisted_last || index < st.first_index) {
        return;
    }
    struct raft_conf_state cs;
    raft_conf(nd->r, &cs);
    if (raft_memlog_compact(nd->ml, index, &cs) != KV_OK) {
        fail(s, "compaction at %llu refused", (unsigned long long)index);
        return;
    }
    raft_compacted(nd->r, index);
    note(s, "compact %llu at %llu", (unsigned long long)nd->id, (unsigned long long)index);
}

static void process_all(struct sim *s);

/* One step is one tick of simulated time: most nodes tick (a node that
 * misses a tick models clock skew), about half the messages in flight
 * arrive (in random order: reordering and delay), and client and operator
 * actions happen with small probabilities. */
static void step_random(struct sim *s, bool conf_changes)
{
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->nodes[i].up && (s->lease || pct(s) < 90)) {
            arm(s);
            raft_tick(s->nodes[i].r);
            disarm(s);
        }
    }
    process_all(s);
    uint32_t deliveries = s->n_net / 2 + 1;
    for (uint32_t k = 0; k < deliveries && s->n_net > 0 && !s->failed; k++) {
        deliver(s, (uint32_t)kv_rng_below(&s->rng, s->n_net));
        process_all(s);
    }
    uint32_t p = (uint32_t)kv_rng_below(&s->rng, 1000);
    if (p < 300) {
        do_propose(s);
    } else if (p < 450) {
        do_read(s);
    } else if (p < 460) {
        do_crash(s);
    } else if (p < 490) {
        do_restart(s);
    } else if (p < 505) {
        do_partition(s);
    } else if (p < 535) {
        memset(s->cut, 0, sizeof s->cut);
        note(s, "heal");
    } else if (p < 545) {
        do_transfer(s);
    } else if (p < 560) {
        if (conf_changes) {
            do_conf_change(s);
        }
    } else if (p < 580) {
        do_compact(s);
    } else if (p < 590) {
        /* Change the weather: loss and duplication rates drift. */
        s->drop_pct = (uint32_t)kv_rng_below(&s->rng, 30);
        s->dup_pct = (uint32_t)kv_rng_below(&s->rng, 10);
        note(s, "weather drop=%u dup=%u", s->drop_pct, s->dup_pct);
    }
}

static void process_all(struct sim *s)
{
    for (int round = 0; round < 4; round++) {
        for (uint32_t i = 0; i < s->n && !s->failed; i++) {
            if (s->nodes[i].up) {
                handle_ready(s, &s->nodes[i]);
            }
        }
        if (s->n_snap_fail == 0) {
            return;
        }
        for (uint32_t k = 0; k < s->n_snap_fail; k++) {
            struct node *nd = &s->nodes[s->snap_fail[k].from_slot];
            if (nd->up && nd->incarnation == s->snap_fail[k].from_inc) {
                raft_report_snapshot(nd->r, s->snap_fail[k].to, false);
            }
        }
        s->n_snap_fail = 0;
    }
}

/* ---- liveness ---- */

static bool in_conf(const struct raft_conf_state *cs, uint64_t id)
{
    for (uint32_t i = 0; i < cs->n_voters; i++) {
        if (cs->voters[i] == id) {
            return true;
        }
    }
    for (uint32_t i = 0; i < cs->n_learners; i++) {
        if (cs->learners[i] == id) {
            return true;
        }
    }
    return false;
}

/* One round of stable time: every node ticks once and every message in
 * flight is delivered. */
static void stable_round(struct sim *s)
{
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->nodes[i].up) {
            raft_tick(s->nodes[i].r);
        }
    }
    process_all(s);
    for (int k = 0; k < 8 && s->n_net > 0 && !s->failed; k++) {
        while (s->n_net > 0 && !s->failed && !s->oom) {
            deliver(s, 0);
            process_all(s);
            check_all(s);
        }
    }
    check_all(s);
}

/* Records every running node's state in the action trace. */
static void note_status(struct sim *s)
{
    for (uint32_t i = 0; i < s->n; i++) {
        struct raft_status st;
        if (!s->nodes[i].up) {
            continue;
        }
        raft_status(s->nodes[i].r, &st);
        note(s,
             "node %llu role=%u term=%llu leader=%llu commit=%llu applied=%llu first=%llu "
             "last=%llu",
             (unsigned long long)st.id, st.role, (unsigned long long)st.term,
             (unsigned long long)st.leader, (unsigned long long)st.commit,
             (unsigned long long)st.applied, (unsigned long long)st.first_index,
             (unsigned long long)st.last_index);
    }
}

static void liveness(struct sim *s)
{
    memset(s->cut, 0, sizeof s->cut);
    s->calm = true;
    s->drop_pct = 0;
    s->dup_pct = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (!s->nodes[i].up && s->nodes[i].exists && node_start(s, &s->nodes[i]) != KV_OK) {
            s->oom = true;
            return;
        }
    }
    note(s, "liveness phase: healed, all restarted");
    uint64_t wid = 0;
    for (uint32_t t = 0; t < LIVENESS_TICKS_MAX && !s->failed && !s->oom; t++) {
        s->step++;
        stable_round(s);
        struct node *ld = find_leader(s);
        if (ld == NULL) {
            continue;
        }
        if (wid == 0 || (t % 20 == 0 && s->acked_idx[wid] == 0)) {
            /* (Re)propose the probe write at the leader. */
            uint8_t buf[8];
            wid = ++s->next_wid;
            if (!grow((void **)&s->acked_idx, &s->cap_acked, wid + 1, sizeof(uint64_t))) {
                s->oom = true;
                return;
            }
            memcpy(buf, &wid, 8);
            uint64_t hint;
            int prc = raft_propose(ld->r, buf, 8, &hint);
            note(s, "liveness probe wid=%llu at %llu rc=%s", (unsigned long long)wid,
                 (unsigned long long)ld->id, kv_errname(prc));
            continue;
        }
        if (s->acked_idx[wid] == 0) {
            continue;
        }
        /* Applied somewhere; now every member must have applied it. */
        struct raft_conf_state cs;
        raft_conf(ld->r, &cs);
        bool all = true;
        for (uint32_t i = 0; i < s->n; i++) {
            struct node *nd = &s->nodes[i];
            if (in_conf(&cs, nd->id) && (!nd->up || nd->applied < s->acked_idx[wid])) {
                all = false;
            }
        }
        if (all) {
            return;
        }
    }
    if (!s->failed && !s->oom) {
        note_status(s);
        struct node *ld = find_leader(s);
        fail(s,
             "liveness: no leader committing to every member within %d stable rounds "
             "(leader %llu, probe write %llu at %llu)",
             LIVENESS_TICKS_MAX, ld ? (unsigned long long)ld->id : 0ULL, (unsigned long long)wid,
             (unsigned long long)(wid ? s->acked_idx[wid] : 0));
    }
}

/* ---- setup and run ---- */

static void configure(struct sim *s)
{
    s->n = kv_rng_below(&s->rng, 2) ? 5 : 3;
    s->pre_vote = kv_rng_below(&s->rng, 2);
    s->check_quorum = kv_rng_below(&s->rng, 2);
    s->forward = kv_rng_below(&s->rng, 2);
    s->lease = s->check_quorum && kv_rng_below(&s->rng, 2);
    s->alloc_faults = kv_rng_below(&s->rng, 4) == 0;
    s->msg_bytes_max = 8 + kv_rng_below(&s->rng, 120);
    /* Some runs send one entry per APPEND: the leader's no-op then
     * travels apart from older entries it follows. */
    s->pad_max = kv_rng_below(&s->rng, 3) == 0 ? PAD_MAX : 40;
    s->inflight_max = 1 + (uint32_t)kv_rng_below(&s->rng, 8);
    memset(&s->initial_conf, 0, sizeof s->initial_conf);
    /* 5-node runs: sometimes 3 voters and 2 learners, sometimes 3 voters
     * and 2 servers that membership changes may add. */
    uint32_t shape = s->n == 5 ? (uint32_t)kv_rng_below(&s->rng, 3) : 0;
    uint32_t voters = shape == 0 ? s->n : 3;
    for (uint32_t i = 0; i < voters; i++) {
        s->initial_conf.voters[s->initial_conf.n_voters++] = i + 1;
    }
    if (shape == 1) {
        s->initial_conf.learners[s->initial_conf.n_learners++] = 4;
        s->initial_conf.learners[s->initial_conf.n_learners++] = 5;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        s->nodes[i].id = i + 1;
        kv_rng_seed(&s->nodes[i].rng, s->opt.seed * 31 + i);
        s->nodes[i].exists = in_conf(&s->initial_conf, i + 1);
    }
    s->drop_pct = (uint32_t)kv_rng_below(&s->rng, 20);
    s->dup_pct = (uint32_t)kv_rng_below(&s->rng, 5);
    note(s,
         "config nodes=%u voters=%u learners=%u prevote=%d checkquorum=%d forward=%d "
         "lease=%d allocfaults=%d msgbytes=%llu inflight=%u",
         s->n, s->initial_conf.n_voters, s->initial_conf.n_learners, s->pre_vote, s->check_quorum,
         s->forward, s->lease, s->alloc_faults, (unsigned long long)s->msg_bytes_max,
         s->inflight_max);
}

static void sim_close(struct sim *s)
{
    for (uint32_t i = 0; i < s->n; i++) {
        raft_free(s->nodes[i].r);
        raft_memlog_free(s->nodes[i].ml);
    }
    while (s->n_net > 0) {
        net_remove(s, s->n_net - 1);
    }
    free(s->hist);
    free(s->acked_idx);
    free(s->ack_order);
    free(s->leader_of);
}

int sim_run(const struct sim_options *opt, struct sim_stats *stats)
{
    struct sim *s = kv_calloc(1, sizeof *s);
    if (s == NULL) {
        return 2;
    }
    s->opt = *opt;
    s->st = stats;
    kv_rng_seed(&s->rng, opt->seed);
    configure(s);
    for (uint32_t i = 0; i < s->n && !s->oom; i++) {
        if (raft_memlog_new(&s->nodes[i].ml) != KV_OK) {
            s->oom = true;
        } else if (s->nodes[i].exists && node_start(s, &s->nodes[i]) != KV_OK) {
            s->oom = true;
        }
    }
    bool conf_changes = s->n == 5;
    for (s->step = 1; s->step <= opt->steps && !s->failed && !s->oom; s->step++) {
        step_random(s, conf_changes);
        process_all(s);
        check_all(s);
        stats->steps++;
    }
    if (!s->failed && !s->oom) {
        liveness(s);
    }
    int rc = s->failed ? 1 : s->oom ? 2 : 0;
    sim_close(s);
    kv_free(s);
    return rc;
}
