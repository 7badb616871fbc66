/* test_wal_crash.c -- the crash test: a child process appends to several
 * groups from several threads with sync=always and reports through a pipe
 * every write the WAL acknowledged; the parent kills it with SIGKILL at a
 * random moment, reopens the log and checks that every acknowledged entry,
 * hard state and compaction survived, and that each group's log is one
 * contiguous run of intact entries (nothing after a gap). The next child
 * continues from the recovered log, so the log grows across many crashes,
 * rotating segments and collecting garbage on the way.
 *
 * Usage: test_wal_crash [iterations] [seed] */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "rng.h"
#include "wal.h"
#include "wal_test_util.h"

#define GROUPS       8
#define THREADS      4
#define KEEP_ENTRIES 60 /* a group compacts to keep about this many */

/* What the child reports after each acknowledged write. */
struct ack {
    uint64_t group;
    uint64_t last;   /* entries up to here are durable */
    uint64_t commit; /* hard state commit durable */
};

struct child_thread {
    struct wal *w;
    int fd;
    int index;
    uint64_t seed;
};

static int fail(const char *what, int rc)
{
    fprintf(stderr, "crash test: %s: %s\n", what, kv_strerror(rc));
    return 1;
}

/* One write to group g: a few entries, sometimes a hard state, sometimes a
 * compaction mark. */
static int child_step(struct wal *w, struct kv_rng *r, uint64_t g, uint64_t *last, int fd)
{
    static const uint64_t term = 1;
    uint8_t bufs[4][300];
    struct wal_entry e[4];
    size_t n = 1 + (size_t)kv_rng_below(r, 4);
    for (size_t i = 0; i < n; i++) {
        uint64_t idx = *last + 1 + i;
        size_t size = tw_size(g, idx);
        tw_fill(bufs[i], size, g, idx, term);
        e[i] = (struct wal_entry){.index = idx, .term = term, .data = bufs[i], .size = size};
    }
    struct wal_batch b;
    wal_batch_init(&b);
    int rc = wal_batch_entries(&b, g, e, n);
    struct wal_hard_state hs = {.term = term, .vote = 1, .commit = *last + n};
    if (rc == KV_OK) {
        rc = wal_batch_hard_state(&b, g, &hs);
    }
    if (rc == KV_OK && *last + n > KEEP_ENTRIES && kv_rng_below(r, 4) == 0) {
        rc = wal_batch_compact(&b, g, *last + n - KEEP_ENTRIES, term);
    }
    if (rc == KV_OK) {
        rc = wal_write(w, &b);
    }
    wal_batch_close(&b);
    if (rc != KV_OK) {
        return rc;
    }
    *last += n;
    struct ack a = {.group = g, .last = *last, .commit = hs.commit};
    if (write(fd, &a, sizeof a) != (ssize_t)sizeof a) {
        return KV_EIO;
    }
    return KV_OK;
}

static void *child_thread_main(void *p)
{
    struct child_thread *t = p;
    struct kv_rng r;
    kv_rng_seed(&r, t->seed);
    uint64_t last[GROUPS / THREADS];
    for (int k = 0; k < GROUPS / THREADS; k++) {
        struct wal_group_state st;
        uint64_t g = (uint64_t)(t->index * (GROUPS / THREADS) + k);
        last[k] = wal_group_state(t->w, g, &st) == KV_OK ? st.last_index : 0;
    }
    for (;;) {
        int k = (int)kv_rng_below(&r, GROUPS / THREADS);
        uint64_t g = (uint64_t)(t->index * (GROUPS / THREADS) + k);
        int rc = child_step(t->w, &r, g, &last[k], t->fd);
        if (rc != KV_OK) {
            fail("child write", rc);
            _exit(3);
        }
    }
    return NULL;
}

static void child_main(const char *dir, int fd, uint64_t seed)
{
    struct wal_options o;
    wal_options_init(&o, dir);
    o.segment_bytes = 32 * 1024; /* rotate and collect often */
    struct wal *w;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = wal_open(&o, &w, errmsg);
    if (rc != KV_OK) {
        fprintf(stderr, "crash test child: open: %s\n", errmsg);
        _exit(2);
    }
    pthread_t th[THREADS];
    struct child_thread t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        t[i] = (struct child_thread){.w = w, .fd = fd, .index = i, .seed = seed * 31 + (uint64_t)i};
        pthread_create(&th[i], NULL, child_thread_main, &t[i]);
    }
    pthread_join(th[0], NULL); /* never returns: the parent kills us */
    _exit(4);
}

