/* test_lmdb.c -- tests specific to the LMDB engine (engine_lmdb.c), beyond
 * the conformance suite every engine runs: persistence across reopen,
 * delete-range inside a batch, batch atomicity (an aborted batch and a
 * process killed mid-stream), views read from other threads, the reader
 * slot limit, the directory lock, damaged data.mdb files, and stats. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "rng.h"
#include "stor.h"

/* Must match LMDB_READERS_MAX in engine_lmdb.c (also in the doc). */
#define TEST_READERS_MAX 1024
/* LMDB's page size on the x86-64 Linux machines we build on. */
#define TEST_PAGE_SIZE 4096
#define TEST_PATH_MAX  512

struct fixture {
    char dir[TEST_PATH_MAX];  /* mkdtemp'd, removed by teardown */
    char data[TEST_PATH_MAX]; /* <dir>/data.mdb */
    struct stor_engine *e;    /* open engine, or NULL */
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/lmdb-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->data, sizeof f->data, "%s/data.mdb", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    stor_close(f->e);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static int open_engine(struct fixture *f, enum stor_sync sync, struct stor_engine **out,
                       char *errmsg)
{
    struct stor_options o;
    stor_options_init(&o);
    o.path = f->dir;
    o.sync = sync;
    return stor_open("lmdb", &o, out, errmsg);
}

static void reopen(struct fixture *f)
{
    char errmsg[KV_ERRMSG_SIZE];
    stor_close(f->e);
    f->e = NULL;
    int rc = open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg);
    if (rc != KV_OK) {
        fail_msg("reopen: %s: %s", kv_errname(rc), errmsg);
    }
}

static void put_str(struct stor_engine *e, const char *k, const char *v)
{
    assert_int_equal(stor_put(e, k, strlen(k), v, strlen(v)), KV_OK);
}

/* Asserts that `k` holds `v` (NULL: absent) in `view` (NULL: latest). */
static void expect(struct stor_engine *e, const struct stor_view *view, const char *k,
                   const char *v)
{
    struct kv_buf b;
    kv_buf_init(&b);
    int rc = stor_get(e, view, k, strlen(k), &b);
    if (v == NULL) {
        assert_int_equal(rc, KV_ENOTFOUND);
    } else {
        assert_int_equal(rc, KV_OK);
        assert_int_equal(b.size, strlen(v));
        assert_memory_equal(b.data, v, b.size);
    }
    kv_buf_close(&b);
}

/* Concatenates the keys of [start, end) as "k1,k2,...," into out. */
static void scan(struct stor_engine *e, const struct stor_view *view, const char *start,
                 const char *end, char *out, size_t out_size)
{
    struct stor_iter *it;
    assert_int_equal(
        stor_iter_new(e, view, start, start ? strlen(start) : 0, end, end ? strlen(end) : 0, &it),
        KV_OK);
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    size_t used = 0;
    int rc;
    out[0] = '\0';
    while ((rc = stor_iter_next(it, &k, &ks, &v, &vs)) == KV_OK) {
        assert_true(used + ks + 2 < out_size);
        memcpy(out + used, k, ks);
        used += ks;
        out[used++] = ',';
        out[used] = '\0';
    }
    assert_int_equal(rc, KV_EOF);
    stor_iter_free(it);
}

static void test_put_get_delete_persist(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
    assert_string_equal(stor_name(f->e), "lmdb");
    assert_int_equal(stor_is_ordered(f->e), 1);
    put_str(f->e, "alpha", "1");
    put_str(f->e, "beta", "2");
    put_str(f->e, "alpha", "one"); /* overwrite */
    /* Binary key with a NUL, and an empty value. */
    static const uint8_t bin[] = {'k', 0, 'z'};
    assert_int_equal(stor_put(f->e, bin, sizeof bin, "", 0), KV_OK);
    assert_int_equal(stor_delete(f->e, "beta", 4), KV_OK);
    assert_int_equal(stor_delete(f->e, "never", 5), KV_OK); /* absent: no error */
    reopen(f);
    expect(f->e, NULL, "alpha", "one");
    expect(f->e, NULL, "beta", NULL);
    struct kv_buf b;
    kv_buf_init(&b);
    assert_int_equal(stor_get(f->e, NULL, bin, sizeof bin, &b), KV_OK);
    assert_int_equal(b.size, 0);
    assert_int_equal(stor_get(f->e, NULL, bin, 1, &b), KV_ENOTFOUND); /* "k" is a prefix */
    kv_buf_close(&b);
}

static void test_big_values_and_max_key(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_NONE, &f->e, errmsg), KV_OK);
    size_t big = 8u << 20; /* spans many overflow pages */
    uint8_t *val = malloc(big);
    assert_non_null(val);
    struct kv_rng r;
    kv_rng_seed(&r, 42);
    kv_rng_fill(&r, val, big);
    uint8_t key[STOR_KEY_SIZE_MAX];
    memset(key, 0xab, sizeof key);
    assert_int_equal(stor_put(f->e, key, sizeof key, val, big), KV_OK);
    reopen(f);
    struct kv_buf b;
    kv_buf_init(&b);
    assert_int_equal(stor_get(f->e, NULL, key, sizeof key, &b), KV_OK);
    assert_int_equal(b.size, big);
    assert_memory_equal(b.data, val, big);
    kv_buf_close(&b);
    free(val);
}

