/* test_host.c -- node_host end to end: 3 hosts (nodes), each with its own
 * WAL directory and memory engine, 3 Raft groups on every host, messages
 * through an in-memory queue with seeded random drops. Clients propose
 * INCRBY commands (client id + seq, retried with the same seq until
 * acknowledged) to the host their last hint named; hosts restart at random
 * moments (host freed, WAL closed and reopened, the memory engine kept as
 * the state machine's "disk").
 *
 * Checks at the end of each seed, after a calm phase without drops:
 *  - every group's counter, on every host, equals the number of
 *    acknowledged proposals of that group (exactly once: a retry that had
 *    committed is answered from the session table, not applied again);
 *  - every host applied the same index in each group;
 *  - each host incarnation wrote the WAL exactly once per work turn
 *    (wal_stats batches and writes against the host's turn count).
 * Partitions isolate one host for a while, so a stale leader accepts
 * proposals that a new leader overwrites; they must fail, not be answered
 * with another command's result.
 * A WAL write failure stops the host with a sticky error.
 * Also: a malformed message is dropped with KV_EINVAL, an unknown group
 * answers KV_EWRONGGROUP.
 *
 * Usage: test_host [--seeds N] [--start S] [--steps K] [--log LEVEL] */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "alloc.h"
#include "fsm.h"
#include "host.h"
#include "log.h"
#include "raft.h"
#include "rng.h"
#include "stor.h"
#include "wal.h"

#define HOSTS               3
#define GROUPS              3
#define CLIENTS_PER_GROUP   3
#define CLIENTS             (GROUPS * CLIENTS_PER_GROUP)
#define NET_MAX             4096 /* messages in flight */
#define DELIVER_PER_STEP    24   /* deliveries tried per step */
#define CALM_STEPS_MAX      3000 /* steps allowed to converge at the end */
#define DOWN_STEPS_MAX      10   /* steps a restarted host stays down */
#define PARTITION_STEPS_MIN 20   /* a partition lasts 20..39 steps */

struct client {
    uint64_t id;
    uint64_t group;
    uint64_t seq;    /* current request; acknowledged ones are below */
    bool in_flight;  /* done_cb pending */
    bool unacked;    /* seq issued but not acknowledged yet */
    uint64_t target; /* host to try next (1-based) */
    uint64_t acked;  /* acknowledged requests */
    uint64_t dups;   /* acknowledgements answered from the session table */
    struct sim *s;
};

struct host {
    uint64_t id;
    char dir[64];
    struct stor_engine *eng; /* survives restarts: the state machine's disk */
    struct wal *w;
    struct node_host *h; /* NULL while down */
    struct kv_rng rng;
    uint64_t down_until;
    struct wal_stats base; /* WAL counters when this incarnation started */
};

struct sim {
    uint64_t seed;
    struct kv_rng rng;
    uint32_t drop_pct;
    uint64_t step;
    bool calm;
    uint64_t isolated;       /* host cut off from the others, 0: none */
    uint64_t isolated_until; /* step the partition heals */
    struct host hosts[HOSTS];
    struct raft_msg net[NET_MAX];
    size_t n_net;
    struct client clients[CLIENTS];
    uint64_t restarts, unsupported, turns, writes, compactions, staged, lost, expired;
};

static void fail(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL seed %" PRIu64 " step %" PRIu64 ": ", s->seed, s->step);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  replay: test_host --start %" PRIu64 " --seeds 1\n", s->seed);
    exit(1);
}

#define CHECK_OK(s, expr)                                                                          \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != KV_OK) {                                                                        \
            fail((s), "%s: %s", #expr, kv_strerror(rc_));                                          \
        }                                                                                          \
    } while (0)

static bool pct(struct sim *s, uint32_t p)
{
    return kv_rng_below(&s->rng, 100) < p;
}

static void send_cb(void *data, const struct raft_msg *m)
{
    struct sim *s = data;
    if (s->n_net == NET_MAX) {
        return; /* full: lost */
    }
    CHECK_OK(s, raft_msg_copy(&s->net[s->n_net], m));
    s->n_net++;
}

