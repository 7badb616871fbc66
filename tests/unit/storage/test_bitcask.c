/* test_bitcask.c -- unit tests for the bitcask engine's own machinery: the
 * record codec, recovery (torn tails, uncommitted batches, corruption),
 * hint files, merge (space, content, no resurrection, crash leftovers),
 * views across a merge, file rolling, and the keydir's memory per key.
 * The engine-independent contract is the conformance suite's job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include "alloc.h"
#include "bitcask_int.h"
#include "crc32c.h"
#include "log.h"
#include "rng.h"
#include "stor.h"

#define KEY_COUNT_MAX 4096
#define PATH_SIZE     512

/* What the store should hold: key i is "k%05d" -> value or absent. */
struct model {
    int present[KEY_COUNT_MAX];
    char value[KEY_COUNT_MAX][64];
};

struct fixture {
    char dir[PATH_SIZE];
    struct stor_options o;
    struct stor_engine *e;
    struct model m;
};

static void key_of(int i, char *out)
{
    snprintf(out, 16, "k%05d", i);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/bitcask-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    stor_options_init(&f->o);
    f->o.path = f->dir;
    f->o.sync = STOR_SYNC_NONE; /* speed; the sync path is covered below */
    *state = f;
    return 0;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            char p[PATH_SIZE * 2];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    stor_close(f->e);
    remove_dir(f->dir);
    free(f);
    return 0;
}

static void do_open(struct fixture *f)
{
    char errmsg[KV_ERRMSG_SIZE];
    int rc = stor_open("bitcask", &f->o, &f->e, errmsg);
    if (rc != KV_OK) {
        fail_msg("open: %s: %s", kv_strerror(rc), errmsg);
    }
}

static void reopen(struct fixture *f)
{
    stor_close(f->e);
    f->e = NULL;
    do_open(f);
}

static void put(struct fixture *f, int i, const char *value)
{
    char k[16];
    key_of(i, k);
    assert_int_equal(stor_put(f->e, k, strlen(k), value, strlen(value)), KV_OK);
    f->m.present[i] = 1;
    snprintf(f->m.value[i], sizeof f->m.value[i], "%s", value);
}

static void del(struct fixture *f, int i)
{
    char k[16];
    key_of(i, k);
    assert_int_equal(stor_delete(f->e, k, strlen(k)), KV_OK);
    f->m.present[i] = 0;
}

/* Every key of the model reads back right, through `view` (NULL: latest),
 * and iteration sees exactly the present keys, once each. */
static void check_model(struct fixture *f, const struct stor_view *view, const struct model *m,
                        int key_limit)
{
    struct kv_buf v;
    kv_buf_init(&v);
    int expect = 0;
    for (int i = 0; i < key_limit; i++) {
        char k[16];
        key_of(i, k);
        int rc = stor_get(f->e, view, k, strlen(k), &v);
        if (m->present[i]) {
            expect++;
            assert_int_equal(rc, KV_OK);
            assert_int_equal(v.size, strlen(m->value[i]));
            assert_memory_equal(v.data, m->value[i], v.size);
        } else {
            assert_int_equal(rc, KV_ENOTFOUND);
        }
    }
    kv_buf_close(&v);
    static char seen[KEY_COUNT_MAX];
    memset(seen, 0, sizeof seen);
    struct stor_iter *it;
    assert_int_equal(stor_iter_new(f->e, view, NULL, 0, NULL, 0, &it), KV_OK);
    const uint8_t *key;
    const uint8_t *value;
    size_t ks;
    size_t vs;
    int n = 0;
    int rc;
    while ((rc = stor_iter_next(it, &key, &ks, &value, &vs)) == KV_OK) {
        assert_int_equal(ks, 6);
        int i = 0;
        for (int d = 1; d < 6; d++) {
            i = i * 10 + (key[d] - '0'); /* not NUL-terminated: no atoi */
        }
        if (!(i >= 0 && i < key_limit && m->present[i] && !seen[i])) {
            fail_msg("iteration gave key %.*s (present %d, seen %d)", (int)ks, (const char *)key,
                     i >= 0 && i < key_limit ? m->present[i] : -1,
                     i >= 0 && i < key_limit ? seen[i] : -1);
        }
        seen[i] = 1;
        assert_int_equal(vs, strlen(m->value[i]));
        assert_memory_equal(value, m->value[i], vs);
        n++;
    }
    assert_int_equal(rc, KV_EOF);
    assert_int_equal(n, expect);
    stor_iter_free(it);
    if (view == NULL) {
        struct stor_stats st;
        assert_int_equal(stor_stats(f->e, &st), KV_OK);
        assert_int_equal(st.key_count, expect);
        assert_int_equal(st.key_count_exact, 1);
    }
}