static void test_iteration_order_and_bounds(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    char out[256];
    assert_int_equal(open_engine(f, STOR_SYNC_NONE, &f->e, errmsg), KV_OK);
    const char *keys[] = {"b", "a", "ab", "abc", "c", "ba"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        put_str(f->e, keys[i], "v");
    }
    scan(f->e, NULL, NULL, NULL, out, sizeof out);
    assert_string_equal(out, "a,ab,abc,b,ba,c,");
    scan(f->e, NULL, "ab", "b", out, sizeof out); /* start inclusive, end exclusive */
    assert_string_equal(out, "ab,abc,");
    scan(f->e, NULL, "aa", "bb", out, sizeof out); /* bounds between keys */
    assert_string_equal(out, "ab,abc,b,ba,");
    scan(f->e, NULL, "bb", NULL, out, sizeof out);
    assert_string_equal(out, "c,");
    scan(f->e, NULL, "d", NULL, out, sizeof out); /* past the last key */
    assert_string_equal(out, "");
    scan(f->e, NULL, NULL, "a", out, sizeof out);
    assert_string_equal(out, "");
}

static void test_delete_range_in_batch(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    char out[4096];
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
    /* Enough keys for several leaf pages, so the range deletion crosses
     * page boundaries and rebalances. */
    struct stor_batch b;
    stor_batch_init(&b);
    char k[32];
    char v[200];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(k, sizeof k, "k%05d", i);
        assert_int_equal(stor_batch_put(&b, k, (size_t)n, v, sizeof v), KV_OK);
    }
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_clear(&b);
    /* One batch: put a key inside the range, delete the range (which must
     * remove that key too), then put one key back inside it. */
    assert_int_equal(stor_batch_put(&b, "k00100x", 7, "new", 3), KV_OK);
    assert_int_equal(stor_batch_delete_range(&b, "k00010", 6, "k01990", 6), KV_OK);
    assert_int_equal(stor_batch_put(&b, "k00500", 6, "back", 4), KV_OK);
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    expect(f->e, NULL, "k00100x", NULL);
    expect(f->e, NULL, "k00500", "back");
    scan(f->e, NULL, "k00008", "k00011", out, sizeof out);
    assert_string_equal(out, "k00008,k00009,");
    scan(f->e, NULL, "k01988", NULL, out, sizeof out);
    assert_string_equal(out, "k01990,k01991,k01992,k01993,k01994,k01995,k01996,k01997,k01998,"
                             "k01999,");
    struct stor_stats st;
    assert_int_equal(stor_stats(f->e, &st), KV_OK);
    assert_int_equal(st.key_count, 10 + 1 + 10);
    assert_int_equal(st.key_count_exact, 1);
    /* A range past every key, and one matching nothing. */
    stor_batch_init(&b);
    assert_int_equal(stor_batch_delete_range(&b, "k01995", 6, "z", 1), KV_OK);
    assert_int_equal(stor_batch_delete_range(&b, "x", 1, "y", 1), KV_OK);
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    scan(f->e, NULL, "k01", NULL, out, sizeof out);
    assert_string_equal(out, "k01990,k01991,k01992,k01993,k01994,");
}

static void test_aborted_batch_leaves_no_trace(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
    put_str(f->e, "keep", "old");
    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_put(&b, "keep", 4, "new", 3), KV_OK);
    assert_int_equal(stor_batch_put(&b, "fresh", 5, "x", 1), KV_OK);
    assert_int_equal(stor_batch_delete_range(&b, "a", 1, "z", 1), KV_OK);
    /* A malformed trailing operation makes the engine abort the batch
     * after it has applied the first three inside its transaction. */
    assert_int_equal(kv_buf_put_u8(&b.rep, 0x7f), KV_OK);
    b.count++;
    assert_int_equal(stor_write(f->e, &b), KV_ECORRUPT);
    assert_non_null(strstr(stor_errmsg(f->e), "malformed"));
    stor_batch_close(&b);
    expect(f->e, NULL, "keep", "old");
    expect(f->e, NULL, "fresh", NULL);
    /* Not an I/O failure: the engine still takes writes. */
    put_str(f->e, "after", "ok");
    expect(f->e, NULL, "after", "ok");
}

#define CRASH_KEYS      50   /* keys rewritten by every batch */
#define CRASH_VALUE     2000 /* bytes per value: several pages per batch */
#define CRASH_READY_GEN 3    /* batches committed before the child reports */
#define CRASH_ROUNDS    3    /* kills, each after a different delay */
#define CRASH_DELAY_MS  25   /* delay step between rounds */

/* Child: rewrites every key with the batch's generation number, forever;
 * writes one byte to `ready_fd` once CRASH_READY_GEN batches committed. */
static void crash_child(struct fixture *f, int ready_fd)
{
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    if (open_engine(f, STOR_SYNC_NONE, &e, errmsg) != KV_OK) {
        _exit(2);
    }
    char v[CRASH_VALUE];
    struct stor_batch b;
    stor_batch_init(&b);
    for (uint32_t gen = 1;; gen++) {
        stor_batch_clear(&b);
        memset(v, (int)('a' + gen % 26), sizeof v);
        memcpy(v, &gen, sizeof gen);
        for (int i = 0; i < CRASH_KEYS; i++) {
            char k[16];
            int n = snprintf(k, sizeof k, "c%03d", i);
            if (stor_batch_put(&b, k, (size_t)n, v, sizeof v) != KV_OK) {
                _exit(3);
            }
        }
        if (stor_write(e, &b) != KV_OK) {
            _exit(4);
        }
        if (gen == CRASH_READY_GEN && write(ready_fd, "r", 1) != 1) {
            _exit(5);
        }
    }
}

