/* raft.h -- the Raft core: one pure, deterministic state machine per Raft
 * group, in the style of etcd's raft library. It does no I/O, reads no
 * clock, draws randomness only from the host's kv_rng and never starts a
 * thread. The host feeds it raft_step (messages), raft_tick (time),
 * raft_propose, raft_read_index, raft_transfer_leader; then takes a ready
 * batch (raft_ready): hard state and entries to persist, messages to send,
 * committed entries to apply, reads that became safe; and acknowledges it
 * with raft_advance.
 *
 * Memory: everything a ready batch points to is owned by the core and
 * stays valid until raft_advance (or raft_free). Between raft_ready and
 * raft_advance the host must not call any other function on the same
 * group; copy what you need to keep. Arguments are borrowed for the call.
 *
 * Order the host must keep for each batch: install `snapshot` and persist
 * `entries` and `hard_state` durably, then send `msgs`, then apply
 * `committed`, then call raft_advance. */
#ifndef KV_RAFT_H
#define KV_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct kv_rng;

/* Most members (voters plus learners) one group can have. Groups are small
 * (3 to 7 replicas) and fixed arrays keep an idle group compact. */
#define RAFT_MEMBERS_MAX 9

/* ---- Values that cross the boundary (mirrors of proto/raft.proto) ---- */

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0,      /* host data (or empty: a leader's no-op) */
    RAFT_ENTRY_CONF_CHANGE = 1, /* payload is an encoded raft_conf_change */
};

struct raft_entry {
    uint64_t term;  /* term of the leader that created it */
    uint64_t index; /* position in the log, from 1 */
    uint32_t type;  /* enum raft_entry_type */
    uint8_t *data;  /* payload, NULL when size is 0 */
    size_t size;    /* payload bytes */
};

struct raft_hard_state {
    uint64_t term;   /* current term */
    uint64_t vote;   /* candidate voted for in `term`, 0 for none */
    uint64_t commit; /* highest index known committed */
};

struct raft_conf_state {
    uint64_t voters[RAFT_MEMBERS_MAX];   /* voting member ids (never 0) */
    uint32_t n_voters;                   /* used slots in voters */
    uint64_t learners[RAFT_MEMBERS_MAX]; /* non-voting member ids */
    uint32_t n_learners;                 /* used slots in learners */
};

struct raft_snapshot_meta {
    uint64_t index;              /* last index the snapshot covers, 0: none */
    uint64_t term;               /* term of that entry */
    struct raft_conf_state conf; /* membership as of `index` */
};

enum raft_conf_change_type {
    RAFT_CONF_ADD_VOTER = 0,   /* add a voter, or promote a learner */
    RAFT_CONF_ADD_LEARNER = 1, /* add a learner (or demote a voter) */
    RAFT_CONF_REMOVE = 2,      /* remove a voter or learner */
};

/* One-server membership change: the payload of a RAFT_ENTRY_CONF_CHANGE. */
struct raft_conf_change {
    uint32_t type;    /* enum raft_conf_change_type */
    uint64_t node_id; /* the server that changes */
};

enum raft_msg_type {
    RAFT_MSG_NONE = 0,
    RAFT_MSG_APPEND = 1,           /* leader -> follower: entries, commit */
    RAFT_MSG_APPEND_RESP = 2,      /* index matched, or reject with hint */
    RAFT_MSG_VOTE = 3,             /* candidate asks for a vote */
    RAFT_MSG_VOTE_RESP = 4,        /* reject = vote refused */
    RAFT_MSG_PREVOTE = 5,          /* would you vote for me in term+1? */
    RAFT_MSG_PREVOTE_RESP = 6,     /* reject = no */
    RAFT_MSG_HEARTBEAT = 7,        /* leader liveness, commit, read round */
    RAFT_MSG_HEARTBEAT_RESP = 8,   /* echoes read_seq */
    RAFT_MSG_SNAPSHOT = 9,         /* snapshot metadata (data moved by host) */
    RAFT_MSG_TIMEOUT_NOW = 10,     /* leader -> transfer target: campaign now */
    RAFT_MSG_READ_INDEX = 11,      /* follower -> leader: ReadIndex request */
    RAFT_MSG_READ_INDEX_RESP = 12, /* leader -> follower: the read index */
    RAFT_MSG_PROPOSE = 13,         /* follower -> leader: forwarded proposal */
    RAFT_MSG_TRANSFER_LEADER = 14, /* follower -> leader: forwarded transfer */
};