static void file_name(const struct fixture *f, uint32_t id, const char *suffix, char *out)
{
    snprintf(out, PATH_SIZE * 2, "%s/%010u.%s", f->dir, id, suffix);
}

static long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static int count_files(const struct fixture *f, const char *suffix)
{
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    size_t sl = strlen(suffix);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0 && de->d_name[l - sl - 1] == '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Reads a whole file into a malloc'd buffer. */
static uint8_t *slurp(const char *p, size_t *size)
{
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *d = malloc((size_t)n + 1);
    assert_non_null(d);
    assert_int_equal(fread(d, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *size = (size_t)n;
    return d;
}

static void spit(const char *p, const uint8_t *d, size_t n)
{
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(d, 1, n, fp), n);
    fclose(fp);
}

static void flip_byte(const char *p, long off)
{
    size_t n;
    uint8_t *d = slurp(p, &n);
    assert_true(off >= 0 && (size_t)off < n);
    d[off] ^= 0x5a;
    spit(p, d, n);
    free(d);
}

static uint64_t disk_bytes(struct fixture *f)
{
    struct stor_stats st;
    assert_int_equal(stor_stats(f->e, &st), KV_OK);
    return st.disk_bytes;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_record_round_trip(void **state)
{
    uint8_t buf[256];
    struct bitcask_record r;
    size_t n = stor__bitcask_record_size(3, 5);
    assert_int_equal(n, BITCASK_RECORD_HEADER_SIZE + 8);
    stor__bitcask_record_encode(buf, BITCASK_PUT, 0x0102030405060708ull, "key", 3, "value", 5);
    assert_int_equal(stor__bitcask_record_decode(buf, n, &r), KV_OK);
    assert_int_equal(r.type, BITCASK_PUT);
    assert_true(r.seq == 0x0102030405060708ull);
    assert_int_equal(r.key_size, 3);
    assert_memory_equal(r.key, "key", 3);
    assert_int_equal(r.value_size, 5);
    assert_memory_equal(r.value, "value", 5);
    assert_int_equal(r.record_size, n);
    /* Little-endian fixed-width fields where the doc says. */
    assert_int_equal(buf[4], BITCASK_PUT);
    assert_int_equal(buf[6], 3);
    assert_int_equal(buf[8], 5);
    assert_int_equal(buf[12], 0x08);
    assert_int_equal(kv_load_u32(buf), kv_crc32c(0, buf + 4, n - 4));

    /* Every short prefix asks for more; a flip anywhere is caught. */
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_equal(stor__bitcask_record_decode(buf, cut, &r), KV_EOF);
        assert_int_equal(r.record_size, cut < BITCASK_RECORD_HEADER_SIZE ? 0 : n);
    }
    for (size_t i = 0; i < n; i++) {
        buf[i] ^= 0x01;
        assert_int_not_equal(stor__bitcask_record_decode(buf, n, &r), KV_OK);
        buf[i] ^= 0x01;
    }

    stor__bitcask_record_encode(buf, BITCASK_TOMBSTONE, 9, "k", 1, NULL, 0);
    assert_int_equal(stor__bitcask_record_decode(buf, 64, &r), KV_OK);
    assert_int_equal(r.type, BITCASK_TOMBSTONE);
    assert_int_equal(r.record_size, BITCASK_RECORD_HEADER_SIZE + 1);

    uint8_t count[4];
    kv_store_u32(count, 7);
    stor__bitcask_record_encode(buf, BITCASK_COMMIT, 3, NULL, 0, count, 4);
    assert_int_equal(stor__bitcask_record_decode(buf, 64, &r), KV_OK);
    assert_int_equal(r.type, BITCASK_COMMIT);
    assert_int_equal(kv_load_u32(r.value), 7);

    /* Impossible headers: unknown type, tombstone with a value. */
    memset(buf, 0, sizeof buf);
    assert_int_equal(stor__bitcask_record_decode(buf, 64, &r), KV_ECORRUPT);
    stor__bitcask_record_encode(buf, BITCASK_TOMBSTONE, 9, "k", 1, NULL, 0);
    buf[8] = 1;
    assert_int_equal(stor__bitcask_record_decode(buf, 64, &r), KV_ECORRUPT);
}

static void test_basic_and_batches(void **state)
{
    struct fixture *f = *state;
    do_open(f);
    assert_int_equal(stor_is_ordered(f->e), 0);
    for (int i = 0; i < 100; i++) {
        put(f, i, "one");
    }
    put(f, 5, "five");
    del(f, 6);
    del(f, 6); /* absent: a no-op */
    /* Delete-range reaches keys of the keydir and keys the same batch put. */
    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_put(&b, "k00200", 6, "new", 3), KV_OK);
    assert_int_equal(stor_batch_delete_range(&b, "k00010", 6, "k00020", 6), KV_OK);
    assert_int_equal(stor_batch_delete_range(&b, "k00150", 6, "k00250", 6), KV_OK);
    assert_int_equal(stor_batch_put(&b, "k00015", 6, "back", 4), KV_OK);
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    for (int i = 10; i < 20; i++) {
        f->m.present[i] = 0;
    }
    f->m.present[15] = 1;
    snprintf(f->m.value[15], 64, "back");
    check_model(f, NULL, &f->m, 300);
    reopen(f);
    check_model(f, NULL, &f->m, 300);
    /* Ranged iteration. */
    struct stor_iter *it;
    assert_int_equal(stor_iter_new(f->e, NULL, "k00090", 6, NULL, 0, &it), KV_OK);
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    int n = 0;
    while (stor_iter_next(it, &k, &ks, &v, &vs) == KV_OK) {
        assert_true(memcmp(k, "k00090", 6) >= 0);
        n++;
    }
    assert_int_equal(n, 10);
    stor_iter_free(it);
    /* One owner per directory. */
    struct stor_engine *other;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(stor_open("bitcask", &f->o, &other, errmsg), KV_ELOCKED);
}

/* Three batches; the file is then cut at every byte offset of the last one:
 * each reopen keeps the first two and drops the third, and truncates it. */
static void test_torn_tail(void **state)
{
    struct fixture *f = *state;
    f->o.sync = STOR_SYNC_ALWAYS;
    do_open(f);
    put(f, 1, "first");
    put(f, 2, "second");
    char p[PATH_SIZE * 2];
    file_name(f, 1, "data", p);
    long before = file_size(p);
    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_put(&b, "k00003", 6, "third", 5), KV_OK);
    assert_int_equal(stor_batch_delete(&b, "k00001", 6), KV_OK);
    assert_int_equal(stor_batch_put(&b, "k00004", 6, "fourth", 6), KV_OK);
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    stor_close(f->e);
    f->e = NULL;
    size_t full_size;
    uint8_t *full = slurp(p, &full_size);
    assert_true((long)full_size > before);
    int saved = kv_log_threshold;
    kv_log_threshold = KV_LOG_ERROR; /* each cut logs a truncation warning */
    for (size_t cut = (size_t)before; cut < full_size; cut++) {
        spit(p, full, cut);
        do_open(f);
        check_model(f, NULL, &f->m, 8);
        assert_int_equal(file_size(p), before);
        stor_close(f->e);
        f->e = NULL;
    }
    /* Garbage (zeros, as a crash can leave) after the tail goes too. */
    uint8_t *z = calloc(1, full_size + 100);
    memcpy(z, full, (size_t)before);
    spit(p, z, (size_t)before + 100);
    do_open(f);
    check_model(f, NULL, &f->m, 8);
    assert_int_equal(file_size(p), before);
    kv_log_threshold = saved;
    /* And the whole file is fine. */
    stor_close(f->e);
    f->e = NULL;
    spit(p, full, full_size);
    do_open(f);
    f->m.present[1] = 0;
    f->m.present[3] = 1;
    f->m.present[4] = 1;
    snprintf(f->m.value[3], 64, "third");
    snprintf(f->m.value[4], 64, "fourth");
    check_model(f, NULL, &f->m, 8);
    free(z);
    free(full);
}

