/* wal.h -- the node's shared Raft log: one segmented, append-only,
 * CRC32C-framed write-ahead log that holds the entries, hard states and
 * compaction marks of every Raft group the node hosts, so that one
 * fdatasync makes the pending writes of all groups durable at once.
 *
 * The WAL knows nothing of protobuf or the Raft core: an entry is an index,
 * a term, a type and opaque bytes. Threads: every function may be called
 * from any thread; wal_write calls from several threads are coalesced into
 * one write and one fdatasync (group commit). */
#ifndef KV_WAL_H
#define KV_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/* ---- Limits (every one named) ---- */

/* Default target size of a segment file; a segment may exceed it by at most
 * one write (WAL_WRITE_BYTES_MAX). */
#define WAL_SEGMENT_BYTES_DEFAULT (64u * 1024 * 1024)
/* Smallest segment size accepted (tests use small segments). */
#define WAL_SEGMENT_BYTES_MIN (4u * 1024)
/* Bytes of one entry's payload. */
#define WAL_ENTRY_BYTES_MAX (8u * 1024 * 1024)
/* Bytes of one encoded record (header included); larger appends are split
 * into several records. */
#define WAL_RECORD_BYTES_MAX (WAL_ENTRY_BYTES_MAX + 64u * 1024)
/* Bytes of one wal_batch once encoded. */
#define WAL_BATCH_BYTES_MAX (32u * 1024 * 1024)
/* Bytes of one write of the group-commit leader: it gathers queued
 * batches up to this size; recovery never treats more than this many bytes
 * at the end of the log as one torn write (see docs/wal.md). */
#define WAL_WRITE_BYTES_MAX (WAL_BATCH_BYTES_MAX + WAL_RECORD_BYTES_MAX)
/* Default bytes of entry payloads kept in the read cache. */
#define WAL_CACHE_BYTES_DEFAULT (64u * 1024 * 1024)
/* Default live bytes of one group that garbage collection may rewrite
 * forward to free an old segment that group alone pins. */
#define WAL_REWRITE_BYTES_DEFAULT (4u * 1024 * 1024)
/* Longest wait for more writers under WAL_SYNC_BATCH. */
#define WAL_BATCH_DELAY_US_MAX 100000u
/* Length of a path inside the WAL directory. */
#define WAL_PATH_MAX 4096

/* ---- Values that cross the boundary ---- */

/* One log entry. In a batch `data` is borrowed for the call; in a
 * wal_read it points into the read's own buffer. */
struct wal_entry {
    uint64_t index;   /* Raft log index, >= 1 */
    uint64_t term;    /* term the entry was proposed in */
    uint32_t type;    /* opaque to the WAL (normal, conf change, ...) */
    const void *data; /* payload, `size` bytes */
    size_t size;      /* payload bytes, <= WAL_ENTRY_BYTES_MAX */
};

/* What Raft must persist besides entries. */
struct wal_hard_state {
    uint64_t term;   /* current term */
    uint64_t vote;   /* node voted for in `term`, 0 for none */
    uint64_t commit; /* highest index known committed */
};

/* A group's log as the WAL knows it (durable state only). */
struct wal_group_state {
    uint64_t first_index;             /* first entry still held; compact_index + 1 */
    uint64_t last_index;              /* last entry; first_index - 1 when empty */
    uint64_t compact_index;           /* snapshot index of the latest compaction mark */
    uint64_t compact_term;            /* term of the entry at compact_index */
    struct wal_hard_state hard_state; /* zeros until one is written */
    int has_hard_state;               /* 1 once a hard state was written */
};

