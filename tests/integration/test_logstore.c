/* test_logstore.c -- node_logstore on a real WAL, one behaviour at a time:
 * an empty group; entries of both types and their payloads round-tripping
 * through the WAL and a reopen; a conflicting tail replaced; compaction
 * persisting the membership; a snapshot install inside the held log
 * (stale tail discarded) and beyond it; group removal; and a power loss
 * that keeps a random prefix of an install's write, after which the store
 * must open either as before or as after the install, never in between. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "logstore.h"
#include "raft.h"
#include "wal.h"

#define GROUP 9
/* Seeds of the power-loss test: each keeps another prefix of the write. */
#define CRASH_SEEDS 64

struct fixture {
    char dir[64];
    struct wal_fs *fs; /* fault layer over POSIX, or NULL */
    struct wal *w;
    struct node_logstore *ls;
    struct raft_log_store *st;
    struct wal_batch b;
};

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    char path[512];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

static void fx_open(struct fixture *fx)
{
    struct wal_options o;
    char errmsg[KV_ERRMSG_SIZE];
    wal_options_init(&o, fx->dir);
    o.fs = fx->fs;
    assert_int_equal(wal_open(&o, &fx->w, errmsg), KV_OK);
    assert_int_equal(node_logstore_new(fx->w, GROUP, &fx->ls), KV_OK);
    fx->st = node_logstore_store(fx->ls);
}

static void fx_close(struct fixture *fx)
{
    node_logstore_free(fx->ls);
    fx->ls = NULL;
    wal_close(fx->w);
    fx->w = NULL;
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/logstore-unit-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    wal_batch_init(&fx->b);
    fx_open(fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->w != NULL) {
        fx_close(fx);
    }
    if (fx->fs != NULL) {
        wal_fs_fault_free(fx->fs);
    }
    wal_batch_close(&fx->b);
    rm_dir(fx->dir);
    free(fx);
    return 0;
}

/* Persists a ready carrying `rd` through the batch, as the host does. */
static void persist(struct fixture *fx, const struct raft_ready *rd)
{
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_stage(fx->ls, rd, &fx->b), KV_OK);
    assert_int_equal(wal_write(fx->w, &fx->b), KV_OK);
    assert_int_equal(node_logstore_written(fx->ls, rd), KV_OK);
}

/* Appends entries [lo, hi] of `term`; odd indices are conf changes, every
 * payload names its index and term, index 4 is empty. */
static void append(struct fixture *fx, uint64_t lo, uint64_t hi, uint64_t term)
{
    struct raft_entry ents[32];
    char bufs[32][32];
    size_t n = 0;
    for (uint64_t i = lo; i <= hi; i++, n++) {
        int len = snprintf(bufs[n], sizeof bufs[n], "e%llu-t%llu", (unsigned long long)i,
                           (unsigned long long)term);
        ents[n] = (struct raft_entry){.index = i,
                                      .term = term,
                                      .type = (i % 2) ? RAFT_ENTRY_CONF_CHANGE : RAFT_ENTRY_NORMAL,
                                      .data = i == 4 ? NULL : (uint8_t *)bufs[n],
                                      .size = i == 4 ? 0 : (size_t)len};
    }
    struct raft_ready rd = {.entries = ents, .n_entries = n};
    persist(fx, &rd);
}

static void expect_entry(struct fixture *fx, uint64_t index, uint64_t term)
{
    struct raft_entry e;
    char want[32];
    int len = snprintf(want, sizeof want, "e%llu-t%llu", (unsigned long long)index,
                       (unsigned long long)term);
    assert_int_equal(fx->st->entry(fx->st->data, index, &e), KV_OK);
    assert_int_equal(e.index, index);
    assert_int_equal(e.term, term);
    assert_int_equal(e.type, (index % 2) ? RAFT_ENTRY_CONF_CHANGE : RAFT_ENTRY_NORMAL);
    if (index == 4) {
        assert_int_equal(e.size, 0);
    } else {
        assert_int_equal(e.size, (size_t)len);
        assert_memory_equal(e.data, want, (size_t)len);
    }
    uint64_t t;
    assert_int_equal(fx->st->term(fx->st->data, index, &t), KV_OK);
    assert_int_equal(t, term);
}

static void expect_range(struct fixture *fx, uint64_t first, uint64_t last)
{
    assert_int_equal(fx->st->first_index(fx->st->data), first);
    assert_int_equal(fx->st->last_index(fx->st->data), last);
}