/* A message. For a message in a ready batch, `entries` (and each entry's
 * data) and `context` are owned by the core until raft_advance. For a
 * message passed to raft_step they are borrowed for the call. */
struct raft_msg {
    uint32_t type;                  /* enum raft_msg_type */
    uint64_t group_id;              /* the Raft group (from the config) */
    uint64_t from;                  /* sender id */
    uint64_t to;                    /* receiver id */
    uint64_t term;                  /* sender's term (0 for local-only) */
    uint64_t log_term;              /* see proto/raft.proto */
    uint64_t index;                 /* see proto/raft.proto */
    struct raft_entry *entries;     /* APPEND / PROPOSE payload */
    size_t n_entries;               /* entries in `entries` */
    uint64_t commit;                /* sender's commit index */
    bool reject;                    /* response refuses the request */
    uint64_t reject_hint;           /* APPEND_RESP reject: follower's hint index */
    struct raft_snapshot_meta snap; /* SNAPSHOT: the snapshot's metadata */
    uint8_t *context;               /* READ_INDEX(_RESP): request id bytes */
    size_t context_size;            /* bytes in context */
    uint64_t read_seq;              /* HEARTBEAT(_RESP): read round */
    bool transfer;                  /* VOTE: campaign from leader transfer */
};

/* A read that became safe: once the host has applied through `index`, its
 * state machine reflects every write committed before the read started. */
struct raft_read_state {
    uint64_t index;      /* apply through this index, then serve */
    uint8_t *context;    /* the id passed to raft_read_index; core-owned */
    size_t context_size; /* bytes in context */
};

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
};

/* One batch of work for the host; see the file comment for order and
 * lifetime. Arrays may be NULL when their count is 0. */
struct raft_ready {
    bool has_hard_state;                /* hard_state changed: persist it */
    struct raft_hard_state hard_state;  /* term, vote, commit */
    bool has_snapshot;                  /* install this snapshot first */
    struct raft_snapshot_meta snapshot; /* received snapshot's metadata */
    struct raft_entry *entries;         /* persist: replace stored entries from
                                         * entries[0].index on with these */
    size_t n_entries;                   /* entries to persist */
    struct raft_msg *msgs;              /* messages to send after persisting */
    size_t n_msgs;                      /* messages */
    struct raft_entry *committed;       /* apply in order */
    size_t n_committed;                 /* committed entries */
    struct raft_read_state *reads;      /* reads that became safe */
    size_t n_reads;                     /* reads */
};

/* ---- The log store the host provides (etcd's Storage idea) ---- */

/* Read-only view of the persisted log. The core never writes through it:
 * the host persists ready batches itself. Indices: entries [first, last]
 * are present; first - 1 is the snapshot's index (its term is known). */
struct raft_log_store {
    void *data; /* passed to every callback */
    /* Hard state and membership as of the last persist. */
    int (*initial_state)(void *data, struct raft_hard_state *hs, struct raft_conf_state *cs);
    /* Borrows entry `index` into *out: data stays valid until the next
     * call on the store (the core copies what it keeps). KV_ECOMPACTED
     * below first, KV_EUNAVAILABLE above last. */
    int (*entry)(void *data, uint64_t index, struct raft_entry *out);
    /* Term of entry `index`, including first - 1 (the snapshot's term).
     * KV_ECOMPACTED below that, KV_EUNAVAILABLE above last. */
    int (*term)(void *data, uint64_t index, uint64_t *term);
    uint64_t (*first_index)(void *data); /* snapshot index + 1 */
    uint64_t (*last_index)(void *data);  /* may be first - 1: empty */
    /* Metadata of the latest snapshot (index 0 when there is none). */
    int (*snapshot)(void *data, struct raft_snapshot_meta *meta);
};

/* ---- Tracing: the core never prints ---- */

enum raft_trace_type {
    RAFT_TRACE_BECOME_FOLLOWER = 1,  /* a = term, b = leader (0 unknown) */
    RAFT_TRACE_BECOME_PRE_CANDIDATE, /* a = term */
    RAFT_TRACE_BECOME_CANDIDATE,     /* a = term */
    RAFT_TRACE_BECOME_LEADER,        /* a = term */
    RAFT_TRACE_COMMIT,               /* a = new commit index */
    RAFT_TRACE_STEP_DOWN_QUORUM,     /* CheckQuorum failed; a = term */
    RAFT_TRACE_CONF_APPLIED,         /* a = node id, b = change type */
    RAFT_TRACE_SNAPSHOT_SENT,        /* a = to, b = index */
};

