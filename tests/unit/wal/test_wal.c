/* test_wal.c -- unit tests of the shared Raft log: record framing, the
 * per-group index and cache, suffix truncation, compaction and garbage
 * collection, group removal, recovery (torn tails and corruption), group
 * commit from many threads, and every fault the fault-injection file layer
 * can inject. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "alloc.h"
#include "wal_int.h"
#include "wal_test_util.h"

struct fixture {
    char dir[64];
    struct wal_fs *fault; /* fault layer over POSIX */
    struct wal *w;
    char errmsg[KV_ERRMSG_SIZE];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    tw_mkdtemp(f->dir);
    f->fault = wal_fs_fault_new(wal_fs_posix());
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    wal_close(f->w);
    wal_fs_fault_free(f->fault);
    tw_rmdir(f->dir);
    free(f);
    return 0;
}

/* Opens f->w with the given segment size (0: default) and cache budget. */
static int open_wal(struct fixture *f, uint64_t segment_bytes, uint64_t cache_bytes)
{
    struct wal_options o;
    wal_options_init(&o, f->dir);
    o.segment_bytes = segment_bytes;
    o.cache_bytes = cache_bytes;
    o.fs = f->fault;
    return wal_open(&o, &f->w, f->errmsg);
}

static void reopen(struct fixture *f, uint64_t segment_bytes, uint64_t cache_bytes)
{
    wal_close(f->w);
    f->w = NULL;
    int rc = open_wal(f, segment_bytes, cache_bytes);
    if (rc != KV_OK) {
        fail_msg("reopen: %s: %s", kv_strerror(rc), f->errmsg);
    }
}

/* Appends entries [lo, hi] of `group` with `term` (payloads by tw_fill). */
static int append(struct wal *w, uint64_t group, uint64_t lo, uint64_t hi, uint64_t term)
{
    uint8_t bufs[64][300]; /* per call: writers run in parallel */
    struct wal_entry e[64];
    struct wal_batch b;
    wal_batch_init(&b);
    int rc = KV_OK;
    for (uint64_t i = lo; i <= hi && rc == KV_OK;) {
        size_t n = 0;
        for (; n < 64 && i <= hi; n++, i++) {
            size_t size = tw_size(group, i);
            tw_fill(bufs[n], size, group, i, term);
            e[n] = (struct wal_entry){.index = i, .term = term, .data = bufs[n], .size = size};
        }
        rc = wal_batch_entries(&b, group, e, n);
    }
    if (rc == KV_OK) {
        rc = wal_write(w, &b);
    }
    wal_batch_close(&b);
    return rc;
}

static int write_hs(struct wal *w, uint64_t group, uint64_t term, uint64_t vote, uint64_t commit)
{
    struct wal_batch b;
    wal_batch_init(&b);
    struct wal_hard_state hs = {.term = term, .vote = vote, .commit = commit};
    int rc = wal_batch_hard_state(&b, group, &hs);
    if (rc == KV_OK) {
        rc = wal_write(w, &b);
    }
    wal_batch_close(&b);
    return rc;
}

static int compact(struct wal *w, uint64_t group, uint64_t index, uint64_t term)
{
    struct wal_batch b;
    wal_batch_init(&b);
    int rc = wal_batch_compact(&b, group, index, term);
    if (rc == KV_OK) {
        rc = wal_write(w, &b);
    }
    wal_batch_close(&b);
    return rc;
}

/* Checks that group holds exactly [first, last], all with term `term`
 * except indices >= from2 which have term2, with the right payloads. */
static void expect_log(struct wal *w, uint64_t group, uint64_t first, uint64_t last, uint64_t term,
                       uint64_t from2, uint64_t term2)
{
    struct wal_group_state st;
    assert_int_equal(wal_group_state(w, group, &st), KV_OK);
    assert_int_equal(st.first_index, first);
    assert_int_equal(st.last_index, last);
    struct wal_read rd;
    wal_read_init(&rd);
    uint64_t next = first;
    while (next <= last) {
        assert_int_equal(wal_entries(w, group, next, last + 1, 4096, &rd), KV_OK);
        assert_true(rd.count > 0);
        for (size_t i = 0; i < rd.count; i++) {
            const struct wal_entry *e = &rd.entries[i];
            assert_int_equal(e->index, next);
            assert_int_equal(e->term, next >= from2 ? term2 : term);
            assert_true(tw_check(e, group, tw_size(group, next)));
            next++;
        }
    }
    wal_read_close(&rd);
}

/* ---- File layer conformance: one suite, every implementation ---- */

static int count_cb(void *data, const char *name)
{
    (*(int *)data) += strncmp(name, "f", 1) == 0;
    return KV_OK;
}

static int stop_cb(void *data, const char *name)
{
    return KV_EBUSY;
}