/* When wal_write returns. */
enum wal_sync {
    /* Default: each write is fdatasync'd before any caller in it returns;
     * callers that arrive while a write is in flight share the next one. */
    WAL_SYNC_ALWAYS = 0,
    /* Like ALWAYS, but the leader waits up to batch_delay_us for more
     * writers before writing, trading latency for fewer fsyncs. Still
     * nothing is acknowledged before it is on disk. */
    WAL_SYNC_BATCH = 1,
    /* Never fdatasync (except on rotation and close): a power loss loses
     * acknowledged writes. For tests and benchmarks only; the server must
     * log a loud warning at start when it is chosen. */
    WAL_SYNC_NONE = 2,
};

/* Parses "always", "batch" or "none" (a server flag) into *out; KV_EINVAL
 * for anything else. */
int wal_sync_parse(const char *name, enum wal_sync *out) KV_MUST_USE;
/* The name of a policy (static), "?" for an unknown value. */
const char *wal_sync_name(enum wal_sync sync);

/* ---- The file layer (a seam: tests swap in the fault-injection one) ---- */

struct wal_file; /* opaque, defined by each file layer */

/* A file layer. All functions return KV_OK or a kv_err; none may crash on
 * an I/O failure. Paths are full paths. */
struct wal_fs {
    void *data; /* the implementation's context */
    /* Opens `path` for reading and writing, creating it when `create`
     * (KV_ENOENT when missing and not `create`). */
    int (*open)(struct wal_fs *fs, const char *path, int create, struct wal_file **out);
    void (*close)(struct wal_fs *fs, struct wal_file *f);
    /* Writes all `size` bytes at `offset`; anything short is an error. */
    int (*pwrite)(struct wal_fs *fs, struct wal_file *f, const void *buf, size_t size,
                  uint64_t offset);
    /* Reads up to `size` bytes at `offset`; *got < size only at end of file. */
    int (*pread)(struct wal_fs *fs, struct wal_file *f, void *buf, size_t size, uint64_t offset,
                 size_t *got);
    int (*sync)(struct wal_fs *fs, struct wal_file *f); /* fdatasync */
    int (*truncate)(struct wal_fs *fs, struct wal_file *f, uint64_t size);
    int (*size)(struct wal_fs *fs, struct wal_file *f, uint64_t *out);
    int (*unlink)(struct wal_fs *fs, const char *path);
    /* Calls entry_cb for each name in `dir` (not "." or ".."); a non-zero
     * return from entry_cb stops the listing and is returned. */
    int (*list)(struct wal_fs *fs, const char *dir, void *data,
                int (*entry_cb)(void *data, const char *name));
    int (*sync_dir)(struct wal_fs *fs, const char *dir); /* fsync the directory */
    int (*mkdir)(struct wal_fs *fs, const char *dir);    /* KV_OK if it exists */
};

/* The POSIX file layer (pwrite, fdatasync, ...). Static, never freed. */
struct wal_fs *wal_fs_posix(void);

/* Faults the fault-injection layer can inject (see wal_fs_fault_arm). */
enum wal_fault {
    WAL_FAULT_NONE = 0,
    WAL_FAULT_WRITE_EIO,    /* the write fails with KV_EIO, nothing written */
    WAL_FAULT_WRITE_ENOSPC, /* the write fails with KV_ENOSPC, nothing written */
    WAL_FAULT_WRITE_SHORT,  /* half the bytes land, then KV_ENOSPC */
    WAL_FAULT_WRITE_TORN,   /* a prefix lands followed by garbage, then KV_EIO
                               (what a crash in the middle of a write leaves) */
    WAL_FAULT_SYNC_EIO,     /* fdatasync fails with KV_EIO */
};

/* Wraps `inner` (borrowed; must outlive the result) in a layer that
 * injects faults and remembers how much of each file was synced, so that
 * wal_fs_fault_crash can drop unsynced data as a power loss would.
 * Returns NULL on allocation failure; free with wal_fs_fault_free. */
struct wal_fs *wal_fs_fault_new(struct wal_fs *inner);
void wal_fs_fault_free(struct wal_fs *fs);
/* Arms one fault: the (skip + 1)th pwrite (or sync, for SYNC_EIO) from now
 * on fails; every later one succeeds again. */
