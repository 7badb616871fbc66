/* test_raft_wal.c -- the Raft core over the real WAL on disk, through
 * node_logstore, as the server will drive it: a 3-node cluster in one
 * process, each node with its own WAL directory under /tmp, its own memory
 * storage engine and node_fsm applying INCRBY commands, messages through an
 * in-memory network with seeded drops and reordering, and crashes that free
 * the Raft group, the logstore and the fsm and close the WAL, then restart
 * the node from what the WAL holds on disk (sometimes in the middle of a
 * ready cycle: after the write, before sending or applying). Nodes that
 * stay down long enough fall behind the others' compaction and catch up by
 * a snapshot: the state machine moves with stor_export/stor_ingest, the
 * metadata through node_logstore.
 *
 * Checks (a failure prints FAIL with the seed and exits non-zero):
 *  - state machine safety: every applied entry equals the first one ever
 *    applied at its index (term, type, payload CRC), on every node;
 *  - exactly once: at the end every node's counters equal the number of
 *    distinct (client, seq) commands in the committed history, although
 *    some commands were proposed twice (client retries);
 *  - election safety: one leader per term;
 *  - persistence: after every restart the hard state equals the last one
 *    acknowledged by wal_write; terms never go back; no node votes for two
 *    candidates in one term (recorded across restarts, outside the WAL);
 *  - log matching: after the run the nodes' logs agree on every index they
 *    all hold, and the logstore's snapshot membership is the cluster's;
 *  - liveness: after the faults stop every node applies a probe write.
 *
 * Usage: test_raft_wal [--seeds N] [--start S] [--steps K] [--sync-seeds M]
 *                      [--log debug|info|warn|error]
 * (the first M seeds use sync=always, the rest sync=none: a crash here is a
 * process crash, where the page cache survives, so fdatasync only costs). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "alloc.h"
#include "crc32c.h"
#include "fsm.h"
#include "keys.h"
#include "log.h"
#include "logstore.h"
#include "raft.h"
#include "rng.h"
#include "stor.h"
#include "wal.h"

#define NODES            3
#define GROUP            5
#define KEYS             4    /* counters k0..k3 */
#define CLIENTS          4    /* client ids 1..CLIENTS */
#define PROPS_MAX        4096 /* proposals per seed */
#define NET_MAX          2048 /* messages in flight */
#define READY_ROUNDS_MAX 8    /* ready cycles per node per step */
#define COMPACT_LAG      24   /* compact once this many entries are applied past the snapshot */
#define CALM_STEPS_MAX   600  /* steps allowed for the cluster to converge at the end */
#define APPLY_MAX        4096 /* entries per ready (RAFT_BATCH_ENTRIES_MAX) */
#define CONFS_MAX        1024 /* committed membership changes per seed */

struct hist_rec {
    uint64_t term;
    uint32_t type;
    uint32_t crc;
    size_t size;
};

struct prop {
    uint64_t client, seq;
    uint32_t key;
    bool committed; /* appears in the committed history */
    struct kv_buf cmd;
};

struct node {
    uint64_t id;
    char dir[64];
    bool up;
    uint64_t incarnation;
    struct wal *w;
    struct node_logstore *ls;
    struct raft *r;
    struct kv_rng rng;
    struct stor_engine *eng; /* survives crashes: it is the node's disk */
    struct node_fsm *fsm;
    /* What the test remembers outside the WAL, to check persistence. */
    struct raft_hard_state acked_hs; /* last hard state wal_write acknowledged */
    uint64_t down_until;             /* step before which it stays down */
};

struct qmsg {
    struct raft_msg m; /* owned copy */
    uint64_t from_inc; /* sender's incarnation when sent */
};

struct sim {
    uint64_t seed;
    uint64_t step;
    uint64_t steps; /* of the random phase, for the replay line */
    struct kv_rng rng;
    enum wal_sync sync;
    struct node nodes[NODES];
    struct qmsg net[NET_MAX];
    size_t n_net;
    uint32_t drop_pct;
    bool calm;
    struct node *mute;     /* its messages are lost (cut off from the others) */
    struct hist_rec *hist; /* hist[i - 1] for index i */
    size_t n_hist, cap_hist;
    uint64_t *leader_of_term; /* by term; 0 none */
    size_t cap_terms;
    struct prop props[PROPS_MAX];
    /* Committed membership changes in log order, for the model of the
     * membership at any index. */
    struct {
        uint64_t index;
        struct raft_conf_change cc;
    } confs[CONFS_MAX];
    size_t n_confs;
    size_t n_props;
    uint64_t client_seq[CLIENTS + 1];
    struct kv_buf scratch;
    struct wal_batch batch;
    /* Stats over all seeds. */
    uint64_t *crashes, *snapshots, *compactions, *writes, *retries;
};

static void fail(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL seed=%" PRIu64 " step=%" PRIu64 ": ", s->seed, s->step);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr,
            "\n  replay: test_raft_wal --start %" PRIu64 " --seeds 1 --steps %" PRIu64
            " --sync-seeds %d\n",
            s->seed, s->steps, s->sync == WAL_SYNC_ALWAYS);
    for (int i = 0; i < NODES; i++) {
        fprintf(stderr, "  node %d WAL kept for inspection: %s\n", i + 1, s->nodes[i].dir);
    }
    va_end(ap);
    exit(1);
}