static void fs_conformance(struct wal_fs *fs, const char *dir)
{
    char sub[128], path[160];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(path, sizeof path, "%s/f1", sub);
    assert_int_equal(fs->mkdir(fs, sub), KV_OK);
    assert_int_equal(fs->mkdir(fs, sub), KV_OK); /* exists: fine */
    struct wal_file *file;
    assert_int_equal(fs->open(fs, path, 0, &file), KV_ENOENT);
    assert_int_equal(fs->open(fs, path, 1, &file), KV_OK);
    uint64_t size = 1;
    assert_int_equal(fs->size(fs, file, &size), KV_OK);
    assert_int_equal(size, 0);
    assert_int_equal(fs->pwrite(fs, file, "hello world", 11, 0), KV_OK);
    assert_int_equal(fs->pwrite(fs, file, "W", 1, 6), KV_OK);
    assert_int_equal(fs->pwrite(fs, file, "!", 1, 20), KV_OK); /* leaves a hole */
    assert_int_equal(fs->sync(fs, file), KV_OK);
    assert_int_equal(fs->size(fs, file, &size), KV_OK);
    assert_int_equal(size, 21);
    char buf[32];
    size_t got;
    assert_int_equal(fs->pread(fs, file, buf, sizeof buf, 0, &got), KV_OK);
    assert_int_equal(got, 21);
    assert_memory_equal(buf, "hello World\0\0\0\0\0\0\0\0\0!", 21);
    assert_int_equal(fs->pread(fs, file, buf, 4, 30, &got), KV_OK);
    assert_int_equal(got, 0); /* past the end: nothing, no error */
    assert_int_equal(fs->truncate(fs, file, 5), KV_OK);
    assert_int_equal(fs->size(fs, file, &size), KV_OK);
    assert_int_equal(size, 5);
    fs->close(fs, file);
    assert_int_equal(fs->open(fs, path, 0, &file), KV_OK); /* reopen keeps data */
    assert_int_equal(fs->pread(fs, file, buf, 5, 0, &got), KV_OK);
    assert_int_equal(got, 5);
    assert_memory_equal(buf, "hello", 5);
    fs->close(fs, file);
    int n = 0;
    assert_int_equal(fs->list(fs, sub, &n, count_cb), KV_OK);
    assert_int_equal(n, 1);
    assert_int_equal(fs->list(fs, sub, &n, stop_cb), KV_EBUSY); /* callback stops it */
    assert_int_equal(fs->sync_dir(fs, sub), KV_OK);
    assert_int_equal(fs->unlink(fs, path), KV_OK);
    assert_int_equal(fs->unlink(fs, path), KV_ENOENT);
    n = 0;
    assert_int_equal(fs->list(fs, sub, &n, count_cb), KV_OK);
    assert_int_equal(n, 0);
    assert_int_equal(rmdir(sub), 0);
}

static void test_fs_conformance_posix(void **state)
{
    struct fixture *f = *state;
    fs_conformance(wal_fs_posix(), f->dir);
}

static void test_fs_conformance_fault(void **state)
{
    struct fixture *f = *state;
    fs_conformance(f->fault, f->dir); /* with no fault armed it is a plain layer */
}

/* ---- Framing ---- */