struct raft_trace {
    uint64_t id;   /* this replica */
    uint32_t type; /* enum raft_trace_type */
    uint64_t a, b; /* event-specific, see the enum */
};

/* ---- Configuration ---- */

struct raft_config {
    uint64_t id;                  /* this replica's id, never 0 */
    uint64_t group_id;            /* stamped into every message */
    struct raft_log_store *store; /* borrowed; outlives the group */
    struct kv_rng *rng;           /* borrowed; election jitter */
    /* Membership used when the store holds none (a new group). */
    struct raft_conf_state initial_conf;
    uint64_t applied;               /* last index the host already applied */
    uint32_t election_ticks;        /* election timeout, in ticks (>= 3) */
    uint32_t heartbeat_ticks;       /* heartbeat period (< election_ticks) */
    bool pre_vote;                  /* run PreVote before real elections */
    bool check_quorum;              /* leader steps down without a quorum */
    bool forward_proposals;         /* followers forward proposals to leader */
    bool lease_read;                /* leader serves reads on a lease; the host
                                     * promises no clock runs over 2x faster
                                     * than another's (needs check_quorum) */
    uint64_t msg_bytes_max;         /* entry bytes per APPEND (>= 1 entry) */
    uint32_t inflight_max;          /* APPENDs in flight per follower */
    uint64_t uncommitted_bytes_max; /* leader's uncommitted payload bytes */
    uint32_t read_queue_max;        /* pending ReadIndex requests */
    uint64_t apply_bytes_max;       /* committed payload bytes per ready */
    /* Tracer; may be NULL. Called synchronously, must not re-enter. */
    void (*trace_cb)(void *data, const struct raft_trace *ev);
    void *trace_data;
};

/* Default limits, used for zero-valued fields by raft_config_defaults. */
#define RAFT_ELECTION_TICKS_DEFAULT        10
#define RAFT_HEARTBEAT_TICKS_DEFAULT       1
#define RAFT_MSG_BYTES_MAX_DEFAULT         (1u << 20)
#define RAFT_INFLIGHT_MAX_DEFAULT          64
#define RAFT_UNCOMMITTED_BYTES_MAX_DEFAULT (64u << 20)
#define RAFT_READ_QUEUE_MAX_DEFAULT        1024
#define RAFT_APPLY_BYTES_MAX_DEFAULT       (64u << 20)
/* Most entries in one APPEND and in one ready's committed list, whatever
 * their bytes (empty no-ops would otherwise be unbounded). */
#define RAFT_BATCH_ENTRIES_MAX 4096
/* Largest ReadIndex context the core accepts. */
#define RAFT_CONTEXT_BYTES_MAX 256

/* Fills zero-valued limits with the defaults above. */
void raft_config_defaults(struct raft_config *cfg);

/* ---- The group ---- */

struct raft;

/* Creates a group from the store's persisted state (or cfg->initial_conf
 * for a new one). Returns KV_OK, KV_ENOMEM, KV_EINVAL (bad config) or the
 * store's error. */
int raft_new(const struct raft_config *cfg, struct raft **out) KV_MUST_USE;

/* Frees the group and everything it owns, including an unadvanced ready. */
void raft_free(struct raft *r);

/* Advances logical time by one tick: elections, heartbeats, CheckQuorum. */
void raft_tick(struct raft *r);

/* Feeds a received message (borrowed). Messages for other groups or from
 * stale terms are dropped silently. Returns KV_OK, KV_ENOMEM, KV_EINVAL
 * (malformed). */
int raft_step(struct raft *r, const struct raft_msg *m) KV_MUST_USE;

/* Proposes `size` bytes (copied). Returns KV_OK; KV_ENOTLEADER when this
 * replica cannot accept it (*leader_hint set, 0 if unknown); KV_EBUSY while
 * a leader transfer runs or the uncommitted limit is hit; KV_ENOMEM. */
int raft_propose(struct raft *r, const void *data, size_t size, uint64_t *leader_hint) KV_MUST_USE;

/* Proposes a one-server membership change. Returns as raft_propose, plus
 * KV_EBUSY when a change is already pending and KV_EINVAL for a change
 * that does nothing or would leave no voter. */
int raft_propose_conf_change(struct raft *r, const struct raft_conf_change *cc,
                             uint64_t *leader_hint) KV_MUST_USE;