/* After reopen, every key must hold the same generation: one whole batch. */
static void check_one_generation(struct fixture *f)
{
    struct kv_buf b;
    kv_buf_init(&b);
    uint32_t gen0 = 0;
    for (int i = 0; i < CRASH_KEYS; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "c%03d", i);
        assert_int_equal(stor_get(f->e, NULL, k, (size_t)n, &b), KV_OK);
        assert_int_equal(b.size, CRASH_VALUE);
        uint32_t gen;
        memcpy(&gen, b.data, sizeof gen);
        if (i == 0) {
            gen0 = gen;
        }
        assert_int_equal(gen, gen0); /* every key from the same batch */
        assert_int_equal(b.data[CRASH_VALUE - 1], 'a' + gen % 26);
    }
    assert_true(gen0 >= CRASH_READY_GEN); /* acknowledged batches survive */
    kv_buf_close(&b);
}

static void test_kill_mid_stream_keeps_batches_whole(void **state)
{
    struct fixture *f = *state;
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(f, fds[1]);
        }
        close(fds[1]);
        char c;
        ssize_t n = read(fds[0], &c, 1);
        close(fds[0]);
        if (n == 1) {
            usleep((useconds_t)(round * CRASH_DELAY_MS * 1000));
            kill(pid, SIGKILL);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status)); /* it was still writing, not failed */
        reopen(f);
        check_one_generation(f);
        stor_close(f->e);
        f->e = NULL;
    }
}

struct reader_arg {
    struct stor_engine *e;
    const struct stor_view *view;
    int ok; /* set by the thread when every check passed */
};

/* One round of checks on the view; 1 when all passed. */
static int reader_round(struct reader_arg *a, struct kv_buf *b)
{
    if (stor_get(a->e, a->view, "k", 1, b) != KV_OK || b->size != 3 ||
        memcmp(b->data, "old", 3) != 0 || stor_get(a->e, a->view, "gone", 4, b) != KV_OK ||
        stor_get(a->e, a->view, "added", 5, b) != KV_ENOTFOUND) {
        return 0;
    }
    struct stor_iter *it;
    if (stor_iter_new(a->e, a->view, NULL, 0, NULL, 0, &it) != KV_OK) {
        return 0;
    }
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    int n = 0;
    while (stor_iter_next(it, &k, &ks, &v, &vs) == KV_OK) {
        n++;
    }
    stor_iter_free(it);
    return n == 2; /* "gone" and "k", not "added" */
}

#define VIEW_ROUNDS 500 /* per thread, so the threads' reads overlap */

static void *reader_thread(void *p)
{
    struct reader_arg *a = p;
    struct kv_buf b;
    kv_buf_init(&b);
    a->ok = 1;
    for (int i = 0; i < VIEW_ROUNDS && a->ok; i++) {
        a->ok = reader_round(a, &b);
    }
    kv_buf_close(&b);
    return NULL;
}

#define VIEW_THREADS 4

static void test_view_isolated_across_threads(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_NONE, &f->e, errmsg), KV_OK);
    put_str(f->e, "k", "old");
    put_str(f->e, "gone", "x");
    struct stor_view *view;
    assert_int_equal(stor_view_new(f->e, &view), KV_OK);
    /* Writes after the view, many of them, so freed pages would be reused
     * if the view did not pin them. */
    for (int i = 0; i < 200; i++) {
        put_str(f->e, "k", i % 2 ? "new" : "newer");
    }
    assert_int_equal(stor_delete(f->e, "gone", 4), KV_OK);
    put_str(f->e, "added", "y");
    /* Several threads read the one view at the same time. */
    struct reader_arg a[VIEW_THREADS];
    pthread_t t[VIEW_THREADS];
    for (int i = 0; i < VIEW_THREADS; i++) {
        a[i] = (struct reader_arg){.e = f->e, .view = view};
        assert_int_equal(pthread_create(&t[i], NULL, reader_thread, &a[i]), 0);
    }
    for (int i = 0; i < VIEW_THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_true(a[i].ok);
    }
    expect(f->e, NULL, "k", "new");
    expect(f->e, NULL, "gone", NULL);
    stor_view_free(view); /* freed on another thread than the one that read */
}

