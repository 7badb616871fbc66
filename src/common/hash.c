/* hash.c -- ring and table hashes on top of libxxhash. */
#include "hash.h"

#include <xxhash.h>

uint32_t kv_hash32(const void *key, size_t size)
{
    return XXH32(key, size, 0);
}

uint64_t kv_hash64(const void *key, size_t size)
{
    return XXH3_64bits(key, size);
}
