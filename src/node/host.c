/* host.c -- the single-threaded group host: one table of groups, each a
 * Raft core + log store + state machine, driven in loop turns that share
 * one WAL write. The order inside a turn is the one raft.h asks for:
 * persist (all groups, one wal_write), send, apply, advance.
 *
 * Proposals are tracked by (index, term) of the entry the core appended in
 * this node's log: the same index committing with another term means the
 * entry was overwritten by another leader, so the proposal failed. */
#include "host.h"

#include <inttypes.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "logstore.h"
#include "stor.h"
#include "wal.h"

/* Committed entries one ready carries at most (the core's bound). */
#define HOST_APPLY_MAX RAFT_BATCH_ENTRIES_MAX

struct pending {
    uint64_t index; /* entry index in this node's log */
    uint64_t term;  /* term the entry was proposed in */
    node_host_done_cb done_cb;
    void *data;
};

struct group {
    uint64_t id;
    struct raft *r;
    struct node_logstore *ls;
    struct node_fsm *fsm;
    struct raft_ready rd; /* taken this turn when has_rd */
    bool has_rd;
    bool compact_staged;                           /* a compaction rides in this turn's batch */
    uint64_t compact_index;                        /* its index */
    struct pending pending[NODE_HOST_PENDING_MAX]; /* ascending index */
    size_t n_pending;
    uint64_t lost;    /* proposals failed with KV_ENOTLEADER after acceptance */
    uint64_t expired; /* proposals failed with KV_ECANCELED on a term change */
};

struct node_host {
    struct node_host_options o;
    struct group **groups; /* NODE_HOST_GROUPS_MAX slots, n_groups used */
    size_t n_groups;
    struct wal_batch batch;           /* shared by all groups of a turn */
    struct node_fsm_entry *apply_buf; /* HOST_APPLY_MAX scratch entries */
    int failed;                       /* sticky error, KV_OK while healthy */
    struct node_host_stats stats;
};

void node_host_options_init(struct node_host_options *o)
{
    memset(o, 0, sizeof *o);
    o->compact_entries = NODE_HOST_COMPACT_ENTRIES_DEFAULT;
    o->compact_keep_entries = NODE_HOST_COMPACT_KEEP_DEFAULT;
}

int node_host_new(const struct node_host_options *o, struct node_host **out)
{
    KV_ASSERT(o != NULL && out != NULL);
    if (o->node_id == 0 || o->wal == NULL || o->engine == NULL || o->rng == NULL ||
        o->send_cb == NULL) {
        return KV_EINVAL;
    }
    struct node_host *h = kv_calloc(1, sizeof *h);
    if (h == NULL) {
        goto err_host;
    }
    h->o = *o;
    if (h->o.compact_entries == 0) {
        h->o.compact_entries = NODE_HOST_COMPACT_ENTRIES_DEFAULT;
    }
    if (h->o.compact_keep_entries == 0) {
        h->o.compact_keep_entries = NODE_HOST_COMPACT_KEEP_DEFAULT;
    }
    h->groups = kv_calloc(NODE_HOST_GROUPS_MAX, sizeof *h->groups);
    if (h->groups == NULL) {
        goto err_groups;
    }
    h->apply_buf = kv_calloc(HOST_APPLY_MAX, sizeof *h->apply_buf);
    if (h->apply_buf == NULL) {
        goto err_apply;
    }
    wal_batch_init(&h->batch);
    *out = h;
    return KV_OK;
err_apply:
    kv_free(h->groups);
err_groups:
    kv_free(h);
err_host:
    return KV_ENOMEM;
}

/* Completes and removes the first `n` pending proposals with `status`. */
static void pending_fail(struct group *g, size_t n, int status)
{
    KV_ASSERT(n <= g->n_pending);
    for (size_t i = 0; i < n; i++) {
        g->pending[i].done_cb(g->pending[i].data, status, NULL);
    }
    memmove(g->pending, g->pending + n, (g->n_pending - n) * sizeof g->pending[0]);
    g->n_pending -= n;
}

static void group_free(struct group *g)
{
    pending_fail(g, g->n_pending, KV_ECANCELED);
    /* raft_free drops an unadvanced ready. */
    raft_free(g->r);
    node_logstore_free(g->ls);
    node_fsm_free(g->fsm);
    kv_free(g);
}

