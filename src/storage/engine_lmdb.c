/* engine_lmdb.c -- the B+tree engine: one LMDB environment (data.mdb +
 * lock.mdb) in the engine's directory, one unnamed database.
 *
 * LMDB gives us most of the contract directly: a write transaction is an
 * atomic batch, a read-only transaction is a point-in-time view (MVCC, no
 * copy), and a cursor on it is an ordered iterator whose memory comes
 * straight from the map. What this file adds: the open-time checks LMDB
 * leaves out (it trusts its file), error mapping into kv_err with the file
 * named, a small pool of reset read transactions so that latest-state reads
 * do not pay for a reader slot each time, and a directory lock so one
 * process owns the directory. docs/storage-lmdb.md explains the choices
 * (map size, sync flags, reader limit) and what cannot be detected. */
#include "stor_int.h"
#include "alloc.h"
#include "crc32c.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Virtual size of the map. LMDB cannot grow the map while any transaction
 * of this process is open, and views are long-lived and cross threads, so
 * instead of growing we reserve address space once: the file itself stays
 * sparse and only grows with the data. 1 TiB is far above what one node's
 * disk is expected to hold; reaching it returns KV_ENOSPC. */
#define LMDB_MAP_BYTES (1ull << 40)
/* When the process may not reserve that much address space (RLIMIT_AS, a
 * 32-bit build), halve the request down to this floor before giving up. */
#define LMDB_MAP_BYTES_MIN (1ull << 30)
/* Reader slots in lock.mdb (64 bytes each): every open view, iterator
 * without a view, in-flight latest-state read and pooled transaction holds
 * one. Beyond it, stor_view_new returns KV_EBUSY. */
#define LMDB_READERS_MAX 1024
/* Reset read transactions kept for reuse (each keeps its reader slot). */
#define LMDB_TXN_POOL_MAX 16
#define LMDB_PATH_MAX     4096
/* Page sizes LMDB can have written; anything else in the meta is damage. */
#define LMDB_PAGE_SIZE_MIN 512u
#define LMDB_PAGE_SIZE_MAX 65536u

/* Every stored value is a record: u32 CRC-32C (little-endian) of the key
 * then the value, followed by the value. LMDB has no checksums; this one
 * turns a damaged key or value into KV_ECORRUPT instead of a wrong answer. */
#define REC_CRC_SIZE 4u

struct lmdb_engine {
    struct stor_engine base;
    MDB_env *env;
    MDB_dbi dbi;                      /* the unnamed database */
    int lock_fd;                      /* stor__lock_dir's LOCK file */
    uint64_t map_bytes;               /* map size in effect */
    char data_path[LMDB_PATH_MAX];    /* <dir>/data.mdb, for messages and stats */
    char lock_path[LMDB_PATH_MAX];    /* <dir>/lock.mdb, for stats */
    pthread_mutex_t errmsg_lock;      /* readers on several threads may fail at once */
    pthread_mutex_t pool_lock;        /* guards pool and pool_count */
    MDB_txn *pool[LMDB_TXN_POOL_MAX]; /* reset read transactions, ready to renew */
    int pool_count;
    atomic_int views_live; /* views not yet freed: must be 0 at close */
};

struct lmdb_view {
    struct stor_view base;
    MDB_txn *txn; /* read-only, active until the view is freed */
};

struct lmdb_iter {
    struct stor_iter base;
    MDB_cursor *cursor; /* on the view's transaction */
    MDB_val key;        /* pending pair when `pending` */
    MDB_val value;
    int pending; /* iter_new positioned on a pair not returned yet */
    int done;    /* the end of the range (or an error) was reached */
    int has_end;
    struct kv_buf end; /* exclusive upper bound when has_end */
};

/* ---- errors ----------------------------------------------------------------- */

/* Maps an LMDB return code (MDB_* negative, errno positive) into kv_err. */
static int map_mdb_err(int mrc)
{
    switch (mrc) {
    case MDB_SUCCESS:
        return KV_OK;
    case MDB_NOTFOUND:
        return KV_ENOTFOUND;
    case MDB_CORRUPTED:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_PAGE_NOTFOUND:
        return KV_ECORRUPT;
    case MDB_MAP_FULL:
        return KV_ENOSPC;
    case MDB_READERS_FULL:
        return KV_EBUSY;
    case MDB_TXN_FULL:
    case MDB_BAD_VALSIZE:
        return KV_ETOOBIG;
    case MDB_KEYEXIST:
        return KV_EEXIST;
    case MDB_INCOMPATIBLE:
        return KV_EINVAL;
    }
    /* MDB_PANIC, MDB_MAP_RESIZED and LMDB's internal errors: the environment
     * can no longer be trusted to write, so they count as I/O failures. */
    return mrc > 0 ? kv_err_from_errno(mrc) : KV_EIO;
}

static void set_msg(struct lmdb_engine *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_msg(struct lmdb_engine *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&l->errmsg_lock);
    vsnprintf(stor__errbuf(&l->base), KV_ERRMSG_SIZE, fmt, ap);
    pthread_mutex_unlock(&l->errmsg_lock);
    va_end(ap);
}

/* Explains what a code means for us, beyond LMDB's own text. */
static const char *mdb_hint(int mrc)
{
    switch (mrc) {
    case MDB_READERS_FULL:
        return " (too many open views and iterators; free some and retry)";
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return " (the file is damaged)";
    }
    return "";
}