/* A batch whose records are whole but whose commit record is missing. */
static void test_batch_without_commit(void **state)
{
    struct fixture *f = *state;
    do_open(f);
    put(f, 1, "kept");
    char p[PATH_SIZE * 2];
    file_name(f, 1, "data", p);
    long before = file_size(p);
    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_put(&b, "k00002", 6, "lost", 4), KV_OK);
    assert_int_equal(stor_batch_put(&b, "k00003", 6, "lost", 4), KV_OK);
    assert_int_equal(stor_write(f->e, &b), KV_OK);
    stor_batch_close(&b);
    stor_close(f->e);
    f->e = NULL;
    size_t n;
    uint8_t *d = slurp(p, &n);
    size_t commit = BITCASK_RECORD_HEADER_SIZE + BITCASK_COMMIT_VALUE_SIZE;
    assert_int_equal(n, (size_t)before + 2 * (BITCASK_RECORD_HEADER_SIZE + 10) + commit);
    struct bitcask_record r;
    assert_int_equal(stor__bitcask_record_decode(d + n - commit, commit, &r), KV_OK);
    assert_int_equal(r.type, BITCASK_COMMIT);
    spit(p, d, n - commit);
    int saved = kv_log_threshold;
    kv_log_threshold = KV_LOG_ERROR;
    do_open(f);
    kv_log_threshold = saved;
    check_model(f, NULL, &f->m, 8);
    assert_int_equal(file_size(p), before);
    /* The store goes on: new writes land after the kept batch. */
    put(f, 4, "after");
    reopen(f);
    check_model(f, NULL, &f->m, 8);
    free(d);
}

