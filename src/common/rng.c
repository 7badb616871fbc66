/* rng.c -- xoshiro256** (Blackman and Vigna), public-domain algorithm. */
#include "rng.h"
#include "err.h"

#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void kv_rng_seed(struct kv_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&seed);
    }
}

uint64_t kv_rng_next(struct kv_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t kv_rng_below(struct kv_rng *r, uint64_t bound)
{
    KV_ASSERT(bound > 0);
    /* Rejection sampling removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t v;
    do {
        v = kv_rng_next(r);
    } while (v >= limit);
    return v % bound;
}

void kv_rng_fill(struct kv_rng *r, void *dst, uint64_t size)
{
    uint8_t *p = dst;
    while (size > 0) {
        uint64_t v = kv_rng_next(r);
        uint64_t n = size < 8 ? size : 8;
        memcpy(p, &v, n);
        p += n;
        size -= n;
    }
}