/* Records "lmdb: <what> <data.mdb>: <LMDB's text>" and returns the kv_err. */
static int fail_mdb(struct lmdb_engine *l, int mrc, const char *what)
{
    if (mrc == MDB_MAP_FULL) {
        set_msg(l,
                "lmdb: %s %s: %s (the %llu MiB map reserved at open is full; see "
                "docs/storage-lmdb.md)",
                what, l->data_path, mdb_strerror(mrc), (unsigned long long)(l->map_bytes >> 20));
        return KV_ENOSPC;
    }
    set_msg(l, "lmdb: %s %s: %s%s", what, l->data_path, mdb_strerror(mrc), mdb_hint(mrc));
    return map_mdb_err(mrc);
}

/* ---- records -------------------------------------------------------------- */

static uint32_t rec_crc(const void *key, size_t key_size, const void *value, size_t value_size)
{
    return kv_crc32c(kv_crc32c(0, key, key_size), value, value_size);
}

/* Checks the record stored under `k`; on success points *value at the
 * caller's bytes inside it. */
static int rec_check(struct lmdb_engine *l, const MDB_val *k, const MDB_val *rec,
                     const uint8_t **value, size_t *value_size, const char *what)
{
    const uint8_t *r = rec->mv_data;
    if (rec->mv_size < REC_CRC_SIZE ||
        kv_load_u32(r) !=
            rec_crc(k->mv_data, k->mv_size, r + REC_CRC_SIZE, rec->mv_size - REC_CRC_SIZE)) {
        set_msg(l,
                "lmdb: %s %s: checksum mismatch in the record of a %zu-byte key (the file is "
                "damaged)",
                what, l->data_path, k->mv_size);
        return KV_ECORRUPT;
    }
    *value = r + REC_CRC_SIZE;
    *value_size = rec->mv_size - REC_CRC_SIZE;
    return KV_OK;
}

/* ---- read transactions ------------------------------------------------------- */

/* Hands out an active read-only transaction: a pooled one renewed, or a new
 * one (which takes a reader slot). Returned with txn_give. */
static int txn_take(struct lmdb_engine *l, MDB_txn **out)
{
    MDB_txn *txn = NULL;
    pthread_mutex_lock(&l->pool_lock);
    if (l->pool_count > 0) {
        txn = l->pool[--l->pool_count];
    }
    pthread_mutex_unlock(&l->pool_lock);
    int mrc;
    if (txn != NULL) {
        mrc = mdb_txn_renew(txn);
        if (mrc != MDB_SUCCESS) {
            mdb_txn_abort(txn);
            return fail_mdb(l, mrc, "renew read transaction on");
        }
    } else {
        mrc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn);
        if (mrc != MDB_SUCCESS) {
            return fail_mdb(l, mrc, "begin read transaction on");
        }
    }
    *out = txn;
    return KV_OK;
}

/* Ends a read transaction from txn_take: reset into the pool (keeping its
 * reader slot, pinning no pages) or aborted when the pool is full. */
static void txn_give(struct lmdb_engine *l, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    pthread_mutex_lock(&l->pool_lock);
    if (l->pool_count < LMDB_TXN_POOL_MAX) {
        l->pool[l->pool_count++] = txn;
        txn = NULL;
    }
    pthread_mutex_unlock(&l->pool_lock);
    if (txn != NULL) {
        mdb_txn_abort(txn);
    }
}

static void pool_drain(struct lmdb_engine *l)
{
    pthread_mutex_lock(&l->pool_lock);
    while (l->pool_count > 0) {
        mdb_txn_abort(l->pool[--l->pool_count]);
    }
    pthread_mutex_unlock(&l->pool_lock);
}

/* ---- open ------------------------------------------------------------------ */

static int set_paths(struct lmdb_engine *l, const char *dir, char *errmsg)
{
    int n = snprintf(l->data_path, sizeof l->data_path, "%s/data.mdb", dir);
    int m = snprintf(l->lock_path, sizeof l->lock_path, "%s/lock.mdb", dir);
    if (n < 0 || m < 0 || (size_t)m >= sizeof l->lock_path || (size_t)n >= sizeof l->data_path) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: path too long: %s", dir);
        return KV_EINVAL;
    }
    return KV_OK;
}

/* Creates and opens the environment, halving the map request while the
 * address space refuses it. */
static int env_open(struct lmdb_engine *l, const struct stor_options *o, char *errmsg)
{
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (o->sync == STOR_SYNC_NONE) {
        /* Not MDB_NOSYNC: that lets a power loss leave a meta page pointing
         * at data that never reached the disk. NOMETASYNC keeps the data
         * flush before the meta write, losing only the last commit. */
        flags |= MDB_NOMETASYNC;
    }
    for (uint64_t map = LMDB_MAP_BYTES;; map /= 2) {
        int mrc = mdb_env_create(&l->env);
        if (mrc == MDB_SUCCESS) {
            mrc = mdb_env_set_maxreaders(l->env, LMDB_READERS_MAX);
        }
        if (mrc == MDB_SUCCESS) {
            mrc = mdb_env_set_mapsize(l->env, (size_t)map);
        }
        if (mrc == MDB_SUCCESS) {
            mrc = mdb_env_open(l->env, o->path, flags, 0644);
        }
        if (mrc == MDB_SUCCESS) {
            if (map < LMDB_MAP_BYTES) {
                kv_warn("lmdb: address space refused the full map file=%s map_mib=%llu",
                        l->data_path, (unsigned long long)(map >> 20));
            }
            l->map_bytes = map;
            return KV_OK;
        }
        if (l->env != NULL) {
            mdb_env_close(l->env); /* a failed open leaves it unusable */
            l->env = NULL;
        }
        if (mrc != ENOMEM || map / 2 < LMDB_MAP_BYTES_MIN) {
            const char *hint = "";
            if (mrc == MDB_INVALID || mrc == MDB_VERSION_MISMATCH) {
                hint = " (not an LMDB data file, or its meta pages are damaged)";
            }
            snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: open %s: %s%s", l->data_path, mdb_strerror(mrc),
                     hint);
            return map_mdb_err(mrc);
        }
    }
}

