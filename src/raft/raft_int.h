/* raft_int.h -- internals of the Raft core shared by its files: the group
 * struct, the log (persisted store plus unstable tail), per-follower
 * progress, the ReadIndex queue, and the module-private functions. */
#ifndef KV_RAFT_INT_H
#define KV_RAFT_INT_H

#include "raft.h"

/* ---- log.c: the persisted store plus the not-yet-persisted tail ---- */

struct raft_log {
    struct raft_log_store *store; /* borrowed, persisted part */
    /* Unstable tail: entries [offset, offset + n) not yet persisted; they
     * replace any stored entries from `offset` on. Payloads are owned. */
    struct raft_entry *unstable;
    size_t n_unstable;
    size_t cap_unstable;
    uint64_t offset;
    /* Entries handed out in the current ready (persist), up to this many. */
    size_t n_in_ready;
    bool has_snapshot;              /* a received snapshot awaits install */
    struct raft_snapshot_meta snap; /* its metadata */
    uint64_t committed;             /* highest committed index */
    uint64_t applied;               /* highest index handed out to apply */
};

int raft__log_init(struct raft_log *l, struct raft_log_store *store, uint64_t committed,
                   uint64_t applied) KV_MUST_USE;
void raft__log_close(struct raft_log *l);
uint64_t raft__log_first(const struct raft_log *l);
uint64_t raft__log_last(const struct raft_log *l);
/* KV_OK, KV_ECOMPACTED (before first - 1) or KV_EUNAVAILABLE (past last). */
int raft__log_term(const struct raft_log *l, uint64_t index, uint64_t *term) KV_MUST_USE;
/* Term or 0 when unknown. */
uint64_t raft__log_term_or0(const struct raft_log *l, uint64_t index);
uint64_t raft__log_last_term(const struct raft_log *l);
/* Truncates everything from ents[0].index on and appends copies. */
int raft__log_append(struct raft_log *l, const struct raft_entry *ents, size_t n) KV_MUST_USE;
/* Borrows entry `index` (data valid until the log or store changes). */
int raft__log_entry(const struct raft_log *l, uint64_t index, struct raft_entry *out) KV_MUST_USE;
/* Index of the first entry of `ents` whose term differs from ours, or 0. */
uint64_t raft__log_find_conflict(const struct raft_log *l, const struct raft_entry *ents, size_t n);
/* Largest index <= index whose term <= term (fast backtracking). */
uint64_t raft__log_find_conflict_by_term(const struct raft_log *l, uint64_t index, uint64_t term);
bool raft__log_up_to_date(const struct raft_log *l, uint64_t last_index, uint64_t last_term);
bool raft__log_match_term(const struct raft_log *l, uint64_t index, uint64_t term);
void raft__log_commit_to(struct raft_log *l, uint64_t index);
/* Marks the first `n` unstable entries as persisted. */
void raft__log_stable(struct raft_log *l, size_t n);
/* Replaces the log with a snapshot (unstable until persisted). */
void raft__log_restore(struct raft_log *l, const struct raft_snapshot_meta *meta);

/* ---- progress.c: the leader's view of each member ---- */

enum raft_progress_state {
    RAFT_PROGRESS_PROBE = 0,     /* one APPEND at a time, find the match */
    RAFT_PROGRESS_REPLICATE = 1, /* pipelined APPENDs up to inflight_max */
    RAFT_PROGRESS_SNAPSHOT = 2,  /* waiting for the host to ship a snapshot */
};

struct raft_progress {
    uint64_t id;               /* member id */
    bool learner;              /* not counted in quorums */
    uint8_t state;             /* enum raft_progress_state */
    bool probe_sent;           /* PROBE: an APPEND is outstanding */
    bool recent_active;        /* heard from since the last CheckQuorum */
    bool vote_responded;       /* election: answered */
    bool vote_granted;         /* election: granted */
    uint64_t match;            /* highest index known replicated */
    uint64_t next;             /* next index to send */
    uint64_t pending_snapshot; /* SNAPSHOT: index of the snapshot sent */
    uint64_t read_acked;       /* highest read_seq acknowledged */
    /* Ring of the last index of each APPEND in flight (REPLICATE). */
    uint64_t *inflight;
    uint32_t inflight_start;
    uint32_t inflight_count;
};

void raft__progress_reset(struct raft_progress *p, uint64_t next, uint32_t state);
void raft__progress_become_probe(struct raft_progress *p);
void raft__progress_become_replicate(struct raft_progress *p);
void raft__progress_become_snapshot(struct raft_progress *p, uint64_t index);
bool raft__progress_paused(const struct raft_progress *p, uint32_t inflight_max);
/* True when `index` is new information (match moved). */
bool raft__progress_update(struct raft_progress *p, uint64_t index);
/* A rejection of the APPEND at `rejected`; false when stale. */
bool raft__progress_decr(struct raft_progress *p, uint64_t rejected, uint64_t next_hint);
void raft__progress_sent(struct raft_progress *p, uint64_t last, uint32_t inflight_max);
void raft__progress_free_to(struct raft_progress *p, uint64_t index, uint32_t inflight_max);

/* ---- read_index.c ---- */

/* Heartbeat rounds remembered for lease accounting. */
#define RAFT_LEASE_ROUNDS 8

