/* wal_int.h -- internals of the shared Raft log shared by its files:
 * the on-disk format (record.c), the per-group index and cache (index.c),
 * recovery (recover.c), garbage collection (gc.c), segments (segment.c)
 * and the group-commit writer (wal.c). Nothing outside src/wal and its
 * tests includes this. */
#ifndef KV_WAL_INT_H
#define KV_WAL_INT_H

#include <pthread.h>
#include <semaphore.h>

#include "wal.h"

/* ---- On-disk format (all integers little-endian) ----
 *
 * A segment file "<20-digit seq>.wal" starts with a header:
 *   magic "RKVWAL01" (8) | seq u64 | crc32c of the previous 16 bytes u32
 * then records back to back:
 *   crc u32 | length u32 | type u8 | payload[length]
 * where crc is the CRC32C of length, type and payload. Payloads:
 *   ENTRIES    group u64 | first index u64 | count u32 |
 *              count x (term u64 | type u32 | size u32 | data[size])
 *   HARD_STATE group u64 | term u64 | vote u64 | commit u64
 *   COMPACT    group u64 | index u64 | term u64
 *   REMOVE     group u64
 *   RESET      group u64 | compact index u64 | compact term u64 |
 *              has hard state u64 | term u64 | vote u64 | commit u64 |
 *              count u32 | count x entry (from compact index + 1)
 *   WRITE      bytes u64
 * RESET is garbage collection's rewrite of a whole group in one record, so
 * that a crash in the middle of it can never leave half a group. WRITE
 * opens every write of the group-commit leader and gives its length, so
 * that recovery can tell a torn final write (cut off) from damage to an
 * earlier, acknowledged one (an error).
 */
#define WAL__SEG_MAGIC         "RKVWAL01"
#define WAL__SEG_MAGIC_SIZE    8
#define WAL__SEG_HEADER_SIZE   20
#define WAL__REC_HEADER_SIZE   9
#define WAL__ENTRIES_HEAD_SIZE 20 /* group, first index, count */
#define WAL__ENTRY_HEAD_SIZE   16 /* term, type, size */
#define WAL__HARD_STATE_SIZE   32
#define WAL__COMPACT_SIZE      24
#define WAL__REMOVE_SIZE       8
#define WAL__RESET_HEAD_SIZE   60
#define WAL__WRITE_SIZE        8
#define WAL__WRITE_REC_SIZE    (WAL__REC_HEADER_SIZE + WAL__WRITE_SIZE)
/* Suffix and digits of segment file names. */
#define WAL__SEG_SUFFIX ".wal"
#define WAL__SEG_DIGITS 20
/* Longest a group-commit leader waits for the writers of the previous
 * write to queue their next batch (see gather() in wal.c). */
#define WAL__GATHER_US_MAX 500
/* A lone batch up to this size is copied behind its WRITE record so that
 * the write takes one pwrite; a larger one is written in place. */
#define WAL__COPY_BYTES_MAX (64u * 1024)
/* Segments kept before GC rewrites the groups that pin the oldest one. */
#define WAL__GC_SEGMENTS_KEEP 4

enum wal__rec_type {
    WAL__REC_ENTRIES = 1,
    WAL__REC_HARD_STATE = 2,
    WAL__REC_COMPACT = 3,
    WAL__REC_REMOVE = 4,
    WAL__REC_RESET = 5,
    WAL__REC_WRITE = 6,
};

/* A decoded record; pointers borrow the decoder's input. */
struct wal__rec {
    uint8_t type;             /* enum wal__rec_type */
    uint64_t group;           /* group id */
    uint64_t a;               /* ENTRIES: first index; HARD_STATE: term; COMPACT, RESET: index */
    uint64_t b;               /* ENTRIES, RESET: count; HARD_STATE: vote; COMPACT: term */
    uint64_t c;               /* HARD_STATE: commit; RESET: compact term */
    struct wal_hard_state hs; /* RESET: the hard state, when has_hs */
    int has_hs;               /* RESET */
    const uint8_t *entries;   /* ENTRIES: the entry area (validated) */
    size_t entries_size;      /* bytes of the entry area */
    size_t size;              /* bytes of the whole record, header included */
};

/* Decodes the record at p (avail bytes available). Returns KV_OK, KV_EOF when
 * the record runs past avail (truncated), KV_ECORRUPT on a bad checksum or
 * malformed payload (a reason goes to `why`, static). Fully validates an
 * ENTRIES payload, so wal__rec_entry_next cannot fail on its output. */
int wal__rec_decode(const uint8_t *p, size_t avail, struct wal__rec *out,
                    const char **why) KV_MUST_USE;

/* Reads the next entry of a validated ENTRIES area. *data_off is the offset
 * of the payload from the start of the area. KV_ECORRUPT when exhausted. */
struct wal__entry_cursor {
    const uint8_t *area; /* start of the entry area */
    size_t size;         /* bytes of the area */
    size_t pos;          /* next entry */
};
int wal__rec_entry_next(struct wal__entry_cursor *c, uint64_t *term, uint32_t *type, uint32_t *size,
                        size_t *data_off) KV_MUST_USE;