/* ---- open-time verification ------------------------------------------------
 * LMDB has no page checksums and trusts every page it maps: a damaged node
 * offset or size sends it reading past the page, or past the end of the
 * file (SIGBUS), and its internal assertions abort the process. So before
 * LMDB touches the trees, we walk them ourselves with pread and bounds
 * checks, up to a page budget. The offsets below are LMDB 0.9's on-disk
 * format (MDB_DATA_VERSION 1, 64-bit build); lmdb.h does not export it,
 * and test_lmdb.c checks the verifier against files LMDB wrote. */
#define PG_HDR_SIZE      16 /* pgno u64, pad u16, flags u16, lower u16, upper u16 */
#define PG_OFF_FLAGS     10
#define PG_OFF_LOWER     12
#define PG_OFF_UPPER     14
#define PG_BRANCH        0x01
#define PG_LEAF          0x02
#define PG_OVERFLOW      0x04
#define PG_OFF_PAGES     12   /* u32 page count, in an overflow run's first page */
#define NODE_HDR_SIZE    8    /* lo u16, hi u16, flags u16, key size u16 */
#define NODE_BIGDATA     0x01 /* the value lives on overflow pages */
#define META_OFF_DBS     40   /* MDB_db[2] (free list, main) after magic etc. */
#define DB_SIZE          48   /* pad u32, flags u16, depth u16, 4 counts, root */
#define DB_OFF_FLAGS     4
#define DB_OFF_DEPTH     6
#define DB_OFF_ROOT      40
#define META_OFF_LAST_PG 136
#define META_OFF_TXNID   144
#define DB_FLAGS_FREE    0x08       /* MDB_INTEGERKEY, what LMDB gives its free list */
#define PGNO_NONE        UINT64_MAX /* root of an empty tree */
#define VERIFY_DEPTH_MAX 32         /* LMDB's own cursor stack depth */
/* Pages read at open at most (128 MiB with 4 KiB pages): enough to check
 * every branch and leaf page of a store of large values many GB in size;
 * past it the rest of the tree is left unchecked (the doc says so). */
#define VERIFY_PAGES_MAX 32768u
_Static_assert(sizeof(size_t) == 8, "the layout above is LMDB's 64-bit one (mdb_size_t, pgno_t)");

struct verify {
    int fd;           /* data.mdb, read-only */
    const char *path; /* for messages */
    unsigned psize;   /* page size */
    uint64_t last_pg; /* highest page number in use */
    uint8_t *page;    /* one page buffer */
    uint64_t *stack;  /* pending (pgno << 8 | level) entries */
    size_t stack_count;
    size_t stack_cap;
    uint64_t pages_read; /* against VERIFY_PAGES_MAX */
    uint8_t *seen;       /* bitmap over pages: each may be referenced once */
    int free_list;       /* walking the free list (integer keys, ID lists) */
    char *errmsg;
};

static uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static int vfail(struct verify *v, uint64_t pgno, const char *what)
{
    snprintf(v->errmsg, KV_ERRMSG_SIZE, "lmdb: %s is damaged: page %llu: %s", v->path,
             (unsigned long long)pgno, what);
    return KV_ECORRUPT;
}

static int vread(struct verify *v, uint64_t pgno, uint8_t *dst, size_t size)
{
    ssize_t n = pread(v->fd, dst, size, (off_t)(pgno * v->psize));
    if (n == (ssize_t)size) {
        return KV_OK;
    }
    int err = n < 0 ? errno : 0;
    snprintf(v->errmsg, KV_ERRMSG_SIZE, "lmdb: read %s page %llu: %s", v->path,
             (unsigned long long)pgno, n < 0 ? strerror(err) : "short read");
    return n < 0 ? kv_err_from_errno(err) : KV_ECORRUPT;
}

/* Marks a page as referenced; returns 1 when it already was. */
static int seen_test_and_set(struct verify *v, uint64_t pgno)
{
    uint8_t bit = (uint8_t)(1u << (pgno % 8));
    int was = (v->seen[pgno / 8] & bit) != 0;
    v->seen[pgno / 8] |= bit;
    return was;
}

static int vpush(struct verify *v, uint64_t pgno, unsigned level)
{
    if (pgno < 2 || pgno > v->last_pg) {
        return vfail(v, pgno, "child page number out of range");
    }
    if (seen_test_and_set(v, pgno)) {
        return vfail(v, pgno, "page referenced twice");
    }
    if (v->stack_count == v->stack_cap) {
        size_t cap = v->stack_cap ? v->stack_cap * 2 : 256;
        uint64_t *s = kv_realloc(v->stack, cap * sizeof *s);
        if (s == NULL) {
            return KV_ENOMEM;
        }
        v->stack = s;
        v->stack_cap = cap;
    }
    v->stack[v->stack_count++] = pgno << 8 | level;
    return KV_OK;
}

