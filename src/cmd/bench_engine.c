/* bench_engine.c -- `raftkv bench-engine`: measures each storage engine
 * through the stor.h interface with three phases on a fresh directory:
 * load (N puts of random keys), get (N gets of random loaded keys) and mix
 * (N ops, half gets, half overwrites of random loaded keys). It prints
 * throughput and p50/p99 latency per phase and engine, and the engine's
 * disk bytes after the load.
 *
 * Values are random bytes (slices of a random pool at random offsets), so
 * engines that compress gain nothing from filler. Timing uses the
 * monotonic clock around each call; a phase's ops/s is its op count over
 * its wall time, which includes only the engine calls and two clock reads
 * per op (keys and value slices are chosen before the clock starts). */
#define _GNU_SOURCE /* nftw */
#include "cmd.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "clock.h"
#include "rng.h"
#include "stor.h"

#define OPS_DEFAULT        1000000ull
#define OPS_MAX            100000000ull /* latency samples are kept per op: bound memory */
#define KEY_SIZE_DEFAULT   16
#define VALUE_SIZE_DEFAULT 4080
/* Values are cut from one pool of random bytes, refilled never; a pool much
 * larger than a compression block defeats cross-value compression. */
#define VALUE_POOL_BYTES (64u * 1024u * 1024u)
#define PATH_SIZE_MAX    4096
#define PHASE_COUNT      3

enum phase { PHASE_LOAD = 0, PHASE_GET = 1, PHASE_MIX = 2 };
static const char *const phase_names[PHASE_COUNT] = {"load", "get", "mix"};

struct bench_options {
    const char *engine; /* one name, or "all" */
    uint64_t ops;
    size_t key_size;
    size_t value_size;
    enum stor_sync sync;
    const char *dir; /* parent of the per-engine temp dirs */
    uint64_t seed;
    int keep; /* keep the engine directories */
};

struct phase_result {
    uint64_t ops;
    uint64_t elapsed_ns;
    uint64_t p50_ns;
    uint64_t p99_ns;
};

/* Per-run working memory, shared by the engines in turn. */
struct bench_state {
    const struct bench_options *o;
    uint8_t *keys;     /* ops x key_size random bytes */
    uint8_t *pool;     /* VALUE_POOL_BYTES + value_size random bytes */
    uint32_t *lat_ns;  /* one latency sample per op of the current phase */
    uint64_t *picks;   /* per-op key index; bit 63 set for a put */
    uint64_t *offsets; /* per-op value offset into the pool */
    struct kv_rng rng;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: raftkv bench-engine [options]\n\n"
            "Benchmarks the storage engines through the engine interface. For each\n"
            "engine, on a fresh directory: N puts of random keys (load), N gets of\n"
            "random loaded keys (get), then N ops of a 50/50 get/overwrite mix (mix).\n"
            "Prints ops/s and p50/p99 latency (microseconds) per phase, and the\n"
            "engine's disk bytes after the load. Values are random bytes.\n\n"
            "options:\n"
            "  --engine E        rocksdb, leveldb, lmdb, bitcask, memory or all (default all)\n"
            "  --ops N           operations per phase (default %llu)\n"
            "  --key-size B      key bytes, 1..%u (default %d)\n"
            "  --value-size B    value bytes, 0..%u (default %d)\n"
            "  --sync MODE       none (default: writes are not fsynced, a crash may lose\n"
            "                    the newest ones) or always (fsync every put)\n"
            "  --dir D           where the engine directories go (default /tmp)\n"
            "  --seed S          seed of the key, value and op choices (default 1)\n"
            "  --keep            keep the engine directories instead of removing them\n"
            "  -h, --help        this help\n\n"
            "Exit status: 0 success, 1 an engine failed, 2 bad usage.\n",
            OPS_DEFAULT, STOR_KEY_SIZE_MAX, KEY_SIZE_DEFAULT, STOR_VALUE_SIZE_MAX,
            VALUE_SIZE_DEFAULT);
}

/* Parses a decimal integer in [min, max]; returns 0 on success. */
static int parse_u64(const char *flag, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0') {
        fprintf(stderr, "bench-engine: %s needs a number, got '%s'\n", flag, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        fprintf(stderr, "bench-engine: %s needs a number, got '%s'\n", flag, s);
        return -1;
    }
    if (v < min || v > max) {
        fprintf(stderr, "bench-engine: %s must be in [%llu, %llu], got %llu\n", flag,
                (unsigned long long)min, (unsigned long long)max, v);
        return -1;
    }
    *out = v;
    return 0;
}

static int engine_known(const char *name)
{
    const char *const *names = stor_engine_names();
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(names[i], name) == 0) {
            return 1;
        }
    }
    return strcmp(name, "all") == 0;
}