/* Starts a linearizable read identified by `context` (copied, at most
 * RAFT_CONTEXT_BYTES_MAX bytes). Its raft_read_state arrives in a later
 * ready once leadership is confirmed. Returns KV_OK, KV_ENOTLEADER (no
 * known leader), KV_EBUSY (leader has not committed in its term yet, or
 * the queue is full), KV_EINVAL, KV_ENOMEM. A read may also be dropped
 * silently when leadership changes: the host times it out. */
int raft_read_index(struct raft *r, const void *context, size_t size) KV_MUST_USE;

/* Asks the leadership to move to `target` (forwarded when this replica is
 * a follower). Returns KV_OK, KV_ENOTLEADER, KV_EINVAL (not a voter). */
int raft_transfer_leader(struct raft *r, uint64_t target) KV_MUST_USE;

/* Starts an election now (tests and host tools). */
void raft_campaign(struct raft *r);

/* Tells the core the host compacted its store through `index` (already
 * done). The core reads the store on demand and caches nothing about its
 * first index today, so this is a no-op kept for hosts to call: a core
 * that caches can then stay compatible. Followers behind `index` are sent
 * the store's snapshot. */
void raft_compacted(struct raft *r, uint64_t index);

/* Reports whether sending a snapshot to `to` failed (the core probes
 * again) or succeeded and the follower installed it. */
void raft_report_snapshot(struct raft *r, uint64_t to, bool ok);

/* Reports that `to` is unreachable: its replication drops to probing. */
void raft_report_unreachable(struct raft *r, uint64_t to);

/* True when raft_ready would return a non-empty batch. */
bool raft_has_ready(const struct raft *r);

/* Fills *rd with the pending work. Returns KV_OK or KV_ENOMEM (nothing
 * taken). Must be followed by raft_advance before any other call. */
int raft_ready(struct raft *r, struct raft_ready *rd) KV_MUST_USE;

/* Acknowledges that `rd` was handled in full; frees its memory. */
void raft_advance(struct raft *r, struct raft_ready *rd);

/* A snapshot of the group's state for status pages, tests and checkers. */
struct raft_status {
    uint64_t id;          /* this replica */
    uint32_t role;        /* enum raft_role */
    uint64_t term;        /* current term */
    uint64_t vote;        /* vote in term */
    uint64_t leader;      /* known leader, 0 for none */
    uint64_t commit;      /* commit index */
    uint64_t applied;     /* applied index (as handed out in ready) */
    uint64_t last_index;  /* last log index, persisted or not */
    uint64_t first_index; /* first log index still held */
    bool learner;         /* this replica is a learner */
};
void raft_status(const struct raft *r, struct raft_status *st);

/* Term of log entry `index` as this replica sees it (store plus unstable
 * tail). Returns KV_OK, KV_ECOMPACTED, KV_EUNAVAILABLE. */
int raft_term_at(const struct raft *r, uint64_t index, uint64_t *term) KV_MUST_USE;

/* The current membership (the latest appended configuration). */
void raft_conf(const struct raft *r, struct raft_conf_state *cs);

/* ---- Encoding (codec.c): conf changes and wire messages ---- */

/* Encodes a conf change into `buf` (cap bytes); *size gets the length.
 * Returns KV_OK or KV_ETOOBIG. RAFT_CONF_CHANGE_BYTES_MAX always fits. */
#define RAFT_CONF_CHANGE_BYTES_MAX 32
int raft_conf_change_encode(const struct raft_conf_change *cc, uint8_t *buf, size_t cap,
                            size_t *size) KV_MUST_USE;
/* Decodes; KV_ECORRUPT for malformed bytes. */
int raft_conf_change_decode(const uint8_t *buf, size_t size,
                            struct raft_conf_change *cc) KV_MUST_USE;

/* Serialises `m` as a raftkv.raft.Message protobuf into a kv_malloc'd
 * buffer the caller frees with kv_free. Returns KV_OK or KV_ENOMEM. */
int raft_msg_encode(const struct raft_msg *m, uint8_t **buf, size_t *size) KV_MUST_USE;

/* Parses a protobuf message into *m, whose entries and context are
 * kv_malloc'd; release with raft_msg_clear. KV_ECORRUPT, KV_ENOMEM. */
int raft_msg_decode(const uint8_t *buf, size_t size, struct raft_msg *m) KV_MUST_USE;

/* Deep-copies `src` into *dst (heap-owned; release with raft_msg_clear). */
int raft_msg_copy(struct raft_msg *dst, const struct raft_msg *src) KV_MUST_USE;

/* Frees what a decoded or copied message owns and zeroes it. */
void raft_msg_clear(struct raft_msg *m);

#endif