#define CHECK_OK(s, expr)                                                                          \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != KV_OK) {                                                                        \
            fail((s), "%s: %s (line %d)", #expr, kv_strerror(rc_), __LINE__);                      \
        }                                                                                          \
    } while (0)

static bool pct(struct sim *s, uint32_t p)
{
    return kv_rng_below(&s->rng, 100) < p;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    char path[512];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

/* ---- checkers ---- */

static void record_leader(struct sim *s, uint64_t term, uint64_t id)
{
    if (term >= s->cap_terms) {
        size_t cap = s->cap_terms ? s->cap_terms : 64;
        while (cap <= term) {
            cap *= 2;
        }
        s->leader_of_term = realloc(s->leader_of_term, cap * sizeof *s->leader_of_term);
        memset(s->leader_of_term + s->cap_terms, 0, (cap - s->cap_terms) * sizeof(uint64_t));
        s->cap_terms = cap;
    }
    if (s->leader_of_term[term] != 0 && s->leader_of_term[term] != id) {
        fail(s, "election safety: nodes %" PRIu64 " and %" PRIu64 " both leaders of term %" PRIu64,
             s->leader_of_term[term], id, term);
    }
    s->leader_of_term[term] = id;
}

static void trace_cb(void *data, const struct raft_trace *ev)
{
    struct sim *s = data;
    if (ev->type == RAFT_TRACE_BECOME_LEADER) {
        record_leader(s, ev->a, ev->id);
    }
}

/* A hard state became durable on `nd`: terms never go back, one vote per
 * term. */
static void hs_acked(struct sim *s, struct node *nd, const struct raft_hard_state *hs)
{
    const struct raft_hard_state *old = &nd->acked_hs;
    if (hs->term < old->term) {
        fail(s, "node %" PRIu64 " term went back from %" PRIu64 " to %" PRIu64, nd->id, old->term,
             hs->term);
    }
    if (hs->term == old->term && old->vote != 0 && hs->vote != old->vote) {
        fail(s, "node %" PRIu64 " voted for %" PRIu64 " and %" PRIu64 " in term %" PRIu64, nd->id,
             old->vote, hs->vote, hs->term);
    }
    if (hs->commit < old->commit) {
        fail(s, "node %" PRIu64 " commit went back from %" PRIu64 " to %" PRIu64, nd->id,
             old->commit, hs->commit);
    }
    nd->acked_hs = *hs;
}

/* Records a committed command's (client, seq) as part of the history. */
static void mark_committed(struct sim *s, const struct raft_entry *e)
{
    if (e->type != RAFT_ENTRY_NORMAL || e->size == 0) {
        return;
    }
    struct node_cmd cmd;
    CHECK_OK(s, node_cmd_decode(e->data, e->size, &cmd));
    for (size_t i = 0; i < s->n_props; i++) {
        if (s->props[i].client == cmd.client_id && s->props[i].seq == cmd.seq) {
            s->props[i].committed = true;
        }
    }
    node_cmd_clear(&cmd);
}

/* The membership rules (raft.md): a change sets one server's role; one
 * that changes nothing or leaves no voter is ignored. A model, kept apart
 * from the core's code on purpose. */
static void model_apply(struct raft_conf_state *cs, const struct raft_conf_change *cc)
{
    struct raft_conf_state out = {0};
    bool voter = false, learner = false;
    for (uint32_t i = 0; i < cs->n_voters; i++) {
        voter = voter || cs->voters[i] == cc->node_id;
        if (cs->voters[i] != cc->node_id) {
            out.voters[out.n_voters++] = cs->voters[i];
        }
    }
    for (uint32_t i = 0; i < cs->n_learners; i++) {
        learner = learner || cs->learners[i] == cc->node_id;
        if (cs->learners[i] != cc->node_id) {
            out.learners[out.n_learners++] = cs->learners[i];
        }
    }
    if ((cc->type == RAFT_CONF_ADD_VOTER && voter) ||
        (cc->type == RAFT_CONF_ADD_LEARNER && learner) ||
        (cc->type == RAFT_CONF_REMOVE && !voter && !learner)) {
        return;
    }
    if (cc->type == RAFT_CONF_ADD_VOTER) {
        out.voters[out.n_voters++] = cc->node_id;
    } else if (cc->type == RAFT_CONF_ADD_LEARNER) {
        out.learners[out.n_learners++] = cc->node_id;
    }
    if (out.n_voters > 0) {
        *cs = out;
    }
}

static struct raft_conf_state initial_conf(void)
{
    struct raft_conf_state cs = {.n_voters = NODES};
    for (uint32_t i = 0; i < NODES; i++) {
        cs.voters[i] = i + 1;
    }
    return cs;
}

/* Membership in force once everything through `index` is applied. */
static struct raft_conf_state conf_at(const struct sim *s, uint64_t index)
{
    struct raft_conf_state cs = initial_conf();
    for (size_t i = 0; i < s->n_confs && s->confs[i].index <= index; i++) {
        model_apply(&cs, &s->confs[i].cc);
    }
    return cs;
}

/* Bit set of a membership: bit id for voters, bit 16 + id for learners. */
static uint32_t conf_bits(const struct raft_conf_state *cs)
{
    uint32_t bits = 0;
    for (uint32_t i = 0; i < cs->n_voters; i++) {
        bits |= 1u << cs->voters[i];
    }
    for (uint32_t i = 0; i < cs->n_learners; i++) {
        bits |= 1u << (16 + cs->learners[i]);
    }
    return bits;
}

static void check_conf(struct sim *s, struct node *nd, const char *what, uint64_t index,
                       const struct raft_conf_state *got)
{
    struct raft_conf_state want = conf_at(s, index);
    if (conf_bits(got) != conf_bits(&want)) {
        fail(s, "node %" PRIu64 " %s at %" PRIu64 ": membership bits %#x, history says %#x", nd->id,
             what, index, conf_bits(got), conf_bits(&want));
    }
}

static void record_conf(struct sim *s, const struct raft_entry *e)
{
    if (e->type != RAFT_ENTRY_CONF_CHANGE) {
        return;
    }
    if (s->n_confs == CONFS_MAX) {
        fail(s, "more than %d membership changes", CONFS_MAX);
    }
    s->confs[s->n_confs].index = e->index;
    CHECK_OK(s, raft_conf_change_decode(e->data, e->size, &s->confs[s->n_confs].cc));
    s->n_confs++;
}

static void check_history(struct sim *s, struct node *nd, const struct raft_entry *e)
{
    struct hist_rec rec = {.term = e->term,
                           .type = e->type,
                           .crc = e->size ? kv_crc32c(0, e->data, e->size) : 0,
                           .size = e->size};
    if (e->index > s->n_hist + 1) {
        fail(s, "node %" PRIu64 " applied index %" PRIu64 " beyond history %zu", nd->id, e->index,
             s->n_hist);
    }
    if (e->index == s->n_hist + 1) {
        if (s->n_hist == s->cap_hist) {
            s->cap_hist = s->cap_hist ? s->cap_hist * 2 : 256;
            s->hist = realloc(s->hist, s->cap_hist * sizeof *s->hist);
        }
        s->hist[s->n_hist++] = rec;
        record_conf(s, e);
        mark_committed(s, e);
        return;
    }
    const struct hist_rec *h = &s->hist[e->index - 1];
    if (h->term != rec.term || h->type != rec.type || h->crc != rec.crc || h->size != rec.size) {
        fail(s,
             "state machine safety: node %" PRIu64 " applied index %" PRIu64 " term %" PRIu64
             " type %u, history has term %" PRIu64 " type %u (crc %08x vs %08x)",
             nd->id, e->index, e->term, e->type, h->term, h->type, rec.crc, h->crc);
    }
}

/* ---- node lifecycle ---- */

static void node_start(struct sim *s, struct node *nd)
{
    struct wal_options o;
    char errmsg[KV_ERRMSG_SIZE];
    wal_options_init(&o, nd->dir);
    o.sync = s->sync;
    o.segment_bytes = 16 * 1024; /* small: rotation and GC run */
    CHECK_OK(s, wal_open(&o, &nd->w, errmsg));
    CHECK_OK(s, node_logstore_new(nd->w, GROUP, &nd->ls));
    struct raft_hard_state hs = node_logstore_hard_state(nd->ls);
    if (memcmp(&hs, &nd->acked_hs, sizeof hs) != 0) {
        fail(s,
             "node %" PRIu64 " restarted with hard state term=%" PRIu64 " vote=%" PRIu64
             " commit=%" PRIu64 ", acknowledged term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64,
             nd->id, hs.term, hs.vote, hs.commit, nd->acked_hs.term, nd->acked_hs.vote,
             nd->acked_hs.commit);
    }
    CHECK_OK(s, node_fsm_new(nd->eng, GROUP, &nd->fsm));
    struct raft_snapshot_meta snap;
    node_logstore_snapshot_meta(nd->ls, &snap);
    if (node_fsm_applied_index(nd->fsm) < snap.index) {
        fail(s, "node %" PRIu64 " state machine at %" PRIu64 " behind its snapshot %" PRIu64,
             nd->id, node_fsm_applied_index(nd->fsm), snap.index);
    }
    struct raft_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.id = nd->id;
    cfg.group_id = GROUP;
    cfg.store = node_logstore_store(nd->ls);
    cfg.rng = &nd->rng;
    cfg.initial_conf = initial_conf();
    /* The core re-applies from the snapshot on (re-applying membership
     * changes); the fsm skips what it already applied. */
    cfg.applied = snap.index;
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 2;
    cfg.pre_vote = (s->seed & 1) != 0;
    cfg.check_quorum = (s->seed & 2) != 0;
    cfg.msg_bytes_max = 256;
    cfg.inflight_max = 4;
    cfg.trace_cb = trace_cb;
    cfg.trace_data = s;
    CHECK_OK(s, raft_new(&cfg, &nd->r));
    if (snap.index > 0) {
        check_conf(s, nd, "restarted with snapshot membership", snap.index, &snap.conf);
    }
    nd->up = true;
    nd->incarnation++;
}

static void node_crash(struct sim *s, struct node *nd)
{
    raft_free(nd->r);
    nd->r = NULL;
    node_logstore_free(nd->ls);
    nd->ls = NULL;
    node_fsm_free(nd->fsm);
    nd->fsm = NULL;
    wal_close(nd->w);
    nd->w = NULL;
    nd->up = false;
    (*s->crashes)++;
}

/* ---- network ---- */

static void net_push(struct sim *s, const struct raft_msg *m, uint64_t inc)
{
    if (s->n_net == NET_MAX || (s->mute != NULL && s->mute->id == m->from)) {
        return; /* full: lost */
    }
    struct qmsg *q = &s->net[s->n_net];
    CHECK_OK(s, raft_msg_copy(&q->m, m));
    q->from_inc = inc;
    s->n_net++;
}

static void net_remove(struct sim *s, size_t i)
{
    raft_msg_clear(&s->net[i].m);
    s->net[i] = s->net[s->n_net - 1];
    memset(&s->net[s->n_net - 1], 0, sizeof s->net[0]);
    s->n_net--;
}

/* Moves the sender's state machine into the receiver's engine, as the
 * server streams a snapshot before handing the core its metadata. Only
 * when the receiver's core will install it (past its commit): otherwise
 * the receiver's state machine could move backwards. */
static void transfer_snapshot(struct sim *s, struct node *from, struct node *to,
                              const struct raft_msg *m)
{
    struct raft_status st;
    raft_status(to->r, &st);
    if (m->snap.index <= st.commit) {
        return;
    }
    struct node_key lo, hi;
    node_key_group_start(&lo, GROUP);
    node_key_group_end(&hi, GROUP);
    struct stor_export *x;
    struct stor_ingest *in;
    CHECK_OK(s, stor_export_new(from->eng, NULL, lo.bytes, lo.size, hi.bytes, hi.size, 4096, &x));
    CHECK_OK(s, stor_ingest_new(to->eng, lo.bytes, lo.size, hi.bytes, hi.size, &in));
    struct kv_buf chunk;
    kv_buf_init(&chunk);
    int rc;
    while ((rc = stor_export_next(x, &chunk)) == KV_OK) {
        CHECK_OK(s, stor_ingest_chunk(in, chunk.data, chunk.size));
    }
    if (rc != KV_EOF) {
        fail(s, "export: %s", kv_strerror(rc));
    }
    CHECK_OK(s, stor_ingest_finish(in));
    stor_ingest_free(in);
    stor_export_free(x);
    kv_buf_close(&chunk);
    /* The fsm caches its applied index: reopen it over the new content. */
    node_fsm_free(to->fsm);
    to->fsm = NULL;
    CHECK_OK(s, node_fsm_new(to->eng, GROUP, &to->fsm));
    if (node_fsm_applied_index(to->fsm) < m->snap.index) {
        fail(s, "snapshot data at %" PRIu64 " older than its metadata %" PRIu64,
             node_fsm_applied_index(to->fsm), m->snap.index);
    }
    (*s->snapshots)++;
}

static void deliver(struct sim *s, size_t i)
{
    struct qmsg *q = &s->net[i];
    struct node *to = &s->nodes[q->m.to - 1];
    struct node *from = &s->nodes[q->m.from - 1];
    bool report = q->m.type == RAFT_MSG_SNAPSHOT && from->up && from->incarnation == q->from_inc;
    if (!to->up || (!s->calm && pct(s, s->drop_pct))) {
        if (report) {
            raft_report_snapshot(from->r, q->m.to, false);
        }
        net_remove(s, i);
        return;
    }
    struct raft_msg m = q->m;
    memset(&q->m, 0, sizeof q->m);
    net_remove(s, i);
    if (m.type == RAFT_MSG_SNAPSHOT) {
        transfer_snapshot(s, from, to, &m);
    }
    CHECK_OK(s, raft_step(to->r, &m));
    if (report) {
        raft_report_snapshot(from->r, m.to, true);
    }
    raft_msg_clear(&m);
}

/* ---- the host loop ---- */

static void apply_committed(struct sim *s, struct node *nd, const struct raft_ready *rd)
{
    static struct node_fsm_entry ents[APPLY_MAX];
    KV_ASSERT(rd->n_committed <= APPLY_MAX);
    for (size_t i = 0; i < rd->n_committed; i++) {
        const struct raft_entry *e = &rd->committed[i];
        check_history(s, nd, e);
        ents[i] = (struct node_fsm_entry){
            .index = e->index,
            .term = e->term,
            .is_command = e->type == RAFT_ENTRY_NORMAL && e->size > 0,
            .data = e->data,
            .size = e->size,
        };
    }
    if (rd->n_committed > 0) {
        CHECK_OK(s, node_fsm_apply(nd->fsm, ents, rd->n_committed, NULL, NULL));
        uint64_t last = rd->committed[rd->n_committed - 1].index;
        if (node_fsm_applied_index(nd->fsm) < last) {
            fail(s, "node %" PRIu64 " fsm at %" PRIu64 " after applying through %" PRIu64, nd->id,
                 node_fsm_applied_index(nd->fsm), last);
        }
    }
}

/* The store now holds exactly what the ready asked: a snapshot replaces
 * the whole log, entries replace the tail from their first index. */
static void check_persisted(struct sim *s, struct node *nd, const struct raft_ready *rd)
{
    struct raft_log_store *st = node_logstore_store(nd->ls);
    uint64_t first = st->first_index(st->data), last = st->last_index(st->data);
    uint64_t want_last = last;
    if (rd->n_entries > 0) {
        want_last = rd->entries[rd->n_entries - 1].index;
    } else if (rd->has_snapshot) {
        want_last = rd->snapshot.index;
    }
    if (last != want_last || (rd->has_snapshot && first != rd->snapshot.index + 1)) {
        fail(s,
             "node %" PRIu64 " store [%" PRIu64 ", %" PRIu64
             "] after persisting a ready (last %" PRIu64 ", snapshot %d at %" PRIu64 ")",
             nd->id, first, last, want_last, rd->has_snapshot, rd->snapshot.index);
    }
    for (size_t i = 0; i < rd->n_entries; i++) {
        const struct raft_entry *e = &rd->entries[i];
        struct raft_entry got;
        CHECK_OK(s, st->entry(st->data, e->index, &got));
        if (got.term != e->term || got.type != e->type || got.size != e->size ||
            (e->size > 0 && memcmp(got.data, e->data, e->size) != 0)) {
            fail(s, "node %" PRIu64 " entry %" PRIu64 " read back differs from what was written",
                 nd->id, e->index);
        }
    }
}

static void handle_ready(struct sim *s, struct node *nd)
{
    for (int round = 0; round < READY_ROUNDS_MAX && nd->up && raft_has_ready(nd->r); round++) {
        struct raft_ready rd;
        CHECK_OK(s, raft_ready(nd->r, &rd));
        if (rd.has_snapshot && node_fsm_applied_index(nd->fsm) < rd.snapshot.index) {
            fail(s, "node %" PRIu64 " installs snapshot %" PRIu64 " without its data", nd->id,
                 rd.snapshot.index);
        }
        wal_batch_clear(&s->batch);
        CHECK_OK(s, node_logstore_stage(nd->ls, &rd, &s->batch));
        CHECK_OK(s, wal_write(nd->w, &s->batch));
        (*s->writes)++;
        CHECK_OK(s, node_logstore_written(nd->ls, &rd));
        check_persisted(s, nd, &rd);
        if (rd.has_hard_state) {
            hs_acked(s, nd, &rd.hard_state);
        }
        if (!s->calm && pct(s, 1)) {
            /* Durable, but nothing sent or applied: raft_free drops the
             * unadvanced batch. */
            node_crash(s, nd);
            nd->down_until = s->step + 1 + kv_rng_below(&s->rng, 20);
            return;
        }
        for (size_t i = 0; i < rd.n_msgs; i++) {
            net_push(s, &rd.msgs[i], nd->incarnation);
        }
        apply_committed(s, nd, &rd);
        raft_advance(nd->r, &rd);
    }
}

static void maybe_compact(struct sim *s, struct node *nd)
{
    struct raft_status st;
    struct raft_snapshot_meta snap;
    raft_status(nd->r, &st);
    node_logstore_snapshot_meta(nd->ls, &snap);
    struct raft_log_store *store = node_logstore_store(nd->ls);
    uint64_t last = store->last_index(store->data);
    uint64_t index = st.applied;
    if (index < snap.index + COMPACT_LAG || index > last) {
        return;
    }
    /* A snapshot's data may run ahead of its metadata (the sender's state
     * machine had moved on), never behind. */
    if (node_fsm_applied_index(nd->fsm) < index) {
        fail(s, "node %" PRIu64 " core applied %" PRIu64 " but fsm %" PRIu64, nd->id, index,
             node_fsm_applied_index(nd->fsm));
    }
    struct raft_conf_state cs;
    raft_conf(nd->r, &cs);
    check_conf(s, nd, "compacts with membership", index, &cs);
    wal_batch_clear(&s->batch);
    CHECK_OK(s, node_logstore_compact(nd->ls, index, &cs, &s->batch));
    CHECK_OK(s, wal_write(nd->w, &s->batch));
    CHECK_OK(s, node_logstore_written(nd->ls, NULL));
    raft_compacted(nd->r, index);
    (*s->compactions)++;
}

static struct node *leader(struct sim *s)
{
    struct node *best = NULL;
    uint64_t best_term = 0;
    for (int i = 0; i < NODES; i++) {
        struct node *nd = &s->nodes[i];
        struct raft_status st;
        if (!nd->up) {
            continue;
        }
        raft_status(nd->r, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = nd;
            best_term = st.term;
        }
    }
    return best;
}

static void propose_cmd(struct sim *s, struct node *ld, const struct kv_buf *cmd)
{
    uint64_t hint;
    int rc = raft_propose(ld->r, cmd->data, cmd->size, &hint);
    if (rc != KV_OK && rc != KV_EBUSY && rc != KV_ENOTLEADER) {
        fail(s, "propose: %s", kv_strerror(rc));
    }
}

/* Proposes a new INCRBY of a random counter by a random client. */
static void propose_new(struct sim *s, struct node *ld)
{
    KV_ASSERT(s->n_props < PROPS_MAX);
    struct prop *p = &s->props[s->n_props];
    p->client = 1 + kv_rng_below(&s->rng, CLIENTS);
    p->seq = ++s->client_seq[p->client];
    p->key = (uint32_t)kv_rng_below(&s->rng, KEYS);
    char key[8];
    snprintf(key, sizeof key, "k%u", p->key);
    struct node_op op = {
        .type = NODE_OP_INCRBY, .key = (const uint8_t *)key, .key_size = strlen(key), .delta = 1};
    struct node_cmd c = {.client_id = p->client, .seq = p->seq, .ops = &op, .n_ops = 1};
    kv_buf_init(&p->cmd);
    CHECK_OK(s, node_cmd_encode(&c, &p->cmd));
    s->n_props++;
    propose_cmd(s, ld, &p->cmd);
}

/* Proposes a new command, or (a client retry after a timeout) re-proposes
 * an earlier one with the same (client, seq). */
static void propose(struct sim *s)
{
    struct node *ld = leader(s);
    if (ld == NULL) {
        return;
    }
    if (s->n_props > 0 && pct(s, 10)) {
        propose_cmd(s, ld, &s->props[kv_rng_below(&s->rng, s->n_props)].cmd);
        (*s->retries)++;
    } else if (s->n_props < PROPS_MAX) {
        propose_new(s, ld);
    }
}

/* Proposes a membership change at the leader for server `id`: add or
 * promote (`grow`), or demote / remove (keeping two voters). */
static void propose_conf(struct sim *s, struct node *ld, uint64_t id, bool grow)
{
    struct raft_conf_state cs;
    raft_conf(ld->r, &cs);
    uint32_t bits = conf_bits(&cs);
    bool voter = (bits >> id) & 1, learner = (bits >> (16 + id)) & 1;
    struct raft_conf_change cc = {.node_id = id};
    if (grow) {
        if (voter) {
            return;
        }
        cc.type = learner ? RAFT_CONF_ADD_VOTER : RAFT_CONF_ADD_LEARNER;
    } else {
        if (id == ld->id || (voter && cs.n_voters <= 2) || (!voter && !learner)) {
            return;
        }
        cc.type = voter && pct(s, 50) ? RAFT_CONF_ADD_LEARNER : RAFT_CONF_REMOVE;
    }
    uint64_t hint;
    int rc = raft_propose_conf_change(ld->r, &cc, &hint);
    if (rc != KV_OK && rc != KV_EBUSY && rc != KV_ENOTLEADER && rc != KV_EINVAL) {
        fail(s, "propose conf change: %s", kv_strerror(rc));
    }
}

/* Proposes the change that brings every server back as a voter. */
static void restore_members(struct sim *s, struct node *ld)
{
    for (uint64_t id = 1; id <= NODES; id++) {
        propose_conf(s, ld, id, true);
    }
}

static void step(struct sim *s)
{
    s->step++;
    for (int i = 0; i < NODES; i++) {
        struct node *nd = &s->nodes[i];
        if (!nd->up && s->step >= nd->down_until && (s->calm || pct(s, 20))) {
            node_start(s, nd);
        }
        if (nd->up) {
            raft_tick(nd->r);
        }
    }
    if (!s->calm && pct(s, 40)) {
        propose(s);
    }
    if (!s->calm && pct(s, 2) && leader(s) != NULL) {
        /* One draw per statement: argument order is unspecified, and the
         * run must be the same whatever the compiler. */
        uint64_t id = 1 + kv_rng_below(&s->rng, NODES);
        bool grow = pct(s, 50);
        propose_conf(s, leader(s), id, grow);
    }
    /* About half of what is in flight arrives, in random order. */
    size_t n = s->n_net / 2 + 1;
    for (size_t k = 0; k < n && s->n_net > 0; k++) {
        deliver(s, kv_rng_below(&s->rng, s->n_net));
    }
    for (int i = 0; i < NODES; i++) {
        struct node *nd = &s->nodes[i];
        if (nd->up) {
            handle_ready(s, nd);
        }
        if (nd->up && pct(s, 10)) {
            maybe_compact(s, nd);
        }
    }
    if (!s->calm && pct(s, 2)) {
        struct node *nd = &s->nodes[kv_rng_below(&s->rng, NODES)];
        if (nd->up) {
            node_crash(s, nd);
            nd->down_until = s->step + 1 + kv_rng_below(&s->rng, 30);
        }
    }
    if (!s->calm && pct(s, 1)) {
        /* A long outage of the leader, just after it persisted proposals
         * that never leave it: the others elect a new leader, commit other
         * entries at those indices and compact past them, so the old
         * leader comes back with a divergent tail that a snapshot must
         * replace (the install inside the held log). */
        struct node *ld = leader(s);
        if (ld != NULL) {
            for (int k = 0; k < 3 && s->n_props < PROPS_MAX; k++) {
                propose_new(s, ld);
            }
            s->mute = ld;
            handle_ready(s, ld);
            s->mute = NULL;
            if (ld->up) {
                node_crash(s, ld);
            }
            ld->down_until = s->step + 150;
        }
    }
}

/* ---- end-of-run checks ---- */

static int64_t counter(struct sim *s, struct node *nd, uint32_t k)
{
    char key[8];
    snprintf(key, sizeof key, "k%u", k);
    struct kv_buf v;
    kv_buf_init(&v);
    int rc = node_fsm_get(nd->fsm, NULL, key, strlen(key), &v);
    int64_t out = 0;
    if (rc == KV_OK) {
        char tmp[32];
        size_t n = v.size < sizeof tmp - 1 ? v.size : sizeof tmp - 1;
        memcpy(tmp, v.data, n);
        tmp[n] = '\0';
        out = strtoll(tmp, NULL, 10);
    } else if (rc != KV_ENOTFOUND) {
        fail(s, "get: %s", kv_strerror(rc));
    }
    kv_buf_close(&v);
    return out;
}

static void check_final(struct sim *s)
{
    int64_t want[KEYS] = {0};
    for (size_t i = 0; i < s->n_props; i++) {
        if (s->props[i].committed) {
            want[s->props[i].key]++;
        }
    }
    uint64_t applied0 = node_fsm_applied_index(s->nodes[0].fsm);
    for (int i = 0; i < NODES; i++) {
        struct node *nd = &s->nodes[i];
        if (node_fsm_applied_index(nd->fsm) != applied0) {
            fail(s, "node %" PRIu64 " applied %" PRIu64 ", node 1 %" PRIu64, nd->id,
                 node_fsm_applied_index(nd->fsm), applied0);
        }
        for (uint32_t k = 0; k < KEYS; k++) {
            int64_t got = counter(s, nd, k);
            if (got != want[k]) {
                fail(s,
                     "exactly once: node %" PRIu64 " k%u = %" PRId64
                     ", committed commands %" PRId64,
                     nd->id, k, got, want[k]);
            }
        }
        struct raft_snapshot_meta snap;
        node_logstore_snapshot_meta(nd->ls, &snap);
        if (snap.index > 0) {
            check_conf(s, nd, "ends with snapshot membership", snap.index, &snap.conf);
        }
        struct raft_conf_state cs, all = initial_conf();
        raft_conf(nd->r, &cs);
        if (conf_bits(&cs) != conf_bits(&all)) {
            fail(s, "node %" PRIu64 " ends with membership bits %#x", nd->id, conf_bits(&cs));
        }
    }
    /* Log matching: all logs agree on every index they all hold. */
    struct raft_log_store *st[NODES];
    uint64_t lo = 0, hi = UINT64_MAX;
    for (int i = 0; i < NODES; i++) {
        st[i] = node_logstore_store(s->nodes[i].ls);
        uint64_t f = st[i]->first_index(st[i]->data), l = st[i]->last_index(st[i]->data);
        lo = f > lo ? f : lo;
        hi = l < hi ? l : hi;
    }
    for (uint64_t idx = lo; idx <= hi; idx++) {
        uint64_t t0;
        CHECK_OK(s, st[0]->term(st[0]->data, idx, &t0));
        for (int i = 1; i < NODES; i++) {
            uint64_t t;
            CHECK_OK(s, st[i]->term(st[i]->data, idx, &t));
            if (t != t0) {
                fail(s,
                     "log matching: index %" PRIu64 " term %" PRIu64 " on node 1, %" PRIu64
                     " on node %d",
                     idx, t0, t, i + 1);
            }
        }
        if (idx <= s->n_hist && s->hist[idx - 1].term != t0) {
            fail(s, "log at %" PRIu64 " has term %" PRIu64 ", history %" PRIu64, idx, t0,
                 s->hist[idx - 1].term);
        }
    }
}

/* Stops the faults, restarts everyone, and proposes a probe write (again,
 * as a client retries, until it commits); done once every node applied the
 * whole history and nothing is in flight. */
static void converge(struct sim *s)
{
    s->calm = true;
    size_t probe = SIZE_MAX;
    for (int i = 0; i < CALM_STEPS_MAX; i++) {
        struct node *ld = leader(s);
        if (ld != NULL && probe == SIZE_MAX && s->n_props < PROPS_MAX) {
            probe = s->n_props;
            propose_new(s, ld);
        } else if (ld != NULL && probe != SIZE_MAX && !s->props[probe].committed && i % 40 == 0) {
            propose_cmd(s, ld, &s->props[probe].cmd);
        }
        if (ld != NULL && i % 10 == 0) {
            restore_members(s, ld);
        }
        step(s);
        bool done = probe != SIZE_MAX && s->props[probe].committed;
        for (int k = 0; k < NODES && done; k++) {
            struct node *nd = &s->nodes[k];
            struct raft_conf_state cs, all = initial_conf();
            if (nd->up) {
                raft_conf(nd->r, &cs);
            }
            done = nd->up && node_fsm_applied_index(nd->fsm) == s->n_hist &&
                   conf_bits(&cs) == conf_bits(&all);
        }
        if (done) {
            return;
        }
    }
    for (int k = 0; k < NODES; k++) {
        struct node *nd = &s->nodes[k];
        struct raft_status st;
        if (!nd->up) {
            fprintf(stderr, "  node %" PRIu64 " down\n", nd->id);
            continue;
        }
        raft_status(nd->r, &st);
        fprintf(stderr,
                "  node %" PRIu64 " role=%u term=%" PRIu64 " leader=%" PRIu64 " commit=%" PRIu64
                " applied=%" PRIu64 " fsm=%" PRIu64 " first=%" PRIu64 " last=%" PRIu64 "\n",
                nd->id, st.role, st.term, st.leader, st.commit, st.applied,
                node_fsm_applied_index(nd->fsm), st.first_index, st.last_index);
    }
    fprintf(stderr, "  in flight %zu, probe %s\n", s->n_net,
            probe != SIZE_MAX && s->props[probe].committed ? "committed" : "not committed");
    fail(s, "liveness: no convergence in %d calm steps (history %zu)", CALM_STEPS_MAX, s->n_hist);
}

static void run_seed(uint64_t seed, uint64_t steps, enum wal_sync sync, uint64_t *stats)
{
    static struct sim sim;
    struct sim *s = &sim;
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->steps = steps;
    s->sync = sync;
    kv_rng_seed(&s->rng, seed);
    s->drop_pct = (uint32_t)kv_rng_below(&s->rng, 20);
    s->crashes = &stats[0];
    s->snapshots = &stats[1];
    s->compactions = &stats[2];
    s->writes = &stats[3];
    s->retries = &stats[4];
    wal_batch_init(&s->batch);
    char errmsg[KV_ERRMSG_SIZE];
    for (int i = 0; i < NODES; i++) {
        struct node *nd = &s->nodes[i];
        nd->id = (uint64_t)i + 1;
        snprintf(nd->dir, sizeof nd->dir, "/tmp/logstore-itest-%d-XXXXXX", (int)getpid());
        if (mkdtemp(nd->dir) == NULL) {
            fail(s, "mkdtemp");
        }
        kv_rng_seed(&nd->rng, seed * 31 + (uint64_t)i);
        struct stor_options o;
        stor_options_init(&o);
        CHECK_OK(s, stor_open("memory", &o, &nd->eng, errmsg));
        node_start(s, nd);
    }
    for (uint64_t i = 0; i < steps; i++) {
        step(s);
    }
    converge(s);
    check_final(s);
    for (int i = 0; i < NODES; i++) {
        struct node *nd = &s->nodes[i];
        node_crash(s, nd);
        (*s->crashes)--; /* not a fault */
        stor_close(nd->eng);
        rm_dir(nd->dir);
    }
    while (s->n_net > 0) {
        net_remove(s, 0);
    }
    for (size_t i = 0; i < s->n_props; i++) {
        kv_buf_close(&s->props[i].cmd);
    }
    wal_batch_close(&s->batch);
    free(s->hist);
    free(s->leader_of_term);
    stats[5] += s->n_hist;
    stats[6] += s->n_confs;
}

int main(int argc, char **argv)
{
    uint64_t seeds = 40, start = 1, steps = 1500, sync_seeds = 5;
    const char *log_level = "error";
    for (int i = 1; i + 1 < argc; i += 2) {
        uint64_t v = strtoull(argv[i + 1], NULL, 10);
        if (strcmp(argv[i], "--log") == 0) {
            log_level = argv[i + 1];
        } else if (strcmp(argv[i], "--seeds") == 0) {
            seeds = v;
        } else if (strcmp(argv[i], "--start") == 0) {
            start = v;
        } else if (strcmp(argv[i], "--steps") == 0) {
            steps = v;
        } else if (strcmp(argv[i], "--sync-seeds") == 0) {
            sync_seeds = v;
        } else {
            fprintf(
                stderr,
                "usage: %s [--seeds N] [--start S] [--steps K] [--sync-seeds M] [--log LEVEL]\n",
                argv[0]);
            return 2;
        }
    }
    if (kv_log_set_level_name(log_level) != KV_OK) {
        return 2;
    }
    uint64_t stats[7] = {0};
    for (uint64_t k = 0; k < seeds; k++) {
        enum wal_sync sync = k < sync_seeds ? WAL_SYNC_ALWAYS : WAL_SYNC_NONE;
        run_seed(start + k, steps, sync, stats);
    }
    printf("ok: %" PRIu64 " seeds x %" PRIu64 " steps: %" PRIu64 " crashes, %" PRIu64
           " snapshot installs, %" PRIu64 " compactions, %" PRIu64 " WAL writes, %" PRIu64
           " retried proposals, %" PRIu64 " entries committed (%" PRIu64 " membership changes)\n",
           seeds, steps, stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], stats[6]);
    return 0;
}
