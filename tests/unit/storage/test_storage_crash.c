/* test_storage_crash.c -- crash atomicity and durability of a persistent
 * engine under SIGKILL: `test_storage_crash <engine> [seed] [budget_s]`.
 *
 * Each round, a child process (this binary re-executed with --child, so it
 * never inherits a parent's engine threads) opens the engine with sync
 * always and writes batches numbered n, n+1, ...: batch b puts
 * BATCH_KEYS keys "b<b>-<i>", deletes batch b - DELETE_LAG's keys with one
 * delete-range, and sets the marker key "last" to b. After each stor_write
 * returns it reports b to the parent through a pipe; every COMPACT_EVERY
 * batches it also compacts, so kills land in compactions and merges too.
 * The parent SIGKILLs it at a random (seeded) moment, reopens the
 * directory and checks:
 *   - "last" = L is the last acknowledged batch or the one after it (the
 *     one in flight), never older (durability) nor newer;
 *   - every batch in (L - DELETE_LAG, L] is wholly present with the right
 *     values, no key of a batch after L exists (each batch all-or-nothing)
 *     and none of a batch at or before L - DELETE_LAG (range deletes are
 *     atomic with their batch and never undone).
 * The next round continues in the same directory from L + 1, so recovery
 * of an already-recovered directory is exercised too. */
#define _GNU_SOURCE /* nftw */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "rng.h"
#include "stor.h"

#define EXIT_SKIPPED  77 /* ctest SKIP_RETURN_CODE */
#define PATH_SIZE_MAX 1024
#define BATCH_KEYS    20
/* Batch b deletes batch b - DELETE_LAG, so at most DELETE_LAG batches are
 * live and each round's check stays small. */
#define DELETE_LAG    50
#define COMPACT_EVERY 150
/* Small files make bitcask roll and merge often (others ignore it). */
#define FILE_BYTES_MAX (256u * 1024u)
/* Every BIG_BATCH_EVERY-th batch has big values, so a kill often lands in
 * the middle of a long write. */
#define BIG_BATCH_EVERY  10
#define VALUE_SIZE_SMALL 100
#define VALUE_SIZE_BIG   16384
#define KEY_SIZE         15 /* "b" + 10 digits + "-" + 3 digits */
#define ROUNDS_MAX       100
#define BUDGET_S_DEFAULT 15
/* Kill delay after the child's first acknowledged batch. */
#define KILL_DELAY_MS_MAX 300
/* 1 round in KILL_EARLY_ONE_IN kills at a random moment from spawn, which
 * may be during open and recovery. */
#define KILL_EARLY_ONE_IN 5
#define KILL_EARLY_MS_MAX 150
/* A child that acknowledges nothing for this long is stuck. */
#define FIRST_ACK_TIMEOUT_MS 20000

static size_t value_size_of(uint64_t batch)
{
    return batch % BIG_BATCH_EVERY == 0 ? VALUE_SIZE_BIG : VALUE_SIZE_SMALL;
}

static void make_key(uint64_t batch, unsigned i, char out[KEY_SIZE + 1])
{
    snprintf(out, KEY_SIZE + 1, "b%010llu-%03u", (unsigned long long)batch, i);
}

/* The value of key i of `batch`: the numbers, then filler seeded by them,
 * so every byte of every value is checkable. */
static void make_value(uint64_t batch, unsigned i, uint8_t *out)
{
    struct kv_rng r;
    size_t n = value_size_of(batch);
    kv_rng_seed(&r, batch * 1000 + i);
    kv_rng_fill(&r, out, n);
    snprintf((char *)out, 24, "%llu/%u", (unsigned long long)batch, i);
}

/* Parses "b<10 digits>-<3 digits>"; returns 0 for any other key. */
static int parse_key(const uint8_t *k, size_t ks, uint64_t *batch, unsigned *i)
{
    char buf[KEY_SIZE + 1];
    if (ks != KEY_SIZE || k[0] != 'b' || k[11] != '-') {
        return 0;
    }
    memcpy(buf, k, KEY_SIZE);
    buf[KEY_SIZE] = '\0';
    char *end;
    *batch = strtoull(buf + 1, &end, 10);
    if (end != buf + 11) {
        return 0;
    }
    *i = (unsigned)strtoul(buf + 12, &end, 10);
    return end == buf + KEY_SIZE && *i < BATCH_KEYS;
}

