/* test_lsm.c -- tests specific to the RocksDB and LevelDB engines, each run
 * against both: delete-range over keys put earlier in the same batch (native
 * in RocksDB, expanded in LevelDB), views isolated from a concurrent writer,
 * concurrent batch writers seen whole by views, iteration bounds, the
 * directory lock within and across processes, stats, compaction reclaiming
 * space, allocation failures, and damaged files (CURRENT, MANIFEST, WAL,
 * table files) giving a clear error, never a crash or wrong data. The
 * generic contract is the conformance suite's job. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "stor.h"

/* Pairs written by the populate helper, and the size of each value. */
#define POPULATE_KEYS        2000
#define POPULATE_VALUE_BYTES 200
/* Keys the concurrent writer adds while a view is read. */
#define WRITER_KEYS 3000
/* Exit code of a --try-open child whose error message lacks context. */
#define CHILD_BAD_MESSAGE 100

struct fixture {
    const char *engine; /* "rocksdb" or "leveldb" */
    char dir[64];       /* mkdtemp'd scratch directory */
    char path[128];     /* dir/db: the engine's directory */
};

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -1;
    }
    f->engine = *state;
    snprintf(f->dir, sizeof f->dir, "/tmp/lsm-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static struct stor_engine *open_at(const char *engine, const char *path, enum stor_sync sync)
{
    struct stor_options o;
    char errmsg[KV_ERRMSG_SIZE];
    struct stor_engine *e = NULL;
    stor_options_init(&o);
    o.path = path;
    o.sync = sync;
    o.cache_bytes = 8u * 1024u * 1024u;
    int rc = stor_open(engine, &o, &e, errmsg);
    if (rc != KV_OK) {
        fail_msg("open %s %s: %s (%s)", engine, path, kv_errname(rc), errmsg);
    }
    assert_string_equal(stor_name(e), engine);
    assert_true(stor_is_ordered(e));
    return e;
}

static struct stor_engine *open_db(struct fixture *f)
{
    return open_at(f->engine, f->path, STOR_SYNC_NONE);
}

/* Opens expecting failure; returns the code, message in errmsg. */
static int open_fails(struct fixture *f, char errmsg[KV_ERRMSG_SIZE])
{
    struct stor_options o;
    struct stor_engine *e = NULL;
    stor_options_init(&o);
    o.path = f->path;
    int rc = stor_open(f->engine, &o, &e, errmsg);
    if (rc == KV_OK) {
        stor_close(e);
    }
    return rc;
}

static void put_s(struct stor_engine *e, const char *k, const char *v)
{
    assert_int_equal(stor_put(e, k, strlen(k), v, strlen(v)), KV_OK);
}

static void expect_bytes(struct stor_engine *e, const struct stor_view *view, const void *k,
                         size_t k_size, const void *v, size_t v_size)
{
    struct kv_buf b;
    kv_buf_init(&b);
    int rc = stor_get(e, view, k, k_size, &b);
    if (rc != KV_OK) {
        fail_msg("get %.*s: %s (%s)", (int)k_size, (const char *)k, kv_errname(rc), stor_errmsg(e));
    }
    assert_int_equal(b.size, v_size);
    if (v_size > 0) {
        assert_memory_equal(b.data, v, v_size);
    }
    kv_buf_close(&b);
}

static void expect_s(struct stor_engine *e, const struct stor_view *view, const char *k,
                     const char *v)
{
    expect_bytes(e, view, k, strlen(k), v, strlen(v));
}

static void expect_absent(struct stor_engine *e, const struct stor_view *view, const char *k)
{
    struct kv_buf b;
    kv_buf_init(&b);
    assert_int_equal(stor_get(e, view, k, strlen(k), &b), KV_ENOTFOUND);
    kv_buf_close(&b);
}

/* Iterates [start, end) (NULL: open) and returns the keys joined by ',',
 * with a NUL byte shown as '~'. Keys must be short. */
static char *scan(struct stor_engine *e, const struct stor_view *view, const char *start,
                  size_t start_size, const char *end, size_t end_size)
{
    static char out[4096];
    struct stor_iter *it;
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    size_t n = 0;
    int rc;
    out[0] = '\0';
    assert_int_equal(stor_iter_new(e, view, start, start_size, end, end_size, &it), KV_OK);
    while ((rc = stor_iter_next(it, &k, &ks, &v, &vs)) == KV_OK) {
        assert_true(n + ks + 2 < sizeof out);
        if (n > 0) {
            out[n++] = ',';
        }
        for (size_t i = 0; i < ks; i++) {
            out[n++] = k[i] ? (char)k[i] : '~';
        }
        out[n] = '\0';
    }
    assert_int_equal(rc, KV_EOF);
    /* KV_EOF is sticky. */
    assert_int_equal(stor_iter_next(it, &k, &ks, &v, &vs), KV_EOF);
    stor_iter_free(it);
    return out;
}

/* scan() for NUL-free bounds given as C strings (NULL: open). */
static char *scan_s(struct stor_engine *e, const struct stor_view *view, const char *start,
                    const char *end)
{
    return scan(e, view, start, start ? strlen(start) : 0, end, end ? strlen(end) : 0);
}

/* Deterministic, poorly compressible value for key number i. */
static void value_for(int i, uint8_t *v)
{
    uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
    for (int j = 0; j < POPULATE_VALUE_BYTES; j++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        v[j] = (uint8_t)(x >> 56);
    }
}

static void key_for(int i, char *k)
{
    snprintf(k, 16, "key%06d", i);
}

/* Writes POPULATE_KEYS pairs in batches, compacts them into table files and
 * closes the engine. */
static void populate(struct fixture *f)
{
    struct stor_engine *e = open_db(f);
    struct stor_batch b;
    stor_batch_init(&b);
    for (int i = 0; i < POPULATE_KEYS; i++) {
        char k[16];
        uint8_t v[POPULATE_VALUE_BYTES];
        key_for(i, k);
        value_for(i, v);
        assert_int_equal(stor_batch_put(&b, k, strlen(k), v, sizeof v), KV_OK);
        if (b.count == 100) {
            assert_int_equal(stor_write(e, &b), KV_OK);
            stor_batch_clear(&b);
        }
    }
    stor_batch_close(&b);
    assert_int_equal(stor_compact(e), KV_OK);
    stor_close(e);
}

/* Reads every populated key; each must be right or fail with
 * KV_ECORRUPT/KV_EIO (never wrong data). Returns the number of failures. */
static int check_populated(struct stor_engine *e)
{
    int failures = 0;
    struct kv_buf b;
    kv_buf_init(&b);
    for (int i = 0; i < POPULATE_KEYS; i++) {
        char k[16];
        uint8_t v[POPULATE_VALUE_BYTES];
        key_for(i, k);
        value_for(i, v);
        int rc = stor_get(e, NULL, k, strlen(k), &b);
        if (rc == KV_OK) {
            assert_int_equal(b.size, sizeof v);
            assert_memory_equal(b.data, v, sizeof v);
        } else {
            if (rc != KV_ECORRUPT && rc != KV_EIO) {
                fail_msg("get %s: %s (%s)", k, kv_errname(rc), stor_errmsg(e));
            }
            assert_non_null(strstr(stor_errmsg(e), "db"));
            failures++;
        }
    }
    kv_buf_close(&b);
    return failures;
}

/* Reads every populated key after a recovery that may drop a tail of the
 * writes: each key reads right or is missing, and the missing ones are the
 * last written (a prefix survived). Returns how many are missing. */
static int check_missing_suffix(struct stor_engine *e)
{
    int missing = 0;
    struct kv_buf b;
    kv_buf_init(&b);
    for (int i = 0; i < POPULATE_KEYS; i++) {
        char k[16];
        uint8_t v[POPULATE_VALUE_BYTES];
        key_for(i, k);
        value_for(i, v);
        int rc = stor_get(e, NULL, k, strlen(k), &b);
        if (rc == KV_ENOTFOUND) {
            missing++;
            continue;
        }
        assert_int_equal(rc, KV_OK);
        assert_int_equal(missing, 0); /* present after a missing one: a hole */
        assert_int_equal(b.size, sizeof v);
        assert_memory_equal(b.data, v, sizeof v);
    }
    kv_buf_close(&b);
    return missing;
}

/* Full scan of a populated DB: every pair returned is right and in order;
 * returns the final code (KV_EOF, or the error that stopped it). */
static int scan_populated(struct stor_engine *e, int *pairs)
{
    struct stor_iter *it;
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    int rc;
    *pairs = 0;
    assert_int_equal(stor_iter_new(e, NULL, NULL, 0, NULL, 0, &it), KV_OK);
    while ((rc = stor_iter_next(it, &k, &ks, &v, &vs)) == KV_OK) {
        int i = atoi((const char *)k + 3);
        char want_k[16];
        uint8_t want_v[POPULATE_VALUE_BYTES];
        key_for(i, want_k);
        value_for(i, want_v);
        assert_int_equal(ks, strlen(want_k));
        assert_memory_equal(k, want_k, ks);
        assert_int_equal(vs, sizeof want_v);
        assert_memory_equal(v, want_v, vs);
        (*pairs)++;
    }
    stor_iter_free(it);
    return rc;
}

/* Path of the first file in f->path whose name ends with `suffix` or
 * starts with `prefix` (either may be NULL). */
static void find_file(struct fixture *f, const char *prefix, const char *suffix, char *out,
                      size_t out_size)
{
    DIR *d = opendir(f->path);
    struct dirent *de;
    assert_non_null(d);
    out[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        int match = (prefix && strncmp(de->d_name, prefix, strlen(prefix)) == 0) ||
                    (suffix && len > strlen(suffix) &&
                     strcmp(de->d_name + len - strlen(suffix), suffix) == 0);
        if (match) {
            snprintf(out, out_size, "%s/%s", f->path, de->d_name);
            break;
        }
    }
    closedir(d);
    if (out[0] == '\0') {
        fail_msg("no file %s*%s in %s", prefix ? prefix : "", suffix ? suffix : "", f->path);
    }
}

static const char *table_suffix(struct fixture *f)
{
    return strcmp(f->engine, "rocksdb") == 0 ? ".sst" : ".ldb";
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

static void overwrite_bytes(const char *path, long offset, size_t count)
{
    int fd = open(path, O_WRONLY);
    uint8_t junk[256];
    assert_true(fd >= 0);
    assert_true(count <= sizeof junk);
    memset(junk, 0x5a, sizeof junk);
    assert_int_equal(pwrite(fd, junk, count, offset), (ssize_t)count);
    close(fd);
}

/* ---- tests --------------------------------------------------------------- */

/* Put, overwrite, get, delete, empty values and binary keys, persisted
 * across close and reopen, with both sync policies. */
static void test_basic(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_at(f->engine, f->path, STOR_SYNC_ALWAYS);
    const char bin_key[] = {'b', 0, 'n'};
    const char bin_val[] = {0, 1, 0, 2};
    put_s(e, "alpha", "1");
    put_s(e, "alpha", "2");
    put_s(e, "beta", "3");
    put_s(e, "empty", "");
    assert_int_equal(stor_put(e, bin_key, sizeof bin_key, bin_val, sizeof bin_val), KV_OK);
    expect_s(e, NULL, "alpha", "2");
    expect_s(e, NULL, "empty", "");
    expect_bytes(e, NULL, bin_key, sizeof bin_key, bin_val, sizeof bin_val);
    expect_absent(e, NULL, "b"); /* a prefix of a key is not that key */
    assert_int_equal(stor_delete(e, "beta", 4), KV_OK);
    assert_int_equal(stor_delete(e, "never", 5), KV_OK); /* deleting nothing is fine */
    expect_absent(e, NULL, "beta");
    assert_string_equal(stor_errmsg(e), "");
    stor_close(e);

    e = open_at(f->engine, f->path, STOR_SYNC_NONE);
    expect_s(e, NULL, "alpha", "2");
    expect_s(e, NULL, "empty", "");
    expect_bytes(e, NULL, bin_key, sizeof bin_key, bin_val, sizeof bin_val);
    expect_absent(e, NULL, "beta");
    put_s(e, "gamma", "4");
    stor_close(e);

    e = open_db(f);
    expect_s(e, NULL, "gamma", "4");
    stor_close(e);
}

/* A delete-range removes keys already in the DB and keys put earlier in
 * the same batch, but not keys put after it; the result persists. */
static void test_batch_delete_range(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_db(f);
    put_s(e, "a1", "db");
    put_s(e, "a2", "db");
    put_s(e, "a3", "db");
    put_s(e, "b0", "db");
    put_s(e, "c0", "db");

    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_put(&b, "a25", 3, "batch", 5), KV_OK);
    assert_int_equal(stor_batch_put(&b, "a4", 2, "batch", 5), KV_OK);
    assert_int_equal(stor_batch_put(&b, "c1", 2, "batch", 5), KV_OK);
    assert_int_equal(stor_batch_delete(&b, "a1", 2), KV_OK);
    /* [a2, b): DB keys a2, a3 and batch keys a25, a4 (a1 already deleted). */
    assert_int_equal(stor_batch_delete_range(&b, "a2", 2, "b", 1), KV_OK);
    assert_int_equal(stor_batch_put(&b, "a3", 2, "after", 5), KV_OK);
    /* [c, d): DB key c0 and batch key c1. */
    assert_int_equal(stor_batch_delete_range(&b, "c", 1, "d", 1), KV_OK);
    assert_int_equal(stor_batch_put(&b, "c2", 2, "after", 5), KV_OK);
    /* A range over nothing. */
    assert_int_equal(stor_batch_delete_range(&b, "x", 1, "y", 1), KV_OK);
    assert_int_equal(stor_write(e, &b), KV_OK);

    assert_string_equal(scan_s(e, NULL, NULL, NULL), "a3,b0,c2");
    expect_s(e, NULL, "a3", "after");
    expect_s(e, NULL, "b0", "db");
    expect_absent(e, NULL, "a25");
    expect_absent(e, NULL, "c1");
    stor_close(e);

    e = open_db(f);
    assert_string_equal(scan_s(e, NULL, NULL, NULL), "a3,b0,c2");
    expect_s(e, NULL, "a3", "after");

    /* A range starting exactly at a key and ending exactly at another. */
    stor_batch_clear(&b);
    assert_int_equal(stor_batch_delete_range(&b, "a3", 2, "c2", 2), KV_OK);
    assert_int_equal(stor_write(e, &b), KV_OK);
    assert_string_equal(scan_s(e, NULL, NULL, NULL), "c2");
    stor_batch_close(&b);
    stor_close(e);
}

struct writer {
    struct stor_engine *e;
    atomic_int done;
    int rc;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    w->rc = KV_OK;
    for (int i = 0; i < WRITER_KEYS && w->rc == KV_OK; i++) {
        char k[32];
        char v[32];
        snprintf(k, sizeof k, "w%05d", i);
        snprintf(v, sizeof v, "gen%d", i);
        w->rc = stor_put(w->e, k, strlen(k), v, strlen(v));
        if (w->rc == KV_OK) {
            w->rc = stor_put(w->e, "k1", 2, v, strlen(v));
        }
        if (w->rc == KV_OK && i % 500 == 0) {
            struct stor_batch b;
            stor_batch_init(&b);
            w->rc = stor_batch_delete_range(&b, "k", 1, "k2", 2); /* k1 only */
            if (w->rc == KV_OK) {
                w->rc = stor_write(w->e, &b);
            }
            stor_batch_close(&b);
        }
    }
    atomic_store(&w->done, 1);
    return NULL;
}

/* A view sees the state at its creation, however many writes (including
 * delete-ranges and a compaction) run meanwhile from another thread. */
static void test_view_isolation(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_db(f);
    put_s(e, "k1", "v1");
    put_s(e, "k2", "v2");
    put_s(e, "k3", "v3");
    struct stor_view *v;
    assert_int_equal(stor_view_new(e, &v), KV_OK);

    struct writer w = {.e = e};
    atomic_init(&w.done, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    int rounds = 0;
    while (!atomic_load(&w.done) || rounds < 10) {
        expect_s(e, v, "k1", "v1");
        expect_absent(e, v, "w00000");
        assert_string_equal(scan_s(e, v, NULL, NULL), "k1,k2,k3");
        rounds++;
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.rc, KV_OK);

    /* Compaction drops nothing a view still needs. */
    assert_int_equal(stor_delete(e, "k2", 2), KV_OK);
    assert_int_equal(stor_compact(e), KV_OK);
    expect_s(e, v, "k2", "v2");
    assert_string_equal(scan_s(e, v, "k", "l"), "k1,k2,k3");

    /* The latest state has moved on. */
    char last[32];
    snprintf(last, sizeof last, "gen%d", WRITER_KEYS - 1);
    expect_s(e, NULL, "k1", last);
    expect_absent(e, NULL, "k2");
    expect_s(e, NULL, "w00000", "gen0");
    stor_view_free(v);
    stor_close(e);
}

/* Rounds each batch writer runs, and keys per batch. */
#define BATCH_WRITER_ROUNDS 1000
#define BATCH_WRITER_KEYS   10

struct batch_writer {
    struct stor_engine *e;
    char prefix; /* the key range [prefix, prefix + 1) it replaces */
    int id;      /* tags its values */
    int rc;
    atomic_int finished;
};

/* Each round replaces the whole prefix in one batch: a delete-range over
 * it, then BATCH_WRITER_KEYS puts tagged with the writer and round. */
static void *batch_writer_main(void *arg)
{
    struct batch_writer *w = arg;
    struct stor_batch b;
    stor_batch_init(&b);
    char lo[1] = {w->prefix};
    char hi[1] = {(char)(w->prefix + 1)};
    w->rc = KV_OK;
    for (int r = 0; r < BATCH_WRITER_ROUNDS && w->rc == KV_OK; r++) {
        stor_batch_clear(&b);
        w->rc = stor_batch_delete_range(&b, lo, 1, hi, 1);
        /* A varying key set, so a torn batch would show as a wrong count. */
        int first = (r + w->id) % 3;
        for (int k = first; k < BATCH_WRITER_KEYS + first && w->rc == KV_OK; k++) {
            char key[16];
            char val[16];
            snprintf(key, sizeof key, "%c%03d", w->prefix, k);
            snprintf(val, sizeof val, "w%dr%d", w->id, r);
            w->rc = stor_batch_put(&b, key, strlen(key), val, strlen(val));
        }
        if (w->rc == KV_OK) {
            w->rc = stor_write(w->e, &b);
        }
    }
    stor_batch_close(&b);
    atomic_store(&w->finished, 1);
    return NULL;
}

/* Checks that `prefix` holds exactly one round's keys in `view`. */
static void check_one_round(struct stor_engine *e, const struct stor_view *view, char prefix)
{
    char lo[1] = {prefix};
    char hi[1] = {(char)(prefix + 1)};
    struct stor_iter *it;
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    int rc;
    int count = 0;
    char round[16] = "";
    assert_int_equal(stor_iter_new(e, view, lo, 1, hi, 1, &it), KV_OK);
    while ((rc = stor_iter_next(it, &k, &ks, &v, &vs)) == KV_OK) {
        assert_true(vs < sizeof round);
        if (count == 0) {
            memcpy(round, v, vs);
            round[vs] = '\0';
        } else {
            assert_int_equal(vs, strlen(round));
            assert_memory_equal(v, round, vs); /* all from one batch */
        }
        count++;
    }
    assert_int_equal(rc, KV_EOF);
    stor_iter_free(it);
    assert_true(count == 0 || count == BATCH_WRITER_KEYS);
}

/* Two threads replace the same key range with batches (delete-range +
 * puts, different key sets) while the main thread takes views: as
 * stor_write is serialised by the engine and atomic, every view sees the
 * range holding exactly one batch's keys. For LevelDB this needs the
 * write lock: without it one writer's delete-range expansion could scan
 * before the other's batch lands and leave that batch's keys behind. */
static void test_concurrent_batches(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_db(f);
    struct batch_writer w[2] = {{.e = e, .prefix = 'p', .id = 0}, {.e = e, .prefix = 'p', .id = 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        atomic_init(&w[i].finished, 0);
        assert_int_equal(pthread_create(&t[i], NULL, batch_writer_main, &w[i]), 0);
    }
    while (!atomic_load(&w[0].finished) || !atomic_load(&w[1].finished)) {
        struct stor_view *v;
        assert_int_equal(stor_view_new(e, &v), KV_OK);
        check_one_round(e, v, 'p');
        stor_view_free(v);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(w[i].rc, KV_OK);
    }
    check_one_round(e, NULL, 'p');
    assert_string_equal(scan_s(e, NULL, "q", NULL), "");
    stor_close(e);
}

/* Iteration honours [start, end) exactly, bytewise, with binary keys. */
static void test_iteration_bounds(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_db(f);
    const char bnul[] = {'b', 0};
    put_s(e, "a", "1");
    put_s(e, "ab", "2");
    put_s(e, "b", "3");
    put_s(e, "ba", "4");
    put_s(e, "c", "5");
    assert_int_equal(stor_put(e, bnul, sizeof bnul, "6", 1), KV_OK);

    assert_string_equal(scan_s(e, NULL, NULL, NULL), "a,ab,b,b~,ba,c");
    assert_string_equal(scan_s(e, NULL, "ab", "ba"), "ab,b,b~");
    assert_string_equal(scan_s(e, NULL, NULL, "b"), "a,ab");
    assert_string_equal(scan_s(e, NULL, "b", NULL), "b,b~,ba,c");
    assert_string_equal(scan(e, NULL, "b", 1, bnul, sizeof bnul), "b");
    assert_string_equal(scan(e, NULL, bnul, sizeof bnul, "ba", 2), "b~");
    assert_string_equal(scan_s(e, NULL, "aa", "ab"), "");
    assert_string_equal(scan_s(e, NULL, "x", "y"), "");
    assert_string_equal(scan_s(e, NULL, "0", "a"), "");
    assert_string_equal(scan_s(e, NULL, "c", "c"), "");
    assert_string_equal(scan_s(e, NULL, "c", NULL), "c");
    assert_string_equal(scan_s(e, NULL, "c\x01", NULL), "");

    /* Bounds with an explicit view, after more writes and a delete. */
    struct stor_view *v;
    assert_int_equal(stor_view_new(e, &v), KV_OK);
    put_s(e, "aa", "7");
    assert_int_equal(stor_delete(e, "b", 1), KV_OK);
    assert_string_equal(scan_s(e, v, "a", "b"), "a,ab");
    assert_string_equal(scan_s(e, NULL, "a", "b"), "a,aa,ab");
    assert_string_equal(scan_s(e, v, "b", "c"), "b,b~,ba");
    assert_string_equal(scan_s(e, NULL, "b", "c"), "b~,ba");
    stor_view_free(v);
    stor_close(e);
}

/* Run as a child process (see main): opens and reports through its exit
 * status: 0 opened, CHILD_BAD_MESSAGE when the error message lacks the
 * path, else the negated kv_err. */
static int try_open_child(const char *engine, const char *path)
{
    struct stor_options o;
    struct stor_engine *e = NULL;
    char errmsg[KV_ERRMSG_SIZE];
    stor_options_init(&o);
    o.path = path;
    int rc = stor_open(engine, &o, &e, errmsg);
    if (rc == KV_OK) {
        stor_close(e);
        return 0;
    }
    fprintf(stderr, "child open: %s: %s\n", kv_errname(rc), errmsg);
    if (strstr(errmsg, path) == NULL || strstr(errmsg, engine) == NULL) {
        return CHILD_BAD_MESSAGE;
    }
    return -rc;
}

/* Runs try_open_child in a fresh process (exec, so no lock state or
 * library threads are inherited) and returns its exit status. */
static int open_in_child(struct fixture *f)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[] = {"test_lsm", "--try-open", (char *)f->engine, f->path, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* A second open of one directory fails with KV_ELOCKED and a message
 * naming it, from this process and from another; closing frees it. */
static void test_lock_conflict(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_db(f);
    put_s(e, "k", "v");
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_fails(f, errmsg), KV_ELOCKED);
    assert_non_null(strstr(errmsg, f->path));
    assert_non_null(strstr(errmsg, f->engine));
    assert_int_equal(open_in_child(f), -KV_ELOCKED);
    expect_s(e, NULL, "k", "v"); /* the holder is unaffected */
    stor_close(e);

    assert_int_equal(open_in_child(f), 0);
    e = open_db(f);
    expect_s(e, NULL, "k", "v");
    stor_close(e);
}

/* Key count (exact for LevelDB, an estimate for RocksDB) and disk bytes. */
static void test_stats(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_db(f);
    struct stor_stats st;
    assert_int_equal(stor_stats(e, &st), KV_OK);
    assert_int_equal(st.key_count, 0);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%03d", i);
        put_s(e, k, "value");
    }
    for (int i = 0; i < 10; i++) {
        char k[16];
        snprintf(k, sizeof k, "s%03d", i * 10);
        assert_int_equal(stor_delete(e, k, strlen(k)), KV_OK);
    }
    assert_int_equal(stor_compact(e), KV_OK);
    assert_int_equal(stor_stats(e, &st), KV_OK);
    assert_true(st.disk_bytes > 0);
    if (strcmp(f->engine, "leveldb") == 0) {
        assert_int_equal(st.key_count_exact, 1);
        assert_int_equal(st.key_count, 90);
    } else {
        /* After a full compaction the estimate has no deletes or
         * overwrites left to misjudge. */
        assert_int_equal(st.key_count_exact, 0);
        assert_int_equal(st.key_count, 90);
    }
    stor_close(e);
}

/* Compaction reclaims the space of deleted data, delete-range included. */
static void test_compact_reclaims(void **state)
{
    struct fixture *f = *state;
    populate(f);
    struct stor_engine *e = open_db(f);
    struct stor_stats full;
    assert_int_equal(stor_stats(e, &full), KV_OK);
    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_delete_range(&b, "key", 3, "kez", 3), KV_OK);
    assert_int_equal(stor_write(e, &b), KV_OK);
    stor_batch_close(&b);
    assert_int_equal(stor_compact(e), KV_OK);
    struct stor_stats empty;
    assert_int_equal(stor_stats(e, &empty), KV_OK);
    assert_int_equal(empty.key_count, 0);
    assert_true(full.disk_bytes > (uint64_t)POPULATE_KEYS * POPULATE_VALUE_BYTES / 2);
    assert_true(empty.disk_bytes + (uint64_t)POPULATE_KEYS * POPULATE_VALUE_BYTES / 2 <
                full.disk_bytes);
    assert_string_equal(scan_s(e, NULL, NULL, NULL), "");
    stor_close(e);
}

/* Every allocation of ours that can fail (open, view, iterator, get) ends
 * in a clean KV_ENOMEM with nothing leaked (the sanitizer run checks). */
static void test_alloc_failures(void **state)
{
    struct fixture *f = *state;
    int done = 0;
    for (long n = 0; !done; n++) {
        assert_true(n < 100);
        struct stor_options o;
        struct stor_engine *e = NULL;
        char errmsg[KV_ERRMSG_SIZE];
        stor_options_init(&o);
        o.path = f->path;
        o.sync = STOR_SYNC_NONE;
        kv_alloc_fault_after(n);
        int rc = stor_open(f->engine, &o, &e, errmsg);
        kv_alloc_fault_clear();
        if (rc != KV_OK) {
            assert_int_equal(rc, KV_ENOMEM);
            assert_non_null(strstr(errmsg, "out of memory"));
            continue;
        }
        put_s(e, "k", "v");
        struct stor_view *v = NULL;
        struct stor_iter *it = NULL;
        struct kv_buf buf;
        kv_buf_init(&buf);
        kv_alloc_fault_after(n);
        rc = stor_view_new(e, &v);
        if (rc == KV_OK) {
            rc = stor_iter_new(e, v, "a", 1, "z", 1, &it);
        }
        if (rc == KV_OK) {
            rc = stor_get(e, v, "k", 1, &buf);
        }
        kv_alloc_fault_clear();
        if (rc == KV_OK) {
            const uint8_t *k;
            const uint8_t *val;
            size_t ks;
            size_t vs;
            assert_int_equal(stor_iter_next(it, &k, &ks, &val, &vs), KV_OK);
            assert_memory_equal(buf.data, "v", 1);
            done = 1;
        } else {
            assert_int_equal(rc, KV_ENOMEM);
        }
        stor_iter_free(it);
        stor_view_free(v);
        kv_buf_close(&buf);
        stor_close(e);
    }
}

/* CURRENT overwritten with garbage, with and without a newline. */
static void test_corrupt_current(void **state)
{
    struct fixture *f = *state;
    char current[256];
    char errmsg[KV_ERRMSG_SIZE];
    populate(f);
    snprintf(current, sizeof current, "%s/CURRENT", f->path);
    write_file(current, "garbage!");
    assert_int_equal(open_fails(f, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, f->path));
    assert_non_null(strstr(errmsg, "CURRENT"));

    write_file(current, "MANIFEST-999999\n");
    assert_int_equal(open_fails(f, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, f->path));
    assert_non_null(strstr(errmsg, "MANIFEST-999999"));
}

/* CURRENT deleted: refused (both libraries would start an empty database
 * over the old files, LevelDB deleting them), and nothing is lost: with
 * CURRENT restored every pair is back. */
static void test_missing_current(void **state)
{
    struct fixture *f = *state;
    char current[256];
    char saved[256] = "";
    char errmsg[KV_ERRMSG_SIZE];
    populate(f);
    snprintf(current, sizeof current, "%s/CURRENT", f->path);
    FILE *fp = fopen(current, "r");
    assert_non_null(fp);
    assert_non_null(fgets(saved, sizeof saved, fp));
    fclose(fp);
    assert_int_equal(unlink(current), 0);

    assert_int_equal(open_fails(f, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, "CURRENT is missing"));
    assert_non_null(strstr(errmsg, f->path));
    assert_int_equal(open_fails(f, errmsg), KV_ECORRUPT); /* still, on retry */

    write_file(current, saved);
    struct stor_engine *e = open_db(f);
    assert_int_equal(check_populated(e), 0);
    stor_close(e);
}

/* MANIFEST cut short. Both libraries read a cut inside a record as a torn
 * last append and open an older, emptier version, deleting the newer
 * table files; the engine's pre-open check must refuse instead, and leave
 * the files alone. */
static void test_truncated_manifest(void **state)
{
    struct fixture *f = *state;
    char manifest[256];
    char table[256];
    char errmsg[KV_ERRMSG_SIZE];
    struct stat st;
    populate(f);
    find_file(f, "MANIFEST-", NULL, manifest, sizeof manifest);
    find_file(f, NULL, table_suffix(f), table, sizeof table);
    assert_int_equal(stat(manifest, &st), 0);
    const off_t cuts[] = {st.st_size - 1, st.st_size / 2, st.st_size / 3};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        assert_int_equal(truncate(manifest, cuts[i]), 0);
        assert_int_equal(open_fails(f, errmsg), KV_ECORRUPT);
        assert_non_null(strstr(errmsg, manifest));
        assert_non_null(strstr(errmsg, "runs past the end"));
        assert_int_equal(stat(table, &st), 0); /* nothing deleted */
    }
    assert_int_equal(truncate(manifest, 0), 0);
    assert_int_equal(open_fails(f, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, f->path));
    assert_int_equal(stat(table, &st), 0);
}