static void net_remove(struct sim *s, size_t i)
{
    raft_msg_clear(&s->net[i]);
    s->net[i] = s->net[s->n_net - 1];
    memset(&s->net[s->n_net - 1], 0, sizeof s->net[0]);
    s->n_net--;
}

/* ---- host lifecycle ---- */

static void host_start(struct sim *s, struct host *hs)
{
    struct wal_options wo;
    char errmsg[KV_ERRMSG_SIZE];
    wal_options_init(&wo, hs->dir);
    wo.sync = WAL_SYNC_NONE; /* a process crash: the page cache survives */
    CHECK_OK(s, wal_open(&wo, &hs->w, errmsg));
    struct node_host_options o;
    node_host_options_init(&o);
    o.node_id = hs->id;
    o.wal = hs->w;
    o.engine = hs->eng;
    o.rng = &hs->rng;
    o.election_ticks = 10;
    o.heartbeat_ticks = 2;
    o.pre_vote = (s->seed & 1) != 0;
    o.check_quorum = (s->seed & 2) != 0;
    o.msg_bytes_max = 512;
    o.inflight_max = 8;
    o.compact_entries = 40;
    o.compact_keep_entries = 200;
    o.send_cb = send_cb;
    o.send_data = s;
    CHECK_OK(s, node_host_new(&o, &hs->h));
    uint64_t voters[HOSTS];
    for (int i = 0; i < HOSTS; i++) {
        voters[i] = (uint64_t)i + 1;
    }
    for (uint64_t g = 1; g <= GROUPS; g++) {
        CHECK_OK(s, node_host_add_group(hs->h, g, voters, HOSTS));
    }
    wal_stats(hs->w, &hs->base);
}

/* Frees the host, checking this incarnation wrote the WAL once per turn. */
static void host_stop(struct sim *s, struct host *hs)
{
    struct node_host_stats st;
    struct wal_stats ws;
    node_host_stats(hs->h, &st);
    wal_stats(hs->w, &ws);
    uint64_t batches = ws.batches - hs->base.batches, writes = ws.writes - hs->base.writes;
    if (st.wal_writes > st.turns || batches != st.wal_writes || writes != st.wal_writes) {
        fail(s,
             "host %" PRIu64 ": %" PRIu64 " turns but %" PRIu64 " host writes, %" PRIu64
             " WAL batches, %" PRIu64 " WAL pwrites",
             hs->id, st.turns, st.wal_writes, batches, writes);
    }
    s->turns += st.turns;
    s->staged += st.staged;
    s->lost += st.lost;
    s->expired += st.expired;
    s->writes += writes;
    s->compactions += st.compactions;
    node_host_free(hs->h); /* pending proposals complete with KV_ECANCELED */
    hs->h = NULL;
    wal_close(hs->w);
    hs->w = NULL;
}

/* ---- clients ---- */

static void done_cb(void *data, int status, const struct node_cmd_result *res)
{
    struct client *c = data;
    struct sim *s = c->s;
    if (!c->in_flight) {
        fail(s, "client %" PRIu64 " completed twice", c->id);
    }
    c->in_flight = false;
    if (status != KV_OK) {
        if (status != KV_ENOTLEADER && status != KV_ECANCELED) {
            fail(s, "client %" PRIu64 " unexpected status %s", c->id, kv_strerror(status));
        }
        return; /* retry the same seq */
    }
    if (res->n_results != 1 || res->results[0].kind != NODE_RES_INT ||
        res->results[0].integer < 1) {
        fail(s, "client %" PRIu64 " bad INCRBY result (n=%zu kind=%u)", c->id, res->n_results,
             res->n_results > 0 ? res->results[0].kind : 0);
    }
    c->dups += res->duplicate != 0;
    c->acked++;
    c->seq++;
    c->unacked = false;
}