void wal_fs_fault_arm(struct wal_fs *fs, enum wal_fault fault, uint64_t skip);
/* Simulates a power loss: every file written through this layer loses its
 * unsynced tail; with `seed` != 0 a random prefix of that tail survives
 * instead. Call only while no WAL has the files open. */
int wal_fs_fault_crash(struct wal_fs *fs, uint64_t seed) KV_MUST_USE;
/* Counts of successful operations, for tests. */
uint64_t wal_fs_fault_syncs(struct wal_fs *fs);
uint64_t wal_fs_fault_writes(struct wal_fs *fs);

/* ---- Batches ---- */

/* A write batch: several groups' entries, hard states, compaction marks and
 * removals, encoded as they are added (in the caller's thread), written in
 * order by wal_write. Caller-owned; every field is private. */
struct wal_batch {
    struct kv_buf bytes; /* encoded records */
    struct kv_buf ops;   /* struct wal__op array: what each record does */
    struct kv_buf ents;  /* struct wal__ent array: entries' metadata */
};

void wal_batch_init(struct wal_batch *b);
void wal_batch_close(struct wal_batch *b);
/* Empties the batch for reuse, keeping its memory. */
void wal_batch_clear(struct wal_batch *b);

/* Appends `count` entries of `group` with consecutive indices starting at
 * entries[0].index. If that index is <= the group's last index, the write
 * replaces the group's log from there (Raft's conflicting tail). Payloads are
 * copied. Errors: KV_EINVAL (non-consecutive indices, index 0),
 * KV_ETOOBIG (entry or batch too large), KV_ENOMEM; the batch is unchanged
 * on error. */
int wal_batch_entries(struct wal_batch *b, uint64_t group, const struct wal_entry *entries,
                      size_t count) KV_MUST_USE;
/* Records the group's hard state. KV_ENOMEM, KV_ETOOBIG. */
int wal_batch_hard_state(struct wal_batch *b, uint64_t group,
                         const struct wal_hard_state *hs) KV_MUST_USE;
/* Records that the group snapshotted at `index` (whose entry has `term`):
 * entries up to `index` become garbage; first_index becomes index + 1, and
 * when index is beyond the last index the log becomes empty there (a
 * follower that installed a snapshot). KV_ENOMEM, KV_ETOOBIG. */
int wal_batch_compact(struct wal_batch *b, uint64_t group, uint64_t index,
                      uint64_t term) KV_MUST_USE;
/* Removes the group and everything it wrote. KV_ENOMEM, KV_ETOOBIG. */
int wal_batch_remove(struct wal_batch *b, uint64_t group) KV_MUST_USE;

/* ---- The log ---- */

struct wal; /* opaque */

struct wal_options {
    const char *dir;         /* directory of the segments; created if missing */
    enum wal_sync sync;      /* WAL_SYNC_ALWAYS unless told otherwise */
    uint32_t batch_delay_us; /* WAL_SYNC_BATCH only; <= WAL_BATCH_DELAY_US_MAX */
    uint64_t segment_bytes;  /* 0: WAL_SEGMENT_BYTES_DEFAULT */
    uint64_t cache_bytes;    /* 0: WAL_CACHE_BYTES_DEFAULT; UINT64_MAX: no cache */
    uint64_t rewrite_bytes;  /* 0: WAL_REWRITE_BYTES_DEFAULT; UINT64_MAX: never */
    struct wal_fs *fs;       /* NULL: wal_fs_posix(); borrowed, must outlive the WAL */
};

/* Fills `o` with the defaults for directory `dir` (borrowed). */
void wal_options_init(struct wal_options *o, const char *dir);

/* Opens the log in o->dir, recovering every group from the segments: a torn
 * record at the very tail of the last segment is cut off; damage anywhere
 * else fails with KV_ECORRUPT and errmsg (KV_ERRMSG_SIZE bytes, caller's)
 * naming the file and offset. Other errors: KV_ELOCKED (another process has
 * the directory), KV_EINVAL, KV_ENOMEM, I/O errors. */