/* Claims the `count` pages of an overflow run for one value. */
static int claim_run(struct verify *v, uint64_t pgno, uint64_t ov, uint64_t count)
{
    for (uint64_t i = 0; i < count; i++) {
        if (seen_test_and_set(v, ov + i)) {
            return vfail(v, pgno, "overflow page referenced twice");
        }
    }
    return KV_OK;
}

/* Checks a free-list record (an LMDB ID list: u64 count, then that many
 * page numbers in descending order). Every page listed must exist and be
 * used by nothing else: LMDB hands these pages to the next writer, which
 * would overwrite live data. Runs after the data tree was walked. */
static int verify_idl(struct verify *v, uint64_t pgno, const uint8_t *data, uint64_t size)
{
    if (size < 8 || size % 8 != 0 || kv_load_u64(data) > size / 8 - 1) {
        return vfail(v, pgno, "free-list record has a bad size");
    }
    uint64_t count = kv_load_u64(data);
    uint64_t prev = UINT64_MAX;
    for (uint64_t i = 1; i <= count; i++) {
        uint64_t id = kv_load_u64(data + 8 * i);
        if (id < 2 || id > v->last_pg || id >= prev) {
            return vfail(v, pgno, "free-list entry out of range or order");
        }
        if (seen_test_and_set(v, id)) {
            return vfail(v, pgno, "page is both free and in use");
        }
        prev = id;
    }
    return KV_OK;
}

/* A free-list record too big for its leaf: read its overflow run. */
static int verify_idl_run(struct verify *v, uint64_t pgno, uint64_t ov, uint64_t count,
                          uint64_t size)
{
    if (size > 8 * (v->last_pg + 2)) {
        return vfail(v, pgno, "free-list record larger than the file's page count");
    }
    size_t bytes = (size_t)(count * v->psize);
    uint8_t *run = kv_malloc(bytes);
    if (run == NULL) {
        snprintf(v->errmsg, KV_ERRMSG_SIZE, "lmdb: verify %s: out of memory", v->path);
        return KV_ENOMEM;
    }
    v->pages_read += count;
    int rc = vread(v, ov, run, bytes);
    if (rc == KV_OK && (kv_load_u64(run) != ov || !(ld16(run + PG_OFF_FLAGS) & PG_OVERFLOW) ||
                        kv_load_u32(run + PG_OFF_PAGES) != count)) {
        rc = vfail(v, ov, "overflow page header does not match its reference");
    }
    if (rc == KV_OK) {
        rc = verify_idl(v, pgno, run + PG_HDR_SIZE, size);
    }
    kv_free(run);
    return rc;
}

/* Checks node `i` of the page in v->page, pushes a branch node's child,
 * and returns the node's key through *key and *key_size. */
static int verify_node(struct verify *v, uint64_t pgno, unsigned i, int leaf, unsigned level,
                       const uint8_t **key, size_t *key_size)
{
    const uint8_t *p = v->page;
    unsigned upper = ld16(p + PG_OFF_UPPER);
    unsigned off = ld16(p + PG_HDR_SIZE + 2 * i);
    if (off < upper || off + NODE_HDR_SIZE > v->psize) {
        return vfail(v, pgno, "node offset outside the page");
    }
    const uint8_t *n = p + off;
    uint64_t lo = ld16(n);
    uint64_t hi = ld16(n + 2);
    unsigned flags = ld16(n + 4);
    *key = n + NODE_HDR_SIZE;
    *key_size = ld16(n + 6);
    size_t end = off + NODE_HDR_SIZE + *key_size;
    if (end > v->psize) {
        return vfail(v, pgno, "key runs past the page");
    }
    if (!leaf) {
        return vpush(v, lo | hi << 16 | (uint64_t)flags << 32, level + 1);
    }
    uint64_t data_size = lo | hi << 16;
    if ((flags & ~NODE_BIGDATA) != 0) {
        return vfail(v, pgno, "leaf node has sub-database or duplicate flags");
    }
    if (flags & NODE_BIGDATA) {
        if (end + 8 > v->psize) {
            return vfail(v, pgno, "overflow reference runs past the page");
        }
        uint64_t ov = kv_load_u64(p + end);
        uint64_t count = (PG_HDR_SIZE + data_size + v->psize - 1) / v->psize;
        if (ov < 2 || ov > v->last_pg || count > v->last_pg - ov + 1) {
            return vfail(v, pgno, "value's overflow pages are out of range");
        }
        int rc = claim_run(v, pgno, ov, count);
        if (rc == KV_OK && v->free_list) {
            rc = verify_idl_run(v, pgno, ov, count, data_size);
        }
        return rc;
    }
    if (end + data_size > v->psize) {
        return vfail(v, pgno, "value runs past the page");
    }
    return v->free_list ? verify_idl(v, pgno, p + end, data_size) : KV_OK;
}