static void test_reader_limit_gives_ebusy(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_NONE, &f->e, errmsg), KV_OK);
    put_str(f->e, "k", "v");
    expect(f->e, NULL, "k", "v"); /* leaves a pooled transaction behind */
    struct stor_view **views = calloc(TEST_READERS_MAX + 1, sizeof *views);
    assert_non_null(views);
    int n = 0;
    int rc;
    while (n <= TEST_READERS_MAX && (rc = stor_view_new(f->e, &views[n])) == KV_OK) {
        n++;
    }
    assert_int_equal(rc, KV_EBUSY);
    assert_int_equal(n, TEST_READERS_MAX);
    assert_non_null(strstr(stor_errmsg(f->e), "data.mdb"));
    /* Every slot is taken: reads without a view fail cleanly too. */
    struct kv_buf b;
    kv_buf_init(&b);
    assert_int_equal(stor_get(f->e, NULL, "k", 1, &b), KV_EBUSY);
    struct stor_iter *it;
    assert_int_equal(stor_iter_new(f->e, NULL, NULL, 0, NULL, 0, &it), KV_EBUSY);
    /* Writers need no reader slot. */
    put_str(f->e, "k", "w");
    expect(f->e, views[0], "k", "v");
    stor_view_free(views[--n]);
    assert_int_equal(stor_view_new(f->e, &views[n]), KV_OK);
    n++;
    for (int i = 0; i < n; i++) {
        stor_view_free(views[i]);
    }
    free(views);
    expect(f->e, NULL, "k", "w");
    kv_buf_close(&b);
}

static void test_second_open_is_locked(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
    struct stor_engine *second = NULL;
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &second, errmsg), KV_ELOCKED);
    assert_null(second);
    assert_non_null(strstr(errmsg, f->dir));
    /* Another process is refused the same way. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct stor_engine *e;
        _exit(open_engine(f, STOR_SYNC_ALWAYS, &e, errmsg) == KV_ELOCKED ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    stor_close(f->e);
    f->e = NULL;
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
}

#define DB_VALUE_SIZE_MAX 3000 /* every tenth value spills to an overflow page */

/* The value make_db stores under key number i: distinct for every key, so
 * a value read under the wrong key is noticed too. Returns its size. */
static size_t db_value(int i, uint8_t *v)
{
    size_t size = i % 10 == 0 ? DB_VALUE_SIZE_MAX : 100;
    struct kv_rng r;
    kv_rng_seed(&r, 1000003u + (uint64_t)i);
    kv_rng_fill(&r, v, size);
    return size;
}

static size_t db_key(int i, char *k)
{
    return (size_t)sprintf(k, "key%06d", i);
}

/* Fills a fresh engine with enough data for a multi-level tree, closes it
 * and returns data.mdb's size. */
static off_t make_db(struct fixture *f, int keys)
{
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
    struct stor_batch b;
    stor_batch_init(&b);
    uint8_t v[DB_VALUE_SIZE_MAX];
    for (int i = 0; i < keys; i++) {
        char k[32];
        size_t ks = db_key(i, k);
        size_t vs = db_value(i, v);
        assert_int_equal(stor_batch_put(&b, k, ks, v, vs), KV_OK);
    }
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    stor_close(f->e);
    f->e = NULL;
    struct stat st;
    assert_int_equal(stat(f->data, &st), 0);
    return st.st_size;
}

static void overwrite(const char *path, off_t off, const void *bytes, size_t size)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, size, off), (ssize_t)size);
    close(fd);
}

/* Opens the damaged directory and expects KV_ECORRUPT naming data.mdb
 * (and saying `why`, when not NULL). */
static void expect_corrupt_open_why(struct fixture *f, const char *why)
{
    char errmsg[KV_ERRMSG_SIZE];
    int rc = open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg);
    if (rc != KV_ECORRUPT) {
        fail_msg("expected KV_ECORRUPT, got %s: %s", kv_errname(rc), errmsg);
    }
    assert_null(f->e);
    assert_non_null(strstr(errmsg, f->data));
    if (why != NULL && strstr(errmsg, why) == NULL) {
        fail_msg("message lacks '%s': %s", why, errmsg);
    }
}

static void test_corrupt_garbage_header(void **state)
{
    struct fixture *f = *state;
    make_db(f, 100);
    uint8_t junk[64];
    memset(junk, 0x5a, sizeof junk);
    overwrite(f->data, 0, junk, sizeof junk);
    expect_corrupt_open_why(f, "meta pages are damaged");
}

static void test_corrupt_truncated_to_few_bytes(void **state)
{
    struct fixture *f = *state;
    make_db(f, 100);
    assert_int_equal(truncate(f->data, 10), 0);
    expect_corrupt_open_why(f, "meta pages are damaged");
}

static void test_corrupt_meta_page_random(void **state)
{
    struct fixture *f = *state;
    make_db(f, 100);
    uint8_t junk[TEST_PAGE_SIZE];
    struct kv_rng r;
    kv_rng_seed(&r, 7);
    kv_rng_fill(&r, junk, sizeof junk);
    overwrite(f->data, TEST_PAGE_SIZE, junk, sizeof junk); /* the second meta page */
    expect_corrupt_open_why(f, "meta pages are damaged");
}

static void test_corrupt_truncated_data_pages(void **state)
{
    struct fixture *f = *state;
    off_t size = make_db(f, 5000);
    assert_true(size > 8 * TEST_PAGE_SIZE);
    /* Both meta pages intact, the tree they point to cut away. */
    assert_int_equal(truncate(f->data, size / 2 / TEST_PAGE_SIZE * TEST_PAGE_SIZE), 0);
    expect_corrupt_open_why(f, "is truncated");
}

