/* bench_wal.c -- `raftkv bench-wal`: appends per second and MB/s of the
 * shared Raft log for 1, 8 and 64 concurrent groups (one writer thread per
 * group, one entry per write, as a Raft group's ready batch would be), next
 * to the raw disk measured in the same run: sequential writes of the same
 * size as one ideally coalesced WAL write, each followed by fdatasync. That
 * raw figure is the physical limit the WAL is compared with. */
#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "wal.h"

#define BENCH_GROUPS_MAX      1024 /* threads one run may start */
#define BENCH_CONFIGS_MAX     8    /* entries of --groups */
#define BENCH_ENTRY_BYTES_MAX (1u << 20)
#define BENCH_KEEP_ENTRIES    1024 /* each group compacts to keep this many */

struct bench_opts {
    const char *dir;
    double seconds;
    size_t entry_bytes;
    int groups[BENCH_CONFIGS_MAX];
    int configs;
    enum wal_sync sync;
    int raw;     /* also measure the raw disk */
    int rounds;  /* WAL and raw runs alternate this many times */
    int writers; /* writer threads; 0: one per group */
};

struct bench_thread {
    pthread_t tid;
    struct wal *w;
    uint64_t group; /* first group this thread writes */
    int groups;     /* groups it writes, one entry each per wal_write */
    size_t entry_bytes;
    atomic_int *stop;
    uint64_t appends;
    int rc;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: raftkv bench-wal [options]\n\n"
                 "Measures the shared Raft log: appends/s and MB/s for N concurrent groups,\n"
                 "each writing one entry per write, next to the raw disk (sequential\n"
                 "pwrite + fdatasync of the same size as one coalesced write).\n\n"
                 "options:\n"
                 "  --dir DIR          scratch directory (default /tmp/raftkv-bench-wal)\n"
                 "  --seconds S        seconds per measurement (default 3)\n"
                 "  --rounds N         alternate WAL and raw runs N times (default 3), so\n"
                 "                     that a disk whose speed drifts is compared fairly\n"
                 "  --entry-bytes N    payload bytes per entry (default 4096)\n"
                 "  --groups A,B,..    concurrent groups per run (default 1,8,64)\n"
                 "  --sync POLICY      always (default), batch or none\n"
                 "  --writers N        writer threads sharing the groups, each wal_write\n"
                 "                     carrying one entry per group of the thread\n"
                 "                     (default: one thread per group; 1 is how the Raft\n"
                 "                     driver writes: all groups' ready in one batch)\n"
                 "  --no-raw           skip the raw disk measurement\n");
}

static int parse_groups(const char *s, struct bench_opts *o)
{
    o->configs = 0;
    char *end;
    while (*s != '\0') {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > BENCH_GROUPS_MAX || o->configs == BENCH_CONFIGS_MAX) {
            return -1;
        }
        o->groups[o->configs++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') {
            return -1;
        }
    }
    return o->configs > 0 ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct bench_opts *o)
{
    *o = (struct bench_opts){.dir = "/tmp/raftkv-bench-wal",
                             .seconds = 3,
                             .entry_bytes = 4096,
                             .groups = {1, 8, 64},
                             .configs = 3,
                             .sync = WAL_SYNC_ALWAYS,
                             .raw = 1,
                             .rounds = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--no-raw") == 0) {
            o->raw = 0;
        } else if (v == NULL) {
            return -1;
        } else if (strcmp(a, "--dir") == 0) {
            o->dir = v;
            i++;
        } else if (strcmp(a, "--seconds") == 0) {
            o->seconds = atof(v);
            i++;
        } else if (strcmp(a, "--writers") == 0) {
            o->writers = atoi(v);
            i++;
        } else if (strcmp(a, "--rounds") == 0) {
            o->rounds = atoi(v);
            i++;
        } else if (strcmp(a, "--entry-bytes") == 0) {
            o->entry_bytes = (size_t)strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--groups") == 0) {
            if (parse_groups(v, o) != 0) {
                return -1;
            }
            i++;
        } else if (strcmp(a, "--sync") == 0) {
            if (wal_sync_parse(v, &o->sync) != KV_OK) {
                return -1;
            }
            i++;
        } else {
            return -1;
        }
    }
    if (o->seconds <= 0 || o->writers < 0 || o->writers > BENCH_GROUPS_MAX || o->rounds < 1 ||
        o->rounds > 100 || o->entry_bytes == 0 || o->entry_bytes > BENCH_ENTRY_BYTES_MAX) {
        return -1;
    }
    return 0;
}