/* Reads and checks one page at tree level `level` of a tree `depth` deep. */
static int verify_page(struct verify *v, uint64_t pgno, unsigned level, unsigned depth)
{
    int rc = vread(v, pgno, v->page, v->psize);
    if (rc != KV_OK) {
        return rc;
    }
    const uint8_t *p = v->page;
    unsigned flags = ld16(p + PG_OFF_FLAGS);
    unsigned lower = ld16(p + PG_OFF_LOWER);
    unsigned upper = ld16(p + PG_OFF_UPPER);
    int leaf = level + 1 == depth;
    if (kv_load_u64(p) != pgno) {
        return vfail(v, pgno, "page header names another page");
    }
    if ((flags & (PG_BRANCH | PG_LEAF)) != (leaf ? PG_LEAF : PG_BRANCH)) {
        return vfail(v, pgno, "page type does not match its place in the tree");
    }
    if (lower < PG_HDR_SIZE || (lower - PG_HDR_SIZE) % 2 != 0 || lower > upper ||
        upper > v->psize) {
        return vfail(v, pgno, "page bounds are inconsistent");
    }
    unsigned count = (lower - PG_HDR_SIZE) / 2;
    if (!leaf && count == 0) {
        return vfail(v, pgno, "empty branch page");
    }
    /* Keys ascend within a page; a branch page's first key is unused. */
    const uint8_t *prev = NULL;
    size_t prev_size = 0;
    for (unsigned i = 0; i < count && rc == KV_OK; i++) {
        const uint8_t *key = NULL;
        size_t key_size = 0;
        rc = verify_node(v, pgno, i, leaf, level, &key, &key_size);
        if (rc == KV_OK && !v->free_list && prev != NULL &&
            stor__key_cmp(prev, prev_size, key, key_size) >= 0) {
            rc = vfail(v, pgno, "keys out of order");
        }
        if (leaf || i > 0) {
            prev = key;
            prev_size = key_size;
        }
    }
    return rc;
}

/* Walks one tree (the free list or the main database) depth first. */
static int verify_tree(struct verify *v, const uint8_t *db, unsigned want_flags, const char *name)
{
    v->free_list = want_flags == DB_FLAGS_FREE;
    unsigned depth = ld16(db + DB_OFF_DEPTH);
    uint64_t root = kv_load_u64(db + DB_OFF_ROOT);
    if (ld16(db + DB_OFF_FLAGS) != want_flags) {
        return vfail(v, 1, name);
    }
    if (root == PGNO_NONE) {
        return depth == 0 ? KV_OK : vfail(v, 1, "empty tree with a depth");
    }
    if (depth == 0 || depth > VERIFY_DEPTH_MAX) {
        return vfail(v, root, "tree depth out of range");
    }
    v->stack_count = 0;
    int rc = vpush(v, root, 0);
    while (rc == KV_OK && v->stack_count > 0) {
        if (v->pages_read++ >= VERIFY_PAGES_MAX) {
            kv_info("lmdb: open-time check stopped at its page budget file=%s pages=%u", v->path,
                    VERIFY_PAGES_MAX);
            v->stack_count = 0;
            break;
        }
        uint64_t e = v->stack[--v->stack_count];
        unsigned level = (unsigned)(e & 0xff);
        if (level >= depth) {
            return vfail(v, e >> 8, "tree deeper than its recorded depth");
        }
        rc = verify_page(v, e >> 8, level, depth);
    }
    return rc;
}

/* Picks the newer meta page (as LMDB does) and checks both trees. */
static int verify_file(struct lmdb_engine *l, unsigned psize, uint64_t last_pg, char *errmsg)
{
    struct verify v = {.path = l->data_path, .psize = psize, .last_pg = last_pg, .errmsg = errmsg};
    v.fd = open(l->data_path, O_RDONLY | O_CLOEXEC);
    if (v.fd < 0) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: open %s: %s", l->data_path, strerror(err));
        return kv_err_from_errno(err);
    }
    int rc = KV_ENOMEM;
    uint8_t *metas = kv_malloc(2 * (size_t)psize);
    v.page = kv_malloc(psize);
    v.seen = kv_calloc(last_pg / 8 + 1, 1);
    if (metas == NULL || v.page == NULL || v.seen == NULL) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: verify %s: out of memory", l->data_path);
        goto out;
    }
    rc = vread(&v, 0, metas, 2 * (size_t)psize);
    if (rc != KV_OK) {
        goto out;
    }
    uint8_t *m = metas;
    if (kv_load_u64(metas + psize + META_OFF_TXNID) > kv_load_u64(metas + META_OFF_TXNID)) {
        m = metas + psize;
    }
    if (kv_load_u64(m + META_OFF_LAST_PG) != last_pg) {
        rc = vfail(&v, m == metas ? 0 : 1, "meta page disagrees with LMDB's reading of it");
        goto out;
    }
    /* The data first: the free list's entries are checked against it. */
    rc = verify_tree(&v, m + META_OFF_DBS + DB_SIZE, 0, "database has unexpected flags");
    if (rc == KV_OK) {
        rc = verify_tree(&v, m + META_OFF_DBS, DB_FLAGS_FREE, "free list has unexpected flags");
    }
out:
    kv_free(v.stack);
    kv_free(v.seen);
    kv_free(v.page);
    kv_free(metas);
    close(v.fd);
    return rc;
}

/* LMDB maps the file and trusts the meta page: a file shorter than the
 * pages the meta claims would fault (SIGBUS) on first touch. */