static struct raft_conf_state conf_of(uint64_t a, uint64_t b, uint64_t c, uint64_t learner)
{
    struct raft_conf_state cs = {.voters = {a, b, c}, .n_voters = 3};
    if (learner != 0) {
        cs.learners[0] = learner;
        cs.n_learners = 1;
    }
    return cs;
}

static void test_empty(void **state)
{
    struct fixture *fx = *state;
    struct raft_hard_state hs;
    struct raft_conf_state cs;
    struct raft_snapshot_meta m;
    struct raft_entry e;
    uint64_t t = 99;
    expect_range(fx, 1, 0);
    assert_int_equal(fx->st->term(fx->st->data, 0, &t), KV_OK);
    assert_int_equal(t, 0);
    assert_int_equal(fx->st->term(fx->st->data, 1, &t), KV_EUNAVAILABLE);
    assert_int_equal(fx->st->entry(fx->st->data, 1, &e), KV_EUNAVAILABLE);
    assert_int_equal(fx->st->initial_state(fx->st->data, &hs, &cs), KV_OK);
    assert_int_equal(hs.term, 0);
    assert_int_equal(cs.n_voters + cs.n_learners, 0);
    assert_int_equal(fx->st->snapshot(fx->st->data, &m), KV_OK);
    assert_int_equal(m.index, 0);
    assert_false(node_logstore_is_meta_group(GROUP));
    assert_true(node_logstore_is_meta_group(GROUP | NODE_LOGSTORE_META_BIT));
}

static void test_round_trip(void **state)
{
    struct fixture *fx = *state;
    append(fx, 1, 10, 2);
    struct raft_ready rd = {.has_hard_state = true,
                            .hard_state = {.term = 3, .vote = 2, .commit = 7}};
    persist(fx, &rd);
    for (int pass = 0; pass < 2; pass++) {
        expect_range(fx, 1, 10);
        for (uint64_t i = 1; i <= 10; i++) {
            expect_entry(fx, i, 2);
        }
        /* Backwards too: the read-ahead buffer must refill correctly. */
        for (uint64_t i = 10; i >= 1; i--) {
            expect_entry(fx, i, 2);
        }
        struct raft_hard_state hs;
        struct raft_conf_state cs;
        assert_int_equal(fx->st->initial_state(fx->st->data, &hs, &cs), KV_OK);
        assert_int_equal(hs.term, 3);
        assert_int_equal(hs.vote, 2);
        assert_int_equal(hs.commit, 7);
        struct raft_entry e;
        assert_int_equal(fx->st->entry(fx->st->data, 11, &e), KV_EUNAVAILABLE);
        fx_close(fx);
        fx_open(fx);
    }
}

/* Entries big enough that one read-ahead stops at the byte limit. */
static void test_big_entries(void **state)
{
    struct fixture *fx = *state;
    enum { BIG = 100 * 1024, COUNT = 8 };
    static uint8_t buf[COUNT][BIG];
    struct raft_entry ents[COUNT];
    for (int i = 0; i < COUNT; i++) {
        memset(buf[i], 'a' + i, BIG);
        ents[i] =
            (struct raft_entry){.index = (uint64_t)i + 1, .term = 1, .data = buf[i], .size = BIG};
    }
    struct raft_ready rd = {.entries = ents, .n_entries = COUNT};
    persist(fx, &rd);
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t i = 1; i <= COUNT; i++) {
            struct raft_entry e;
            assert_int_equal(fx->st->entry(fx->st->data, i, &e), KV_OK);
            assert_int_equal(e.index, i);
            assert_int_equal(e.size, BIG);
            assert_memory_equal(e.data, buf[i - 1], BIG);
        }
        fx_close(fx);
        fx_open(fx);
    }
}

/* Regression: a compaction mark written after the entries that follow
 * it, once the segment of the entries before it is collected, used to
 * replay with the WAL's compaction term lost (wal_group_state said term
 * 0). The WAL keeps it now; the store answers term(first - 1) either way. */