/* 1 when (k, v) is exactly a pair make_db wrote; sets *index. */
static int db_pair_ok(const uint8_t *k, size_t ks, const uint8_t *v, size_t vs, int keys,
                      int *index)
{
    char key[32];
    uint8_t want[DB_VALUE_SIZE_MAX];
    int i = -1;
    if (ks == 9 && memcmp(k, "key", 3) == 0) {
        memcpy(key, k + 3, 6);
        key[6] = '\0';
        i = atoi(key);
    }
    if (i < 0 || i >= keys || db_key(i, key) != ks || memcmp(key, k, ks) != 0) {
        return 0;
    }
    *index = i;
    return db_value(i, want) == vs && memcmp(want, v, vs) == 0;
}

/* Child side of the damaged-page tests: opens and reads everything, by
 * iteration and by key. Exit 0: open refused with KV_ECORRUPT naming
 * data.mdb; 10: opened, and every answer was right, KV_ENOTFOUND or
 * KV_ECORRUPT; 4: a wrong answer; other codes: unexpected errors. */
static void damaged_child(struct fixture *f, int keys)
{
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = open_engine(f, STOR_SYNC_ALWAYS, &e, errmsg);
    if (rc == KV_ECORRUPT) {
        _exit(strstr(errmsg, "data.mdb") ? 0 : 1);
    }
    if (rc != KV_OK) {
        _exit(2);
    }
    uint8_t *seen = calloc((size_t)keys, 1);
    struct stor_iter *it;
    rc = stor_iter_new(e, NULL, NULL, 0, NULL, 0, &it);
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    while (rc == KV_OK && (rc = stor_iter_next(it, &k, &ks, &v, &vs)) == KV_OK) {
        int i;
        if (!db_pair_ok(k, ks, v, vs, keys, &i) || seen[i]) {
            _exit(4);
        }
        seen[i] = 1;
    }
    if (rc != KV_EOF && rc != KV_ECORRUPT) {
        _exit(3);
    }
    struct kv_buf b;
    kv_buf_init(&b);
    for (int i = 0; i < keys; i++) {
        char key[32];
        size_t n = db_key(i, key);
        int j;
        rc = stor_get(e, NULL, key, n, &b);
        if (rc == KV_OK && (!db_pair_ok((uint8_t *)key, n, b.data, b.size, keys, &j) || j != i)) {
            _exit(4);
        }
        if (rc != KV_OK && rc != KV_ENOTFOUND && rc != KV_ECORRUPT) {
            _exit(5);
        }
    }
    _exit(10);
}

/* Flips one byte `skip` bytes after the first occurrence of `pattern` in
 * data.mdb (LMDB stores keys and values verbatim, so they can be found). */
static void flip_after(struct fixture *f, const void *pattern, size_t size, size_t skip)
{
    struct stat st;
    assert_int_equal(stat(f->data, &st), 0);
    uint8_t *file = malloc((size_t)st.st_size);
    assert_non_null(file);
    int fd = open(f->data, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, file, (size_t)st.st_size, 0), st.st_size);
    uint8_t *at = memmem(file, (size_t)st.st_size, pattern, size);
    assert_non_null(at);
    off_t off = (off_t)(at - file) + (off_t)skip;
    uint8_t byte = file[off] ^ 0x01;
    assert_int_equal(pwrite(fd, &byte, 1, off), 1);
    close(fd);
    free(file);
}

/* One flipped bit in a value (in its leaf page, and on an overflow page)
 * is invisible to LMDB and to the open-time walk: the record checksum
 * turns it into KV_ECORRUPT for get and iteration, never a wrong value. */
static void test_corrupt_value_byte_detected(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    make_db(f, 2000);
    uint8_t v[DB_VALUE_SIZE_MAX];
    db_value(1001, v); /* 100 bytes, inline in a leaf page */
    flip_after(f, v, 32, 50);
    db_value(1500, v); /* 3000 bytes, on an overflow page */
    flip_after(f, v, 32, 2000);
    int rc = open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg);
    if (rc != KV_OK) {
        fail_msg("open: %s: %s", kv_errname(rc), errmsg);
    }
    struct kv_buf b;
    kv_buf_init(&b);
    assert_int_equal(stor_get(f->e, NULL, "key001001", 9, &b), KV_ECORRUPT);
    assert_non_null(strstr(stor_errmsg(f->e), "checksum"));
    assert_non_null(strstr(stor_errmsg(f->e), f->data));
    assert_int_equal(stor_get(f->e, NULL, "key001500", 9, &b), KV_ECORRUPT);
    assert_int_equal(stor_get(f->e, NULL, "key001000", 9, &b), KV_OK); /* neighbours fine */
    assert_int_equal(stor_get(f->e, NULL, "key001499", 9, &b), KV_OK);
    kv_buf_close(&b);
    struct stor_iter *it;
    assert_int_equal(stor_iter_new(f->e, NULL, "key001001", 9, NULL, 0, &it), KV_OK);
    const uint8_t *k;
    const uint8_t *val;
    size_t ks;
    size_t vs;
    assert_int_equal(stor_iter_next(it, &k, &ks, &val, &vs), KV_ECORRUPT);
    assert_int_equal(stor_iter_next(it, &k, &ks, &val, &vs), KV_EOF); /* stays ended */
    stor_iter_free(it);
    /* Overwriting the damaged key replaces the damaged record. */
    assert_int_equal(stor_put(f->e, "key001001", 9, "fixed", 5), KV_OK);
    expect(f->e, NULL, "key001001", "fixed");
}