static void test_framing_roundtrip_and_damage(void **state)
{
    struct wal_batch b;
    wal_batch_init(&b);
    uint8_t data[100];
    memset(data, 0xab, sizeof data);
    struct wal_entry e[3] = {{.index = 7, .term = 2, .type = 1, .data = data, .size = 100},
                             {.index = 8, .term = 2, .type = 0, .data = data, .size = 0},
                             {.index = 9, .term = 3, .type = 5, .data = data, .size = 10}};
    assert_int_equal(wal_batch_entries(&b, 42, e, 3), KV_OK);
    struct wal_hard_state hs = {.term = 3, .vote = 2, .commit = 8};
    assert_int_equal(wal_batch_hard_state(&b, 42, &hs), KV_OK);
    assert_int_equal(wal_batch_compact(&b, 42, 5, 1), KV_OK);
    assert_int_equal(wal_batch_remove(&b, 43), KV_OK);

    /* Decode everything back. */
    const char *why;
    struct wal__rec r;
    size_t off = 0;
    assert_int_equal(wal__rec_decode(b.bytes.data, b.bytes.size, &r, &why), KV_OK);
    assert_int_equal(r.type, WAL__REC_ENTRIES);
    assert_int_equal(r.group, 42);
    assert_int_equal(r.a, 7);
    assert_int_equal(r.b, 3);
    struct wal__entry_cursor c = {.area = r.entries, .size = r.entries_size};
    for (int i = 0; i < 3; i++) {
        uint64_t term;
        uint32_t type, size;
        size_t doff;
        assert_int_equal(wal__rec_entry_next(&c, &term, &type, &size, &doff), KV_OK);
        assert_int_equal(term, e[i].term);
        assert_int_equal(type, e[i].type);
        assert_int_equal(size, e[i].size);
        assert_memory_equal(r.entries + doff, data, size);
    }
    size_t first_size = r.size;
    off += r.size;
    assert_int_equal(wal__rec_decode(b.bytes.data + off, b.bytes.size - off, &r, &why), KV_OK);
    assert_int_equal(r.type, WAL__REC_HARD_STATE);
    assert_true(r.a == 3 && r.b == 2 && r.c == 8);
    off += r.size;
    assert_int_equal(wal__rec_decode(b.bytes.data + off, b.bytes.size - off, &r, &why), KV_OK);
    assert_int_equal(r.type, WAL__REC_COMPACT);
    assert_true(r.a == 5 && r.b == 1);
    off += r.size;
    assert_int_equal(wal__rec_decode(b.bytes.data + off, b.bytes.size - off, &r, &why), KV_OK);
    assert_int_equal(r.type, WAL__REC_REMOVE);
    assert_int_equal(r.group, 43);
    off += r.size;
    assert_int_equal(off, b.bytes.size);

    /* Every cut of the first record is "truncated", never a wrong record. */
    for (size_t n = 0; n < first_size; n++) {
        assert_int_equal(wal__rec_decode(b.bytes.data, n, &r, &why), KV_EOF);
    }
    /* Every single flipped bit is caught. */
    for (size_t i = 0; i < first_size; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.bytes.data[i] ^= (uint8_t)(1u << bit);
            int rc = wal__rec_decode(b.bytes.data, b.bytes.size, &r, &why);
            assert_true(rc == KV_ECORRUPT || rc == KV_EOF);
            b.bytes.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Zeros (a preallocated or hole-filled tail) are not a record. */
    uint8_t zeros[64] = {0};
    assert_int_equal(wal__rec_decode(zeros, sizeof zeros, &r, &why), KV_ECORRUPT);
    wal_batch_close(&b);
}

static void test_batch_rejects_bad_input(void **state)
{
    struct wal_batch b;
    wal_batch_init(&b);
    struct wal_entry e[2] = {{.index = 5, .term = 1}, {.index = 7, .term = 1}};
    assert_int_equal(wal_batch_entries(&b, 1, e, 2), KV_EINVAL);
    e[0].index = 0;
    assert_int_equal(wal_batch_entries(&b, 1, e, 1), KV_EINVAL);
    e[0].index = 1;
    e[0].size = WAL_ENTRY_BYTES_MAX + 1;
    assert_int_equal(wal_batch_entries(&b, 1, e, 1), KV_ETOOBIG);
    assert_int_equal(b.bytes.size, 0);
    assert_int_equal(b.ops.size, 0);
    wal_batch_close(&b);
}

static void test_segment_header(void **state)
{
    uint8_t h[WAL__SEG_HEADER_SIZE];
    wal__seg_header_encode(h, 77);
    assert_int_equal(wal__seg_header_check(h, 77), KV_OK);
    assert_int_equal(wal__seg_header_check(h, 78), KV_ECORRUPT);
    h[3] ^= 1;
    assert_int_equal(wal__seg_header_check(h, 77), KV_ECORRUPT);
    uint64_t seq;
    assert_true(wal__seg_parse_name("00000000000000000012.wal", &seq));
    assert_int_equal(seq, 12);
    assert_false(wal__seg_parse_name("LOCK", &seq));
    assert_false(wal__seg_parse_name("0000000000000000001x.wal", &seq));
    enum wal_sync sync;
    assert_int_equal(wal_sync_parse("batch", &sync), KV_OK);
    assert_int_equal(sync, WAL_SYNC_BATCH);
    assert_int_equal(wal_sync_parse("sometimes", &sync), KV_EINVAL);
    assert_string_equal(wal_sync_name(WAL_SYNC_NONE), "none");
}

/* Segments that vanish are refused, not replaced by an empty log. */
static void test_vanished_segments_refused(void **state)
{
    struct fixture *f = *state;
    char cmd[600];
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 10, 1), KV_OK);
    wal_close(f->w);
    f->w = NULL;
    assert_true(tw_count_segments(f->dir) > 0);
    snprintf(cmd, sizeof cmd, "rm -f %s/*.wal", f->dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(open_wal(f, 0, 0), KV_ECORRUPT);
    assert_non_null(strstr(f->errmsg, "missing"));
    assert_null(f->w);
    /* And still refused on a retry: the failed open created nothing. */
    assert_int_equal(open_wal(f, 0, 0), KV_ECORRUPT);
    assert_int_equal(tw_count_segments(f->dir), 0);
}

/* ---- Index, reads, cache ---- */

static void test_append_read_reopen(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(wal_group_state(f->w, 1, &(struct wal_group_state){0}), KV_ENOTFOUND);
    assert_int_equal(append(f->w, 1, 1, 100, 1), KV_OK);
    assert_int_equal(append(f->w, 2, 1, 50, 3), KV_OK);
    assert_int_equal(write_hs(f->w, 1, 4, 2, 90), KV_OK);
    expect_log(f->w, 1, 1, 100, 1, UINT64_MAX, 0);
    expect_log(f->w, 2, 1, 50, 3, UINT64_MAX, 0);

    uint64_t term;
    assert_int_equal(wal_term(f->w, 1, 100, &term), KV_OK);
    assert_int_equal(term, 1);
    assert_int_equal(wal_term(f->w, 1, 0, &term), KV_OK);
    assert_int_equal(term, 0);
    assert_int_equal(wal_term(f->w, 1, 101, &term), KV_EUNAVAILABLE);
    assert_int_equal(wal_term(f->w, 9, 1, &term), KV_ENOTFOUND);

    struct wal_read rd;
    wal_read_init(&rd);
    assert_int_equal(wal_entries(f->w, 1, 5, 102, UINT64_MAX, &rd), KV_EUNAVAILABLE);
    assert_int_equal(wal_entries(f->w, 1, 6, 5, UINT64_MAX, &rd), KV_EINVAL);
    /* max_bytes 0 still returns one entry. */
    assert_int_equal(wal_entries(f->w, 1, 5, 10, 0, &rd), KV_OK);
    assert_int_equal(rd.count, 1);
    assert_int_equal(wal_entries(f->w, 1, 5, 5, 0, &rd), KV_OK);
    assert_int_equal(rd.count, 0);

    uint64_t ids[4];
    assert_int_equal(wal_groups(f->w, ids, 4), 2);
    assert_true(ids[0] == 1 && ids[1] == 2);

    reopen(f, 0, 0);
    expect_log(f->w, 1, 1, 100, 1, UINT64_MAX, 0);
    expect_log(f->w, 2, 1, 50, 3, UINT64_MAX, 0);
    struct wal_group_state st;
    assert_int_equal(wal_group_state(f->w, 1, &st), KV_OK);
    assert_true(st.has_hard_state);
    assert_true(st.hard_state.term == 4 && st.hard_state.vote == 2 && st.hard_state.commit == 90);
    /* After a reopen the cache is cold: reads came from the files. */
    struct wal_stats s;
    wal_stats(f->w, &s);
    assert_true(s.cache_misses >= 150);
    assert_int_equal(s.cache_hits, 0);
    /* ... and appends continue where the log ended. */
    assert_int_equal(append(f->w, 1, 101, 110, 5), KV_OK);
    expect_log(f->w, 1, 1, 110, 1, 101, 5);
    wal_read_close(&rd);
}