static void test_mark_after_rotation(void **state)
{
    struct fixture *fx = *state;
    fx_close(fx);
    struct wal_options o;
    char errmsg[KV_ERRMSG_SIZE];
    wal_options_init(&o, fx->dir);
    o.segment_bytes = WAL_SEGMENT_BYTES_MIN;
    assert_int_equal(wal_open(&o, &fx->w, errmsg), KV_OK);
    assert_int_equal(node_logstore_new(fx->w, GROUP, &fx->ls), KV_OK);
    fx->st = node_logstore_store(fx->ls);
    static uint8_t pay[600];
    uint64_t rotated_at = 0;
    for (uint64_t i = 1; i <= 64 && rotated_at == 0; i++) {
        struct wal_stats before, after;
        wal_stats(fx->w, &before);
        struct raft_entry e = {.index = i, .term = 3, .data = pay, .size = sizeof pay};
        struct raft_ready rd = {.entries = &e, .n_entries = 1};
        persist(fx, &rd);
        wal_stats(fx->w, &after);
        if (after.segments > before.segments) {
            rotated_at = i; /* rotation happens before a write: i opens the new segment */
        }
    }
    assert_true(rotated_at > 1);
    struct raft_entry e = {.index = rotated_at + 1, .term = 3, .data = pay, .size = sizeof pay};
    struct raft_ready rd = {.entries = &e, .n_entries = 1};
    persist(fx, &rd);
    struct raft_conf_state cs = conf_of(1, 2, 3, 0);
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_compact(fx->ls, rotated_at - 1, &cs, &fx->b), KV_OK);
    assert_int_equal(wal_write(fx->w, &fx->b), KV_OK);
    assert_int_equal(node_logstore_written(fx->ls, NULL), KV_OK);
    fx_close(fx);
    assert_int_equal(wal_open(&o, &fx->w, errmsg), KV_OK);
    struct wal_group_state gs;
    assert_int_equal(wal_group_state(fx->w, GROUP, &gs), KV_OK);
    /* Fixed in the WAL itself (index.c): the term survives the replay. */
    assert_int_equal(gs.compact_term, 3);
    assert_int_equal(node_logstore_new(fx->w, GROUP, &fx->ls), KV_OK);
    fx->st = node_logstore_store(fx->ls);
    expect_range(fx, rotated_at, rotated_at + 1);
    uint64_t t;
    assert_int_equal(fx->st->term(fx->st->data, rotated_at - 1, &t), KV_OK);
    assert_int_equal(t, 3);
}

static void test_tail_replaced(void **state)
{
    struct fixture *fx = *state;
    append(fx, 1, 8, 1);
    append(fx, 5, 6, 4); /* a new leader's entries conflict from 5 on */
    expect_range(fx, 1, 6);
    expect_entry(fx, 4, 1);
    expect_entry(fx, 5, 4);
    expect_entry(fx, 6, 4);
    fx_close(fx);
    fx_open(fx);
    expect_range(fx, 1, 6);
    expect_entry(fx, 5, 4);
}

static void test_compact_keeps_conf(void **state)
{
    struct fixture *fx = *state;
    append(fx, 1, 10, 3);
    struct raft_conf_state cs = conf_of(1, 2, 5, 7);
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_compact(fx->ls, 11, &cs, &fx->b), KV_EINVAL);
    assert_int_equal(node_logstore_compact(fx->ls, 6, &cs, &fx->b), KV_OK);
    assert_int_equal(wal_write(fx->w, &fx->b), KV_OK);
    assert_int_equal(node_logstore_written(fx->ls, NULL), KV_OK);
    for (int pass = 0; pass < 2; pass++) {
        expect_range(fx, 7, 10);
        struct raft_entry e;
        uint64_t t;
        assert_int_equal(fx->st->entry(fx->st->data, 6, &e), KV_ECOMPACTED);
        assert_int_equal(fx->st->term(fx->st->data, 6, &t), KV_OK);
        assert_int_equal(t, 3);
        assert_int_equal(fx->st->term(fx->st->data, 5, &t), KV_ECOMPACTED);
        expect_entry(fx, 7, 3);
        struct raft_snapshot_meta m;
        assert_int_equal(fx->st->snapshot(fx->st->data, &m), KV_OK);
        assert_int_equal(m.index, 6);
        assert_int_equal(m.term, 3);
        assert_memory_equal(&m.conf, &cs, sizeof cs);
        struct raft_hard_state hs;
        struct raft_conf_state got;
        assert_int_equal(fx->st->initial_state(fx->st->data, &hs, &got), KV_OK);
        assert_memory_equal(&got, &cs, sizeof cs);
        fx_close(fx);
        fx_open(fx);
    }
    /* At or below the snapshot: nothing to do. */
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_compact(fx->ls, 6, &cs, &fx->b), KV_OK);
    assert_int_equal(fx->b.bytes.size, 0);
}

static void install(struct fixture *fx, uint64_t index, uint64_t term,
                    const struct raft_conf_state *cs)
{
    struct raft_ready rd = {.has_snapshot = true,
                            .snapshot = {.index = index, .term = term, .conf = *cs},
                            .has_hard_state = true,
                            .hard_state = {.term = term, .vote = 0, .commit = index}};
    persist(fx, &rd);
}