static int open_engine(const char *engine, const char *path, struct stor_engine **out,
                       char errmsg[KV_ERRMSG_SIZE])
{
    struct stor_options o;
    stor_options_init(&o);
    o.path = path;
    o.sync = STOR_SYNC_ALWAYS;
    o.file_bytes_max = FILE_BYTES_MAX;
    return stor_open(engine, &o, out, errmsg);
}

/* ---- the child: write batches until killed ------------------------------ */

static int child_main(const char *engine, const char *path, uint64_t first, int ack_fd)
{
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = open_engine(engine, path, &e, errmsg);
    if (rc != KV_OK) {
        fprintf(stderr, "crash child: open %s: %s: %s\n", path, kv_errname(rc), errmsg);
        return 3;
    }
    uint8_t *value = malloc(VALUE_SIZE_BIG);
    if (value == NULL) {
        return 3;
    }
    struct stor_batch b;
    stor_batch_init(&b);
    for (uint64_t batch = first;; batch++) {
        char key[KEY_SIZE + 1];
        char last[24];
        stor_batch_clear(&b);
        for (unsigned i = 0; i < BATCH_KEYS; i++) {
            make_key(batch, i, key);
            make_value(batch, i, value);
            rc = stor_batch_put(&b, key, KEY_SIZE, value, value_size_of(batch));
            if (rc != KV_OK) {
                fprintf(stderr, "crash child: batch_put: %s\n", kv_errname(rc));
                return 3;
            }
        }
        if (batch > DELETE_LAG) {
            char from[KEY_SIZE + 1];
            char to[KEY_SIZE + 1];
            make_key(batch - DELETE_LAG, 0, from);
            make_key(batch - DELETE_LAG + 1, 0, to);
            if (stor_batch_delete_range(&b, from, KEY_SIZE, to, KEY_SIZE) != KV_OK) {
                return 3;
            }
        }
        int n = snprintf(last, sizeof last, "%llu", (unsigned long long)batch);
        if (stor_batch_put(&b, "last", 4, last, (size_t)n) != KV_OK) {
            return 3;
        }
        rc = stor_write(e, &b);
        if (rc != KV_OK) {
            fprintf(stderr, "crash child: write batch %llu: %s: %s\n", (unsigned long long)batch,
                    kv_errname(rc), stor_errmsg(e));
            return 3;
        }
        /* Acknowledged: stor_write returned, so it must survive a crash. */
        if (write(ack_fd, &batch, sizeof batch) != (ssize_t)sizeof batch) {
            return 3;
        }
        if (batch % COMPACT_EVERY == 0 && (rc = stor_compact(e)) != KV_OK) {
            fprintf(stderr, "crash child: compact: %s: %s\n", kv_errname(rc), stor_errmsg(e));
            return 3;
        }
    }
}

/* ---- the parent ------------------------------------------------------------ */

struct round_result {
    uint64_t acked_max; /* highest acknowledged batch this round (0: none) */
    int killed;         /* the child died of our SIGKILL */
};

/* Reads acknowledgements from `fd` until `deadline_ns` (or until the first
 * one when `until_first_ack`), keeping the highest in *acked_max. Returns 0
 * on EOF (the child ended by itself). */
static int read_acks(int fd, uint64_t deadline_ns, int until_first_ack, uint64_t *acked_max,
                     uint8_t *partial, size_t *partial_size)
{
    for (;;) {
        uint64_t now = kv_clock_ns();
        if (now >= deadline_ns || (until_first_ack && *acked_max != 0)) {
            return 1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int wait_ms = (int)((deadline_ns - now) / 1000000) + 1;
        if (poll(&p, 1, wait_ms) <= 0) {
            continue;
        }
        uint8_t buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            return 0;
        }
        for (ssize_t i = 0; i < n; i++) {
            partial[(*partial_size)++] = buf[i];
            if (*partial_size == sizeof(uint64_t)) {
                uint64_t b;
                memcpy(&b, partial, sizeof b);
                *acked_max = b > *acked_max ? b : *acked_max;
                *partial_size = 0;
            }
        }
    }
}