struct raft_read_req {
    uint64_t seq;     /* read round that confirms it */
    uint64_t index;   /* commit index when it arrived */
    uint64_t from;    /* requester (self for local reads) */
    uint8_t *context; /* owned */
    size_t context_size;
};

/* ---- the group ---- */

struct raft {
    struct raft_config cfg;
    struct raft_log log;
    uint64_t id;
    uint32_t role; /* enum raft_role */
    uint64_t term;
    uint64_t vote;
    uint64_t leader;
    bool learner;                   /* this replica is a learner */
    struct raft_hard_state prev_hs; /* as last handed out in a ready */

    struct raft_progress prs[RAFT_MEMBERS_MAX]; /* voters then learners */
    uint32_t n_prs;
    struct raft_conf_state conf; /* current membership */
    uint64_t pending_conf_index; /* leader: last conf change in the log */

    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t randomized_timeout;
    uint64_t transferee;        /* leader transfer target, 0 for none */
    uint64_t uncommitted_bytes; /* leader: payload not yet committed */

    /* Outgoing messages (owned until handed out and advanced). */
    struct raft_msg *msgs;
    size_t n_msgs;
    size_t cap_msgs;

    /* Reads confirmed but not yet handed out. */
    struct raft_read_state *reads;
    size_t n_reads;
    size_t cap_reads;

    /* Leader: reads waiting for a heartbeat round (FIFO ring). */
    struct raft_read_req *read_q; /* grown on demand up to read_queue_max */
    uint32_t read_q_cap;
    uint32_t read_q_start;
    uint32_t read_q_count;
    uint64_t read_seq; /* last heartbeat (read) round started */

    /* Lease reads (cfg.lease_read): the tick each recent round was sent. */
    uint64_t ticks; /* ticks since raft_new */
    uint64_t round_seq[RAFT_LEASE_ROUNDS];
    uint64_t round_tick[RAFT_LEASE_ROUNDS];
    uint64_t lease_until; /* leader may serve reads locally before */
    bool lease_off;       /* a transfer ran this term: no leases */
    bool boot_lease;      /* just started: honour an unknown lease */

    /* Ready bookkeeping: what the current batch handed out. */
    bool in_ready;
    struct raft_entry *ready_committed; /* owned copies of committed entries */
    size_t n_ready_committed;
    struct raft_msg *ready_msgs; /* messages handed out */
    size_t n_ready_msgs;
    struct raft_read_state *ready_reads;
    size_t n_ready_reads;
    bool ready_snapshot;
};

/* raft.c */
void raft__trace(struct raft *r, uint32_t type, uint64_t a, uint64_t b);
void raft__become_follower(struct raft *r, uint64_t term, uint64_t leader);
void raft__become_leader(struct raft *r);
struct raft_progress *raft__progress(struct raft *r, uint64_t id);
uint32_t raft__quorum(const struct raft *r);
bool raft__is_voter(const struct raft *r, uint64_t id);
/* Queues a message (copied shallowly; entries/context are already owned
 * by the queue entry). Returns a pointer to fill or NULL on ENOMEM. */
struct raft_msg *raft__msg_new(struct raft *r, uint32_t type, uint64_t to);
void raft__reset_timeout(struct raft *r);
void raft__msg_free_owned(struct raft_msg *m);

/* election.c */
void raft__campaign(struct raft *r, bool pre_vote, bool transfer);
int raft__step_vote(struct raft *r, const struct raft_msg *m) KV_MUST_USE;
void raft__step_vote_resp(struct raft *r, const struct raft_msg *m);
void raft__tick_election(struct raft *r);
void raft__tick_leader(struct raft *r);

/* replication.c */
int raft__append_local(struct raft *r, const struct raft_entry *ents, size_t n) KV_MUST_USE;
void raft__send_append(struct raft *r, struct raft_progress *p, bool allow_empty);
void raft__broadcast_append(struct raft *r);
void raft__send_heartbeat(struct raft *r, struct raft_progress *p);
void raft__broadcast_heartbeat(struct raft *r);
bool raft__maybe_commit(struct raft *r);
int raft__step_append(struct raft *r, const struct raft_msg *m) KV_MUST_USE;
void raft__step_append_resp(struct raft *r, const struct raft_msg *m);
void raft__step_heartbeat(struct raft *r, const struct raft_msg *m);
void raft__step_heartbeat_resp(struct raft *r, const struct raft_msg *m);
void raft__step_snapshot(struct raft *r, const struct raft_msg *m);
int raft__leader_propose(struct raft *r, const struct raft_entry *ents, size_t n) KV_MUST_USE;

/* read_index.c */
int raft__read_request(struct raft *r, uint64_t from, const uint8_t *ctx, size_t size) KV_MUST_USE;
void raft__read_confirm(struct raft *r);
void raft__read_clear(struct raft *r);
int raft__read_ready_push(struct raft *r, uint64_t index, const uint8_t *ctx,
                          size_t size) KV_MUST_USE;

/* membership.c */
int raft__conf_set(struct raft *r, const struct raft_conf_state *cs) KV_MUST_USE;
void raft__conf_apply_entry(struct raft *r, const struct raft_entry *e);

#endif