/* Reopens the log and checks it against what was acknowledged. */
static int verify(const char *dir, const uint64_t *acked_last, const uint64_t *acked_commit)
{
    struct wal_options o;
    wal_options_init(&o, dir);
    o.segment_bytes = 32 * 1024;
    struct wal *w;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = wal_open(&o, &w, errmsg);
    if (rc != KV_OK) {
        fprintf(stderr, "crash test: reopen: %s\n", errmsg);
        return 1;
    }
    struct wal_read rd;
    wal_read_init(&rd);
    int bad = 0;
    for (uint64_t g = 0; g < GROUPS && !bad; g++) {
        struct wal_group_state st;
        if (wal_group_state(w, g, &st) != KV_OK) {
            bad = acked_last[g] > 0;
            continue;
        }
        if (st.last_index < acked_last[g] || st.hard_state.commit < acked_commit[g]) {
            fprintf(stderr, "group %" PRIu64 ": last %" PRIu64 " < acked %" PRIu64 "\n", g,
                    st.last_index, acked_last[g]);
            bad = 1;
            break;
        }
        uint64_t next = st.first_index;
        while (next <= st.last_index && !bad) {
            rc = wal_entries(w, g, next, st.last_index + 1, 1 << 20, &rd);
            bad = rc != KV_OK;
            for (size_t i = 0; i < rd.count && !bad; i++) {
                bad = rd.entries[i].index != next || !tw_check(&rd.entries[i], g, tw_size(g, next));
                next++;
            }
        }
        if (bad) {
            fprintf(stderr, "group %" PRIu64 ": entry %" PRIu64 " missing or wrong\n", g, next);
        }
    }
    wal_read_close(&rd);
    wal_close(w);
    return bad;
}

int main(int argc, char **argv)
{
    int iterations = argc > 1 ? atoi(argv[1]) : 40;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 10) : (uint64_t)time(NULL);
    printf("crash test: iterations=%d seed=%" PRIu64 "\n", iterations, seed);
    char dir[64];
    tw_mkdtemp(dir);
    struct kv_rng r;
    kv_rng_seed(&r, seed);
    uint64_t acked_last[GROUPS] = {0};
    uint64_t acked_commit[GROUPS] = {0};
    uint64_t acks = 0;
    int rc = 0;
    for (int it = 0; it < iterations && rc == 0; it++) {
        int fds[2];
        if (pipe(fds) != 0) {
            return fail("pipe", KV_EIO);
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            child_main(dir, fds[1], seed + (uint64_t)it);
        }
        close(fds[1]);
        /* Drain acks while the child runs, then kill it at a random time. */
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
        uint64_t deadline = (uint64_t)(5 + kv_rng_below(&r, 150)) * 1000;
        struct ack a;
        for (uint64_t waited = 0;; waited += 1000) {
            ssize_t n;
            while ((n = read(fds[0], &a, sizeof a)) == (ssize_t)sizeof a) {
                acked_last[a.group] = a.last > acked_last[a.group] ? a.last : acked_last[a.group];
                acked_commit[a.group] =
                    a.commit > acked_commit[a.group] ? a.commit : acked_commit[a.group];
                acks++;
            }
            if (waited >= deadline) {
                break;
            }
            usleep(1000);
        }
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status)) {
            fprintf(stderr, "crash test: child exited by itself, status %d\n", status);
            rc = 1;
        }
        fcntl(fds[0], F_SETFL, 0);
        while (read(fds[0], &a, sizeof a) == (ssize_t)sizeof a) {
            acked_last[a.group] = a.last > acked_last[a.group] ? a.last : acked_last[a.group];
            acked_commit[a.group] =
                a.commit > acked_commit[a.group] ? a.commit : acked_commit[a.group];
            acks++;
        }
        close(fds[0]);
        if (rc == 0) {
            rc = verify(dir, acked_last, acked_commit);
        }
        if (rc != 0) {
            fprintf(stderr, "crash test: FAILED at iteration %d, seed %" PRIu64 ", dir %s kept\n",
                    it, seed, dir);
            return 1;
        }
    }
    printf("crash test: ok, %" PRIu64 " acknowledged writes, segments now %d\n", acks,
           tw_count_segments(dir));
    tw_rmdir(dir);
    return 0;
}