/* Offsets in LMDB 0.9's meta page and page header (64-bit), as the
 * engine's open-time walk reads them. */
#define META_TXNID_OFF  144
#define META_FREE_DEPTH 46  /* MDB_db[0] (the free list) .md_depth */
#define META_FREE_ROOT  80  /* MDB_db[0] .md_root */
#define META_MAIN_ROOT  128 /* MDB_db[1] .md_root */
#define PAGE_LOWER_OFF  12
#define PAGE_PTRS_OFF   16
#define NODE_HDR        8

/* A free-list entry naming a live page (here: the data tree's root) would
 * make LMDB hand that page to the next writer: open must refuse it. */
static void test_corrupt_free_list_detected(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    make_db(f, 2000);
    assert_int_equal(open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg), KV_OK);
    for (int i = 0; i < 5; i++) { /* each commit frees the pages it copied */
        put_str(f->e, "key000100", i % 2 ? "a" : "b");
    }
    stor_close(f->e);
    f->e = NULL;
    uint8_t metas[2 * TEST_PAGE_SIZE];
    uint8_t page[TEST_PAGE_SIZE];
    int fd = open(f->data, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, metas, sizeof metas, 0), sizeof metas);
    const uint8_t *m = metas;
    uint64_t t0;
    uint64_t t1;
    memcpy(&t0, metas + META_TXNID_OFF, 8);
    memcpy(&t1, metas + TEST_PAGE_SIZE + META_TXNID_OFF, 8);
    if (t1 > t0) {
        m = metas + TEST_PAGE_SIZE;
    }
    uint16_t depth;
    uint64_t free_root;
    uint64_t main_root;
    memcpy(&depth, m + META_FREE_DEPTH, 2);
    memcpy(&free_root, m + META_FREE_ROOT, 8);
    memcpy(&main_root, m + META_MAIN_ROOT, 8);
    assert_int_equal(depth, 1); /* a single leaf holds the free list */
    off_t at = (off_t)free_root * TEST_PAGE_SIZE;
    assert_int_equal(pread(fd, page, sizeof page, at), sizeof page);
    uint16_t lower;
    uint16_t node;
    memcpy(&lower, page + PAGE_LOWER_OFF, 2);
    assert_true(lower > PAGE_PTRS_OFF);
    memcpy(&node, page + PAGE_PTRS_OFF, 2);
    /* Node: header, 8-byte txnid key, then the ID list: count, ids. */
    uint64_t count;
    memcpy(&count, page + node + NODE_HDR + 8, 8);
    assert_true(count >= 1);
    /* A one-entry list (shorter than its record, which LMDB allows)
     * naming the root: in range and in order, but live. */
    count = 1;
    memcpy(page + node + NODE_HDR + 8, &count, 8);
    memcpy(page + node + NODE_HDR + 16, &main_root, 8);
    assert_int_equal(pwrite(fd, page, sizeof page, at), sizeof page);
    close(fd);
    expect_corrupt_open_why(f, "both free and in use");
}

#define DAMAGE_SEEDS 64
#define DAMAGE_KEYS  5000

/* A misdirected write: one leaf page's bytes land on another leaf page.
 * Both are well-formed with valid record checksums, so only the page
 * number in the header gives it away; without that check the copied keys
 * would be served twice and the overwritten ones lost. */
static void test_corrupt_misdirected_page(void **state)
{
    struct fixture *f = *state;
    off_t size = make_db(f, DAMAGE_KEYS);
    uint8_t page[TEST_PAGE_SIZE];
    off_t leaves[2];
    int found = 0;
    int fd = open(f->data, O_RDWR);
    assert_true(fd >= 0);
    for (off_t pg = 2; pg < size / TEST_PAGE_SIZE && found < 2; pg++) {
        uint64_t pgno;
        assert_int_equal(pread(fd, page, sizeof page, pg * TEST_PAGE_SIZE), sizeof page);
        memcpy(&pgno, page, 8);
        if (pgno == (uint64_t)pg && page[10] == 0x02) { /* LMDB's P_LEAF */
            leaves[found++] = pg;
        }
    }
    assert_int_equal(found, 2);
    assert_int_equal(pread(fd, page, sizeof page, leaves[0] * TEST_PAGE_SIZE), sizeof page);
    assert_int_equal(pwrite(fd, page, sizeof page, leaves[1] * TEST_PAGE_SIZE), sizeof page);
    close(fd);
    expect_corrupt_open_why(f, "page header names another page");
}

/* Keys out of order inside a leaf: LMDB's binary search would miss keys. */
static void test_corrupt_key_order(void **state)
{
    struct fixture *f = *state;
    make_db(f, 2000);
    flip_after(f, "key001001", 9, 3); /* "key001001" -> "key101001" */
    expect_corrupt_open_why(f, "keys out of order");
}

/* A page overwritten with random bytes, one page at a time (restored
 * after): LMDB aborts or faults on a damaged tree page, so the engine's
 * open-time walk must refuse every damaged branch or leaf page; damage to
 * a value's overflow page must show as KV_ECORRUPT (record checksums),
 * and no damage may ever produce a wrong answer. Children keep a crash
 * from killing the runner and report it with its signal. */