static int run_round(const char *engine, const char *path, uint64_t first, struct kv_rng *rng,
                     struct round_result *res)
{
    int p[2];
    char first_s[32];
    char fd_s[16];
    if (pipe(p) != 0) {
        perror("pipe");
        return -1;
    }
    snprintf(first_s, sizeof first_s, "%llu", (unsigned long long)first);
    snprintf(fd_s, sizeof fd_s, "%d", p[1]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        execl("/proc/self/exe", "test_storage_crash", "--child", engine, path, first_s, fd_s,
              (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    uint8_t partial[sizeof(uint64_t)];
    size_t partial_size = 0;
    int alive = 1;
    res->acked_max = 0;
    if (kv_rng_below(rng, KILL_EARLY_ONE_IN) == 0) {
        uint64_t delay = kv_rng_below(rng, KILL_EARLY_MS_MAX) * 1000000;
        alive = read_acks(p[0], kv_clock_ns() + delay, 0, &res->acked_max, partial, &partial_size);
    } else {
        uint64_t limit = kv_clock_ns() + (uint64_t)FIRST_ACK_TIMEOUT_MS * 1000000;
        alive = read_acks(p[0], limit, 1, &res->acked_max, partial, &partial_size);
        if (alive && res->acked_max != 0) {
            uint64_t delay = (1 + kv_rng_below(rng, KILL_DELAY_MS_MAX)) * 1000000;
            alive =
                read_acks(p[0], kv_clock_ns() + delay, 0, &res->acked_max, partial, &partial_size);
        }
    }
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    /* Everything the child wrote before dying is still in the pipe. */
    read_acks(p[0], UINT64_MAX, 0, &res->acked_max, partial, &partial_size);
    close(p[0]);
    res->killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (!res->killed) {
        fprintf(stderr, "FAIL: %s child ended by itself (%s %d) before the kill%s\n", engine,
                WIFSIGNALED(status) ? "signal" : "exit code",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                alive ? "" : " (pipe closed early)");
        return -1;
    }
    return 0;
}

/* Reopens and checks the content; on success *last_out is L. */
static int verify(const char *engine, const char *path, uint64_t prev_last, uint64_t acked_max,
                  uint64_t *last_out)
{
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    struct kv_buf v;
    int failed = 0;
    int rc = open_engine(engine, path, &e, errmsg);
    if (rc != KV_OK) {
        fprintf(stderr, "FAIL: %s: reopen after kill: %s: %s\n", engine, kv_errname(rc), errmsg);
        return -1;
    }
    kv_buf_init(&v);
    uint64_t last = 0;
    rc = stor_get(e, NULL, "last", 4, &v);
    if (rc == KV_OK) {
        char buf[32] = {0};
        memcpy(buf, v.data, v.size < sizeof buf - 1 ? v.size : sizeof buf - 1);
        last = strtoull(buf, NULL, 10);
    } else if (rc != KV_ENOTFOUND) {
        fprintf(stderr, "FAIL: %s: get last: %s: %s\n", engine, kv_errname(rc), stor_errmsg(e));
        failed = 1;
    }
    /* The child wrote prev_last+1, ...; acked ones must be there, and at
     * most the one in flight beyond them. */
    uint64_t floor = acked_max > prev_last ? acked_max : prev_last;
    if (last < floor || last > floor + 1) {
        fprintf(stderr,
                "FAIL: %s: last=%llu, but acknowledged up to %llu (previous round ended at %llu): "
                "%s\n",
                engine, (unsigned long long)last, (unsigned long long)acked_max,
                (unsigned long long)prev_last,
                last < floor ? "an acknowledged batch was lost" : "a batch appeared from nowhere");
        failed = 1;
    }
    /* One pass over everything: count each batch's keys and check values. */
    uint32_t *counts = calloc(last + 2, sizeof *counts);
    uint8_t *want = malloc(VALUE_SIZE_BIG);
    struct stor_iter *it = NULL;
    const uint8_t *k;
    const uint8_t *val;
    size_t ks;
    size_t vs;
    rc = stor_iter_new(e, NULL, NULL, 0, NULL, 0, &it);
    while (rc == KV_OK && (rc = stor_iter_next(it, &k, &ks, &val, &vs)) == KV_OK) {
        uint64_t batch;
        unsigned i;
        if (ks == 4 && memcmp(k, "last", 4) == 0) {
            continue;
        }
        if (!parse_key(k, ks, &batch, &i)) {
            fprintf(stderr, "FAIL: %s: unexpected key of %zu bytes\n", engine, ks);
            failed = 1;
            continue;
        }
        if (batch == 0 || batch > last || batch + DELETE_LAG <= last) {
            fprintf(stderr, "FAIL: %s: key %u of batch %llu present, but last=%llu: %s\n", engine,
                    i, (unsigned long long)batch, (unsigned long long)last,
                    batch > last ? "torn batch" : "a range-deleted batch came back");
            failed = 1;
            continue;
        }
        make_value(batch, i, want);
        if (vs != value_size_of(batch) || memcmp(val, want, vs) != 0) {
            fprintf(stderr, "FAIL: %s: key %u of batch %llu has a wrong value\n", engine, i,
                    (unsigned long long)batch);
            failed = 1;
        }
        counts[batch]++;
    }
    if (rc != KV_EOF) {
        fprintf(stderr, "FAIL: %s: iteration: %s: %s\n", engine, kv_errname(rc), stor_errmsg(e));
        failed = 1;
    }
    for (uint64_t b = last > DELETE_LAG ? last - DELETE_LAG + 1 : 1; b <= last; b++) {
        if (counts[b] != BATCH_KEYS) {
            fprintf(stderr, "FAIL: %s: batch %llu has %u of its %u keys (last=%llu): %s\n", engine,
                    (unsigned long long)b, counts[b], BATCH_KEYS, (unsigned long long)last,
                    counts[b] ? "torn batch" : "lost batch");
            failed = 1;
        }
    }
    stor_iter_free(it);
    free(counts);
    free(want);
    kv_buf_close(&v);
    stor_close(e);
    *last_out = last;
    return failed ? -1 : 0;
}

static int engine_available(const char *engine, const char *path)
{
    struct stor_engine *e;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = open_engine(engine, path, &e, errmsg);
    if (rc == KV_EUNSUPPORTED) {
        return 0;
    }
    if (rc != KV_OK) {
        fprintf(stderr, "cannot open %s: %s: %s\n", engine, kv_errname(rc), errmsg);
        exit(1);
    }
    stor_close(e);
    return 1;
}

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void remove_dir(const char *dir)
{
    nftw(dir, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--child") == 0) {
        return child_main(argv[2], argv[3], strtoull(argv[4], NULL, 10), atoi(argv[5]));
    }
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: test_storage_crash <engine> [seed] [budget_s]\n");
        return 2;
    }
    const char *engine = argv[1];
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    uint64_t budget_s = argc > 3 ? strtoull(argv[3], NULL, 10) : BUDGET_S_DEFAULT;
    char dir[PATH_SIZE_MAX];
    char path[PATH_SIZE_MAX];
    snprintf(dir, sizeof dir, "/tmp/conf-crash-%s-XXXXXX", engine);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/db", dir);
    if (!engine_available(engine, path)) {
        printf("engine %s is not built yet (KV_EUNSUPPORTED): skipped\n", engine);
        remove_dir(dir);
        return EXIT_SKIPPED;
    }
    printf("crash test: engine=%s seed=%llu budget=%llus dir=%s\n", engine,
           (unsigned long long)seed, (unsigned long long)budget_s, dir);
    struct kv_rng rng;
    kv_rng_seed(&rng, seed);
    uint64_t start = kv_clock_ns();
    uint64_t last = 0;
    int rounds = 0;
    int in_flight_landed = 0;
    int failed = 0;
    while (rounds < ROUNDS_MAX && kv_clock_ns() - start < budget_s * 1000000000ull) {
        struct round_result res;
        uint64_t new_last;
        rounds++;
        if (run_round(engine, path, last + 1, &rng, &res) != 0 ||
            verify(engine, path, last, res.acked_max, &new_last) != 0) {
            fprintf(stderr, "FAIL in round %d (seed %llu); data left in %s\n", rounds,
                    (unsigned long long)seed, dir);
            failed = 1;
            break;
        }
        uint64_t floor = res.acked_max > last ? res.acked_max : last;
        in_flight_landed += new_last > floor;
        printf("round %2d: acked up to %llu, recovered last=%llu%s\n", rounds,
               (unsigned long long)res.acked_max, (unsigned long long)new_last,
               new_last > floor ? " (in-flight batch landed)" : "");
        last = new_last;
    }
    printf("crash test %s: %s after %d rounds, %llu batches of %d keys, %d in-flight batches "
           "landed whole\n",
           engine, failed ? "FAILED" : "passed", rounds, (unsigned long long)last, BATCH_KEYS,
           in_flight_landed);
    if (!failed) {
        remove_dir(dir);
    }
    return failed;
}