/* Removes the files of a flat directory and the directory. */
static void clean_dir(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench-wal: could not remove %s\n", dir);
    }
}

static void *writer_main(void *p)
{
    struct bench_thread *t = p;
    uint8_t *payload = kv_malloc(t->entry_bytes);
    struct wal_batch b;
    wal_batch_init(&b);
    t->rc = payload ? KV_OK : KV_ENOMEM;
    if (payload != NULL) {
        memset(payload, (int)(t->group & 0xff), t->entry_bytes);
    }
    uint64_t index = 0;
    while (t->rc == KV_OK && !atomic_load_explicit(t->stop, memory_order_relaxed)) {
        index++;
        struct wal_entry e = {.index = index, .term = 1, .data = payload, .size = t->entry_bytes};
        struct wal_hard_state hs = {.term = 1, .vote = 1, .commit = index};
        wal_batch_clear(&b);
        for (int k = 0; k < t->groups && t->rc == KV_OK; k++) {
            uint64_t g = t->group + (uint64_t)k;
            t->rc = wal_batch_entries(&b, g, &e, 1);
            if (t->rc == KV_OK) {
                t->rc = wal_batch_hard_state(&b, g, &hs);
            }
            if (t->rc == KV_OK && index > BENCH_KEEP_ENTRIES && index % 256 == 0) {
                t->rc = wal_batch_compact(&b, g, index - BENCH_KEEP_ENTRIES, 1);
            }
        }
        if (t->rc == KV_OK) {
            t->rc = wal_write(t->w, &b);
        }
        t->appends += t->rc == KV_OK ? (uint64_t)t->groups : 0;
    }
    wal_batch_close(&b);
    kv_free(payload);
    return NULL;
}

struct result {
    double appends_per_s;
    double mb_per_s;
    double syncs_per_s;
    uint64_t min_appends;
    uint64_t max_appends;
};

static int run_wal(const struct bench_opts *o, int groups, struct result *res)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/wal-%d", o->dir, groups);
    clean_dir(dir);
    struct wal_options wo;
    wal_options_init(&wo, dir);
    wo.sync = o->sync;
    wo.batch_delay_us = 1000;
    struct wal *w;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = wal_open(&wo, &w, errmsg);
    if (rc != KV_OK) {
        fprintf(stderr, "bench-wal: open %s: %s\n", dir, errmsg);
        return 1;
    }
    int threads = o->writers > 0 && o->writers < groups ? o->writers : groups;
    struct bench_thread *t = kv_calloc((size_t)threads, sizeof *t);
    atomic_int stop = 0;
    struct wal_stats s0, s1;
    wal_stats(w, &s0);
    uint64_t t0 = kv_clock_ns();
    for (int i = 0, next = 1; t != NULL && i < threads; i++) {
        int share = groups / threads + (i < groups % threads);
        t[i] = (struct bench_thread){.w = w,
                                     .group = (uint64_t)next,
                                     .groups = share,
                                     .entry_bytes = o->entry_bytes,
                                     .stop = &stop};
        next += share;
        pthread_create(&t[i].tid, NULL, writer_main, &t[i]);
    }
    usleep((useconds_t)(o->seconds / o->rounds * 1e6));
    atomic_store(&stop, 1);
    uint64_t total = 0;
    res->min_appends = UINT64_MAX;
    res->max_appends = 0;
    for (int i = 0; t != NULL && i < threads; i++) {
        pthread_join(t[i].tid, NULL);
        if (t[i].rc != KV_OK) {
            fprintf(stderr, "bench-wal: write: %s\n", kv_strerror(t[i].rc));
            rc = t[i].rc;
        }
        total += t[i].appends;
        res->min_appends = t[i].appends < res->min_appends ? t[i].appends : res->min_appends;
        res->max_appends = t[i].appends > res->max_appends ? t[i].appends : res->max_appends;
    }
    double secs = (double)(kv_clock_ns() - t0) / 1e9;
    wal_stats(w, &s1);
    res->appends_per_s = (double)total / secs;
    res->mb_per_s = (double)total * (double)o->entry_bytes / secs / 1e6;
    res->syncs_per_s = (double)(s1.syncs - s0.syncs) / secs;
    wal_close(w);
    kv_free(t);
    clean_dir(dir);
    return t == NULL || rc != KV_OK;
}