/* Opens `f` with `sync`, returning the code (engine closed again). */
static int try_open(struct fixture *f, enum stor_sync sync, struct stor_engine **out,
                    char errmsg[KV_ERRMSG_SIZE])
{
    struct stor_options o;
    stor_options_init(&o);
    o.path = f->path;
    o.sync = sync;
    *out = NULL;
    return stor_open(f->engine, &o, out, errmsg);
}

/* Garbage in the middle of the write-ahead log (data acknowledged but not
 * yet in table files). Opened with sync always, both engines refuse with
 * KV_ECORRUPT: every acknowledged batch was fsynced, so only an incomplete
 * last record can come from a crash. RocksDB opened with sync none keeps
 * the consistent prefix before the damage (point-in-time recovery: the
 * contract allows losing recent writes) and never returns wrong data. */
static void test_corrupt_wal(void **state)
{
    struct fixture *f = *state;
    struct stor_engine *e = open_at(f->engine, f->path, STOR_SYNC_ALWAYS);
    struct stor_batch b;
    stor_batch_init(&b);
    for (int i = 0; i < POPULATE_KEYS; i++) {
        char k[16];
        uint8_t v[POPULATE_VALUE_BYTES];
        key_for(i, k);
        value_for(i, v);
        assert_int_equal(stor_batch_put(&b, k, strlen(k), v, sizeof v), KV_OK);
        if (b.count == 100) {
            assert_int_equal(stor_write(e, &b), KV_OK);
            stor_batch_clear(&b);
        }
    }
    stor_batch_close(&b);
    stor_close(e);

    char wal[256];
    char errmsg[KV_ERRMSG_SIZE];
    struct stat st;
    find_file(f, NULL, ".log", wal, sizeof wal);
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size > (off_t)POPULATE_KEYS * POPULATE_VALUE_BYTES);
    overwrite_bytes(wal, st.st_size / 3, 64);

    assert_int_equal(try_open(f, STOR_SYNC_ALWAYS, &e, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, f->path));
    assert_non_null(strstr(errmsg, "Corruption"));
    if (strcmp(f->engine, "leveldb") == 0) {
        /* Paranoid checks: LevelDB refuses whatever the sync policy. */
        assert_int_equal(try_open(f, STOR_SYNC_NONE, &e, errmsg), KV_ECORRUPT);
        return;
    }
    assert_int_equal(try_open(f, STOR_SYNC_NONE, &e, errmsg), KV_OK);
    int missing = check_missing_suffix(e);
    assert_true(missing > 0);
    assert_true(missing < POPULATE_KEYS);
    stor_close(e);
}