/* Damage before the tail of the newest file, or anywhere in an older
 * file, fails open with KV_ECORRUPT naming the file and the offset. */
static void test_corruption_fails_open(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 512;
    do_open(f);
    for (int i = 0; i < 60; i++) {
        put(f, i, "some value bytes");
    }
    stor_close(f->e);
    f->e = NULL;
    char p1[PATH_SIZE * 2];
    file_name(f, 1, "data", p1);
    assert_true(count_files(f, "data") >= 3);
    size_t n;
    uint8_t *orig = slurp(p1, &n);
    long off = 3 * (BITCASK_RECORD_HEADER_SIZE + 22 + 24) + 10; /* inside the 4th batch */
    flip_byte(p1, off);
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(stor_open("bitcask", &f->o, &f->e, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, "0000000001.data"));
    char want[64];
    snprintf(want, sizeof want, "offset %ld", off - 10);
    if (strstr(errmsg, want) == NULL) {
        fail_msg("errmsg '%s' lacks '%s'", errmsg, want);
    }
    spit(p1, orig, n);
    free(orig);

    /* The newest file: a flip in its first record while later whole
     * records follow is corruption too, not a torn tail. */
    int newest = 1;
    char p[PATH_SIZE * 2];
    for (int id = 2; id < 100; id++) {
        file_name(f, (uint32_t)id, "data", p);
        if (file_size(p) >= 0) {
            newest = id;
        }
    }
    file_name(f, (uint32_t)newest, "data", p);
    assert_true(file_size(p) > 2 * (BITCASK_RECORD_HEADER_SIZE + 22 + 24));
    flip_byte(p, 12);
    assert_int_equal(stor_open("bitcask", &f->o, &f->e, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, "offset 0"));
    flip_byte(p, 12);
    do_open(f);
    check_model(f, NULL, &f->m, 64);
}

/* Merge writes hint files; a reopen loads them instead of scanning, and a
 * corrupt or missing hint falls back to the scan with the same result. */
static void test_hints(void **state)
{
    struct fixture *f = *state;
    do_open(f);
    for (int i = 0; i < 200; i++) {
        put(f, i, "v1");
    }
    for (int i = 0; i < 200; i += 3) {
        put(f, i, "v2-longer");
    }
    for (int i = 1; i < 200; i += 7) {
        del(f, i);
    }
    assert_int_equal(stor_compact(f->e), KV_OK);
    assert_int_equal(count_files(f, "hint"), 1);
    assert_int_equal(count_files(f, "merge"), 1);
    reopen(f);
    check_model(f, NULL, &f->m, 256);

    /* Find the merge file (its id follows the data files). */
    char merge[PATH_SIZE * 2] = "";
    char hint[PATH_SIZE * 2] = "";
    for (uint32_t id = 1; id < 100; id++) {
        file_name(f, id, "merge", merge);
        if (file_size(merge) > 0) {
            file_name(f, id, "hint", hint);
            break;
        }
    }
    assert_true(file_size(hint) > 0);
    stor_close(f->e);
    f->e = NULL;

    /* Proof the hint is what start-up reads: damage a value inside the
     * merge file. With the hint, open succeeds without reading it (the bad
     * record only shows on get); without, the scan refuses to open. */
    size_t mn;
    uint8_t *morig = slurp(merge, &mn);
    flip_byte(merge, BITCASK_RECORD_HEADER_SIZE + 7);
    do_open(f);
    stor_close(f->e);
    f->e = NULL;
    size_t hn;
    uint8_t *horig = slurp(hint, &hn);
    unlink(hint);
    char errmsg[KV_ERRMSG_SIZE];
    int saved = kv_log_threshold;
    kv_log_threshold = KV_LOG_ERROR;
    assert_int_equal(stor_open("bitcask", &f->o, &f->e, errmsg), KV_ECORRUPT);
    assert_non_null(strstr(errmsg, ".merge"));
    spit(merge, morig, mn);

    /* Missing hint: scan, same content. */
    do_open(f);
    check_model(f, NULL, &f->m, 256);
    stor_close(f->e);
    f->e = NULL;
    /* Corrupt hint (every position tried in steps): scan, same content. */
    for (size_t off = 0; off < hn; off += hn / 7 + 1) {
        spit(hint, horig, hn);
        flip_byte(hint, (long)off);
        do_open(f);
        check_model(f, NULL, &f->m, 256);
        stor_close(f->e);
        f->e = NULL;
    }
    /* Truncated hint too. */
    spit(hint, horig, hn / 2);
    do_open(f);
    check_model(f, NULL, &f->m, 256);
    kv_log_threshold = saved;
    free(horig);
    free(morig);
}