static void test_cache_is_bounded(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 2000), KV_OK);
    assert_int_equal(append(f->w, 3, 1, 200, 1), KV_OK);
    struct wal_stats s;
    wal_stats(f->w, &s);
    assert_true(s.cache_bytes <= 2000);
    assert_true(s.cache_bytes > 0);
    expect_log(f->w, 3, 1, 200, 1, UINT64_MAX, 0);
    wal_stats(f->w, &s);
    assert_true(s.cache_hits > 0);   /* the newest entries */
    assert_true(s.cache_misses > 0); /* the evicted ones, from the files */
    /* The ring wraps many times while entries die (overwritten tails,
     * compaction) in the middle of it: reads stay right. */
    uint64_t last[2] = {200, 0};
    for (int round = 0; round < 100; round++) {
        for (uint64_t g = 3; g < 5; g++) {
            uint64_t *l = &last[g - 3];
            uint64_t term = g == 3 ? 1 : 1 + (uint64_t)round;
            if (g == 4 && *l > 3) {
                *l -= 2; /* overwrite the last two with a new term */
                assert_int_equal(append(f->w, g, *l + 1, *l + 4, term), KV_OK);
                *l += 4;
                assert_int_equal(compact(f->w, g, *l - 3, term), KV_OK);
            } else {
                assert_int_equal(append(f->w, g, *l + 1, *l + 3, term), KV_OK);
                *l += 3;
            }
        }
        wal_stats(f->w, &s);
        assert_true(s.cache_bytes <= 2000);
    }
    expect_log(f->w, 3, 1, last[0], 1, UINT64_MAX, 0);
    struct wal_group_state st;
    assert_int_equal(wal_group_state(f->w, 4, &st), KV_OK);
    assert_int_equal(st.first_index, last[1] - 2);
    expect_log(f->w, 4, last[1] - 2, last[1], 100, 0, 100);
    reopen(f, 0, 2000);
    expect_log(f->w, 4, last[1] - 2, last[1], 100, 0, 100);
    expect_log(f->w, 3, 1, last[0], 1, UINT64_MAX, 0);
}

/* ---- Truncation ---- */

static void test_suffix_truncation(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 8192, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 60, 1), KV_OK);
    assert_int_equal(append(f->w, 2, 1, 60, 1), KV_OK);
    /* Raft overwrites 41.. of group 1 with a shorter tail of term 2. */
    assert_int_equal(append(f->w, 1, 41, 45, 2), KV_OK);
    expect_log(f->w, 1, 1, 45, 1, 41, 2);
    expect_log(f->w, 2, 1, 60, 1, UINT64_MAX, 0); /* untouched */
    uint64_t term;
    assert_int_equal(wal_term(f->w, 1, 46, &term), KV_EUNAVAILABLE);
    /* A gap or a write below the first index is refused, nothing written. */
    assert_int_equal(append(f->w, 1, 47, 50, 2), KV_EINVAL);
    assert_int_equal(compact(f->w, 1, 10, 1), KV_OK);
    assert_int_equal(append(f->w, 1, 5, 8, 2), KV_EINVAL);
    expect_log(f->w, 1, 11, 45, 1, 41, 2);
    reopen(f, 8192, 0);
    expect_log(f->w, 1, 11, 45, 1, 41, 2);
    expect_log(f->w, 2, 1, 60, 1, UINT64_MAX, 0);
    /* Overwriting from the very first index. */
    assert_int_equal(append(f->w, 1, 11, 12, 3), KV_OK);
    expect_log(f->w, 1, 11, 12, 3, 11, 3);
    reopen(f, 8192, 0);
    expect_log(f->w, 1, 11, 12, 3, 11, 3);
}

/* ---- Compaction, GC, removal ---- */