static void client_issue(struct sim *s, struct client *c)
{
    struct host *hs = &s->hosts[c->target - 1];
    if (hs->h == NULL) {
        c->target = 1 + kv_rng_below(&s->rng, HOSTS);
        return;
    }
    struct node_op op = {
        .type = NODE_OP_INCRBY, .key = (const uint8_t *)"ctr", .key_size = 3, .delta = 1};
    struct node_cmd cmd = {
        .client_id = c->id, .seq = c->seq, .ack_seq = c->seq - 1, .ops = &op, .n_ops = 1};
    struct kv_buf b;
    kv_buf_init(&b);
    CHECK_OK(s, node_cmd_encode(&cmd, &b));
    uint64_t hint = 0;
    c->in_flight = true;
    int rc = node_host_propose(hs->h, c->group, b.data, b.size, &hint, done_cb, c);
    kv_buf_close(&b);
    if (rc == KV_OK) {
        c->unacked = true;
        return;
    }
    c->in_flight = false;
    if (rc != KV_ENOTLEADER && rc != KV_EBUSY) {
        fail(s, "propose: %s", kv_strerror(rc));
    }
    c->target = hint != 0 ? hint : 1 + kv_rng_below(&s->rng, HOSTS);
}

/* ---- the loop ---- */

static void deliver(struct sim *s)
{
    for (int k = 0; k < DELIVER_PER_STEP && s->n_net > 0; k++) {
        size_t i = kv_rng_below(&s->rng, s->n_net);
        struct raft_msg m = s->net[i];
        memset(&s->net[i], 0, sizeof s->net[i]);
        net_remove(s, i);
        struct host *to = &s->hosts[m.to - 1];
        bool cut = s->isolated != 0 && (m.to == s->isolated || m.from == s->isolated);
        if (to->h != NULL && !cut && !(!s->calm && pct(s, s->drop_pct))) {
            int rc = node_host_step(to->h, &m);
            if (rc == KV_EUNSUPPORTED) {
                s->unsupported++;
            } else if (rc != KV_OK) {
                fail(s, "step to %" PRIu64 ": %s", to->id, kv_strerror(rc));
            }
        }
        raft_msg_clear(&m);
    }
}

static void step(struct sim *s)
{
    for (int i = 0; i < HOSTS; i++) {
        struct host *hs = &s->hosts[i];
        if (hs->h == NULL && s->step >= hs->down_until) {
            host_start(s, hs);
        }
        if (hs->h != NULL) {
            node_host_tick(hs->h);
        }
    }
    deliver(s);
    for (int i = 0; i < CLIENTS; i++) {
        struct client *c = &s->clients[i];
        if (!c->in_flight && (c->unacked || !s->calm) && pct(s, 30)) {
            client_issue(s, c);
        }
    }
    for (int i = 0; i < HOSTS; i++) {
        struct host *hs = &s->hosts[i];
        if (hs->h != NULL) {
            CHECK_OK(s, node_host_run(hs->h));
        }
    }
    if (s->isolated != 0 && (s->calm || s->step >= s->isolated_until)) {
        s->isolated = 0;
    }
    if (!s->calm && s->isolated == 0 && pct(s, 1)) {
        /* A partitioned leader keeps accepting proposals (unless
         * CheckQuorum steps it down) that the majority's new leader then
         * overwrites: the lost-proposal path. */
        s->isolated = 1 + kv_rng_below(&s->rng, HOSTS);
        s->isolated_until =
            s->step + PARTITION_STEPS_MIN + kv_rng_below(&s->rng, PARTITION_STEPS_MIN);
    }
    if (!s->calm && pct(s, 1)) {
        struct host *hs = &s->hosts[kv_rng_below(&s->rng, HOSTS)];
        if (hs->h != NULL) {
            host_stop(s, hs);
            hs->down_until = s->step + kv_rng_below(&s->rng, DOWN_STEPS_MAX + 1);
            s->restarts++;
        }
    }
    s->step++;
}

