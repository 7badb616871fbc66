/* bench_raft.c -- `raftkv bench-raft`: measures the Raft core alone, with
 * no I/O: committed entries per second through an in-memory 3-node
 * cluster (16-byte and 4 KB entries), bytes of memory per idle group, and
 * CPU per tick for many idle groups. Messages move between the cores by
 * copying in memory; the log store is the in-memory reference store,
 * compacted as it goes so memory stays flat. */
#include "cmd.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "raft.h"
#include "raft_memlog.h"
#include "rng.h"

#define BENCH_NODES        3
#define BENCH_NET_MAX      4096  /* messages in flight between the cores */
#define BENCH_BATCH        64    /* proposals per loop turn */
#define BENCH_KEEP_ENTRIES 1024  /* log tail kept by compaction */
#define BENCH_IDLE_GROUPS  10000 /* groups in the idle measurements */
#define BENCH_ENTRY_MAX    4096  /* largest entry benchmarked */

struct bench_cluster {
    struct raft *r[BENCH_NODES];
    struct raft_memlog *ml[BENCH_NODES];
    struct kv_rng rng[BENCH_NODES];
    struct raft_msg net[BENCH_NET_MAX];
    size_t n_net;
    uint64_t applied[BENCH_NODES];
};

static int cluster_open(struct bench_cluster *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < BENCH_NODES; i++) {
        if (raft_memlog_new(&c->ml[i]) != KV_OK) {
            return KV_ENOMEM;
        }
        kv_rng_seed(&c->rng[i], (uint64_t)i + 1);
        struct raft_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.id = (uint64_t)i + 1;
        cfg.group_id = 1;
        cfg.store = raft_memlog_store(c->ml[i]);
        cfg.rng = &c->rng[i];
        for (int k = 0; k < BENCH_NODES; k++) {
            cfg.initial_conf.voters[cfg.initial_conf.n_voters++] = (uint64_t)k + 1;
        }
        cfg.inflight_max = 256;
        cfg.uncommitted_bytes_max = 256u << 20;
        int rc = raft_new(&cfg, &c->r[i]);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

static void cluster_close(struct bench_cluster *c)
{
    for (int i = 0; i < BENCH_NODES; i++) {
        raft_free(c->r[i]);
        raft_memlog_free(c->ml[i]);
    }
    for (size_t k = 0; k < c->n_net; k++) {
        raft_msg_clear(&c->net[k]);
    }
}

static int node_ready(struct bench_cluster *c, int i)
{
    while (raft_has_ready(c->r[i])) {
        struct raft_ready rd;
        int rc = raft_ready(c->r[i], &rd);
        if (rc != KV_OK) {
            return rc;
        }
        rc = raft_memlog_persist(c->ml[i], &rd);
        for (size_t k = 0; k < rd.n_msgs && rc == KV_OK; k++) {
            if (c->n_net == BENCH_NET_MAX) {
                continue; /* a lost message; Raft recovers */
            }
            rc = raft_msg_copy(&c->net[c->n_net], &rd.msgs[k]);
            c->n_net += rc == KV_OK;
        }
        if (rd.n_committed > 0) {
            c->applied[i] = rd.committed[rd.n_committed - 1].index;
        }
        raft_advance(c->r[i], &rd);
        if (rc != KV_OK) {
            return rc;
        }
        if (c->applied[i] > 2 * BENCH_KEEP_ENTRIES) {
            struct raft_status st;
            raft_status(c->r[i], &st);
            uint64_t upto = c->applied[i] - BENCH_KEEP_ENTRIES;
            if (upto >= st.first_index + BENCH_KEEP_ENTRIES) {
                struct raft_conf_state cs;
                raft_conf(c->r[i], &cs);
                if (raft_memlog_compact(c->ml[i], upto, &cs) == KV_OK) {
                    raft_compacted(c->r[i], upto);
                }
            }
        }
    }
    return KV_OK;
}

static int pump(struct bench_cluster *c)
{
    for (int round = 0; round < 64; round++) {
        for (int i = 0; i < BENCH_NODES; i++) {
            int rc = node_ready(c, i);
            if (rc != KV_OK) {
                return rc;
            }
        }
        if (c->n_net == 0) {
            return KV_OK;
        }
        size_t n = c->n_net;
        for (size_t k = 0; k < n; k++) {
            struct raft_msg *m = &c->net[k];
            int rc = raft_step(c->r[m->to - 1], m);
            raft_msg_clear(m);
            if (rc != KV_OK) {
                return rc;
            }
        }
        memmove(c->net, c->net + n, (c->n_net - n) * sizeof c->net[0]);
        c->n_net -= n;
    }
    return KV_OK;
}

static int bench_throughput(size_t entry_size, uint64_t duration_ms)
{
    struct bench_cluster *c = calloc(1, sizeof *c);
    static uint8_t payload[BENCH_ENTRY_MAX];
    if (c == NULL || cluster_open(c) != KV_OK) {
        fprintf(stderr, "bench-raft: out of memory\n");
        free(c);
        return 1;
    }
    raft_campaign(c->r[0]);
    int rc = pump(c);
    uint64_t start_applied = c->applied[0];
    uint64_t t0 = kv_clock_ms();
    uint64_t t = t0;
    while (rc == KV_OK && t - t0 < duration_ms) {
        for (int k = 0; k < BENCH_BATCH; k++) {
            uint64_t hint;
            int prc = raft_propose(c->r[0], payload, entry_size, &hint);
            if (prc != KV_OK && prc != KV_EBUSY) {
                rc = prc;
                break;
            }
        }
        if (rc == KV_OK) {
            rc = pump(c);
        }
        raft_tick(c->r[0]);
        raft_tick(c->r[1]);
        raft_tick(c->r[2]);
        t = kv_clock_ms();
    }
    uint64_t committed = c->applied[0] - start_applied;
    double secs = (double)(t - t0) / 1000.0;
    printf("throughput entry_bytes=%zu committed=%llu seconds=%.2f entries_per_sec=%.0f "
           "mb_per_sec=%.1f%s\n",
           entry_size, (unsigned long long)committed, secs, (double)committed / secs,
           (double)committed * (double)entry_size / secs / 1e6,
           rc == KV_OK ? "" : " (stopped on error)");
    cluster_close(c);
    free(c);
    return rc == KV_OK ? 0 : 1;
}

/* Creates `n` follower replicas of 3-voter groups whose leader lives
 * elsewhere, as a server hosting many groups would. */
static int idle_groups_open(size_t n, struct raft **rafts, struct raft_memlog **mls,
                            struct kv_rng *rngs, uint64_t election_ticks)
{
    for (size_t g = 0; g < n; g++) {
        struct raft_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.id = 2;
        cfg.group_id = g + 1;
        cfg.store = raft_memlog_store(mls[g]);
        cfg.rng = &rngs[g];
        cfg.initial_conf.voters[0] = 1;
        cfg.initial_conf.voters[1] = 2;
        cfg.initial_conf.voters[2] = 3;
        cfg.initial_conf.n_voters = 3;
        cfg.election_ticks = (uint32_t)election_ticks;
        cfg.heartbeat_ticks = 1;
        int rc = raft_new(&cfg, &rafts[g]);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return KV_OK;
}

static int bench_idle(void)
{
    size_t n = BENCH_IDLE_GROUPS;
    struct raft **rafts = calloc(n, sizeof *rafts);
    struct raft_memlog **mls = calloc(n, sizeof *mls);
    struct kv_rng *rngs = calloc(n, sizeof *rngs);
    int rc = rafts && mls && rngs ? KV_OK : KV_ENOMEM;
    for (size_t g = 0; g < n && rc == KV_OK; g++) {
        kv_rng_seed(&rngs[g], g);
        rc = raft_memlog_new(&mls[g]);
    }
    struct mallinfo2 before = mallinfo2();
    if (rc == KV_OK) {
        rc = idle_groups_open(n, rafts, mls, rngs, 1000);
    }
    struct mallinfo2 after = mallinfo2();
    if (rc != KV_OK) {
        fprintf(stderr, "bench-raft: %s\n", kv_strerror(rc));
    } else {
        printf("idle_memory groups=%zu bytes_per_group=%.0f (heap in use by the core, "
               "excluding the host's log store)\n",
               n, (double)(after.uordblks - before.uordblks) / (double)n);
        /* Idle followers: a tick is a counter bump and a timeout check. */
        uint32_t ticks = 200;
        uint64_t t0 = kv_clock_ns();
        for (uint32_t t = 0; t < ticks; t++) {
            for (size_t g = 0; g < n; g++) {
                raft_tick(rafts[g]);
                if (raft_has_ready(rafts[g])) {
                    struct raft_ready rd;
                    if (raft_ready(rafts[g], &rd) == KV_OK) {
                        raft_advance(rafts[g], &rd);
                    }
                }
            }
        }
        uint64_t ns = kv_clock_ns() - t0;
        printf("idle_tick groups=%zu ticks=%u ns_per_group_tick=%.1f "
               "cpu_ms_per_tick_all_groups=%.3f\n",
               n, ticks, (double)ns / ((double)ticks * (double)n),
               (double)ns / 1e6 / (double)ticks);
    }
    for (size_t g = 0; g < n && rafts && mls; g++) {
        raft_free(rafts[g]);
        raft_memlog_free(mls[g]);
    }
    free(rafts);
    free(mls);
    free(rngs);
    return rc == KV_OK ? 0 : 1;
}

int cmd_bench_raft(int argc, char **argv)
{
    uint64_t duration_ms = 2000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--duration-ms") == 0 && i + 1 < argc) {
            duration_ms = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr,
                    "usage: raftkv bench-raft [--duration-ms N]\n"
                    "  Measures the Raft core with no I/O: committed entries per\n"
                    "  second through a 3-node in-memory cluster (16 B and 4 KB\n"
                    "  entries), bytes per idle group and CPU per tick for %d idle\n"
                    "  groups.\n",
                    BENCH_IDLE_GROUPS);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    int rc = bench_throughput(16, duration_ms);
    rc |= bench_throughput(4096, duration_ms);
    rc |= bench_idle();
    return rc ? 1 : 0;
}