static void test_compaction_survives_restart(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 30, 2), KV_OK);
    assert_int_equal(compact(f->w, 1, 20, 2), KV_OK);
    struct wal_read rd;
    wal_read_init(&rd);
    assert_int_equal(wal_entries(f->w, 1, 19, 25, UINT64_MAX, &rd), KV_ECOMPACTED);
    uint64_t term;
    assert_int_equal(wal_term(f->w, 1, 20, &term), KV_OK);
    assert_int_equal(term, 2);
    assert_int_equal(wal_term(f->w, 1, 19, &term), KV_ECOMPACTED);
    /* An older mark changes nothing. */
    assert_int_equal(compact(f->w, 1, 5, 1), KV_OK);
    reopen(f, 0, 0);
    expect_log(f->w, 1, 21, 30, 2, UINT64_MAX, 0);
    assert_int_equal(wal_term(f->w, 1, 20, &term), KV_OK);
    assert_int_equal(term, 2);
    /* A snapshot beyond the log (a follower catching up) empties it. */
    assert_int_equal(compact(f->w, 1, 100, 7), KV_OK);
    struct wal_group_state st;
    assert_int_equal(wal_group_state(f->w, 1, &st), KV_OK);
    assert_true(st.first_index == 101 && st.last_index == 100 && st.compact_term == 7);
    assert_int_equal(append(f->w, 1, 101, 105, 7), KV_OK);
    reopen(f, 0, 0);
    expect_log(f->w, 1, 101, 105, 7, UINT64_MAX, 0);
    assert_int_equal(wal_term(f->w, 1, 100, &term), KV_OK);
    assert_int_equal(term, 7);
    wal_read_close(&rd);
}

static void test_gc_bounds_disk_and_rewrites_idle_groups(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 8192, 0), KV_OK);
    /* An idle group: one hard state and a few entries, never compacted. */
    assert_int_equal(write_hs(f->w, 99, 5, 1, 3), KV_OK);
    assert_int_equal(append(f->w, 99, 1, 3, 5), KV_OK);
    /* Busy groups append and compact steadily. */
    uint64_t last[4] = {0};
    int max_segments = 0;
    for (int round = 0; round < 200; round++) {
        for (uint64_t g = 0; g < 4; g++) {
            assert_int_equal(append(f->w, g, last[g] + 1, last[g] + 5, 1), KV_OK);
            last[g] += 5;
            if (last[g] > 20) {
                assert_int_equal(compact(f->w, g, last[g] - 20, 1), KV_OK);
            }
        }
        int n = tw_count_segments(f->dir);
        max_segments = n > max_segments ? n : max_segments;
    }
    struct wal_stats s;
    wal_stats(f->w, &s);
    assert_true(s.segments_deleted > 20);
    assert_true(s.rewrites > 0);
    assert_true(max_segments <= WAL__GC_SEGMENTS_KEEP + 2);
    assert_int_equal(s.segments, (uint64_t)tw_count_segments(f->dir));
    reopen(f, 8192, 0);
    for (uint64_t g = 0; g < 4; g++) {
        expect_log(f->w, g, last[g] - 19, last[g], 1, UINT64_MAX, 0);
    }
    expect_log(f->w, 99, 1, 3, 5, UINT64_MAX, 0);
    struct wal_group_state st;
    assert_int_equal(wal_group_state(f->w, 99, &st), KV_OK);
    assert_true(st.has_hard_state && st.hard_state.term == 5 && st.hard_state.commit == 3);
}

static void test_remove_group(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 8192, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 40, 1), KV_OK);
    assert_int_equal(append(f->w, 2, 1, 40, 1), KV_OK);
    struct wal_batch b;
    wal_batch_init(&b);
    assert_int_equal(wal_batch_remove(&b, 1), KV_OK);
    assert_int_equal(wal_write(f->w, &b), KV_OK);
    struct wal_group_state st;
    assert_int_equal(wal_group_state(f->w, 1, &st), KV_ENOTFOUND);
    reopen(f, 8192, 0);
    assert_int_equal(wal_group_state(f->w, 1, &st), KV_ENOTFOUND);
    expect_log(f->w, 2, 1, 40, 1, UINT64_MAX, 0);
    /* The id can be reused, even within one batch after the removal. */
    wal_batch_clear(&b);
    assert_int_equal(wal_batch_remove(&b, 2), KV_OK);
    struct wal_entry e = {.index = 1, .term = 9, .data = "x", .size = 1};
    assert_int_equal(wal_batch_entries(&b, 2, &e, 1), KV_OK);
    assert_int_equal(wal_write(f->w, &b), KV_OK);
    assert_int_equal(wal_group_state(f->w, 2, &st), KV_OK);
    assert_true(st.first_index == 1 && st.last_index == 1);
    reopen(f, 8192, 0);
    assert_int_equal(wal_group_state(f->w, 2, &st), KV_OK);
    assert_true(st.first_index == 1 && st.last_index == 1);
    uint64_t ids[4];
    assert_int_equal(wal_groups(f->w, ids, 4), 1);
    wal_batch_close(&b);
}

/* ---- Recovery ---- */

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static void last_segment_path(struct fixture *f, char *out, size_t size)
{
    uint64_t seq = f->w->segs[f->w->seg_count - 1].seq;
    wal__seg_path(f->w, seq, out, size);
}