/* Encodes the WRITE record (WAL__WRITE_REC_SIZE bytes at p) that opens a
 * write of `write_bytes` bytes, itself included. */
void wal__write_rec_encode(uint8_t *p, uint64_t write_bytes);

void wal__seg_header_encode(uint8_t *p, uint64_t seq);
/* KV_OK when the header at p is intact and names `seq`. */
int wal__seg_header_check(const uint8_t *p, uint64_t seq) KV_MUST_USE;

/* ---- Batches ---- */

/* One record of a batch, as the writer applies it once durable. */
struct wal__op {
    uint32_t type;            /* enum wal__rec_type */
    uint64_t group;           /* group id */
    uint64_t a, b, c;         /* as in struct wal__rec */
    struct wal_hard_state hs; /* RESET */
    int has_hs;               /* RESET */
    size_t ent_start;         /* ENTRIES, RESET: index of the first wal__ent */
};

/* Adds a RESET record: the whole of a group in one record (GC's rewrite).
 * hs may be NULL; entries start at compact_index + 1. KV_ETOOBIG when it
 * would exceed WAL_RECORD_BYTES_MAX, KV_ENOMEM. */
int wal__batch_reset(struct wal_batch *b, uint64_t group, uint64_t compact_index,
                     uint64_t compact_term, const struct wal_hard_state *hs,
                     const struct wal_entry *entries, size_t count) KV_MUST_USE;

/* One entry of a batch. */
struct wal__ent {
    uint64_t term;
    uint32_t type;
    uint32_t size;
    size_t data_off; /* offset of the payload in the batch's bytes */
};

/* ---- Index and cache ---- */

/* A cached copy of one entry's payload, inside the cache ring. */
struct wal__cached {
    uint64_t group;
    uint64_t index;
    uint32_t size;  /* payload bytes */
    uint32_t flags; /* WAL__CACHED_LIVE, WAL__CACHED_PAD */
    uint8_t data[];
};
#define WAL__CACHED_LIVE 1u /* an index location points here */
#define WAL__CACHED_PAD  2u /* filler up to the end of the ring */

/* The read cache: one ring buffer of cached payloads in write order, so that
 * eviction (oldest first) is a pointer bump and caching costs no allocation.
 * Dropped entries are only marked dead; the ring reclaims them in order. */
struct wal__cache {
    uint8_t *ring; /* `size` bytes, allocated at the first use */
    uint64_t size; /* a multiple of 8; 0 when the cache is off */
    uint64_t head; /* oldest record */
    uint64_t tail; /* where the next record goes */
    uint64_t used; /* bytes between head and tail, dead ones included */
};

/* Where an entry lives. */
struct wal__loc {
    uint64_t term;
    uint64_t seg;               /* segment seq */
    uint64_t offset;            /* of the payload in the segment */
    uint32_t size;              /* payload bytes */
    uint32_t type;              /* entry type */
    struct wal__cached *cached; /* copy in the cache, or NULL */
};

struct wal__group {
    uint64_t id;
    int exists;            /* 1 once any record of it is durable */
    uint64_t first_index;  /* first held entry */
    uint64_t last_index;   /* last held entry; first_index - 1 when empty */
    uint64_t compact_term; /* term at first_index - 1 */
    struct wal_hard_state hs;
    int has_hs;
    uint64_t hs_seg;       /* segment of the latest hard state record, 0: none */
    uint64_t mark_seg;     /* segment of the latest compaction mark, 0: none */
    struct wal__loc *locs; /* locs[head + i] is entry first_index + i */
    size_t head;
    size_t cap;
    uint64_t live_bytes; /* payload bytes of the held entries */
    /* Validation of queued batches: the log as it will be once every queued
     * batch is written. */
    uint64_t pend_first;
    uint64_t pend_last;
    uint32_t pending; /* queued ops naming this group */
};

/* Open-addressing hash table of groups by id (linear probing, backward-shift
 * deletion), never iterated in pointer order. */
struct wal__table {
    struct wal__group **slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
};

struct wal__seg {
    uint64_t seq;
    struct wal_file *f;
    uint64_t size; /* bytes written and accounted (durable per policy) */
};

enum wal__waiter_state {
    WAL__WAITER_QUEUED = 0, /* waiting in the queue */
    WAL__WAITER_LEAD = 1,   /* handed the leadership: must write */
    WAL__WAITER_DONE = 2,   /* its batch was written (rc says how) */
};

/* A wal_write call in the queue; lives on the caller's stack. */
struct wal__waiter {
    const struct wal_batch *batch;
    int rc;
    int state; /* enum wal__waiter_state, changed under w->lock */
    sem_t sem; /* posted when state leaves QUEUED */
    struct wal__waiter *next;
};

