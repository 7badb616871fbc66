/* sim.h -- the deterministic Raft simulator: one seed drives a 3- or
 * 5-node cluster of real Raft cores over a fake network (loss,
 * duplication, reordering, delay, partitions) and fake disks (crashes lose
 * everything not yet persisted), with random proposals, reads, membership
 * changes, leadership transfers and compactions, and checks the safety
 * properties after every step and liveness once the faults stop. */
#ifndef KV_RAFT_SIM_H
#define KV_RAFT_SIM_H

#include <stdbool.h>
#include <stdint.h>

struct sim_options {
    uint64_t seed;  /* the whole run follows from it */
    uint32_t steps; /* chaotic steps before the liveness phase */
    bool verbose;   /* print every action (for replaying a failure) */
};

/* Per-run counters, summed by the driver. */
struct sim_stats {
    uint64_t steps;
    uint64_t msgs_delivered;
    uint64_t writes_acked;
    uint64_t reads_checked;
    uint64_t leaders_elected;
    uint64_t crashes;
    uint64_t conf_changes;
    uint64_t snapshots_installed;
    uint64_t transfers;
    uint64_t alloc_faults; /* injected allocation failures inside the core */
};

/* Runs one seed. Returns 0 when every check held, 1 on a violation (the
 * reason, the seed and the last actions are printed to stderr), 2 when the
 * simulator itself failed (out of memory). */
int sim_run(const struct sim_options *opt, struct sim_stats *stats);

#endif