static void test_torn_tail_is_cut(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 20, 1), KV_OK);
    char path[WAL_PATH_MAX];
    last_segment_path(f, path, sizeof path);
    /* Cut the last write anywhere inside: recovery keeps 1..20. */
    for (int k = 0; k < 8; k++) {
        uint64_t good = file_size(path);
        assert_int_equal(append(f->w, 1, 21, 30, 1), KV_OK);
        uint64_t full = file_size(path);
        wal_close(f->w);
        f->w = NULL;
        uint64_t cut = good + 1 + (full - good - 1) * (uint64_t)k / 8;
        assert_int_equal(truncate(path, (off_t)cut), 0);
        assert_int_equal(open_wal(f, 0, 0), KV_OK);
        expect_log(f->w, 1, 1, 20, 1, UINT64_MAX, 0);
        /* The torn bytes are gone; at most the opening WRITE record of the
         * torn write, a whole record, stays. */
        assert_true(file_size(path) >= good && file_size(path) <= good + WAL__WRITE_REC_SIZE);
    }
    assert_int_equal(append(f->w, 1, 21, 30, 1), KV_OK);
    wal_close(f->w);
    f->w = NULL;
    /* Garbage after the last record is cut too. */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "garbage!garbage!", 16), 16);
    close(fd);
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    expect_log(f->w, 1, 1, 30, 1, UINT64_MAX, 0);
}

static void flip_byte(const char *path, uint64_t offset)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t c;
    assert_int_equal(pread(fd, &c, 1, (off_t)offset), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, (off_t)offset), 1);
    close(fd);
}

static void test_corruption_before_tail_stops_open(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 4096, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 200, 1), KV_OK); /* one big first segment */
    char first[WAL_PATH_MAX];
    wal__seg_path(f->w, f->w->segs[0].seq, first, sizeof first);
    assert_int_equal(append(f->w, 1, 201, 210, 1), KV_OK); /* rotates */
    assert_true(f->w->seg_count >= 2);
    wal_close(f->w);
    f->w = NULL;
    uint64_t off = WAL__SEG_HEADER_SIZE + 5000;
    flip_byte(first, off);
    assert_int_equal(open_wal(f, 4096, 0), KV_ECORRUPT);
    assert_non_null(strstr(f->errmsg, first));
    assert_non_null(strstr(f->errmsg, "offset"));
    /* Still refused on a second try: nothing was cut. */
    assert_int_equal(open_wal(f, 4096, 0), KV_ECORRUPT);
    flip_byte(first, off);
    assert_int_equal(open_wal(f, 4096, 0), KV_OK);
    expect_log(f->w, 1, 1, 210, 1, UINT64_MAX, 0);
    wal_close(f->w);
    f->w = NULL;
    /* A damaged header of an older segment is refused as well. */
    flip_byte(first, 3);
    assert_int_equal(open_wal(f, 4096, 0), KV_ECORRUPT);
    assert_non_null(strstr(f->errmsg, "header"));
    flip_byte(first, 3);
}

static void test_damage_in_earlier_write_of_last_segment(void **state)
{
    /* Damage inside the last segment but in a write followed by others is
     * not a torn write: it is refused, not cut (which would drop
     * acknowledged entries silently). */
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 20, 1), KV_OK);
    assert_int_equal(append(f->w, 1, 21, 40, 1), KV_OK);
    assert_int_equal(append(f->w, 1, 41, 60, 1), KV_OK);
    char path[WAL_PATH_MAX];
    last_segment_path(f, path, sizeof path);
    wal_close(f->w);
    f->w = NULL;
    uint64_t off = WAL__SEG_HEADER_SIZE + WAL__WRITE_REC_SIZE + 100; /* in the first write */
    flip_byte(path, off);
    assert_int_equal(open_wal(f, 0, 0), KV_ECORRUPT);
    assert_non_null(strstr(f->errmsg, path));
    /* ... and so is a damaged WRITE record that opens a middle write. */
    flip_byte(path, off);
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    struct wal__group *g = wal__table_find(&f->w->groups, 1);
    uint64_t second = wal__group_loc(g, 21)->offset - WAL__WRITE_REC_SIZE - WAL__REC_HEADER_SIZE -
                      WAL__ENTRIES_HEAD_SIZE - WAL__ENTRY_HEAD_SIZE;
    wal_close(f->w);
    f->w = NULL;
    flip_byte(path, second + 10);
    assert_int_equal(open_wal(f, 0, 0), KV_ECORRUPT);
    flip_byte(path, second + 10);
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    expect_log(f->w, 1, 1, 60, 1, UINT64_MAX, 0);
}

static void test_locked_dir(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    struct wal *w2;
    struct wal_options o;
    wal_options_init(&o, f->dir);
    assert_int_equal(wal_open(&o, &w2, f->errmsg), KV_ELOCKED);
}

/* ---- Group commit ---- */

struct writer_arg {
    struct wal *w;
    uint64_t group;
    int count;
    int rc;
};

static void *writer_main(void *p)
{
    struct writer_arg *a = p;
    a->rc = KV_OK;
    for (int i = 1; i <= a->count && a->rc == KV_OK; i++) {
        a->rc = append(a->w, a->group, (uint64_t)i, (uint64_t)i, 1);
    }
    return NULL;
}

static void test_group_commit_many_threads(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 65536, 0), KV_OK);
    enum { THREADS = 8, COUNT = 200 };
    pthread_t t[THREADS];
    struct writer_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (struct writer_arg){.w = f->w, .group = (uint64_t)i + 1, .count = COUNT};
        pthread_create(&t[i], NULL, writer_main, &a[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, KV_OK);
    }
    struct wal_stats s;
    wal_stats(f->w, &s);
    assert_int_equal(s.batches, THREADS * COUNT);
    /* Every batch was synced, by itself or with others. */
    assert_true(s.syncs <= s.batches + s.segments + s.segments_deleted);
    assert_true(s.syncs >= s.writes);
    reopen(f, 65536, 0);
    for (int i = 0; i < THREADS; i++) {
        expect_log(f->w, (uint64_t)i + 1, 1, COUNT, 1, UINT64_MAX, 0);
    }
}