void node_host_free(struct node_host *h)
{
    if (h == NULL) {
        return;
    }
    for (size_t i = 0; i < h->n_groups; i++) {
        group_free(h->groups[i]);
    }
    wal_batch_close(&h->batch);
    kv_free(h->apply_buf);
    kv_free(h->groups);
    kv_free(h);
}

static struct group *find_group(const struct node_host *h, uint64_t id)
{
    for (size_t i = 0; i < h->n_groups; i++) {
        if (h->groups[i]->id == id) {
            return h->groups[i];
        }
    }
    return NULL;
}

static int open_core(struct node_host *h, struct group *g, const uint64_t *voters, size_t n_voters)
{
    struct raft_snapshot_meta snap;
    node_logstore_snapshot_meta(g->ls, &snap);
    if (node_fsm_applied_index(g->fsm) < snap.index) {
        kv_error("msg=\"state machine behind its snapshot\" node=%" PRIu64 " group=%" PRIu64
                 " applied=%" PRIu64 " snapshot=%" PRIu64,
                 h->o.node_id, g->id, node_fsm_applied_index(g->fsm), snap.index);
        return KV_ECORRUPT;
    }
    struct raft_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.id = h->o.node_id;
    cfg.group_id = g->id;
    cfg.store = node_logstore_store(g->ls);
    cfg.rng = h->o.rng;
    cfg.initial_conf.n_voters = (uint32_t)n_voters;
    memcpy(cfg.initial_conf.voters, voters, n_voters * sizeof voters[0]);
    /* The core re-delivers committed entries from the snapshot on, so it
     * re-derives membership from them; the fsm skips what it already
     * applied (its applied index is stored with the data). */
    cfg.applied = snap.index;
    cfg.election_ticks = h->o.election_ticks;
    cfg.heartbeat_ticks = h->o.heartbeat_ticks;
    cfg.pre_vote = h->o.pre_vote;
    cfg.check_quorum = h->o.check_quorum;
    cfg.msg_bytes_max = h->o.msg_bytes_max;
    cfg.inflight_max = h->o.inflight_max;
    cfg.forward_proposals = false;
    raft_config_defaults(&cfg);
    return raft_new(&cfg, &g->r);
}

int node_host_add_group(struct node_host *h, uint64_t group_id, const uint64_t *voters,
                        size_t n_voters)
{
    if (h->failed != KV_OK) {
        return h->failed;
    }
    if (group_id == 0 || group_id >= NODE_LOGSTORE_META_BIT || n_voters == 0 ||
        n_voters > RAFT_MEMBERS_MAX) {
        return KV_EINVAL;
    }
    if (find_group(h, group_id) != NULL) {
        return KV_EEXIST;
    }
    if (h->n_groups == NODE_HOST_GROUPS_MAX) {
        return KV_EBUSY;
    }
    struct group *g = kv_calloc(1, sizeof *g);
    if (g == NULL) {
        return KV_ENOMEM;
    }
    g->id = group_id;
    int rc = node_logstore_new(h->o.wal, group_id, &g->ls);
    if (rc != KV_OK) {
        goto err_ls;
    }
    rc = node_fsm_new(h->o.engine, group_id, &g->fsm);
    if (rc != KV_OK) {
        goto err_fsm;
    }
    rc = open_core(h, g, voters, n_voters);
    if (rc != KV_OK) {
        goto err_core;
    }
    h->groups[h->n_groups++] = g;
    return KV_OK;
err_core:
    node_fsm_free(g->fsm);
err_fsm:
    node_logstore_free(g->ls);
err_ls:
    kv_free(g);
    return rc;
}

void node_host_tick(struct node_host *h)
{
    if (h->failed != KV_OK) {
        return;
    }
    for (size_t i = 0; i < h->n_groups; i++) {
        raft_tick(h->groups[i]->r);
    }
}

/* Cheap checks for what the core asserts on or trusts: a message from the
 * network must not crash the node. Returns a reason, NULL when fine. */