/* Fills `o` from argv. Returns 0 to run, 1 after --help, 2 on bad usage. */
static int parse_args(int argc, char **argv, struct bench_options *o)
{
    enum { OPT_ENGINE = 1, OPT_OPS, OPT_KEY, OPT_VALUE, OPT_SYNC, OPT_DIR, OPT_SEED, OPT_KEEP };
    static const struct option longs[] = {
        {"engine", required_argument, NULL, OPT_ENGINE},
        {"ops", required_argument, NULL, OPT_OPS},
        {"key-size", required_argument, NULL, OPT_KEY},
        {"value-size", required_argument, NULL, OPT_VALUE},
        {"sync", required_argument, NULL, OPT_SYNC},
        {"dir", required_argument, NULL, OPT_DIR},
        {"seed", required_argument, NULL, OPT_SEED},
        {"keep", no_argument, NULL, OPT_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t v;
    int c;
    *o = (struct bench_options){.engine = "all",
                                .ops = OPS_DEFAULT,
                                .key_size = KEY_SIZE_DEFAULT,
                                .value_size = VALUE_SIZE_DEFAULT,
                                .sync = STOR_SYNC_NONE,
                                .dir = "/tmp",
                                .seed = 1};
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
        switch (c) {
        case OPT_ENGINE:
            if (!engine_known(optarg)) {
                fprintf(stderr,
                        "bench-engine: unknown engine '%s' (valid: rocksdb, leveldb, lmdb, "
                        "bitcask, memory, all)\n",
                        optarg);
                return 2;
            }
            o->engine = optarg;
            break;
        case OPT_OPS:
            if (parse_u64("--ops", optarg, 1, OPS_MAX, &o->ops) != 0) {
                return 2;
            }
            break;
        case OPT_KEY:
            if (parse_u64("--key-size", optarg, 1, STOR_KEY_SIZE_MAX, &v) != 0) {
                return 2;
            }
            o->key_size = (size_t)v;
            break;
        case OPT_VALUE:
            if (parse_u64("--value-size", optarg, 0, STOR_VALUE_SIZE_MAX, &v) != 0) {
                return 2;
            }
            o->value_size = (size_t)v;
            break;
        case OPT_SYNC:
            if (strcmp(optarg, "none") == 0) {
                o->sync = STOR_SYNC_NONE;
            } else if (strcmp(optarg, "always") == 0) {
                o->sync = STOR_SYNC_ALWAYS;
            } else {
                fprintf(stderr, "bench-engine: --sync must be none or always, got '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_DIR:
            o->dir = optarg;
            break;
        case OPT_SEED:
            if (parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed) != 0) {
                return 2;
            }
            break;
        case OPT_KEEP:
            o->keep = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "bench-engine: %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "bench-engine: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench-engine: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts the samples and reads the percentiles off them. */
static void summarize(struct bench_state *s, uint64_t ops, uint64_t elapsed_ns,
                      struct phase_result *r)
{
    qsort(s->lat_ns, ops, sizeof *s->lat_ns, cmp_u32);
    r->ops = ops;
    r->elapsed_ns = elapsed_ns ? elapsed_ns : 1;
    r->p50_ns = s->lat_ns[ops * 50 / 100];
    r->p99_ns = s->lat_ns[ops * 99 / 100];
}

static uint32_t clamp_ns(uint64_t ns)
{
    return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static const uint8_t *key_at(const struct bench_state *s, uint64_t i)
{
    return s->keys + i * s->o->key_size;
}

/* Chooses, before the clock starts, the key index and value offset of
 * every op; picks[i] has bit 63 set for a put in the mix phase. */
static void plan_phase(struct bench_state *s, enum phase ph)
{
    uint64_t n = s->o->ops;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t key = ph == PHASE_LOAD ? i : kv_rng_below(&s->rng, n);
        int put = ph == PHASE_LOAD || (ph == PHASE_MIX && (kv_rng_next(&s->rng) & 1));
        s->picks[i] = key | (put ? 1ull << 63 : 0);
        s->offsets[i] = kv_rng_below(&s->rng, VALUE_POOL_BYTES / 8) * 8;
    }
}

static int run_phase(struct bench_state *s, struct stor_engine *e, enum phase ph,
                     struct phase_result *r)
{
    const struct bench_options *o = s->o;
    struct kv_buf value;
    kv_buf_init(&value);
    plan_phase(s, ph);
    uint64_t start = kv_clock_ns();
    for (uint64_t i = 0; i < o->ops; i++) {
        uint64_t key = s->picks[i] & ~(1ull << 63);
        int put = (s->picks[i] >> 63) != 0;
        uint64_t t0 = kv_clock_ns();
        int rc =
            put ? stor_put(e, key_at(s, key), o->key_size, s->pool + s->offsets[i], o->value_size)
                : stor_get(e, NULL, key_at(s, key), o->key_size, &value);
        uint64_t t1 = kv_clock_ns();
        if (rc != KV_OK) {
            fprintf(stderr, "bench-engine: %s: %s op %llu (%s): %s: %s\n", stor_name(e),
                    phase_names[ph], (unsigned long long)i, put ? "put" : "get", kv_errname(rc),
                    stor_errmsg(e));
            kv_buf_close(&value);
            return rc;
        }
        s->lat_ns[i] = clamp_ns(t1 - t0);
    }
    uint64_t elapsed = kv_clock_ns() - start;
    kv_buf_close(&value);
    summarize(s, o->ops, elapsed, r);
    return KV_OK;
}

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void print_row(const char *engine, const char *phase, const struct phase_result *r,
                      const char *disk)
{
    double secs = (double)r->elapsed_ns / 1e9;
    printf("| %-8s | %-5s | %10llu | %10.0f | %8.1f | %8.1f | %15s |\n", engine, phase,
           (unsigned long long)r->ops, (double)r->ops / secs, (double)r->p50_ns / 1000.0,
           (double)r->p99_ns / 1000.0, disk);
    fflush(stdout);
}

/* Benchmarks one engine; returns 0, or 1 when it failed. */
static int bench_one(struct bench_state *s, const char *name)
{
    const struct bench_options *o = s->o;
    char dir[PATH_SIZE_MAX];
    char path[PATH_SIZE_MAX];
    char errmsg[KV_ERRMSG_SIZE];
    struct stor_engine *e;
    struct stor_options so;
    struct phase_result res[PHASE_COUNT];
    int failed = 0;

    snprintf(dir, sizeof dir, "%s/raftkv-bench-%s-XXXXXX", o->dir, name);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "bench-engine: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/db", dir);
    stor_options_init(&so);
    so.path = path;
    so.sync = o->sync;
    int rc = stor_open(name, &so, &e, errmsg);
    if (rc == KV_EUNSUPPORTED) {
        printf("| %-8s | (not built yet: skipped)%*s|\n", name, 57, "");
        goto out_dir;
    }
    if (rc != KV_OK) {
        fprintf(stderr, "bench-engine: open %s: %s: %s\n", name, kv_errname(rc), errmsg);
        failed = 1;
        goto out_dir;
    }
    for (int ph = 0; ph < PHASE_COUNT && !failed; ph++) {
        failed = run_phase(s, e, (enum phase)ph, &res[ph]) != KV_OK;
        char disk[32] = "";
        if (!failed && ph == PHASE_LOAD) {
            struct stor_stats st;
            if (stor_stats(e, &st) == KV_OK) {
                snprintf(disk, sizeof disk, "%.1f MiB", (double)st.disk_bytes / 1048576.0);
            }
        }
        if (!failed) {
            print_row(name, phase_names[ph], &res[ph], disk);
        }
    }
    stor_close(e);
out_dir:
    if (o->keep) {
        printf("# %s: kept %s\n", name, dir);
    } else {
        nftw(dir, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
    }
    return failed;
}

/* Allocates the working memory and draws the keys and the value pool. */
static int state_init(struct bench_state *s, const struct bench_options *o)
{
    memset(s, 0, sizeof *s);
    s->o = o;
    kv_rng_seed(&s->rng, o->seed);
    s->keys = kv_malloc(o->ops * o->key_size);
    s->pool = kv_malloc(VALUE_POOL_BYTES + o->value_size);
    s->lat_ns = kv_malloc(o->ops * sizeof *s->lat_ns);
    s->picks = kv_malloc(o->ops * sizeof *s->picks);
    s->offsets = kv_malloc(o->ops * sizeof *s->offsets);
    if (!s->keys || !s->pool || !s->lat_ns || !s->picks || !s->offsets) {
        return KV_ENOMEM;
    }
    kv_rng_fill(&s->rng, s->keys, o->ops * o->key_size);
    kv_rng_fill(&s->rng, s->pool, VALUE_POOL_BYTES + o->value_size);
    return KV_OK;
}

static void state_close(struct bench_state *s)
{
    kv_free(s->keys);
    kv_free(s->pool);
    kv_free(s->lat_ns);
    kv_free(s->picks);
    kv_free(s->offsets);
}

int cmd_bench_engine(int argc, char **argv)
{
    struct bench_options o;
    struct bench_state s;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) {
        return rc == 1 ? 0 : 2;
    }
    if (state_init(&s, &o) != KV_OK) {
        fprintf(stderr, "bench-engine: out of memory for %llu ops\n", (unsigned long long)o.ops);
        state_close(&s);
        return 1;
    }
    printf("# bench-engine: ops=%llu per phase, key-size=%zu, value-size=%zu, sync=%s%s, "
           "seed=%llu, dir=%s\n",
           (unsigned long long)o.ops, o.key_size, o.value_size,
           o.sync == STOR_SYNC_NONE ? "none" : "always",
           o.sync == STOR_SYNC_NONE ? " (puts are not fsynced; --sync always to fsync each)" : "",
           (unsigned long long)o.seed, o.dir);
    printf(
        "| engine   | phase |        ops |      ops/s |   p50 us |   p99 us | disk after load |\n"
        "|----------|-------|-----------:|-----------:|---------:|---------:|----------------:|\n");
    int failures = 0;
    const char *const *names = stor_engine_names();
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(o.engine, "all") == 0 || strcmp(o.engine, names[i]) == 0) {
            failures += bench_one(&s, names[i]);
        }
    }
    state_close(&s);
    return failures ? 1 : 0;
}
