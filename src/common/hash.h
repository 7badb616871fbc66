/* hash.h -- the ring hash: a stable 32-bit hash of a key (xxHash32, seed 0).
 * It decides placement, so it must never change between versions. */
#ifndef KV_HASH_H
#define KV_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Returns the ring position of `size` bytes at `key`. */
uint32_t kv_hash32(const void *key, size_t size);

/* A 64-bit hash for in-memory tables (not stable across versions). */
uint64_t kv_hash64(const void *key, size_t size);

#endif
