/* logstore.h -- the Raft log store of one group over the node's shared WAL:
 * implements `struct raft_log_store` for the Raft core, and turns the
 * core's ready batches, snapshot installs and compactions into records of
 * a wal_batch that the host shares among all groups of one loop turn (one
 * wal_write, one fsync).
 *
 * Membership: the WAL's hard state has term/vote/commit only and its
 * compaction mark index/term only, so the store keeps the snapshot's
 * metadata (index, term, conf state) as the single entry of a companion
 * WAL group, `group | NODE_LOGSTORE_META_BIT`, written in the same batch
 * and before the compaction mark it describes. docs/logstore.md argues the
 * choice and the crash cases.
 *
 * Threads: one logstore belongs to the thread that drives its group. */
#ifndef KV_NODE_LOGSTORE_H
#define KV_NODE_LOGSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "raft.h"
#include "wal.h"

/* WAL group ids with this bit set belong to logstores (snapshot metadata);
 * Raft group ids must stay below it. */
#define NODE_LOGSTORE_META_BIT (1ull << 63)
/* Entries the per-group read buffer holds at most (read-ahead for the
 * core's one-entry-at-a-time reads). */
#define NODE_LOGSTORE_READ_ENTRIES_MAX 64u
/* Payload bytes the read buffer reads ahead at most (one larger entry is
 * still read on its own). */
#define NODE_LOGSTORE_READ_BYTES_MAX (256u * 1024u)

struct node_logstore;

/* Opens the store of `group` (< NODE_LOGSTORE_META_BIT) over `w` (borrowed;
 * outlives the store). Recovers the snapshot metadata; when a crash cut a
 * snapshot install or compaction short after its metadata became durable,
 * finishes it with one wal_write (the state machine already moved there).
 * Returns KV_OK, KV_ENOMEM, KV_ECORRUPT (metadata that does not decode or
 * contradicts the log), or the WAL's error. */
int node_logstore_new(struct wal *w, uint64_t group, struct node_logstore **out) KV_MUST_USE;
void node_logstore_free(struct node_logstore *ls);

/* The interface for raft_config.store; lives as long as `ls`. `entry`
 * borrows from a small read buffer: its data stays valid until the next
 * call on the store (the core copies each entry at once). */
struct raft_log_store *node_logstore_store(struct node_logstore *ls);

/* True when `wal_group` (from wal_groups) is a logstore's companion group,
 * not a Raft group: a host scanning the WAL at start-up skips it. */
bool node_logstore_is_meta_group(uint64_t wal_group);

/* Adds what `rd` asks to persist to `b`: the snapshot (its metadata, a
 * compaction mark at its index/term, every held entry discarded), then the
 * entries (replacing the stored tail from entries[0].index on), then the
 * hard state. At most one stage or compact per group per batch. Returns
 * KV_OK, KV_ENOMEM or KV_ETOOBIG; on error the batch may hold part of the
 * records and must be cleared (nothing was written). */
int node_logstore_stage(struct node_logstore *ls, const struct raft_ready *rd,
                        struct wal_batch *b) KV_MUST_USE;

/* Adds a compaction through `index` to `b`, after the host snapshotted its
 * state machine at `index`. `conf` (borrowed) is the membership as of
 * `index` (raft_conf right after the host applied through `index` and
 * advanced). `index` must be held (first - 1 <= index <= last); a no-op at
 * or below the current snapshot. Returns KV_OK, KV_EINVAL (index beyond the
 * log), KV_ENOMEM, KV_ETOOBIG, or the WAL's read error. */
int node_logstore_compact(struct node_logstore *ls, uint64_t index,
                          const struct raft_conf_state *conf, struct wal_batch *b) KV_MUST_USE;

/* Tells the store that the wal_write carrying its staged records
 * succeeded. `rd` is the staged ready, or NULL when only a compaction was
 * staged. Refreshes the cached state. Returns KV_OK or the WAL's error
 * (only KV_ENOMEM/KV_EIO from reading the state back). After a failed
 * wal_write the host frees the store and reopens the WAL instead. */
int node_logstore_written(struct node_logstore *ls, const struct raft_ready *rd) KV_MUST_USE;

/* Adds the removal of the group and its metadata to `b` (the group left
 * this node). KV_OK, KV_ENOMEM, KV_ETOOBIG. */
int node_logstore_remove(struct node_logstore *ls, struct wal_batch *b) KV_MUST_USE;

/* Persisted state, for hosts and checkers. */
struct raft_hard_state node_logstore_hard_state(const struct node_logstore *ls);
void node_logstore_snapshot_meta(const struct node_logstore *ls, struct raft_snapshot_meta *out);

#endif
