/* ring.c -- consistent-hash ring with virtual nodes: a sorted token array
 * and a binary search per lookup. */
#include "ring.h"
#include "alloc.h"
#include "buf.h"
#include "hash.h"

#include <stdlib.h>

struct ring_token {
    uint32_t token;
    uint64_t group;
};

struct meta_ring {
    size_t count;               /* tokens */
    struct ring_token tokens[]; /* ascending by token, ties by group */
};

uint32_t meta_ring_token(uint64_t group, uint32_t index)
{
    uint8_t seed[12];
    kv_store_u64(seed, group);
    kv_store_u32(seed + 8, index);
    return kv_hash32(seed, sizeof seed);
}

static int cmp_token(const void *a, const void *b)
{
    const struct ring_token *x = a;
    const struct ring_token *y = b;
    if (x->token != y->token) {
        return x->token < y->token ? -1 : 1;
    }
    /* Two groups drawing the same token: the lower id owns it, fixed so
     * every builder agrees. */
    return x->group < y->group ? -1 : x->group > y->group ? 1 : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

static int check_groups(const uint64_t *groups, size_t group_count)
{
    uint64_t *sorted = kv_malloc(group_count * sizeof *sorted);
    if (sorted == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < group_count; i++) {
        sorted[i] = groups[i];
    }
    qsort(sorted, group_count, sizeof *sorted, cmp_u64);
    int rc = KV_OK;
    for (size_t i = 0; i < group_count; i++) {
        if (sorted[i] == 0 || (i > 0 && sorted[i] == sorted[i - 1])) {
            rc = KV_EINVAL;
            break;
        }
    }
    kv_free(sorted);
    return rc;
}

int meta_ring_new(const uint64_t *groups, size_t group_count, uint32_t vnodes,
                  struct meta_ring **out)
{
    *out = NULL;
    if (group_count == 0 || group_count > META_RING_GROUPS_MAX || vnodes == 0 ||
        vnodes > META_RING_VNODES_MAX || group_count * vnodes > META_RING_TOKENS_MAX) {
        return KV_EINVAL;
    }
    int rc = check_groups(groups, group_count);
    if (rc != KV_OK) {
        return rc;
    }
    size_t count = group_count * vnodes;
    struct meta_ring *r = kv_malloc(sizeof *r + count * sizeof r->tokens[0]);
    if (r == NULL) {
        return KV_ENOMEM;
    }
    r->count = count;
    for (size_t g = 0; g < group_count; g++) {
        for (uint32_t v = 0; v < vnodes; v++) {
            r->tokens[g * vnodes + v].token = meta_ring_token(groups[g], v);
            r->tokens[g * vnodes + v].group = groups[g];
        }
    }
    qsort(r->tokens, count, sizeof r->tokens[0], cmp_token);
    *out = r;
    return KV_OK;
}

void meta_ring_free(struct meta_ring *r)
{
    kv_free(r);
}

uint64_t meta_ring_lookup(const struct meta_ring *r, uint32_t hash)
{
    /* First token >= hash; past the last token wraps to the first. */
    size_t lo = 0;
    size_t hi = r->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->tokens[mid].token < hash) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return r->tokens[lo == r->count ? 0 : lo].group;
}

uint64_t meta_ring_group_of(const struct meta_ring *r, const void *key, size_t key_size)
{
    return meta_ring_lookup(r, kv_hash32(key, key_size));
}

size_t meta_ring_token_count(const struct meta_ring *r)
{
    return r->count;
}

void meta_ring_token_at(const struct meta_ring *r, size_t i, uint32_t *token, uint64_t *group)
{
    KV_ASSERT(i < r->count);
    *token = r->tokens[i].token;
    *group = r->tokens[i].group;
}

double meta_ring_share(const struct meta_ring *r, uint64_t group)
{
    /* Token i owns the arc (token[i-1], token[i]]; token 0 also owns the
     * wrap-around arc from the last token. */
    if (r->count == 1) {
        return r->tokens[0].group == group ? 1.0 : 0.0;
    }
    uint64_t owned = 0;
    for (size_t i = 0; i < r->count; i++) {
        if (r->tokens[i].group != group) {
            continue;
        }
        uint64_t prev = i == 0 ? (uint64_t)r->tokens[r->count - 1].token : r->tokens[i - 1].token;
        uint64_t cur = r->tokens[i].token;
        owned += i == 0 ? (cur + ((uint64_t)1 << 32) - prev) % ((uint64_t)1 << 32) : cur - prev;
    }
    return (double)owned / 4294967296.0;
}
