/* ring.h -- the consistent-hash ring: a 32-bit ring on which every data
 * group owns many virtual tokens derived from its id; a key belongs to the
 * group of the first token clockwise from kv_hash32(key). The ring is a
 * pure value built from (group ids, tokens per group), so every proxy and
 * node that knows the cluster config builds the identical ring. */
#ifndef KV_META_RING_H
#define KV_META_RING_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct meta_ring;

/* Limits: a ring is rebuilt whenever the config changes, so its size is
 * bounded to keep that cheap. */
#define META_RING_GROUPS_MAX 4096u
#define META_RING_VNODES_MAX 4096u
/* 2048 tokens per group keep every group's share within a few percent of
 * the mean (relative spread about 1/sqrt(vnodes)); see test_ring.c. */
#define META_RING_VNODES_DEFAULT 2048u
/* Bound on groups x vnodes: 4M tokens, 64 MiB. */
#define META_RING_TOKENS_MAX (4u * 1024u * 1024u)

/* Builds the ring for `group_count` distinct, non-zero group ids with
 * `vnodes` tokens each. Returns KV_OK with a new ring (free with
 * meta_ring_free), KV_EINVAL for duplicate/zero ids, no groups, or
 * limits exceeded, KV_ENOMEM. The order of `groups` does not matter. */
int meta_ring_new(const uint64_t *groups, size_t group_count, uint32_t vnodes,
                  struct meta_ring **out) KV_MUST_USE;
void meta_ring_free(struct meta_ring *r);

/* The group owning ring position `hash`. */
uint64_t meta_ring_lookup(const struct meta_ring *r, uint32_t hash);

/* The group owning `key` (kv_hash32 of the key). */
uint64_t meta_ring_group_of(const struct meta_ring *r, const void *key, size_t key_size);

/* The token of virtual node `index` of `group`: a fixed function, part of
 * the on-disk and on-wire contract (changing it moves data). */
uint32_t meta_ring_token(uint64_t group, uint32_t index);

/* Number of tokens and the i-th token (ascending) and its owner, for
 * inspection (config-get shows each group's share of the ring). */
size_t meta_ring_token_count(const struct meta_ring *r);
void meta_ring_token_at(const struct meta_ring *r, size_t i, uint32_t *token, uint64_t *group);

/* Fraction of the 2^32 ring owned by `group` (0 when absent). */
double meta_ring_share(const struct meta_ring *r, uint64_t group);

#endif