static const char *msg_invalid(const struct node_host *h, const struct raft_msg *m)
{
    if (m->type == RAFT_MSG_NONE || m->type > RAFT_MSG_TRANSFER_LEADER) {
        return "unknown type";
    }
    if (m->to != h->o.node_id || m->from == 0 || m->from == m->to) {
        return "bad addressing";
    }
    if ((m->n_entries > 0 && m->entries == NULL) || m->n_entries > RAFT_BATCH_ENTRIES_MAX) {
        return "bad entries";
    }
    if (m->context_size > RAFT_CONTEXT_BYTES_MAX || (m->context_size > 0 && m->context == NULL)) {
        return "bad context";
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if ((e->size > 0 && e->data == NULL) || e->size > WAL_ENTRY_BYTES_MAX) {
            return "bad entry payload";
        }
        if (m->type == RAFT_MSG_APPEND &&
            (e->index != m->index + 1 + i || e->term > m->term || e->term == 0)) {
            return "entries not consecutive";
        }
    }
    if (m->snap.conf.n_voters > RAFT_MEMBERS_MAX || m->snap.conf.n_learners > RAFT_MEMBERS_MAX) {
        return "bad membership";
    }
    return NULL;
}

int node_host_step(struct node_host *h, const struct raft_msg *m)
{
    if (h->failed != KV_OK) {
        return h->failed;
    }
    struct group *g = find_group(h, m->group_id);
    if (g == NULL) {
        return KV_EWRONGGROUP;
    }
    const char *why = msg_invalid(h, m);
    if (why != NULL) {
        h->stats.dropped++;
        kv_warn("msg=\"dropped malformed message\" node=%" PRIu64 " group=%" PRIu64 " from=%" PRIu64
                " type=%u reason=\"%s\"",
                h->o.node_id, m->group_id, m->from, m->type, why);
        return KV_EINVAL;
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        /* This cut moves no state machine data: a snapshot the core would
         * install without its data would corrupt the replica. */
        h->stats.dropped++;
        kv_warn("msg=\"snapshot dropped (unsupported)\" node=%" PRIu64 " group=%" PRIu64
                " from=%" PRIu64 " index=%" PRIu64,
                h->o.node_id, m->group_id, m->from, m->snap.index);
        return KV_EUNSUPPORTED;
    }
    return raft_step(g->r, m);
}

int node_host_propose(struct node_host *h, uint64_t group_id, const void *cmd, size_t size,
                      uint64_t *leader_hint, node_host_done_cb done_cb, void *data)
{
    KV_ASSERT(done_cb != NULL && leader_hint != NULL);
    *leader_hint = 0;
    if (h->failed != KV_OK) {
        return h->failed;
    }
    struct group *g = find_group(h, group_id);
    if (g == NULL) {
        return KV_EWRONGGROUP;
    }
    if (g->n_pending == NODE_HOST_PENDING_MAX) {
        return KV_EBUSY;
    }
    int rc = raft_propose(g->r, cmd, size, leader_hint);
    if (rc != KV_OK) {
        return rc;
    }
    struct raft_status st;
    raft_status(g->r, &st);
    KV_ASSERT(st.role == RAFT_LEADER);
    /* Pending entries at or past the new one were cut from this log when
     * another leader's entries replaced them: they failed. */
    size_t keep = g->n_pending;
    while (keep > 0 && g->pending[keep - 1].index >= st.last_index) {
        keep--;
    }
    for (size_t i = keep; i < g->n_pending; i++) {
        g->pending[i].done_cb(g->pending[i].data, KV_ENOTLEADER, NULL);
        g->lost++;
    }
    g->n_pending = keep;
    g->pending[g->n_pending++] =
        (struct pending){.index = st.last_index, .term = st.term, .done_cb = done_cb, .data = data};
    return KV_OK;
}

/* Fails pending proposals whose entries `ents` (ascending, consecutive)
 * show were replaced by another term or passed over. */
static void pending_check(struct group *g, const struct raft_entry *ents, size_t n)
{
    if (n == 0) {
        return;
    }
    uint64_t lo = ents[0].index, hi = ents[n - 1].index;
    size_t i = 0;
    while (i < g->n_pending) {
        struct pending *p = &g->pending[i];
        if (p->index > hi) {
            break;
        }
        if (p->index >= lo && ents[p->index - lo].term == p->term) {
            i++;
            continue;
        }
        if (p->index < lo) {
            i++; /* not covered by these entries */
            continue;
        }
        p->done_cb(p->data, KV_ENOTLEADER, NULL);
        g->lost++;
        memmove(p, p + 1, (g->n_pending - i - 1) * sizeof *p);
        g->n_pending--;
    }
}