static void churn(struct fixture *f, int keys, int rounds)
{
    char v[32];
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < keys; i++) {
            snprintf(v, sizeof v, "value-%d-%d", r, i);
            put(f, i, v);
        }
    }
}

/* Merge drops overwritten and deleted data and keeps everything else,
 * across reopen; deleted keys never come back. */
static void test_merge_reclaims(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 16 * 1024;
    do_open(f);
    churn(f, 500, 4);
    for (int i = 0; i < 500; i += 2) {
        del(f, i);
    }
    uint64_t before = disk_bytes(f);
    assert_int_equal(stor_compact(f->e), KV_OK);
    uint64_t after = disk_bytes(f);
    printf("bitcask merge: disk bytes %llu -> %llu\n", (unsigned long long)before,
           (unsigned long long)after);
    assert_true(after * 3 < before); /* the hint file costs a little */
    check_model(f, NULL, &f->m, 600);
    reopen(f);
    check_model(f, NULL, &f->m, 600);
    /* Writes after a merge land in a write file whose id is below the
     * merge file's: the newer seq must win at reopen, whatever the file
     * order. Then merging again keeps deletes deleted. */
    put(f, 5, "after-merge");
    put(f, 7, "after-merge");
    del(f, 1);
    del(f, 3);
    reopen(f);
    check_model(f, NULL, &f->m, 600);
    assert_int_equal(stor_compact(f->e), KV_OK);
    reopen(f);
    check_model(f, NULL, &f->m, 600);
    assert_int_equal(stor_compact(f->e), KV_OK); /* nothing to do: fine */
    reopen(f);
    check_model(f, NULL, &f->m, 600);
}

/* Auto-merge: overwriting a small key set forever keeps the disk bounded. */
static void test_auto_merge(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 8 * 1024;
    do_open(f);
    uint64_t peak = 0;
    for (int r = 0; r < 40; r++) {
        churn(f, 300, 1);
        uint64_t b = disk_bytes(f);
        peak = b > peak ? b : peak;
    }
    /* 40 rounds of ~12 KiB each would be ~480 KiB without merging. */
    printf("bitcask auto-merge: peak disk bytes %llu\n", (unsigned long long)peak);
    assert_true(peak < 300 * 1024);
    assert_true(count_files(f, "merge") >= 1);
    check_model(f, NULL, &f->m, 300);
    reopen(f);
    check_model(f, NULL, &f->m, 300);
}

/* A view made before a merge still reads its point in time afterwards,
 * although its files are gone from the directory. */
static void test_view_survives_merge(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 4096;
    do_open(f);
    churn(f, 200, 2);
    struct stor_view *v;
    assert_int_equal(stor_view_new(f->e, &v), KV_OK);
    struct model *then = malloc(sizeof *then);
    memcpy(then, &f->m, sizeof *then);
    churn(f, 200, 1);
    for (int i = 0; i < 200; i += 5) {
        del(f, i);
    }
    put(f, 300, "new");
    assert_int_equal(stor_compact(f->e), KV_OK);
    check_model(f, v, then, 400);
    check_model(f, NULL, &f->m, 400);
    assert_int_equal(stor_compact(f->e), KV_OK);
    check_model(f, v, then, 400);
    stor_view_free(v);
    reopen(f);
    check_model(f, NULL, &f->m, 400);
    free(then);
}