static int check_geometry(struct lmdb_engine *l, char *errmsg)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    int mrc = mdb_env_info(l->env, &info);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_env_stat(l->env, &st);
    }
    if (mrc != MDB_SUCCESS) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: stat %s: %s", l->data_path, mdb_strerror(mrc));
        return map_mdb_err(mrc);
    }
    if (stat(l->data_path, &fst) != 0) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: stat %s: %s", l->data_path, strerror(err));
        return kv_err_from_errno(err);
    }
    unsigned psize = st.ms_psize;
    if (psize < LMDB_PAGE_SIZE_MIN || psize > LMDB_PAGE_SIZE_MAX || (psize & (psize - 1)) != 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: %s is damaged: meta page gives page size %u",
                 l->data_path, psize);
        return KV_ECORRUPT;
    }
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * psize;
    if ((uint64_t)fst.st_size < need) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "lmdb: %s is truncated: %lld bytes, but its meta page references %llu pages "
                 "(%llu bytes)",
                 l->data_path, (long long)fst.st_size, (unsigned long long)info.me_last_pgno + 1,
                 (unsigned long long)need);
        return KV_ECORRUPT;
    }
    return verify_file(l, psize, info.me_last_pgno, errmsg);
}

/* Opens the unnamed database and walks to its first and last keys: this
 * touches the root and both edges of the tree, so gross damage there shows
 * up now as an error rather than on the first read. */
static int open_db(struct lmdb_engine *l, char *errmsg)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k;
    MDB_val v;
    const char *what = "begin read transaction on";
    int mrc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn);
    if (mrc != MDB_SUCCESS) {
        goto err;
    }
    what = "open database in";
    mrc = mdb_dbi_open(txn, NULL, 0, &l->dbi);
    if (mrc == MDB_SUCCESS) {
        mrc = mdb_cursor_open(txn, l->dbi, &cur);
    }
    if (mrc == MDB_SUCCESS) {
        what = "read first key of";
        mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    if (mrc == MDB_SUCCESS) {
        what = "read last key of";
        mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    }
    if (cur != NULL) {
        mdb_cursor_close(cur);
    }
    if (mrc != MDB_SUCCESS && mrc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        goto err;
    }
    /* Committing a read transaction keeps the database handle. */
    what = "commit read transaction on";
    mrc = mdb_txn_commit(txn);
    if (mrc != MDB_SUCCESS) {
        goto err;
    }
    return KV_OK;
err:
    snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb: %s %s: %s%s", what, l->data_path, mdb_strerror(mrc),
             mdb_hint(mrc));
    return map_mdb_err(mrc);
}

static int lmdb_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    struct lmdb_engine *l = kv_calloc(1, sizeof *l);
    if (l == NULL) {
        return KV_ENOMEM;
    }
    l->base.ops = &stor__lmdb_ops;
    l->lock_fd = -1;
    int rc = set_paths(l, o->path, errmsg);
    if (rc == KV_OK) {
        rc = stor__mkdirs(o->path, errmsg);
    }
    if (rc != KV_OK) {
        goto err_free;
    }
    rc = stor__lock_dir(o->path, &l->lock_fd, errmsg);
    if (rc != KV_OK) {
        goto err_free;
    }
    rc = env_open(l, o, errmsg);
    if (rc != KV_OK) {
        goto err_unlock;
    }
    rc = check_geometry(l, errmsg);
    if (rc == KV_OK) {
        rc = open_db(l, errmsg);
    }
    if (rc != KV_OK) {
        goto err_env;
    }
    /* We hold LOCK, so any slot still marked busy belongs to a dead process. */
    int stale = 0;
    (void)mdb_reader_check(l->env, &stale);
    pthread_mutex_init(&l->errmsg_lock, NULL);
    pthread_mutex_init(&l->pool_lock, NULL);
    atomic_init(&l->views_live, 0);
    *out = &l->base;
    return KV_OK;
err_env:
    mdb_env_close(l->env);
err_unlock:
    stor__unlock_dir(l->lock_fd);
err_free:
    kv_free(l);
    return rc;
}

static void lmdb_close(struct stor_engine *e)
{
    struct lmdb_engine *l = (struct lmdb_engine *)e;
    /* LMDB frees the reader table under a live transaction: a view still
     * open here is a caller bug, caught before it becomes a use-after-free. */
    KV_ASSERT(atomic_load(&l->views_live) == 0);
    pool_drain(l);
    /* With NOMETASYNC the last meta page is not flushed yet: a clean close
     * makes everything durable. Harmless when already synced. Not after a
     * failed commit: an fsync is never retried, and nothing unacknowledged
     * must look durable. */
    if (!l->base.poisoned) {
        int mrc = mdb_env_sync(l->env, 1);
        if (mrc != MDB_SUCCESS) {
            kv_warn("lmdb: sync on close file=%s err=%s", l->data_path, mdb_strerror(mrc));
        }
    }
    mdb_env_close(l->env);
    stor__unlock_dir(l->lock_fd);
    pthread_mutex_destroy(&l->errmsg_lock);
    pthread_mutex_destroy(&l->pool_lock);
    kv_free(l);
}

/* ---- reads ------------------------------------------------------------------ */

static int lmdb_get(struct stor_engine *e, const struct stor_view *view, const void *key,
                    size_t key_size, struct kv_buf *value)
{
    struct lmdb_engine *l = (struct lmdb_engine *)e;
    MDB_txn *txn;
    if (view != NULL) {
        txn = ((const struct lmdb_view *)view)->txn;
    } else {
        int rc = txn_take(l, &txn);
        if (rc != KV_OK) {
            return rc;
        }
    }
    MDB_val k = {.mv_size = key_size, .mv_data = (void *)key};
    MDB_val v;
    int rc;
    const uint8_t *data;
    size_t data_size;
    int mrc = mdb_get(txn, l->dbi, &k, &v);
    if (mrc == MDB_SUCCESS) {
        rc = rec_check(l, &k, &v, &data, &data_size, "get from");
        if (rc == KV_OK) {
            rc = kv_buf_set(value, data, data_size);
            if (rc != KV_OK) {
                set_msg(l, "lmdb: get: no memory for a value of %zu bytes", data_size);
            }
        }
    } else if (mrc == MDB_NOTFOUND) {
        rc = KV_ENOTFOUND;
    } else {
        rc = fail_mdb(l, mrc, "get from");
    }
    if (view == NULL) {
        txn_give(l, txn);
    }
    return rc;
}