static void apply_result_cb(void *data, uint64_t index, const struct node_cmd_result *res)
{
    struct group *g = data;
    if (g->n_pending > 0 && g->pending[0].index == index) {
        struct pending p = g->pending[0];
        memmove(g->pending, g->pending + 1, (g->n_pending - 1) * sizeof p);
        g->n_pending--;
        p.done_cb(p.data, KV_OK, res);
    }
}

static int apply_group(struct node_host *h, struct group *g)
{
    const struct raft_ready *rd = &g->rd;
    if (rd->n_committed == 0) {
        return KV_OK;
    }
    KV_ASSERT(rd->n_committed <= HOST_APPLY_MAX);
    pending_check(g, rd->committed, rd->n_committed);
    for (size_t i = 0; i < rd->n_committed; i++) {
        const struct raft_entry *e = &rd->committed[i];
        h->apply_buf[i] = (struct node_fsm_entry){
            .index = e->index,
            .term = e->term,
            .is_command = e->type == RAFT_ENTRY_NORMAL && e->size > 0,
            .data = e->data,
            .size = e->size,
        };
    }
    int rc = node_fsm_apply(g->fsm, h->apply_buf, rd->n_committed, apply_result_cb, g);
    if (rc != KV_OK) {
        kv_error("msg=\"apply failed\" node=%" PRIu64 " group=%" PRIu64 " err=%s", h->o.node_id,
                 g->id, kv_strerror(rc));
        return rc;
    }
    h->stats.applied += rd->n_committed;
    /* Anything left at or below the last applied index got no result (an
     * entry the fsm skipped as already applied): its outcome is unknown
     * here, so answer "retry with the same seq" rather than hang. */
    uint64_t last = rd->committed[rd->n_committed - 1].index;
    size_t n = 0;
    while (n < g->n_pending && g->pending[n].index <= last) {
        n++;
    }
    g->expired += n;
    pending_fail(g, n, KV_ECANCELED);
    return KV_OK;
}

/* Fails proposals of terms before the current one with KV_ECANCELED:
 * leadership changed, so their outcome is unknown (an entry may still
 * commit under the new leader, or sit in this log's stale tail that no new
 * leader overwrites until it appends that far). The client retries with
 * the same (client, seq) and the session table answers a committed one. */
static void pending_expire(struct group *g)
{
    struct raft_status st;
    raft_status(g->r, &st);
    size_t n = 0;
    while (n < g->n_pending && g->pending[n].term < st.term) {
        n++;
    }
    g->expired += n;
    pending_fail(g, n, KV_ECANCELED);
}

/* Stages a due compaction of a group with no ready this turn (the log
 * store takes one stage or compaction per group per batch). It keeps the
 * last compact_keep_entries applied entries so that a follower a little
 * behind catches up from the log: this cut cannot send snapshots. The
 * membership recorded is the current one, right while the host offers no
 * membership changes (raft_conf is the latest appended configuration). */
static int stage_compaction(struct node_host *h, struct group *g)
{
    struct raft_snapshot_meta snap;
    node_logstore_snapshot_meta(g->ls, &snap);
    struct raft_status rs;
    raft_status(g->r, &rs);
    uint64_t applied = node_fsm_applied_index(g->fsm);
    if (rs.applied < applied) {
        applied = rs.applied;
    }
    uint64_t keep = h->o.compact_keep_entries;
    if (applied <= snap.index + h->o.compact_entries + keep) {
        return KV_OK;
    }
    uint64_t index = applied - keep;
    struct raft_log_store *st = node_logstore_store(g->ls);
    if (index > st->last_index(st->data)) {
        return KV_OK;
    }
    struct raft_conf_state cs;
    raft_conf(g->r, &cs);
    int rc = node_logstore_compact(g->ls, index, &cs, &h->batch);
    if (rc != KV_OK) {
        return rc;
    }
    g->compact_staged = true;
    g->compact_index = index;
    return KV_OK;
}

