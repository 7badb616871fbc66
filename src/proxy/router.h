/* router.h -- splits a planned command by shard: every item goes to the
 * group that owns its key on the ring; items of one group form one part,
 * sent as one request (one state-machine command for writes, so a part is
 * atomic), and results come back to the items' places in the client's
 * order. A cross-shard MSET is not atomic (each part is); MSETNX, whose
 * all-or-none rule only one shard can enforce, must stay in one shard. */
#ifndef KV_PROXY_ROUTER_H
#define KV_PROXY_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "command.h"
#include "ring.h"

/* The items of one group, in client order. */
struct proxy_part {
    uint64_t group;      /* the Raft group */
    const size_t *items; /* indices into plan->items; borrows the route */
    size_t n_items;
};

struct proxy_route {
    struct proxy_part *parts; /* one per group touched, in first-seen order */
    size_t n_parts;
    size_t *order; /* item indices grouped by part (backing store) */
};

/* Splits `plan` by `ring`. KV_OK; KV_EINVAL with a Redis-style errmsg for an
 * MSETNX spanning shards; KV_ENOMEM. Free with proxy_route_close. */
int proxy_route_build(const struct proxy_plan *plan, const struct meta_ring *ring,
                      struct proxy_route *route, char *errmsg) KV_MUST_USE;
void proxy_route_close(struct proxy_route *route);

/* Encodes the writes of one part as one state-machine command (client id,
 * sequence and acknowledgement from the caller's session) into `out`. */
int proxy_part_encode(const struct proxy_plan *plan, const struct proxy_part *part,
                      uint64_t client_id, uint64_t seq, uint64_t ack_seq,
                      struct kv_buf *out) KV_MUST_USE;

#endif