/* Bytes of a table file's first data block overwritten: the damaged pairs
 * fail to read with KV_ECORRUPT (paranoid checks, verified checksums), the
 * rest read right, and a scan stops with the error, never skipping or
 * returning wrong data. */
static void test_corrupt_table(void **state)
{
    struct fixture *f = *state;
    char table[256];
    char errmsg[KV_ERRMSG_SIZE];
    populate(f);
    find_file(f, NULL, table_suffix(f), table, sizeof table);
    overwrite_bytes(table, 100, 64);

    struct stor_options o;
    struct stor_engine *e = NULL;
    stor_options_init(&o);
    o.path = f->path;
    int rc = stor_open(f->engine, &o, &e, errmsg);
    if (rc != KV_OK) {
        assert_int_equal(rc, KV_ECORRUPT);
        assert_non_null(strstr(errmsg, f->path));
        return;
    }
    int failures = check_populated(e);
    assert_true(failures > 0);
    assert_true(failures < POPULATE_KEYS);
    assert_non_null(strstr(stor_errmsg(e), "Corruption"));
    int pairs;
    assert_int_equal(scan_populated(e, &pairs), KV_ECORRUPT);
    assert_true(pairs < POPULATE_KEYS);
    stor_close(e);
}

/* A table file cut short: open or the reads fail cleanly. */
static void test_truncated_table(void **state)
{
    struct fixture *f = *state;
    char table[256];
    char errmsg[KV_ERRMSG_SIZE];
    struct stat st;
    populate(f);
    find_file(f, NULL, table_suffix(f), table, sizeof table);
    assert_int_equal(stat(table, &st), 0);
    assert_int_equal(truncate(table, st.st_size / 2), 0);

    struct stor_options o;
    struct stor_engine *e = NULL;
    stor_options_init(&o);
    o.path = f->path;
    int rc = stor_open(f->engine, &o, &e, errmsg);
    if (rc != KV_OK) {
        assert_true(rc == KV_ECORRUPT || rc == KV_EIO);
        assert_non_null(strstr(errmsg, f->path));
        return;
    }
    assert_int_equal(check_populated(e), POPULATE_KEYS);
    int pairs;
    rc = scan_populated(e, &pairs);
    assert_true(rc == KV_ECORRUPT || rc == KV_EIO);
    assert_int_equal(pairs, 0);
    stor_close(e);
}

#define BOTH(test)                                                                                 \
    cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, (void *)"rocksdb"),            \
        cmocka_unit_test_prestate_setup_teardown(test, setup, teardown, (void *)"leveldb")

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--try-open") == 0) {
        return try_open_child(argv[2], argv[3]);
    }
    const struct CMUnitTest tests[] = {
        BOTH(test_basic),
        BOTH(test_batch_delete_range),
        BOTH(test_view_isolation),
        BOTH(test_concurrent_batches),
        BOTH(test_iteration_bounds),
        BOTH(test_lock_conflict),
        BOTH(test_stats),
        BOTH(test_compact_reclaims),
        BOTH(test_alloc_failures),
        BOTH(test_corrupt_current),
        BOTH(test_missing_current),
        BOTH(test_truncated_manifest),
        BOTH(test_corrupt_wal),
        BOTH(test_corrupt_table),
        BOTH(test_truncated_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