static void expect_installed(struct fixture *fx, uint64_t index, uint64_t term,
                             const struct raft_conf_state *cs)
{
    expect_range(fx, index + 1, index);
    uint64_t t;
    assert_int_equal(fx->st->term(fx->st->data, index, &t), KV_OK);
    assert_int_equal(t, term);
    struct raft_entry e;
    assert_int_equal(fx->st->entry(fx->st->data, index, &e), KV_ECOMPACTED);
    assert_int_equal(fx->st->entry(fx->st->data, index + 1, &e), KV_EUNAVAILABLE);
    struct raft_snapshot_meta m;
    assert_int_equal(fx->st->snapshot(fx->st->data, &m), KV_OK);
    assert_int_equal(m.index, index);
    assert_int_equal(m.term, term);
    assert_memory_equal(&m.conf, cs, sizeof *cs);
}

static void test_install_inside_log(void **state)
{
    struct fixture *fx = *state;
    append(fx, 1, 10, 2);
    struct raft_conf_state cs = conf_of(1, 2, 3, 0);
    install(fx, 6, 5, &cs); /* our entry 6 has term 2: the tail is stale */
    expect_installed(fx, 6, 5, &cs);
    fx_close(fx);
    fx_open(fx);
    expect_installed(fx, 6, 5, &cs);
    append(fx, 7, 8, 5);
    expect_range(fx, 7, 8);
    expect_entry(fx, 7, 5);
}

static void test_install_beyond_log(void **state)
{
    struct fixture *fx = *state;
    append(fx, 1, 3, 1);
    struct raft_conf_state cs = conf_of(4, 5, 6, 9);
    install(fx, 40, 6, &cs);
    expect_installed(fx, 40, 6, &cs);
    fx_close(fx);
    fx_open(fx);
    expect_installed(fx, 40, 6, &cs);
}

static void test_remove(void **state)
{
    struct fixture *fx = *state;
    append(fx, 1, 5, 1);
    struct raft_conf_state cs = conf_of(1, 2, 3, 0);
    install(fx, 9, 2, &cs);
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_remove(fx->ls, &fx->b), KV_OK);
    assert_int_equal(wal_write(fx->w, &fx->b), KV_OK);
    fx_close(fx);
    fx_open(fx);
    expect_range(fx, 1, 0);
    uint64_t ids[4];
    assert_int_equal(wal_groups(fx->w, ids, 4), 0);
}

/* Two groups' steps in one batch (one loop turn, one wal_write): entries
 * and hard states of both, then a compaction of one next to a snapshot
 * install of the other; each store sees only its own group, before and
 * after a reopen, and the companions are recognisable in wal_groups. */
static void test_two_groups_one_batch(void **state)
{
    struct fixture *fx = *state;
    struct node_logstore *other;
    assert_int_equal(node_logstore_new(fx->w, GROUP + 1, &other), KV_OK);
    struct raft_log_store *ost = node_logstore_store(other);
    struct raft_entry ea[5], eb[3];
    for (uint64_t i = 0; i < 5; i++) {
        ea[i] = (struct raft_entry){.index = i + 1, .term = 1, .data = (uint8_t *)"a", .size = 1};
    }
    for (uint64_t i = 0; i < 3; i++) {
        eb[i] = (struct raft_entry){.index = i + 1, .term = 2, .data = (uint8_t *)"bb", .size = 2};
    }
    struct raft_ready ra = {.entries = ea,
                            .n_entries = 5,
                            .has_hard_state = true,
                            .hard_state = {.term = 1, .vote = 1, .commit = 5}};
    struct raft_ready rb = {.entries = eb,
                            .n_entries = 3,
                            .has_hard_state = true,
                            .hard_state = {.term = 2, .vote = 3, .commit = 2}};
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_stage(fx->ls, &ra, &fx->b), KV_OK);
    assert_int_equal(node_logstore_stage(other, &rb, &fx->b), KV_OK);
    assert_int_equal(wal_write(fx->w, &fx->b), KV_OK);
    assert_int_equal(node_logstore_written(fx->ls, &ra), KV_OK);
    assert_int_equal(node_logstore_written(other, &rb), KV_OK);
    expect_range(fx, 1, 5);
    assert_int_equal(ost->last_index(ost->data), 3);

    struct raft_conf_state ca = conf_of(1, 2, 3, 0), cb = conf_of(3, 4, 5, 6);
    struct raft_ready rs = {.has_snapshot = true, .snapshot = {.index = 8, .term = 4, .conf = cb}};
    wal_batch_clear(&fx->b);
    assert_int_equal(node_logstore_compact(fx->ls, 3, &ca, &fx->b), KV_OK);
    assert_int_equal(node_logstore_stage(other, &rs, &fx->b), KV_OK);
    assert_int_equal(wal_write(fx->w, &fx->b), KV_OK);
    assert_int_equal(node_logstore_written(fx->ls, NULL), KV_OK);
    assert_int_equal(node_logstore_written(other, &rs), KV_OK);
    for (int pass = 0; pass < 2; pass++) {
        expect_range(fx, 4, 5);
        struct raft_snapshot_meta m;
        node_logstore_snapshot_meta(fx->ls, &m);
        assert_int_equal(m.index, 3);
        assert_memory_equal(&m.conf, &ca, sizeof ca);
        assert_int_equal(node_logstore_hard_state(fx->ls).vote, 1);
        assert_int_equal(ost->first_index(ost->data), 9);
        assert_int_equal(ost->last_index(ost->data), 8);
        node_logstore_snapshot_meta(other, &m);
        assert_int_equal(m.index, 8);
        assert_int_equal(m.term, 4);
        assert_memory_equal(&m.conf, &cb, sizeof cb);
        assert_int_equal(node_logstore_hard_state(other).vote, 3);
        uint64_t ids[8];
        size_t n = wal_groups(fx->w, ids, 8), raft_groups = 0;
        assert_int_equal(n, 4);
        for (size_t i = 0; i < n; i++) {
            raft_groups += !node_logstore_is_meta_group(ids[i]);
        }
        assert_int_equal(raft_groups, 2);
        node_logstore_free(other);
        fx_close(fx);
        fx_open(fx);
        assert_int_equal(node_logstore_new(fx->w, GROUP + 1, &other), KV_OK);
        ost = node_logstore_store(other);
    }
    node_logstore_free(other);
}