static void test_rolling(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 1024;
    do_open(f);
    for (int i = 0; i < 400; i++) {
        put(f, i, "0123456789abcdef");
    }
    int files = count_files(f, "data");
    /* 400 batches of 66 bytes in 1 KiB files: about 26 files. */
    assert_true(files >= 20);
    char p[PATH_SIZE * 2];
    for (uint32_t id = 1; id <= (uint32_t)files; id++) {
        file_name(f, id, "data", p);
        long s = file_size(p);
        assert_true(s >= 0 && s < 1024 + 66);
    }
    reopen(f);
    check_model(f, NULL, &f->m, 400);
    assert_int_equal(count_files(f, "data"), files);
}

/* A crash after a merge published its files but before the old ones were
 * all deleted: old and new files side by side must not double-count keys
 * or resurrect deleted ones; leftover temporary files are removed. */
static void test_crash_mid_merge(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 2048;
    do_open(f);
    churn(f, 100, 3);
    for (int i = 0; i < 100; i += 3) {
        del(f, i);
    }
    stor_close(f->e);
    f->e = NULL;
    /* Save every data file. */
    int files = count_files(f, "data");
    uint8_t *saved[256] = {0};
    size_t sizes[256] = {0};
    char p[PATH_SIZE * 2];
    assert_true(files < 256);
    for (int id = 1; id <= files; id++) {
        file_name(f, (uint32_t)id, "data", p);
        saved[id] = slurp(p, &sizes[id]);
    }
    do_open(f);
    assert_int_equal(stor_compact(f->e), KV_OK);
    stor_close(f->e);
    f->e = NULL;
    /* Every old file back (the crash right after publishing) ... */
    for (int id = 1; id <= files; id++) {
        file_name(f, (uint32_t)id, "data", p);
        spit(p, saved[id], sizes[id]);
    }
    file_name(f, 900, "merge.tmp", p);
    spit(p, (const uint8_t *)"junk", 4);
    file_name(f, 900, "hint.tmp", p);
    spit(p, (const uint8_t *)"junk", 4);
    do_open(f);
    check_model(f, NULL, &f->m, 128);
    assert_int_equal(count_files(f, "tmp"), 0);
    stor_close(f->e);
    f->e = NULL;
    /* ... and only the newer half back (deletion goes oldest first). */
    for (int id = 1; id <= files; id++) {
        file_name(f, (uint32_t)id, "data", p);
        if (id <= files / 2) {
            unlink(p);
        }
    }
    do_open(f);
    check_model(f, NULL, &f->m, 128);
    assert_int_equal(stor_compact(f->e), KV_OK);
    reopen(f);
    check_model(f, NULL, &f->m, 128);
    for (int id = 1; id <= files; id++) {
        free(saved[id]);
    }
}

/* Heap bytes per key of the keydir, measured with mallinfo2 around
 * inserting many keys of 16 bytes (values live on disk, not in memory). */
static void test_memory_per_key(void **state)
{
    struct fixture *f = *state;
#if defined(__SANITIZE_ADDRESS__) || defined(RAFTKV_SANITIZED)
    skip(); /* ASan's allocator does not report through mallinfo2 */
#endif
    f->o.file_bytes_max = 64u * 1024u * 1024u;
    do_open(f);
    enum { KEYS = 100000, KEY_SIZE = 16 };
    struct stor_batch b;
    stor_batch_init(&b);
    char k[KEY_SIZE + 1];
    /* Warm-up: the first batch allocates the engine's scratch buffers. */
    assert_int_equal(stor_put(f->e, "warm-up", 7, "x", 1), KV_OK);
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < KEYS; i++) {
        snprintf(k, sizeof k, "key-%012d", i);
        assert_int_equal(stor_batch_put(&b, k, KEY_SIZE, "v", 1), KV_OK);
        if (b.count == 1000) {
            assert_int_equal(stor_write(f->e, &b), KV_OK);
            stor_batch_clear(&b);
        }
    }
    stor_batch_close(&b);
    struct mallinfo2 m1 = mallinfo2();
    /* uordblks misses mmap'd blocks (the big slot array): add hblkhd. */
    double per_key =
        ((double)m1.uordblks + (double)m1.hblkhd - (double)m0.uordblks - (double)m0.hblkhd) / KEYS;
    printf("bitcask keydir: %.1f heap bytes per key of %d bytes (%.1f overhead)\n", per_key,
           KEY_SIZE, per_key - KEY_SIZE);
    /* Entry (48 bytes + key, malloc-rounded) + slots at <= 75% load. */
    assert_true(per_key > KEY_SIZE && per_key < KEY_SIZE + 120);
    struct stor_stats st;
    assert_int_equal(stor_stats(f->e, &st), KV_OK);
    assert_int_equal(st.key_count, KEYS + 1);
}

