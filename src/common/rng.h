/* rng.h -- a small seeded PRNG (xoshiro256**, seeded through splitmix64).
 * Deterministic for a given seed: the Raft core, the simulator and the
 * tests draw from one of these, never from rand(). */
#ifndef KV_RNG_H
#define KV_RNG_H

#include <stdint.h>

struct kv_rng {
    uint64_t s[4]; /* generator state; never all zero */
};

/* Seeds the generator; any seed, including 0, is fine. */
void kv_rng_seed(struct kv_rng *r, uint64_t seed);

/* Next 64 random bits. */
uint64_t kv_rng_next(struct kv_rng *r);

/* Uniform integer in [0, bound); bound must be > 0. */
uint64_t kv_rng_below(struct kv_rng *r, uint64_t bound);

/* Fills `size` bytes with random data. */
void kv_rng_fill(struct kv_rng *r, void *dst, uint64_t size);

#endif