static int lmdb_view_new(struct stor_engine *e, struct stor_view **out)
{
    struct lmdb_engine *l = (struct lmdb_engine *)e;
    struct lmdb_view *v = kv_malloc(sizeof *v);
    if (v == NULL) {
        set_msg(l, "lmdb: view: out of memory");
        return KV_ENOMEM;
    }
    int rc = txn_take(l, &v->txn);
    if (rc != KV_OK) {
        kv_free(v);
        return rc;
    }
    atomic_fetch_add(&l->views_live, 1);
    *out = &v->base;
    return KV_OK;
}

static void lmdb_view_free(struct stor_view *view)
{
    struct lmdb_view *v = (struct lmdb_view *)view;
    struct lmdb_engine *l = (struct lmdb_engine *)view->engine;
    txn_give(l, v->txn);
    atomic_fetch_sub(&l->views_live, 1);
    kv_free(v);
}

static int lmdb_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                         size_t start_size, const void *end, size_t end_size,
                         struct stor_iter **out)
{
    struct lmdb_engine *l = (struct lmdb_engine *)e;
    struct lmdb_iter *it = kv_calloc(1, sizeof *it);
    if (it == NULL) {
        set_msg(l, "lmdb: iterator: out of memory");
        return KV_ENOMEM;
    }
    kv_buf_init(&it->end);
    it->has_end = end != NULL;
    if (end != NULL && kv_buf_set(&it->end, end, end_size) != KV_OK) {
        set_msg(l, "lmdb: iterator: out of memory");
        kv_free(it);
        return KV_ENOMEM;
    }
    int rc;
    int mrc = mdb_cursor_open(((const struct lmdb_view *)view)->txn, l->dbi, &it->cursor);
    if (mrc != MDB_SUCCESS) {
        rc = fail_mdb(l, mrc, "open cursor on");
        goto err_free;
    }
    /* Position now; the first iter_next returns this pair. */
    it->key.mv_size = start_size;
    it->key.mv_data = (void *)start;
    mrc = mdb_cursor_get(it->cursor, &it->key, &it->value, start ? MDB_SET_RANGE : MDB_FIRST);
    if (mrc == MDB_SUCCESS) {
        it->pending = 1;
    } else if (mrc == MDB_NOTFOUND) {
        it->done = 1;
    } else {
        rc = fail_mdb(l, mrc, "seek in");
        goto err_cursor;
    }
    *out = &it->base;
    return KV_OK;
err_cursor:
    mdb_cursor_close(it->cursor);
err_free:
    kv_buf_close(&it->end);
    kv_free(it);
    return rc;
}

static int lmdb_iter_next(struct stor_iter *iter, const uint8_t **key, size_t *key_size,
                          const uint8_t **value, size_t *value_size)
{
    struct lmdb_iter *it = (struct lmdb_iter *)iter;
    if (it->done) {
        return KV_EOF;
    }
    if (!it->pending) {
        int mrc = mdb_cursor_get(it->cursor, &it->key, &it->value, MDB_NEXT);
        if (mrc != MDB_SUCCESS) {
            it->done = 1;
            if (mrc == MDB_NOTFOUND) {
                return KV_EOF;
            }
            return fail_mdb((struct lmdb_engine *)iter->engine, mrc, "iterate over");
        }
    }
    it->pending = 0;
    if (it->has_end &&
        stor__key_cmp(it->key.mv_data, it->key.mv_size, it->end.data, it->end.size) >= 0) {
        it->done = 1;
        return KV_EOF;
    }
    /* Borrowed straight from the map: valid while the view's transaction
     * lives, which outlasts the next call. */
    int rc = rec_check((struct lmdb_engine *)iter->engine, &it->key, &it->value, value, value_size,
                       "iterate over");
    if (rc != KV_OK) {
        it->done = 1;
        return rc;
    }
    *key = it->key.mv_data;
    *key_size = it->key.mv_size;
    return KV_OK;
}

static void lmdb_iter_free(struct stor_iter *iter)
{
    struct lmdb_iter *it = (struct lmdb_iter *)iter;
    mdb_cursor_close(it->cursor);
    kv_buf_close(&it->end);
    kv_free(it);
}

/* ---- writes ----------------------------------------------------------------- */

/* Deletes [start, end) inside `txn`. Re-seeking from `start` after every
 * delete keeps the loop independent of where LMDB leaves a cursor after a
 * deletion rebalances pages; each seek is one root-to-leaf descent. */