/* Every allocation failure during recovery (hints and scans) and during
 * a merge ends in KV_ENOMEM with nothing lost: the next try succeeds and
 * the content is whole. */
static void test_alloc_faults(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 2048;
    do_open(f);
    churn(f, 150, 3);
    for (int i = 0; i < 150; i += 4) {
        del(f, i);
    }
    assert_int_equal(stor_compact(f->e), KV_OK);
    churn(f, 50, 1);
    for (int i = 1; i < 150; i += 9) {
        del(f, i);
    }
    stor_close(f->e);
    f->e = NULL;
    int opened = 0;
    for (long n = 0; n < 100000 && !opened; n++) {
        char errmsg[KV_ERRMSG_SIZE];
        kv_alloc_fault_after(n);
        int rc = stor_open("bitcask", &f->o, &f->e, errmsg);
        kv_alloc_fault_clear();
        if (rc == KV_OK) {
            opened = 1;
        } else {
            assert_int_equal(rc, KV_ENOMEM);
            assert_null(f->e);
        }
    }
    assert_true(opened);
    check_model(f, NULL, &f->m, 160);
    int merged = 0;
    for (long n = 0; n < 100000 && !merged; n++) {
        kv_alloc_fault_after(n);
        int rc = stor_compact(f->e);
        kv_alloc_fault_clear();
        if (rc == KV_OK) {
            merged = 1;
        } else {
            assert_int_equal(rc, KV_ENOMEM);
            check_model(f, NULL, &f->m, 160);
        }
    }
    assert_true(merged);
    check_model(f, NULL, &f->m, 160);
    reopen(f);
    check_model(f, NULL, &f->m, 160);
}

/* Readers (gets, views, iterators) run while one thread writes and merges;
 * every value a reader sees is one that was written for its key, and a
 * view's keys never change under it. Run under ASan/UBSan too. */
#define RACE_KEYS   64
#define RACE_ROUNDS 60

struct race {
    struct fixture *f;
    atomic_int done;
    atomic_int bad;
};

static void *race_reader(void *arg)
{
    struct race *r = arg;
    struct kv_buf v;
    kv_buf_init(&v);
    while (!atomic_load(&r->done)) {
        for (int i = 0; i < RACE_KEYS; i++) {
            char k[16];
            key_of(i, k);
            int rc = stor_get(r->f->e, NULL, k, strlen(k), &v);
            /* Values are "r<round>-<key>": the key part must match. */
            char want[16];
            snprintf(want, sizeof want, "-%d", i);
            if (rc == KV_OK && (v.size < strlen(want) ||
                                memcmp(v.data + v.size - strlen(want), want, strlen(want)) != 0)) {
                atomic_store(&r->bad, 1);
            } else if (rc != KV_OK && rc != KV_ENOTFOUND) {
                atomic_store(&r->bad, 2);
            }
        }
        struct stor_iter *it;
        if (stor_iter_new(r->f->e, NULL, NULL, 0, NULL, 0, &it) != KV_OK) {
            atomic_store(&r->bad, 3);
            continue;
        }
        const uint8_t *k;
        const uint8_t *val;
        size_t ks;
        size_t vs;
        int n = 0;
        int rc;
        while ((rc = stor_iter_next(it, &k, &ks, &val, &vs)) == KV_OK) {
            n++;
        }
        if (rc != KV_EOF || n > RACE_KEYS) {
            atomic_store(&r->bad, 4);
        }
        stor_iter_free(it);
    }
    kv_buf_close(&v);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 4096;
    do_open(f);
    struct race r = {.f = f};
    atomic_init(&r.done, 0);
    atomic_init(&r.bad, 0);
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        assert_int_equal(pthread_create(&th[t], NULL, race_reader, &r), 0);
    }
    for (int round = 0; round < RACE_ROUNDS; round++) {
        for (int i = 0; i < RACE_KEYS; i++) {
            char v[32];
            snprintf(v, sizeof v, "r%d-%d", round, i);
            if ((i + round) % 5 == 0) {
                del(f, i);
            } else {
                put(f, i, v);
            }
        }
        if (round % 10 == 9) {
            assert_int_equal(stor_compact(f->e), KV_OK);
        }
    }
    atomic_store(&r.done, 1);
    for (int t = 0; t < 2; t++) {
        pthread_join(th[t], NULL);
    }
    assert_int_equal(atomic_load(&r.bad), 0);
    check_model(f, NULL, &f->m, RACE_KEYS);
}