/* Sequential pwrite of `size` bytes + fdatasync, for o->seconds. */
static int run_raw(const struct bench_opts *o, size_t size, double *mb_per_s, double *syncs_per_s)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/raw", o->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    uint8_t *buf = kv_malloc(size);
    if (fd < 0 || buf == NULL) {
        fprintf(stderr, "bench-wal: raw %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        kv_free(buf);
        return 1;
    }
    memset(buf, 0x5a, size);
    uint64_t t0 = kv_clock_ns();
    uint64_t until = t0 + (uint64_t)(o->seconds / o->rounds * 1e9);
    uint64_t n = 0;
    int rc = 0;
    for (uint64_t off = 0; kv_clock_ns() < until; off += size, n++) {
        if (pwrite(fd, buf, size, (off_t)off) != (ssize_t)size || fdatasync(fd) != 0) {
            fprintf(stderr, "bench-wal: raw write: %s\n", strerror(errno));
            rc = 1;
            break;
        }
    }
    double secs = (double)(kv_clock_ns() - t0) / 1e9;
    *mb_per_s = (double)n * (double)size / secs / 1e6;
    *syncs_per_s = (double)n / secs;
    close(fd);
    unlink(path);
    kv_free(buf);
    return rc;
}

int cmd_bench_wal(int argc, char **argv)
{
    struct bench_opts o;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (mkdir(o.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench-wal: mkdir %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    printf("bench-wal: dir=%s entry_bytes=%zu seconds=%.1f rounds=%d sync=%s writers=%s\n", o.dir,
           o.entry_bytes, o.seconds, o.rounds, wal_sync_name(o.sync),
           o.writers ? "given" : "one per group");
    printf("%7s %12s %9s %9s %9s %11s %11s %8s\n", "groups", "appends/s", "MB/s", "fsync/s",
           "fairness", "raw MB/s", "raw fsync/s", "vs raw");
    int rc = 0;
    for (int i = 0; i < o.configs && rc == 0; i++) {
        /* Rates are averaged over rounds of equal length; fairness is the
         * worst ratio of the slowest group's appends to the fastest's. */
        struct result sum = {0};
        double fairness = 1;
        double raw_mb = 0;
        double raw_syncs = 0;
        for (int k = 0; k < o.rounds && rc == 0; k++) {
            struct result r;
            rc = run_wal(&o, o.groups[i], &r);
            sum.appends_per_s += r.appends_per_s / o.rounds;
            sum.mb_per_s += r.mb_per_s / o.rounds;
            sum.syncs_per_s += r.syncs_per_s / o.rounds;
            double f = r.max_appends ? (double)r.min_appends / (double)r.max_appends : 0;
            fairness = f < fairness ? f : fairness;
            if (rc == 0 && o.raw) {
                /* The ideal: every group's entry in one write and one sync. */
                double mb, syncs;
                rc = run_raw(&o, (size_t)o.groups[i] * o.entry_bytes, &mb, &syncs);
                raw_mb += mb / o.rounds;
                raw_syncs += syncs / o.rounds;
            }
        }
        if (rc == 0) {
            printf("%7d %12.0f %9.2f %9.0f %9.2f %11.2f %11.0f %7.0f%%\n", o.groups[i],
                   sum.appends_per_s, sum.mb_per_s, sum.syncs_per_s, fairness, raw_mb, raw_syncs,
                   raw_mb > 0 ? 100 * sum.mb_per_s / raw_mb : 0);
            fflush(stdout);
        }
    }
    if (rmdir(o.dir) != 0 && errno != ENOENT) {
        /* left in place when the user pointed us at a non-empty directory */
    }
    return rc;
}