/* ---- Faults ---- */

/* Writes 1..10 of group 1, arms `fault`, and checks that the next append
 * fails with `want`, that the log is then poisoned without another sync,
 * and that after a power loss the acknowledged 1..10 survive. */
static void run_fault(struct fixture *f, enum wal_fault fault, int want)
{
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 10, 1), KV_OK);
    wal_fs_fault_arm(f->fault, fault, 0);
    assert_int_equal(append(f->w, 1, 11, 20, 1), want);
    uint64_t syncs = wal_fs_fault_syncs(f->fault);
    uint64_t writes = wal_fs_fault_writes(f->fault);
    assert_int_equal(append(f->w, 1, 11, 20, 1), KV_EPOISONED);
    assert_int_equal(write_hs(f->w, 1, 2, 0, 0), KV_EPOISONED);
    assert_int_equal(wal_fs_fault_syncs(f->fault), syncs);
    assert_int_equal(wal_fs_fault_writes(f->fault), writes);
    /* Reads still work from what is durable. */
    expect_log(f->w, 1, 1, 10, 1, UINT64_MAX, 0);
    wal_close(f->w);
    f->w = NULL;
    assert_int_equal(wal_fs_fault_crash(f->fault, 0), KV_OK);
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    struct wal_group_state st;
    assert_int_equal(wal_group_state(f->w, 1, &st), KV_OK);
    assert_int_equal(st.last_index, 10);
    expect_log(f->w, 1, 1, 10, 1, UINT64_MAX, 0);
    assert_int_equal(append(f->w, 1, 11, 20, 1), KV_OK);
    expect_log(f->w, 1, 1, 20, 1, UINT64_MAX, 0);
}

static void test_fault_write_eio(void **state)
{
    run_fault(*state, WAL_FAULT_WRITE_EIO, KV_EIO);
}

static void test_fault_write_enospc(void **state)
{
    run_fault(*state, WAL_FAULT_WRITE_ENOSPC, KV_ENOSPC);
}

static void test_fault_short_write(void **state)
{
    run_fault(*state, WAL_FAULT_WRITE_SHORT, KV_ENOSPC);
}

static void test_fault_torn_write(void **state)
{
    run_fault(*state, WAL_FAULT_WRITE_TORN, KV_EIO);
}

static void test_fault_sync_eio(void **state)
{
    run_fault(*state, WAL_FAULT_SYNC_EIO, KV_EIO);
}

static void test_fault_torn_write_without_crash(void **state)
{
    /* A torn write that stays in the page cache (the process died, the
     * machine did not): recovery cuts it and keeps what was acknowledged. */
    struct fixture *f = *state;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 10, 1), KV_OK);
    wal_fs_fault_arm(f->fault, WAL_FAULT_WRITE_TORN, 0);
    assert_int_equal(append(f->w, 1, 11, 60, 1), KV_EIO);
    reopen(f, 0, 0);
    expect_log(f->w, 1, 1, 10, 1, UINT64_MAX, 0);
}

static void test_power_loss_keeps_synced_writes(void **state)
{
    struct fixture *f = *state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        assert_int_equal(open_wal(f, 4096, 0), KV_OK);
        struct wal_group_state st;
        uint64_t last = wal_group_state(f->w, 1, &st) == KV_OK ? st.last_index : 0;
        assert_int_equal(append(f->w, 1, last + 1, last + 7, 1), KV_OK);
        wal_close(f->w);
        f->w = NULL;
        /* The close synced everything: a crash with a random surviving
         * prefix of the (empty) unsynced tail changes nothing. */
        assert_int_equal(wal_fs_fault_crash(f->fault, seed), KV_OK);
        assert_int_equal(open_wal(f, 4096, 0), KV_OK);
        expect_log(f->w, 1, 1, last + 7, 1, UINT64_MAX, 0);
        wal_close(f->w);
        f->w = NULL;
    }
}

static void test_sync_none_loses_on_power_loss(void **state)
{
    /* Documents the trade: sync=none acknowledges unsynced writes. */
    struct fixture *f = *state;
    struct wal_options o;
    wal_options_init(&o, f->dir);
    o.sync = WAL_SYNC_NONE;
    o.fs = f->fault;
    assert_int_equal(wal_open(&o, &f->w, f->errmsg), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 10, 1), KV_OK);
    uint64_t syncs = wal_fs_fault_syncs(f->fault);
    assert_int_equal(append(f->w, 1, 11, 20, 1), KV_OK);
    assert_int_equal(wal_fs_fault_syncs(f->fault), syncs);
    /* Simulate the power loss with the WAL still open (no final sync). */
    assert_int_equal(wal_fs_fault_crash(f->fault, 0), KV_OK);
    f->w->poisoned = KV_EIO; /* keep wal_close from syncing the cut file */
    wal_close(f->w);
    f->w = NULL;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    struct wal_group_state st;
    assert_true(wal_group_state(f->w, 1, &st) == KV_ENOTFOUND || st.last_index < 20);
}