static bool converged(struct sim *s)
{
    for (int i = 0; i < CLIENTS; i++) {
        if (s->clients[i].in_flight || s->clients[i].unacked) {
            return false;
        }
    }
    for (uint64_t g = 1; g <= GROUPS; g++) {
        uint64_t applied = UINT64_MAX;
        for (int i = 0; i < HOSTS; i++) {
            struct node_host_group_status st;
            if (s->hosts[i].h == NULL) {
                return false;
            }
            CHECK_OK(s, node_host_group_status(s->hosts[i].h, g, &st));
            if (st.applied != st.commit || (applied != UINT64_MAX && st.applied != applied)) {
                return false;
            }
            applied = st.applied;
        }
    }
    return true;
}

static void dump(struct sim *s)
{
    for (int i = 0; i < CLIENTS; i++) {
        struct client *c = &s->clients[i];
        fprintf(stderr,
                "  client %" PRIu64 " group %" PRIu64 " seq %" PRIu64
                " in_flight %d unacked %d target %" PRIu64 "\n",
                c->id, c->group, c->seq, c->in_flight, c->unacked, c->target);
    }
    for (int i = 0; i < HOSTS; i++) {
        for (uint64_t g = 1; g <= GROUPS && s->hosts[i].h != NULL; g++) {
            struct node_host_group_status st;
            CHECK_OK(s, node_host_group_status(s->hosts[i].h, g, &st));
            fprintf(stderr,
                    "  host %d group %" PRIu64 " role %u term %" PRIu64 " leader %" PRIu64
                    " commit %" PRIu64 " applied %" PRIu64 " first %" PRIu64 " pending %zu\n",
                    i + 1, g, st.role, st.term, st.leader, st.commit, st.applied, st.first_index,
                    st.pending);
        }
    }
}

static void check_final(struct sim *s)
{
    for (uint64_t g = 1; g <= GROUPS; g++) {
        uint64_t want = 0;
        for (int i = 0; i < CLIENTS; i++) {
            want += s->clients[i].group == g ? s->clients[i].acked : 0;
        }
        for (int i = 0; i < HOSTS; i++) {
            struct kv_buf v;
            kv_buf_init(&v);
            int rc = node_host_get(s->hosts[i].h, g, "ctr", 3, &v);
            uint64_t got = 0;
            if (rc == KV_OK) {
                char tmp[32] = {0};
                memcpy(tmp, v.data, v.size < sizeof tmp - 1 ? v.size : sizeof tmp - 1);
                got = strtoull(tmp, NULL, 10);
            } else if (rc != KV_ENOTFOUND) {
                fail(s, "get: %s", kv_strerror(rc));
            }
            kv_buf_close(&v);
            if (got != want) {
                fail(s, "group %" PRIu64 " host %d counter %" PRIu64 ", acknowledged %" PRIu64, g,
                     i + 1, got, want);
            }
        }
    }
}

static void api_checks(struct sim *s)
{
    struct node_host *h = s->hosts[0].h;
    struct raft_entry e[2] = {{.term = 1, .index = 5}, {.term = 1, .index = 7}};
    struct raft_msg m = {.type = RAFT_MSG_APPEND,
                         .group_id = 1,
                         .from = 2,
                         .to = 1,
                         .term = 1,
                         .index = 4,
                         .entries = e,
                         .n_entries = 2};
    if (node_host_step(h, &m) != KV_EINVAL) {
        fail(s, "non-consecutive APPEND not rejected");
    }
    m.group_id = 99;
    if (node_host_step(h, &m) != KV_EWRONGGROUP) {
        fail(s, "unknown group not rejected");
    }
    uint64_t hint;
    if (node_host_propose(h, 99, "x", 1, &hint, done_cb, NULL) != KV_EWRONGGROUP) {
        fail(s, "propose to unknown group not rejected");
    }
    uint64_t voters[1] = {1};
    if (node_host_add_group(h, 1, voters, 1) != KV_EEXIST) {
        fail(s, "duplicate group not rejected");
    }
}

static void rm_dir(const char *dir);

