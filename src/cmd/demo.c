/* demo.c -- `raftkv demo`. Until the server and proxy exist (issues 5 and
 * 6) the demo is a storage smoke run: it opens every engine in a fresh
 * directory, writes and reads keys through the engine interface, moves a
 * snapshot stream from each engine into the memory engine, and prints what
 * it saw. It says plainly that the local cluster is still to come. */
#include "cmd.h"
#include "clock.h"
#include "stor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEMO_KEYS 10000

static void demo_usage(FILE *out)
{
    fprintf(out, "usage: raftkv demo [--dir DIR]\n\n"
                 "For now: a storage smoke run over every engine (the 3-node cluster with a\n"
                 "Redis-protocol proxy arrives with the proxy issue). --dir chooses the data\n"
                 "directory (default: a fresh one under /tmp, removed afterwards).\n");
}

/* Writes DEMO_KEYS keys in batches, reads them back, and checks a snapshot
 * stream into a memory engine has the same count. Returns 0 when all is well. */
static int smoke_engine(const char *name, const char *dir)
{
    char path[4096];
    char errmsg[KV_ERRMSG_SIZE];
    struct stor_options o;
    struct stor_engine *e = NULL;
    struct stor_engine *mem = NULL;
    struct stor_batch b;
    struct kv_buf value;
    int rc;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    stor_options_init(&o);
    o.path = path;
    o.sync = STOR_SYNC_NONE;
    rc = stor_open(name, &o, &e, errmsg);
    if (rc != KV_OK) {
        printf("  %-8s  unavailable: %s\n", name, errmsg);
        return 1;
    }
    stor_batch_init(&b);
    kv_buf_init(&value);
    uint64_t t0 = kv_clock_ns();
    for (int i = 0; i < DEMO_KEYS && rc == KV_OK; i++) {
        char k[32];
        char v[64];
        int kn = snprintf(k, sizeof k, "key:%06d", i);
        int vn = snprintf(v, sizeof v, "value of key %d on %s", i, name);
        rc = stor_batch_put(&b, k, (size_t)kn, v, (size_t)vn);
        if (rc == KV_OK && b.count == 100) {
            rc = stor_write(e, &b);
            stor_batch_clear(&b);
        }
    }
    uint64_t t1 = kv_clock_ns();
    int found = 0;
    for (int i = 0; i < DEMO_KEYS && rc == KV_OK; i++) {
        char k[32];
        int kn = snprintf(k, sizeof k, "key:%06d", i);
        if (stor_get(e, NULL, k, (size_t)kn, &value) == KV_OK) {
            found++;
        }
    }
    uint64_t t2 = kv_clock_ns();
    uint64_t streamed = 0;
    if (rc == KV_OK) {
        struct stor_options mo;
        stor_options_init(&mo);
        rc = stor_open("memory", &mo, &mem, errmsg);
    }
    if (rc == KV_OK) {
        struct stor_export *x = NULL;
        struct stor_ingest *in = NULL;
        struct kv_buf chunk;
        kv_buf_init(&chunk);
        rc = stor_export_new(e, NULL, NULL, 0, NULL, 0, 64 * 1024, &x);
        if (rc == KV_OK) {
            rc = stor_ingest_new(mem, NULL, 0, NULL, 0, &in);
        }
        while (rc == KV_OK && (rc = stor_export_next(x, &chunk)) == KV_OK) {
            rc = stor_ingest_chunk(in, chunk.data, chunk.size);
        }
        if (rc == KV_EOF) {
            rc = stor_ingest_finish(in);
        }
        struct stor_stats st;
        if (rc == KV_OK && stor_stats(mem, &st) == KV_OK) {
            streamed = st.key_count;
        }
        stor_export_free(x);
        stor_ingest_free(in);
        kv_buf_close(&chunk);
    }
    printf("  %-8s  wrote %d keys in %.1f ms, read back %d in %.1f ms, snapshot stream "
           "moved %llu keys%s%s\n",
           name, DEMO_KEYS, (double)(t1 - t0) / 1e6, found, (double)(t2 - t1) / 1e6,
           (unsigned long long)streamed,
           rc == KV_OK ? "" : " -- error: ", rc == KV_OK ? "" : stor_errmsg(e));
    int bad = rc != KV_OK || found != DEMO_KEYS || streamed != DEMO_KEYS;
    stor_close(mem);
    stor_close(e);
    stor_batch_close(&b);
    kv_buf_close(&value);
    return bad;
}

int cmd_demo(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            demo_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else {
            fprintf(stderr, "demo: unknown or incomplete option '%s'\n", argv[i]);
            demo_usage(stderr);
            return 2;
        }
    }
    char tmp[] = "/tmp/raftkv-demo-XXXXXX";
    int owned = dir == NULL;
    if (owned && (dir = mkdtemp(tmp)) == NULL) {
        perror("demo: mkdtemp");
        return 1;
    }
    printf("RaftKV demo: the cluster (3 servers + a Redis-protocol proxy) is not built yet;\n"
           "this is a smoke run of the storage engines in %s\n\n",
           dir);
    int failures = 0;
    for (const char *const *n = stor_engine_names(); *n != NULL; n++) {
        failures += smoke_engine(*n, dir);
    }
    if (owned) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "demo: could not remove %s\n", dir);
        }
    }
    printf("\n%s\n", failures ? "some engines failed (see above)" : "all engines OK");
    return failures ? 1 : 0;
}
