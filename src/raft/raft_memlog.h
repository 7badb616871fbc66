/* raft_memlog.h -- the in-memory reference implementation of the Raft log
 * store (struct raft_log_store): what tests, the simulator and benchmarks
 * persist ready batches into, and the model the node's WAL-backed store
 * follows. */
#ifndef KV_RAFT_MEMLOG_H
#define KV_RAFT_MEMLOG_H

#include "raft.h"

struct raft_memlog;

/* Creates an empty log (no entries, no snapshot, zero hard state).
 * Returns KV_OK or KV_ENOMEM. */
int raft_memlog_new(struct raft_memlog **out) KV_MUST_USE;

/* Frees the log and every payload it holds. */
void raft_memlog_free(struct raft_memlog *ml);

/* The read-only interface the core uses; lives as long as `ml`. */
struct raft_log_store *raft_memlog_store(struct raft_memlog *ml);

/* Persists a ready batch's snapshot, hard state and entries (copied), in
 * that order. Returns KV_OK or KV_ENOMEM (log unchanged). */
int raft_memlog_persist(struct raft_memlog *ml, const struct raft_ready *rd) KV_MUST_USE;

/* Drops entries through `index` (<= last), remembering its term and the
 * membership `conf` as the snapshot's. Returns KV_OK or KV_EINVAL. */
int raft_memlog_compact(struct raft_memlog *ml, uint64_t index,
                        const struct raft_conf_state *conf) KV_MUST_USE;

/* Persisted hard state, for checkers. */
struct raft_hard_state raft_memlog_hard_state(const struct raft_memlog *ml);

/* Bytes of payload currently held. */
uint64_t raft_memlog_bytes(const struct raft_memlog *ml);

#endif