struct wal {
    struct wal_options opt;
    char dir[WAL_PATH_MAX];
    struct wal_fs *fs;
    int lock_fd; /* flock on <dir>/LOCK */

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* only for the WAL_SYNC_BATCH delay */
    struct wal__table groups;
    struct wal__seg *segs; /* by increasing seq; the last one is active */
    size_t seg_count;
    size_t seg_cap;
    struct wal__waiter *queue_head, *queue_tail;
    size_t queue_bytes;
    size_t queue_count;    /* waiters queued */
    size_t last_released;  /* waiters the previous write served */
    uint64_t write_ns_avg; /* moving average of one write + sync */
    int gathering;         /* the leader waits on gather_cond */
    pthread_cond_t gather_cond;
    int writing;  /* a leader is writing */
    int poisoned; /* 0, or the error that poisoned the log */
    int gc_wanted;
    struct kv_buf scratch; /* the leader's write buffer */
    struct wal__cache cache;
    struct wal_stats stats;
    char errmsg[KV_ERRMSG_SIZE];
};

void wal__set_errmsg(struct wal *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void wal__table_close(struct wal__table *t);
struct wal__group *wal__table_find(const struct wal__table *t, uint64_t id);
/* Finds or creates (empty, !exists) the group. KV_ENOMEM. */
int wal__table_get(struct wal__table *t, uint64_t id, struct wal__group **out) KV_MUST_USE;
void wal__table_remove(struct wal *w, uint64_t id);

/* Puts entry `index` (replacing any tail from there). `cache_data` (may be
 * NULL) is copied into the cache when it fits. In recovery (`replay`) an
 * entry beyond a gap of an empty log restarts the log there. KV_ENOMEM,
 * KV_ECORRUPT (a gap). */
int wal__group_put(struct wal *w, struct wal__group *g, uint64_t index, const struct wal__loc *loc,
                   const void *cache_data, int replay) KV_MUST_USE;
void wal__group_compact(struct wal *w, struct wal__group *g, uint64_t index, uint64_t term,
                        uint64_t seg);
/* Drops every entry and state of the group (not the table slot). */
void wal__group_reset(struct wal *w, struct wal__group *g);
/* Applies the head of a RESET record written in segment `seg`: the group
 * becomes empty after compact_index, with the given hard state. */
void wal__group_reset_to(struct wal *w, struct wal__group *g, uint64_t compact_index,
                         uint64_t compact_term, const struct wal_hard_state *hs, uint64_t seg);
struct wal__loc *wal__group_loc(struct wal__group *g, uint64_t index);
/* Frees the cache's ring. */
void wal__cache_close(struct wal__cache *c);

/* ---- Segments ---- */

void wal__seg_path(const struct wal *w, uint64_t seq, char *out, size_t size);
/* Parses a segment file name; 1 and *seq when it is one. */
int wal__seg_parse_name(const char *name, uint64_t *seq);
/* Creates segment `seq` (header written and synced, directory synced) and
 * appends it to w->segs. Call without w->lock; the caller is the leader. */
int wal__seg_create(struct wal *w, uint64_t seq) KV_MUST_USE;
struct wal__seg *wal__seg_find(struct wal *w, uint64_t seq);
/* Recovery: appends an opened, verified segment of `size` valid bytes. */
int wal__seg_adopt(struct wal *w, uint64_t seq, struct wal_file *f, uint64_t size) KV_MUST_USE;
/* Reads `size` bytes at `offset` of segment `seq`; KV_EIO if short. */
int wal__seg_read(struct wal *w, uint64_t seq, uint64_t offset, void *buf, size_t size) KV_MUST_USE;

/* ---- Recovery and GC ---- */

/* Rebuilds every group from the segments in w->dir (see wal_open). */
int wal__recover(struct wal *w) KV_MUST_USE;

/* Flags of wal__apply_op and wal__write_locked. */
#define WAL__APPLY_CACHE   1u /* copy the payloads into the cache */
#define WAL__APPLY_PENDING 2u /* the batch was validated: count its ops down */

/* Applies one op of a durable batch written at `base` of segment `seg`. */
int wal__apply_op(struct wal *w, const struct wal_batch *b, const struct wal__op *op, uint64_t seg,
                  uint64_t base, unsigned flags) KV_MUST_USE;

/* Reads entries [lo, hi) of g into out (see wal_entries); w->lock held. */
int wal__read_locked(struct wal *w, struct wal__group *g, uint64_t lo, uint64_t hi,
                     uint64_t max_bytes, struct wal_read *out) KV_MUST_USE;

/* Deletes the segments no group needs and rewrites forward the few groups
 * that pin old segments. Called by the leader with w->lock held; may drop
 * and retake the lock to write. */
int wal__gc(struct wal *w) KV_MUST_USE;

/* Writes `b` as the leader (w->lock held on entry and exit, dropped during
 * I/O) and applies it; used by GC's rewrites. */
int wal__write_locked(struct wal *w, const struct wal_batch *b, unsigned flags) KV_MUST_USE;

#endif