/* A power loss during an install's write keeps a random prefix of it (the
 * fault layer drops the unsynced tail at a random point; the WAL cuts the
 * torn record). The store must open as before or as after the install. */
static void test_install_power_loss(void **state)
{
    struct fixture *fx = *state;
    fx_close(fx);
    int before = 0, after = 0, midway = 0;
    struct raft_conf_state cs = conf_of(1, 2, 3, 4);
    for (uint64_t seed = 1; seed <= CRASH_SEEDS; seed++) {
        rm_dir(fx->dir);
        assert_int_equal(mkdir(fx->dir, 0700), 0);
        if (fx->fs != NULL) {
            wal_fs_fault_free(fx->fs);
        }
        fx->fs = wal_fs_fault_new(wal_fs_posix());
        assert_non_null(fx->fs);
        fx_open(fx);
        append(fx, 1, 10, 2);
        struct raft_ready rd = {.has_snapshot = true,
                                .snapshot = {.index = 6, .term = 5, .conf = cs},
                                .has_hard_state = true,
                                .hard_state = {.term = 5, .commit = 6}};
        wal_batch_clear(&fx->b);
        assert_int_equal(node_logstore_stage(fx->ls, &rd, &fx->b), KV_OK);
        wal_fs_fault_arm(fx->fs, WAL_FAULT_SYNC_EIO, 0); /* written, never synced */
        assert_int_equal(wal_write(fx->w, &fx->b), KV_EIO);
        fx_close(fx);
        assert_int_equal(wal_fs_fault_crash(fx->fs, seed), KV_OK);
        /* Look before the store opens (and finishes a half-done step). */
        struct wal_options o;
        char errmsg[KV_ERRMSG_SIZE];
        struct wal *w;
        struct wal_group_state gs, ms;
        wal_options_init(&o, fx->dir);
        o.fs = fx->fs;
        assert_int_equal(wal_open(&o, &w, errmsg), KV_OK);
        assert_int_equal(wal_group_state(w, GROUP, &gs), KV_OK);
        int meta_rc = wal_group_state(w, GROUP | NODE_LOGSTORE_META_BIT, &ms);
        if (meta_rc == KV_OK && gs.compact_index == 0) {
            midway++;
        }
        wal_close(w);
        fx_open(fx);
        if (fx->st->first_index(fx->st->data) == 1) {
            expect_range(fx, 1, 10);
            expect_entry(fx, 6, 2);
            expect_entry(fx, 10, 2);
            before++;
        } else {
            expect_installed(fx, 6, 5, &cs);
            after++;
        }
        fx_close(fx);
    }
    print_message("power loss: %d before, %d after (%d finished at open)\n", before, after, midway);
    assert_true(before > 0 && after > 0 && midway > 0);
    fx_open(fx);
}

int main(void)
{
    if (kv_log_set_level_name("off") != KV_OK) {
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mark_after_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_keeps_conf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_inside_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_beyond_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_groups_one_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_power_loss, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