/* A write that fails half-way (here: the file size limit, EFBIG) returns
 * KV_EIO and poisons the engine; the partial batch on disk is cut away at
 * the next open and everything acknowledged before it is intact. */
static void test_write_error_poisons(void **state)
{
    struct fixture *f = *state;
    f->o.sync = STOR_SYNC_ALWAYS;
    do_open(f);
    put(f, 1, "before");
    char p[PATH_SIZE * 2];
    file_name(f, 1, "data", p);
    long size = file_size(p);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {.rlim_cur = (rlim_t)size + 30, .rlim_max = old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    char k[16];
    key_of(2, k);
    int rc = stor_put(f->e, k, strlen(k), "a value longer than thirty bytes, surely", 40);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(rc, KV_EIO);
    assert_non_null(strstr(stor_errmsg(f->e), "write"));
    assert_int_equal(stor_put(f->e, k, strlen(k), "x", 1), KV_EPOISONED);
    assert_true(file_size(p) > size); /* part of the batch did reach the file */
    int saved = kv_log_threshold;
    kv_log_threshold = KV_LOG_ERROR;
    reopen(f);
    kv_log_threshold = saved;
    assert_int_equal(file_size(p), size);
    check_model(f, NULL, &f->m, 8);
    put(f, 3, "after");
    reopen(f);
    check_model(f, NULL, &f->m, 8);
}

/* Random single-byte damage to any file never crashes open or reads: open
 * succeeds or says KV_ECORRUPT, and reads return a value, not-found or
 * KV_ECORRUPT. (Checked for memory errors under ASan.) */
static void test_random_damage(void **state)
{
    struct fixture *f = *state;
    f->o.file_bytes_max = 2048;
    do_open(f);
    churn(f, 80, 3);
    for (int i = 0; i < 80; i += 3) {
        del(f, i);
    }
    assert_int_equal(stor_compact(f->e), KV_OK);
    churn(f, 30, 1);
    stor_close(f->e);
    f->e = NULL;
    /* Every file of the directory, with its original bytes. */
    char names[64][PATH_SIZE * 2];
    uint8_t *orig[64];
    size_t sizes[64];
    int files = 0;
    DIR *d = opendir(f->dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL && files < 64) {
        if (de->d_name[0] != '.' && strcmp(de->d_name, "LOCK") != 0) {
            snprintf(names[files], sizeof names[files], "%s/%s", f->dir, de->d_name);
            orig[files] = slurp(names[files], &sizes[files]);
            files++;
        }
    }
    closedir(d);
    assert_true(files >= 3);
    struct kv_rng rng;
    kv_rng_seed(&rng, 42);
    int saved = kv_log_threshold;
    kv_log_threshold = KV_LOG_OFF;
    int refused = 0;
    for (int round = 0; round < 150; round++) {
        int which = (int)kv_rng_below(&rng, (uint64_t)files);
        if (sizes[which] == 0) {
            continue;
        }
        flip_byte(names[which], (long)kv_rng_below(&rng, sizes[which]));
        char errmsg[KV_ERRMSG_SIZE];
        int rc = stor_open("bitcask", &f->o, &f->e, errmsg);
        if (rc == KV_OK) {
            struct kv_buf v;
            kv_buf_init(&v);
            for (int i = 0; i < 80; i++) {
                char k[16];
                key_of(i, k);
                int g = stor_get(f->e, NULL, k, strlen(k), &v);
                assert_true(g == KV_OK || g == KV_ENOTFOUND || g == KV_ECORRUPT);
            }
            kv_buf_close(&v);
            stor_close(f->e);
            f->e = NULL;
        } else {
            assert_int_equal(rc, KV_ECORRUPT);
            refused++;
        }
        for (int i = 0; i < files; i++) {
            spit(names[i], orig[i], sizes[i]);
        }
    }
    kv_log_threshold = saved;
    assert_true(refused > 0);
    do_open(f);
    check_model(f, NULL, &f->m, 96);
    for (int i = 0; i < files; i++) {
        free(orig[i]);
    }
}

int main(void)
{
    kv_log_threshold = KV_LOG_WARN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test_setup_teardown(test_basic_and_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_without_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_fails_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_reclaims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_view_survives_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rolling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_mid_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_poisons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_per_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
