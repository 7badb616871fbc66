/* wal_test_util.h -- helpers shared by the WAL tests: scratch directories
 * under /tmp, and deterministic payloads that a reader can verify without
 * remembering what was written. */
#ifndef KV_WAL_TEST_UTIL_H
#define KV_WAL_TEST_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wal.h"

/* Longest payload the helpers build. */
#define TW_PAYLOAD_MAX 65536

/* Makes a fresh scratch directory; `out` must hold 64 bytes. */
static inline void tw_mkdtemp(char *out)
{
    snprintf(out, 64, "/tmp/wal-test-XXXXXX");
    if (mkdtemp(out) == NULL) {
        abort();
    }
}

/* Removes a flat scratch directory and its files. */
static inline void tw_rmdir(const char *dir)
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

/* Counts the segment files in dir. */
static inline int tw_count_segments(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        n += len > 4 && strcmp(de->d_name + len - 4, ".wal") == 0;
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* Payload size of (group, index): varies so records differ in length. */
static inline size_t tw_size(uint64_t group, uint64_t index)
{
    return (size_t)((group * 131 + index * 17) % 300);
}

/* Fills `size` bytes that depend on group, index and term. */
static inline void tw_fill(uint8_t *p, size_t size, uint64_t group, uint64_t index, uint64_t term)
{
    uint64_t x = group * 0x9e3779b97f4a7c15ull ^ index * 0xbf58476d1ce4e5b9ull ^ term;
    for (size_t i = 0; i < size; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(x >> 56);
    }
}

/* 1 when e holds the payload tw_fill makes for it with size `size`. */
static inline int tw_check(const struct wal_entry *e, uint64_t group, size_t size)
{
    static uint8_t want[TW_PAYLOAD_MAX];
    if (e->size != size || size > sizeof want) {
        return 0;
    }
    if (size == 0) {
        return 1; /* an empty payload may come back as NULL */
    }
    tw_fill(want, size, group, e->index, e->term);
    return memcmp(want, e->data, size) == 0;
}

#endif