static int delete_range(struct lmdb_engine *l, MDB_txn *txn, const struct stor_batch_op *op)
{
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, l->dbi, &cur);
    if (mrc != MDB_SUCCESS) {
        return mrc;
    }
    for (;;) {
        MDB_val k = {.mv_size = op->key_size, .mv_data = (void *)op->key};
        MDB_val v;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == MDB_NOTFOUND) {
            mrc = MDB_SUCCESS;
            break;
        }
        if (mrc != MDB_SUCCESS ||
            stor__key_cmp(k.mv_data, k.mv_size, op->value, op->value_size) >= 0) {
            break;
        }
        mrc = mdb_cursor_del(cur, 0);
        if (mrc != MDB_SUCCESS) {
            break;
        }
    }
    mdb_cursor_close(cur);
    return mrc;
}

/* Applies one operation; returns an LMDB code. */
static int apply_op(struct lmdb_engine *l, MDB_txn *txn, const struct stor_batch_op *op)
{
    MDB_val k = {.mv_size = op->key_size, .mv_data = (void *)op->key};
    switch (op->op) {
    case STOR_OP_PUT: {
        /* MDB_RESERVE hands back the record's room in the (heap) dirty
         * page, so the value is copied once, behind its checksum. */
        MDB_val v = {.mv_size = REC_CRC_SIZE + op->value_size, .mv_data = NULL};
        int mrc = mdb_put(txn, l->dbi, &k, &v, MDB_RESERVE);
        if (mrc == MDB_SUCCESS) {
            uint8_t *dst = v.mv_data;
            kv_store_u32(dst, rec_crc(op->key, op->key_size, op->value, op->value_size));
            if (op->value_size > 0) {
                memcpy(dst + REC_CRC_SIZE, op->value, op->value_size);
            }
        }
        return mrc;
    }
    case STOR_OP_DELETE: {
        int mrc = mdb_del(txn, l->dbi, &k, NULL);
        return mrc == MDB_NOTFOUND ? MDB_SUCCESS : mrc;
    }
    case STOR_OP_DELETE_RANGE:
        return delete_range(l, txn, op);
    }
    return MDB_CORRUPTED; /* stor_batch_next only yields the kinds above */
}

static const char *op_what(enum stor_op op)
{
    switch (op) {
    case STOR_OP_PUT:
        return "put into";
    case STOR_OP_DELETE:
        return "delete from";
    case STOR_OP_DELETE_RANGE:
        return "delete range from";
    }
    return "write to";
}

static int lmdb_write(struct stor_engine *e, const struct stor_batch *b)
{
    struct lmdb_engine *l = (struct lmdb_engine *)e;
    MDB_txn *txn;
    int mrc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (mrc != MDB_SUCCESS) {
        return fail_mdb(l, mrc, "begin write transaction on");
    }
    struct stor_batch_op op;
    size_t pos = 0;
    int rc;
    while ((rc = stor_batch_next(b, &pos, &op)) == KV_OK) {
        mrc = apply_op(l, txn, &op);
        if (mrc != MDB_SUCCESS) {
            /* Nothing of the batch was committed: the engine is intact. */
            mdb_txn_abort(txn);
            return fail_mdb(l, mrc, op_what(op.op));
        }
    }
    if (rc != KV_EOF) {
        mdb_txn_abort(txn);
        set_msg(l, "lmdb: malformed write batch at byte %zu", pos);
        return rc;
    }
    mrc = mdb_txn_commit(txn);
    if (mrc != MDB_SUCCESS) {
        /* A commit that failed may have half-written pages or a failed
         * fsync behind it: never retry, refuse further writes. */
        l->base.poisoned = 1;
        return fail_mdb(l, mrc, "commit to");
    }
    return KV_OK;
}

/* ---- stats ------------------------------------------------------------------- */

static int lmdb_stats(struct stor_engine *e, struct stor_stats *out)
{
    struct lmdb_engine *l = (struct lmdb_engine *)e;
    MDB_txn *txn;
    MDB_stat st;
    int rc = txn_take(l, &txn);
    if (rc != KV_OK) {
        return rc;
    }
    int mrc = mdb_stat(txn, l->dbi, &st);
    txn_give(l, txn);
    if (mrc != MDB_SUCCESS) {
        return fail_mdb(l, mrc, "stat");
    }
    out->key_count = st.ms_entries;
    out->key_count_exact = 1;
    out->disk_bytes = 0;
    /* data.mdb is sparse (the map is reserved, not the file), so count the
     * blocks really allocated rather than the apparent size. */
    const char *files[] = {l->data_path, l->lock_path};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        struct stat fst;
        if (stat(files[i], &fst) != 0) {
            int err = errno;
            set_msg(l, "lmdb: stat %s: %s", files[i], strerror(err));
            return kv_err_from_errno(err);
        }
        out->disk_bytes += (uint64_t)fst.st_blocks * 512u;
    }
    return KV_OK;
}

/* The store is there while data.mdb is non-empty (a damaged one is the
 * open-time check's to diagnose). */
static int lmdb_store_present(const char *path)
{
    return stor__file_present(path, "data.mdb", 1);
}

const struct stor_engine_ops stor__lmdb_ops = {
    .name = "lmdb",
    .ordered = 1,
    .open = lmdb_open,
    .close = lmdb_close,
    .get = lmdb_get,
    .write = lmdb_write,
    .view_new = lmdb_view_new,
    .view_free = lmdb_view_free,
    .iter_new = lmdb_iter_new,
    .iter_next = lmdb_iter_next,
    .iter_free = lmdb_iter_free,
    .stats = lmdb_stats,
    .compact = NULL, /* copy-on-write B+tree: freed pages are reused in place */
    .store_present = lmdb_store_present,
    .store_files = "data.mdb",
};