int wal_open(const struct wal_options *o, struct wal **out, char *errmsg) KV_MUST_USE;

/* Closes the log (syncing first unless poisoned). No call may be in
 * flight. */
void wal_close(struct wal *w);

/* Writes the batch (borrowed for the call) and returns once it is durable
 * per the sync policy. The batch is validated first: appending entries with
 * a gap after the group's last index, or below its first index, is
 * KV_EINVAL and writes nothing. An empty batch returns KV_OK at once.
 * Errors: KV_EINVAL, KV_ETOOBIG, KV_ENOMEM, KV_EIO, KV_ENOSPC (the write
 * failed and the log is now poisoned), KV_EPOISONED (an earlier write or
 * sync failed: the log refuses all writes until reopened; an fsync is never
 * retried). */
int wal_write(struct wal *w, const struct wal_batch *b) KV_MUST_USE;

/* Durable state of `group`. KV_ENOTFOUND when the log holds nothing of it. */
int wal_group_state(struct wal *w, uint64_t group, struct wal_group_state *out) KV_MUST_USE;

/* Term of entry `index`; index == first_index - 1 gives the compaction
 * term. KV_ECOMPACTED below that, KV_EUNAVAILABLE beyond the last index,
 * KV_ENOTFOUND for an unknown group. */
int wal_term(struct wal *w, uint64_t group, uint64_t index, uint64_t *term) KV_MUST_USE;

/* Entries read by wal_entries: caller-owned, reusable across calls. */
struct wal_read {
    struct wal_entry *entries; /* `count` entries; data points into `bytes` */
    size_t count;              /* entries returned */
    size_t cap;                /* entries allocated */
    struct kv_buf bytes;       /* payloads */
};

void wal_read_init(struct wal_read *r);
void wal_read_close(struct wal_read *r);

/* Reads the entries [lo, hi) of `group` into `out` (previous contents
 * dropped): from the cache when there, from the segment files otherwise.
 * Stops before the total payload exceeds max_bytes, but always returns at
 * least one entry when lo < hi. The entries stay valid until `out` is reused
 * or closed. Errors: KV_ECOMPACTED (lo < first_index), KV_EUNAVAILABLE
 * (hi > last_index + 1), KV_ENOTFOUND, KV_EINVAL (lo > hi), KV_ENOMEM,
 * KV_EIO. */
int wal_entries(struct wal *w, uint64_t group, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                struct wal_read *out) KV_MUST_USE;

/* Fills ids (up to cap) with the ids of the groups the log holds, in
 * increasing order, and returns how many there are in total. When that is
 * more than cap, which ids were given is unspecified: call again with room
 * for all. */
size_t wal_groups(struct wal *w, uint64_t *ids, size_t cap);

/* Counters for benchmarks, metrics and tests. */
struct wal_stats {
    uint64_t writes;           /* pwrite calls of the group-commit leader */
    uint64_t syncs;            /* fdatasync calls on segments */
    uint64_t batches;          /* wal_write calls that wrote something */
    uint64_t bytes_written;    /* record bytes written (rewrites included) */
    uint64_t segments;         /* segment files now */
    uint64_t segments_deleted; /* segment files garbage collected */
    uint64_t rewrites;         /* groups rewritten forward by GC */
    uint64_t disk_bytes;       /* bytes in the segment files now */
    uint64_t groups;           /* groups held */
    uint64_t cache_bytes;      /* payload bytes in the cache */
    uint64_t cache_hits;       /* entries served from the cache */
    uint64_t cache_misses;     /* entries read from the files */
};

void wal_stats(struct wal *w, struct wal_stats *out);

/* Context of the last failure (never NULL; empty when none). Valid until
 * the next call on `w`. */
const char *wal_errmsg(struct wal *w);

#endif