static void test_batch_policy_is_durable(void **state)
{
    struct fixture *f = *state;
    struct wal_options o;
    wal_options_init(&o, f->dir);
    o.sync = WAL_SYNC_BATCH;
    o.batch_delay_us = 2000;
    o.fs = f->fault;
    assert_int_equal(wal_open(&o, &f->w, f->errmsg), KV_OK);
    assert_int_equal(append(f->w, 1, 1, 10, 1), KV_OK);
    /* Acknowledged means synced: a power loss right now keeps it. */
    assert_int_equal(wal_fs_fault_crash(f->fault, 0), KV_OK);
    wal_close(f->w);
    f->w = NULL;
    assert_int_equal(open_wal(f, 0, 0), KV_OK);
    expect_log(f->w, 1, 1, 10, 1, UINT64_MAX, 0);
}

/* Regression: a crash in the middle of a GC rewrite once left the group's
 * removal on disk without its entries. Tear every write of a workload that
 * rewrites, one at a time, and check after each that recovery keeps every
 * acknowledged entry and the idle group that GC rewrites. */
static void test_torn_write_anywhere_keeps_acked(void **state)
{
    struct fixture *f = *state;
    uint64_t rewrites = 0;
    for (uint64_t k = 0; k < 160; k += 3) {
        assert_int_equal(open_wal(f, 4096, 0), KV_OK);
        assert_int_equal(write_hs(f->w, 99, 5, 1, 3), KV_OK);
        assert_int_equal(append(f->w, 99, 1, 3, 5), KV_OK);
        wal_fs_fault_arm(f->fault, WAL_FAULT_WRITE_TORN, k);
        uint64_t acked[3] = {0};
        int rc = KV_OK;
        for (int round = 0; round < 60 && rc == KV_OK; round++) {
            for (uint64_t g = 0; g < 3 && rc == KV_OK; g++) {
                rc = append(f->w, g, acked[g] + 1, acked[g] + 4, 1);
                if (rc == KV_OK && acked[g] + 4 > 12) {
                    rc = compact(f->w, g, acked[g] + 4 - 12, 1);
                }
                acked[g] += rc == KV_OK ? 4 : 0;
            }
        }
        struct wal_stats s;
        wal_stats(f->w, &s);
        rewrites += s.rewrites;
        wal_fs_fault_arm(f->fault, WAL_FAULT_NONE, 0);
        reopen(f, 4096, 0); /* the torn bytes stay, as after a process crash */
        for (uint64_t g = 0; g < 3; g++) {
            struct wal_group_state st;
            if (acked[g] == 0) {
                continue;
            }
            assert_int_equal(wal_group_state(f->w, g, &st), KV_OK);
            assert_true(st.last_index >= acked[g]);
            expect_log(f->w, g, st.first_index, st.last_index, 1, UINT64_MAX, 0);
        }
        expect_log(f->w, 99, 1, 3, 5, UINT64_MAX, 0);
        wal_close(f->w);
        f->w = NULL;
        tw_rmdir(f->dir);
        assert_int_equal(mkdir(f->dir, 0755), 0);
    }
    assert_true(rewrites > 0); /* the workload did exercise the rewrite path */
}

static void test_alloc_failures_are_clean(void **state)
{
    struct fixture *f = *state;
    /* Fail the Nth allocation of open + write + read, for every N. Each run
     * must end in KV_ENOMEM (or succeed), never crash; a later clean open
     * sees a consistent log. */
    int completed = 0;
    for (long n = 0; n < 400 && !completed; n++) {
        struct wal *w = NULL;
        struct wal_options o;
        wal_options_init(&o, f->dir);
        o.segment_bytes = 4096;
        kv_alloc_fault_after(n);
        int rc = wal_open(&o, &w, f->errmsg);
        if (rc == KV_OK) {
            rc = append(w, 1, 1, 30, 1);
            if (rc == KV_OK || rc == KV_ENOMEM) {
                struct wal_read rd;
                wal_read_init(&rd);
                int rrc = wal_entries(w, 1, 1, 2, UINT64_MAX, &rd);
                assert_true(rrc == KV_OK || rrc == KV_ENOMEM || rrc == KV_ENOTFOUND ||
                            rrc == KV_EUNAVAILABLE);
                wal_read_close(&rd);
            }
            completed = rc == KV_OK && kv_alloc_fault_hits() == 0;
            wal_close(w);
        }
        kv_alloc_fault_clear();
        assert_true(rc == KV_OK || rc == KV_ENOMEM || rc == KV_EPOISONED);
        /* Whatever happened, the directory opens cleanly, and starts over. */
        assert_int_equal(open_wal(f, 4096, 0), KV_OK);
        wal_close(f->w);
        f->w = NULL;
        tw_rmdir(f->dir);
        assert_int_equal(mkdir(f->dir, 0755), 0);
    }
    assert_true(completed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fs_conformance_posix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fs_conformance_fault, setup, teardown),
        cmocka_unit_test(test_framing_roundtrip_and_damage),
        cmocka_unit_test(test_batch_rejects_bad_input),
        cmocka_unit_test(test_segment_header),
        cmocka_unit_test_setup_teardown(test_vanished_segments_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_read_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_suffix_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_bounds_disk_and_rewrites_idle_groups, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_remove_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption_before_tail_stops_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_in_earlier_write_of_last_segment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_locked_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_many_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_write_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_write_enospc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_short_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_torn_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_sync_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_torn_write_without_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_loss_keeps_synced_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_none_loses_on_power_loss, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_policy_is_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_write_anywhere_keeps_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures_are_clean, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