/* Takes and stages every group's ready. */
static int stage_all(struct node_host *h, bool *work, bool *durable)
{
    for (size_t i = 0; i < h->n_groups; i++) {
        struct group *g = h->groups[i];
        if (!raft_has_ready(g->r)) {
            int rc = stage_compaction(h, g);
            if (rc != KV_OK) {
                return rc;
            }
            *work = *work || g->compact_staged;
            *durable = *durable || g->compact_staged;
            h->stats.staged += g->compact_staged;
            continue;
        }
        int rc = raft_ready(g->r, &g->rd);
        if (rc != KV_OK) {
            return rc;
        }
        g->has_rd = true;
        *work = true;
        if (g->rd.has_snapshot) {
            return KV_EUNSUPPORTED;
        }
        /* A ready with only messages or committed entries has nothing to
         * persist: the turn skips the write (and its fsync). */
        bool persist = g->rd.has_hard_state || g->rd.n_entries > 0;
        *durable = *durable || persist;
        h->stats.staged += persist;
        pending_check(g, g->rd.entries, g->rd.n_entries);
        rc = node_logstore_stage(g->ls, &g->rd, &h->batch);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

/* After the one write: tell each store, send, apply, advance. */
static int finish_all(struct node_host *h)
{
    for (size_t i = 0; i < h->n_groups; i++) {
        struct group *g = h->groups[i];
        if (g->compact_staged) {
            int rc = node_logstore_written(g->ls, NULL);
            if (rc != KV_OK) {
                return rc;
            }
            raft_compacted(g->r, g->compact_index);
            g->compact_staged = false;
            h->stats.compactions++;
        }
        if (g->has_rd) {
            int rc = node_logstore_written(g->ls, &g->rd);
            if (rc != KV_OK) {
                return rc;
            }
        }
    }
    for (size_t i = 0; i < h->n_groups; i++) {
        struct group *g = h->groups[i];
        for (size_t k = 0; g->has_rd && k < g->rd.n_msgs; k++) {
            h->o.send_cb(h->o.send_data, &g->rd.msgs[k]);
        }
    }
    for (size_t i = 0; i < h->n_groups; i++) {
        struct group *g = h->groups[i];
        if (!g->has_rd) {
            continue;
        }
        int rc = apply_group(h, g);
        if (rc != KV_OK) {
            return rc;
        }
        raft_advance(g->r, &g->rd);
        g->has_rd = false;
        pending_expire(g);
    }
    return KV_OK;
}

int node_host_run(struct node_host *h)
{
    if (h->failed != KV_OK) {
        return h->failed;
    }
    bool work = false, durable = false;
    wal_batch_clear(&h->batch);
    int rc = stage_all(h, &work, &durable);
    if (rc != KV_OK) {
        goto err;
    }
    if (!work) {
        return KV_OK;
    }
    h->stats.turns++;
    if (durable) {
        rc = wal_write(h->o.wal, &h->batch);
        if (rc != KV_OK) {
            kv_error("msg=\"wal write failed, host stops\" node=%" PRIu64 " err=%s detail=\"%s\"",
                     h->o.node_id, kv_strerror(rc), wal_errmsg(h->o.wal));
            goto err;
        }
        h->stats.wal_writes++;
    }
    rc = finish_all(h);
    if (rc != KV_OK) {
        goto err;
    }
    return KV_OK;
err:
    /* Sticky: readies taken stay unadvanced (raft_free drops them) and the
     * node must restart from disk. */
    h->failed = rc;
    return rc;
}

int node_host_group_status(const struct node_host *h, uint64_t group_id,
                           struct node_host_group_status *out)
{
    struct group *g = find_group(h, group_id);
    if (g == NULL) {
        return KV_EWRONGGROUP;
    }
    struct raft_status st;
    raft_status(g->r, &st);
    *out = (struct node_host_group_status){
        .role = st.role,
        .term = st.term,
        .leader = st.leader,
        .commit = st.commit,
        .applied = node_fsm_applied_index(g->fsm),
        .first_index = st.first_index,
        .pending = g->n_pending,
    };
    return KV_OK;
}

int node_host_get(struct node_host *h, uint64_t group_id, const void *key, size_t key_size,
                  struct kv_buf *value)
{
    struct group *g = find_group(h, group_id);
    if (g == NULL) {
        return KV_EWRONGGROUP;
    }
    return node_fsm_get(g->fsm, NULL, key, key_size, value);
}

void node_host_stats(const struct node_host *h, struct node_host_stats *out)
{
    *out = h->stats;
    out->lost = 0;
    out->expired = 0;
    for (size_t i = 0; i < h->n_groups; i++) {
        out->lost += h->groups[i]->lost;
        out->expired += h->groups[i]->expired;
    }
}
