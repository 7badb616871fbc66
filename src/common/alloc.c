/* alloc.c -- allocation wrapper with a fault-injection countdown. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* -1: injection off. Otherwise the number of allocations still allowed. */
static atomic_long fault_countdown = -1;
static atomic_long fault_hits = 0;

static int should_fail(void)
{
    long left = atomic_load_explicit(&fault_countdown, memory_order_relaxed);
    if (left < 0) {
        return 0;
    }
    if (left == 0) {
        atomic_fetch_add(&fault_hits, 1);
        return 1;
    }
    atomic_fetch_sub(&fault_countdown, 1);
    return 0;
}

void *kv_malloc(size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(size == 0 ? 1 : size);
}

void *kv_calloc(size_t count, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    if (count == 0 || size == 0) {
        count = 1;
        size = 1;
    }
    return calloc(count, size);
}

void *kv_realloc(void *ptr, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(ptr, size == 0 ? 1 : size);
}

void kv_free(void *ptr)
{
    free(ptr);
}

void *kv_memdup(const void *src, size_t size)
{
    void *p = kv_malloc(size);
    if (p != NULL && size > 0) {
        memcpy(p, src, size);
    }
    return p;
}

char *kv_strdup(const char *s)
{
    return kv_memdup(s, strlen(s) + 1);
}

void kv_alloc_fault_after(long count)
{
    atomic_store(&fault_hits, 0);
    atomic_store(&fault_countdown, count);
}

void kv_alloc_fault_clear(void)
{
    atomic_store(&fault_countdown, -1);
}

long kv_alloc_fault_hits(void)
{
    return atomic_load(&fault_hits);
}