static void test_corrupt_data_page_random(void **state)
{
    struct fixture *f = *state;
    off_t size = make_db(f, DAMAGE_KEYS);
    off_t pages = size / TEST_PAGE_SIZE;
    int refused = 0;
    for (uint64_t seed = 1; seed <= DAMAGE_SEEDS; seed++) {
        struct kv_rng r;
        kv_rng_seed(&r, seed);
        uint8_t junk[TEST_PAGE_SIZE];
        uint8_t orig[TEST_PAGE_SIZE];
        kv_rng_fill(&r, junk, sizeof junk);
        off_t page = 2 + (off_t)kv_rng_below(&r, (uint64_t)(pages - 2));
        int fd = open(f->data, O_RDONLY);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, orig, sizeof orig, page * TEST_PAGE_SIZE), sizeof orig);
        close(fd);
        overwrite(f->data, page * TEST_PAGE_SIZE, junk, sizeof junk);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            damaged_child(f, DAMAGE_KEYS);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        overwrite(f->data, page * TEST_PAGE_SIZE, orig, sizeof orig);
        int tree_page = (orig[10] & 0x03) != 0; /* LMDB's P_BRANCH | P_LEAF */
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code == 0) {
            refused++;
        }
        if (code != 0 && !(code == 10 && !tree_page)) {
            fail_msg("seed %llu page %lld (tree page %d): child %s %d", (unsigned long long)seed,
                     (long long)page, tree_page, WIFEXITED(status) ? "exited" : "killed by signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
    }
    print_message("damaged pages refused at open: %d of %d\n", refused, DAMAGE_SEEDS);
    assert_true(refused > 0);
}

/* Child of the failed-commit test: fills some pages, then caps the file
 * size so the next commit cannot extend data.mdb. Exit 0 when the failure
 * poisons the engine and reads still work. */
static void failed_commit_child(struct fixture *f)
{
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    if (open_engine(f, STOR_SYNC_ALWAYS, &e, errmsg) != KV_OK) {
        _exit(1);
    }
    put_str(e, "before", "kept");
    struct stat st;
    if (stat(f->data, &st) != 0) {
        _exit(2);
    }
    signal(SIGXFSZ, SIG_IGN); /* get EFBIG from write() instead of a signal */
    struct rlimit lim = {.rlim_cur = (rlim_t)st.st_size, .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
        _exit(3);
    }
    struct stor_batch b;
    stor_batch_init(&b);
    char v[4096];
    memset(v, 'n', sizeof v);
    for (int i = 0; i < 100; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "n%03d", i);
        if (stor_batch_put(&b, k, (size_t)n, v, sizeof v) != KV_OK) {
            _exit(4);
        }
    }
    int rc = stor_write(e, &b);
    stor_batch_close(&b);
    if (rc == KV_OK || strstr(stor_errmsg(e), "data.mdb") == NULL) {
        _exit(5);
    }
    if (stor_put(e, "x", 1, "y", 1) != KV_EPOISONED) {
        _exit(6);
    }
    struct kv_buf got;
    kv_buf_init(&got);
    if (stor_get(e, NULL, "before", 6, &got) != KV_OK || got.size != 4) {
        _exit(7);
    }
    kv_buf_close(&got);
    stor_close(e);
    _exit(0);
}

static void test_failed_commit_poisons_and_loses_nothing(void **state)
{
    struct fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        failed_commit_child(f);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    reopen(f);
    expect(f->e, NULL, "before", "kept");
    expect(f->e, NULL, "n000", NULL);
    expect(f->e, NULL, "n099", NULL);
    put_str(f->e, "n000", "fresh engine writes again");
}

/* Every allocation the engine makes can fail: each failure must end in a
 * clean error (no crash, no leak under ASan) and leave the engine usable. */
static void test_allocation_failures(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    make_db(f, 2000);
    int opened = 0;
    for (long n = 0; n < 200 && !opened; n++) {
        kv_alloc_fault_after(n);
        int rc = open_engine(f, STOR_SYNC_ALWAYS, &f->e, errmsg);
        kv_alloc_fault_clear();
        if (rc == KV_OK) {
            opened = 1;
        } else {
            assert_int_equal(rc, KV_ENOMEM);
            assert_null(f->e);
        }
    }
    assert_true(opened);
    for (long n = 0; n < 50; n++) {
        struct stor_view *view = NULL;
        struct stor_iter *it = NULL;
        struct kv_buf b;
        kv_buf_init(&b);
        kv_alloc_fault_after(n);
        int rc1 = stor_view_new(f->e, &view);
        int rc2 = stor_iter_new(f->e, NULL, "key0001", 7, "key0002", 7, &it);
        int rc3 = stor_get(f->e, view, "key000100", 9, &b);
        int rc4 = stor_put(f->e, "fault", 5, "v", 1);
        kv_alloc_fault_clear();
        assert_true(rc1 == KV_OK || rc1 == KV_ENOMEM);
        assert_true(rc2 == KV_OK || rc2 == KV_ENOMEM);
        assert_true(rc3 == KV_OK || rc3 == KV_ENOMEM);
        assert_true(rc4 == KV_OK || rc4 == KV_ENOMEM);
        stor_iter_free(it);
        stor_view_free(view);
        kv_buf_close(&b);
    }
    expect(f->e, NULL, "fault", "v");
}

#define RACE_READERS 3
#define RACE_WRITES  300

struct race {
    struct stor_engine *e;
    atomic_int stop;   /* set by the writer when done */
    atomic_int broken; /* set by a reader that saw a torn batch */
};