static void count_cb(void *data, int status, const struct node_cmd_result *res)
{
    (void)res;
    int *st = data;
    *st = status;
}

static void nop_send_cb(void *data, const struct raft_msg *m)
{
    (void)data;
    (void)m;
}

/* A failed WAL write stops the host for good (sticky error), and a
 * proposal pending at that moment completes with KV_ECANCELED when the
 * host is freed. One single-voter group on a WAL whose file layer fails
 * its next pwrite once the group is a leader with a proposal staged. */
static void sticky_wal_error(void)
{
    struct sim *s = &(struct sim){.seed = 0};
    char dir[64], errmsg[KV_ERRMSG_SIZE];
    snprintf(dir, sizeof dir, "/tmp/host-itest-%d-XXXXXX", (int)getpid());
    if (mkdtemp(dir) == NULL) {
        fail(s, "mkdtemp");
    }
    struct wal_fs *fs = wal_fs_fault_new(wal_fs_posix());
    struct wal_options wo;
    wal_options_init(&wo, dir);
    wo.sync = WAL_SYNC_NONE;
    wo.fs = fs;
    struct wal *w;
    struct stor_engine *eng;
    struct stor_options so;
    stor_options_init(&so);
    CHECK_OK(s, stor_open("memory", &so, &eng, errmsg));
    CHECK_OK(s, wal_open(&wo, &w, errmsg));
    struct kv_rng rng;
    kv_rng_seed(&rng, 7);
    struct node_host_options o;
    node_host_options_init(&o);
    o.node_id = 1;
    o.wal = w;
    o.engine = eng;
    o.rng = &rng;
    o.send_cb = nop_send_cb;
    struct node_host *h;
    CHECK_OK(s, node_host_new(&o, &h));
    uint64_t voters[1] = {1};
    CHECK_OK(s, node_host_add_group(h, 1, voters, 1));
    struct node_host_group_status st = {0};
    for (int i = 0; i < 100 && st.role != RAFT_LEADER; i++) {
        node_host_tick(h);
        CHECK_OK(s, node_host_run(h));
        CHECK_OK(s, node_host_group_status(h, 1, &st));
    }
    if (st.role != RAFT_LEADER) {
        fail(s, "single voter never became leader");
    }
    struct node_op op = {
        .type = NODE_OP_INCRBY, .key = (const uint8_t *)"ctr", .key_size = 3, .delta = 1};
    struct node_cmd cmd = {.client_id = 1, .seq = 1, .ops = &op, .n_ops = 1};
    struct kv_buf b;
    kv_buf_init(&b);
    CHECK_OK(s, node_cmd_encode(&cmd, &b));
    uint64_t hint;
    int status = 1;
    CHECK_OK(s, node_host_propose(h, 1, b.data, b.size, &hint, count_cb, &status));
    wal_fs_fault_arm(fs, WAL_FAULT_WRITE_EIO, 0);
    int rc = node_host_run(h);
    if (rc != KV_EIO || node_host_run(h) != KV_EIO ||
        node_host_propose(h, 1, b.data, b.size, &hint, count_cb, &status) != KV_EIO) {
        fail(s, "WAL error not sticky (first run %s)", kv_strerror(rc));
    }
    if (status != 1) {
        fail(s, "proposal completed before the host was freed");
    }
    node_host_free(h);
    if (status != KV_ECANCELED) {
        fail(s, "pending proposal not canceled at free (%d)", status);
    }
    kv_buf_close(&b);
    wal_close(w);
    wal_fs_fault_free(fs);
    stor_close(eng);
    rm_dir(dir);
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *de;
        char path[256];
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static void run_seed(uint64_t seed, uint64_t steps, uint64_t *stats)
{
    static struct sim sim;
    struct sim *s = &sim;
    memset(s, 0, sizeof *s);
    s->seed = seed;
    kv_rng_seed(&s->rng, seed);
    s->drop_pct = (uint32_t)kv_rng_below(&s->rng, 20);
    char errmsg[KV_ERRMSG_SIZE];
    for (int i = 0; i < HOSTS; i++) {
        struct host *hs = &s->hosts[i];
        hs->id = (uint64_t)i + 1;
        snprintf(hs->dir, sizeof hs->dir, "/tmp/host-itest-%d-XXXXXX", (int)getpid());
        if (mkdtemp(hs->dir) == NULL) {
            fail(s, "mkdtemp");
        }
        kv_rng_seed(&hs->rng, seed * 31 + (uint64_t)i);
        struct stor_options so;
        stor_options_init(&so);
        CHECK_OK(s, stor_open("memory", &so, &hs->eng, errmsg));
        host_start(s, hs);
    }
    for (int i = 0; i < CLIENTS; i++) {
        struct client *c = &s->clients[i];
        c->id = (uint64_t)i + 100;
        c->group = 1 + (uint64_t)i % GROUPS;
        c->seq = 1;
        c->target = 1 + kv_rng_below(&s->rng, HOSTS);
        c->s = s;
    }
    api_checks(s);
    for (uint64_t i = 0; i < steps; i++) {
        step(s);
    }
    s->calm = true;
    uint64_t calm_end = s->step + CALM_STEPS_MAX;
    while (!converged(s)) {
        if (s->step == calm_end) {
            dump(s);
            fail(s, "no convergence in %d calm steps", CALM_STEPS_MAX);
        }
        step(s);
    }
    check_final(s);
    for (int i = 0; i < HOSTS; i++) {
        struct host *hs = &s->hosts[i];
        host_stop(s, hs);
        stor_close(hs->eng);
        rm_dir(hs->dir);
    }
    while (s->n_net > 0) {
        net_remove(s, 0);
    }
    uint64_t acked = 0, dups = 0;
    for (int i = 0; i < CLIENTS; i++) {
        acked += s->clients[i].acked;
        dups += s->clients[i].dups;
    }
    stats[0] += s->restarts;
    stats[1] += acked;
    stats[2] += dups;
    stats[3] += s->turns;
    stats[4] += s->writes;
    stats[5] += s->compactions;
    stats[6] += s->unsupported;
    stats[7] += s->staged;
    stats[8] += s->lost;
    stats[9] += s->expired;
}

int main(int argc, char **argv)
{
    uint64_t seeds = 16, start = 1, steps = 3000;
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
        } else {
            fprintf(stderr, "usage: %s [--seeds N] [--start S] [--steps K] [--log LEVEL]\n",
                    argv[0]);
            return 2;
        }
    }
    if (kv_log_set_level_name(log_level) != KV_OK) {
        return 2;
    }
    sticky_wal_error();
    uint64_t stats[10] = {0};
    for (uint64_t k = 0; k < seeds; k++) {
        run_seed(start + k, steps, stats);
    }
    /* The overwritten-proposal path must have run. */
    if (stats[8] == 0) {
        fprintf(stderr, "FAIL: no proposal was lost to an overwrite: the path went untested\n");
        return 1;
    }
    /* Group commit must have happened: more group writes than WAL writes. */
    if (stats[7] <= stats[4]) {
        fprintf(stderr,
                "FAIL: %" PRIu64 " group writes in %" PRIu64 " WAL writes: no group commit\n",
                stats[7], stats[4]);
        return 1;
    }
    printf("ok: %" PRIu64 " seeds x %" PRIu64 " steps: %" PRIu64 " restarts, %" PRIu64
           " acknowledged INCRBY (%" PRIu64 " answered as duplicates), %" PRIu64 " turns, %" PRIu64
           " WAL writes, %" PRIu64 " compactions, %" PRIu64
           " snapshots dropped, %.2f groups per WAL write, %" PRIu64
           " proposals lost to overwrites, %" PRIu64 " expired by term changes\n",
           seeds, steps, stats[0], stats[1], stats[2], stats[3], stats[4], stats[5], stats[6],
           stats[4] > 0 ? (double)stats[7] / (double)stats[4] : 0.0, stats[8], stats[9]);
    return 0;
}
