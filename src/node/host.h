/* host.h -- the group host of one data node: drives MANY Raft groups of ONE
 * node in one thread. For each group it owns the Raft core, the log store
 * over the node's shared WAL and the state machine over the node's engine;
 * each loop turn gathers every group's ready batch into ONE wal_write
 * (group commit), then sends, then applies and completes proposals.
 *
 * No network here: messages leave through send_cb and arrive through
 * node_host_step, so the same host runs under a real transport or an
 * in-memory test network.
 *
 * Failure: an error from the WAL or the engine inside node_host_run is
 * sticky: the host refuses all further work with that error (the node
 * must stop and restart from disk; an fsync is never retried).
 *
 * Threads: a host and everything it borrows belong to one thread. The
 * callbacks must not call back into the host. */
#ifndef KV_NODE_HOST_H
#define KV_NODE_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "fsm.h"
#include "raft.h"

struct wal;
struct stor_engine;
struct kv_rng;

/* Most groups one host holds (a linear table: lookups are a scan). */
#define NODE_HOST_GROUPS_MAX 1024u
/* Proposals per group waiting for their apply; beyond, KV_EBUSY. */
#define NODE_HOST_PENDING_MAX 256u
/* Default for compact_entries: the log is compacted once this many entries
 * are applied beyond the last compaction. */
#define NODE_HOST_COMPACT_ENTRIES_DEFAULT 10000u
/* Default for compact_keep_entries: applied entries a compaction leaves in
 * the log for followers that lag (this cut cannot send snapshots). */
#define NODE_HOST_COMPACT_KEEP_DEFAULT 1000u

/* Sends `m` (borrowed for the call; copy what you keep) to node m->to. */
typedef void (*node_host_send_cb)(void *data, const struct raft_msg *m);

/* Completes a proposal exactly once: status KV_OK with the command's
 * results (`res` valid during the call only), or an error with res NULL:
 * KV_ENOTLEADER (the entry was overwritten by another term, or lost),
 * KV_ECANCELED (outcome unknown: the term changed before the entry
 * committed, or the host was freed first; the command may still commit, so
 * the client retries with the same client id and seq and the session table
 * answers a command that did). */
typedef void (*node_host_done_cb)(void *data, int status, const struct node_cmd_result *res);

struct node_host_options {
    uint64_t node_id;           /* this node's replica id in every group, never 0 */
    struct wal *wal;            /* borrowed; outlives the host */
    struct stor_engine *engine; /* borrowed; outlives the host */
    struct kv_rng *rng;         /* borrowed; election jitter of every group */
    /* Raft tuning applied to every group; zero fields take the core's
     * defaults (raft_config_defaults). forward_proposals is always off:
     * the host tracks proposals by their index in its own log. */
    uint32_t election_ticks;
    uint32_t heartbeat_ticks;
    bool pre_vote;
    bool check_quorum;
    uint64_t msg_bytes_max;
    uint32_t inflight_max;
    uint64_t compact_entries;      /* 0: NODE_HOST_COMPACT_ENTRIES_DEFAULT */
    uint64_t compact_keep_entries; /* 0: NODE_HOST_COMPACT_KEEP_DEFAULT */
    node_host_send_cb send_cb;     /* required */
    void *send_data;               /* passed to send_cb */
};

/* Zeroes `o` and sets the defaults that are not zero. */
void node_host_options_init(struct node_host_options *o);

struct node_host;

/* Creates a host with no groups. Returns KV_OK, KV_ENOMEM, KV_EINVAL. */
int node_host_new(const struct node_host_options *o, struct node_host **out) KV_MUST_USE;

/* Frees every group; pending proposals complete with KV_ECANCELED. */
void node_host_free(struct node_host *h);

/* Opens group `group_id` (0 < id < NODE_LOGSTORE_META_BIT): Raft core, log
 * store and state machine. A group with state in the WAL and engine
 * resumes from it; `voters` (borrowed, n_voters <= RAFT_MEMBERS_MAX, must
 * include node_id for a new group) is the membership of a new one.
 * Returns KV_OK, KV_EEXIST, KV_EBUSY (NODE_HOST_GROUPS_MAX), KV_EINVAL,
 * KV_ENOMEM, KV_ECORRUPT, or the WAL's / engine's error. */
int node_host_add_group(struct node_host *h, uint64_t group_id, const uint64_t *voters,
                        size_t n_voters) KV_MUST_USE;

/* Advances logical time by one tick in every group. */
void node_host_tick(struct node_host *h);

/* Feeds a received message (borrowed) to its group. Returns KV_OK;
 * KV_EWRONGGROUP for a group this host does not hold; KV_EINVAL for a
 * malformed message (dropped with a log line); KV_EUNSUPPORTED for a
 * snapshot (this cut does not move snapshots: dropped); KV_ENOMEM; the
 * sticky error of a stopped host. */
int node_host_step(struct node_host *h, const struct raft_msg *m) KV_MUST_USE;

/* Proposes an encoded node_cmd (`size` bytes, copied). On KV_OK `done_cb`
 * fires exactly once, from a later node_host_run (or node_host_free).
 * Other returns never call it: KV_ENOTLEADER (*leader_hint set, 0 when
 * unknown), KV_EWRONGGROUP, KV_EBUSY (pending table full, or the core is
 * busy), KV_ENOMEM, the sticky error. */
int node_host_propose(struct node_host *h, uint64_t group_id, const void *cmd, size_t size,
                      uint64_t *leader_hint, node_host_done_cb done_cb, void *data) KV_MUST_USE;

/* One loop turn: readies of every group staged into one WAL batch, one
 * wal_write, then sends, then applies (completing proposals), then
 * advances; due log compactions ride in the same batch. Returns KV_OK,
 * KV_EUNSUPPORTED (a ready carried a snapshot), or the WAL's / engine's /
 * allocator's error, which stops the host (sticky). */
int node_host_run(struct node_host *h) KV_MUST_USE;

struct node_host_group_status {
    uint32_t role;        /* enum raft_role */
    uint64_t term;        /* current term */
    uint64_t leader;      /* known leader, 0 for none */
    uint64_t commit;      /* commit index */
    uint64_t applied;     /* state machine's applied index */
    uint64_t first_index; /* first log index still held (after compaction) */
    size_t pending;       /* proposals waiting for their apply */
};

/* Status of one group. KV_OK or KV_EWRONGGROUP. */
int node_host_group_status(const struct node_host *h, uint64_t group_id,
                           struct node_host_group_status *out) KV_MUST_USE;

/* Reads user key `key` from the group's state machine (latest applied
 * state: a stale read). As node_fsm_get, plus KV_EWRONGGROUP. */
int node_host_get(struct node_host *h, uint64_t group_id, const void *key, size_t key_size,
                  struct kv_buf *value) KV_MUST_USE;

/* Counters for tests and metrics. */
struct node_host_stats {
    uint64_t turns;       /* node_host_run calls that found work */
    uint64_t wal_writes;  /* wal_write calls: at most one per turn, none
                           * when no group had anything to persist */
    uint64_t staged;      /* group readies and compactions persisted: over
                           * wal_writes, the group commit factor */
    uint64_t applied;     /* entries handed to the state machines */
    uint64_t compactions; /* log compactions written */
    uint64_t dropped;     /* received messages dropped as malformed */
    uint64_t lost;        /* accepted proposals failed: entry overwritten */
    uint64_t expired;     /* accepted proposals failed: term changed first */
};
void node_host_stats(const struct node_host *h, struct node_host_stats *out);

#endif