/* Reads both keys of the pair through one view: they must always come from
 * the same batch, however the writer interleaves. */
static void *race_reader(void *p)
{
    struct race *r = p;
    struct kv_buf a;
    struct kv_buf b;
    kv_buf_init(&a);
    kv_buf_init(&b);
    while (!atomic_load(&r->stop)) {
        struct stor_view *view;
        if (stor_view_new(r->e, &view) != KV_OK) {
            atomic_store(&r->broken, 1);
            break;
        }
        int ra = stor_get(r->e, view, "pair-a", 6, &a);
        sched_yield();
        int rb = stor_get(r->e, view, "pair-b", 6, &b);
        if (ra != rb || (ra == KV_OK && (a.size != b.size || memcmp(a.data, b.data, a.size)))) {
            atomic_store(&r->broken, 1);
        }
        stor_view_free(view);
    }
    kv_buf_close(&a);
    kv_buf_close(&b);
    return NULL;
}

static void test_concurrent_readers_see_whole_batches(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_NONE, &f->e, errmsg), KV_OK);
    struct race r = {.e = f->e};
    atomic_init(&r.stop, 0);
    atomic_init(&r.broken, 0);
    pthread_t t[RACE_READERS];
    for (int i = 0; i < RACE_READERS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, race_reader, &r), 0);
    }
    struct stor_batch b;
    stor_batch_init(&b);
    for (int i = 0; i < RACE_WRITES; i++) {
        char v[32];
        int n = snprintf(v, sizeof v, "gen%d", i);
        stor_batch_clear(&b);
        assert_int_equal(stor_batch_put(&b, "pair-a", 6, v, (size_t)n), KV_OK);
        assert_int_equal(stor_batch_put(&b, "pair-b", 6, v, (size_t)n), KV_OK);
        assert_int_equal(stor_write(f->e, &b), KV_OK);
    }
    stor_batch_close(&b);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < RACE_READERS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
    }
    assert_false(atomic_load(&r.broken));
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif

/* Address space for the map-fallback test: far below the 1 TiB the engine
 * asks for first, far above what the test process otherwise uses. */
#define TEST_ADDRESS_SPACE_BYTES (64ull << 30)

/* With RLIMIT_AS below the 1 TiB map, open must fall back to a smaller map
 * and work. Sanitizers reserve terabytes of shadow memory and cannot run
 * under such a limit, so the test is skipped there. */
static void test_small_address_space_falls_back(void **state)
{
#ifdef TEST_SANITIZED
    skip();
#else
    struct fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim = {.rlim_cur = TEST_ADDRESS_SPACE_BYTES,
                             .rlim_max = TEST_ADDRESS_SPACE_BYTES};
        struct stor_engine *e;
        char errmsg[KV_ERRMSG_SIZE];
        if (setrlimit(RLIMIT_AS, &lim) != 0) {
            _exit(1);
        }
        if (open_engine(f, STOR_SYNC_NONE, &e, errmsg) != KV_OK) {
            _exit(2);
        }
        put_str(e, "k", "v");
        struct kv_buf b;
        kv_buf_init(&b);
        int rc = stor_get(e, NULL, "k", 1, &b);
        kv_buf_close(&b);
        stor_close(e);
        _exit(rc == KV_OK ? 0 : 3);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    reopen(f); /* and the normal map opens the file the small one wrote */
    expect(f->e, NULL, "k", "v");
#endif
}

static void test_stats_exact_and_sparse(void **state)
{
    struct fixture *f = *state;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(open_engine(f, STOR_SYNC_NONE, &f->e, errmsg), KV_OK);
    struct stor_stats st0;
    assert_int_equal(stor_stats(f->e, &st0), KV_OK);
    assert_int_equal(st0.key_count, 0);
    assert_int_equal(st0.key_count_exact, 1);
    assert_true(st0.disk_bytes > 0); /* meta pages and the lock table */
    struct stor_batch b;
    stor_batch_init(&b);
    char v[4096];
    memset(v, 'x', sizeof v);
    for (int i = 0; i < 1000; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "s%04d", i);
        assert_int_equal(stor_batch_put(&b, k, (size_t)n, v, sizeof v), KV_OK);
    }
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    assert_int_equal(stor_delete(f->e, "s0000", 5), KV_OK);
    struct stor_stats st1;
    assert_int_equal(stor_stats(f->e, &st1), KV_OK);
    assert_int_equal(st1.key_count, 999);
    /* About 4 MB of values now on disk; the 1 TiB map is not. */
    assert_true(st1.disk_bytes >= st0.disk_bytes + 1000u * 4096u);
    assert_true(st1.disk_bytes < 64u << 20);
    struct stat fst;
    assert_int_equal(stat(f->data, &fst), 0);
    assert_true(fst.st_size < 64 << 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_delete_persist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_values_and_max_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iteration_order_and_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_range_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aborted_batch_leaves_no_trace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_stream_keeps_batches_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_isolated_across_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_limit_gives_ebusy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_open_is_locked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_garbage_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_truncated_to_few_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_meta_page_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_truncated_data_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_value_byte_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_free_list_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_misdirected_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_key_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_data_page_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_poisons_and_loses_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_allocation_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers_see_whole_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_address_space_falls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_exact_and_sparse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
