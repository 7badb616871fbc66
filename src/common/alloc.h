/* alloc.h -- the one allocation wrapper every module uses, so that tests can
 * make the Nth allocation fail and check that each failure ends in a clean
 * KV_ENOMEM, never a crash or a silent loss. */
#ifndef KV_ALLOC_H
#define KV_ALLOC_H

#include <stddef.h>

/* Like malloc/calloc/realloc/free, but they return NULL when fault injection
 * says so. kv_free(NULL) is a no-op. */
void *kv_malloc(size_t size);
void *kv_calloc(size_t count, size_t size);
void *kv_realloc(void *ptr, size_t size);
void kv_free(void *ptr);

/* Returns a heap copy of `size` bytes at `src` (NULL on failure or when
 * size is 0 and src is NULL); the caller frees it with kv_free. */
void *kv_memdup(const void *src, size_t size);

/* Returns a heap copy of the NUL-terminated `s`, or NULL on failure. */
char *kv_strdup(const char *s);

/* Test seam: after `count` more successful allocations, every allocation
 * fails until kv_alloc_fault_clear(). This is process-wide state by design,
 * as an allocator is (compare uv_replace_allocator); only tests touch it. */
void kv_alloc_fault_after(long count);
void kv_alloc_fault_clear(void);

/* Number of allocations failed by injection since the last clear. */
long kv_alloc_fault_hits(void);

#endif
