/* router.c -- splitting plans by shard and encoding parts (see router.h). */
#include "router.h"
#include "alloc.h"

#include <stdio.h>
#include <string.h>

void proxy_route_close(struct proxy_route *route)
{
    kv_free(route->parts);
    kv_free(route->order);
    memset(route, 0, sizeof *route);
}

int proxy_route_build(const struct proxy_plan *plan, const struct meta_ring *ring,
                      struct proxy_route *route, char *errmsg)
{
    size_t n = plan->n_items;
    memset(route, 0, sizeof *route);
    uint64_t *group_of = kv_malloc((n ? n : 1) * sizeof *group_of);
    route->parts = kv_calloc(n ? n : 1, sizeof *route->parts);
    route->order = kv_malloc((n ? n : 1) * sizeof *route->order);
    if (group_of == NULL || route->parts == NULL || route->order == NULL) {
        kv_free(group_of);
        proxy_route_close(route);
        return KV_ENOMEM;
    }
    /* Parts in first-seen order; counting first, then placing, keeps each
     * part's items contiguous in `order` and in client order. The linear
     * search over parts is fine: a command touches few shards. */
    for (size_t i = 0; i < n; i++) {
        const struct proxy_item *it = &plan->items[i];
        group_of[i] = meta_ring_group_of(ring, it->key, it->key_size);
        size_t p = 0;
        while (p < route->n_parts && route->parts[p].group != group_of[i]) {
            p++;
        }
        if (p == route->n_parts) {
            route->parts[route->n_parts++].group = group_of[i];
        }
        route->parts[p].n_items++;
    }
    if ((plan->cmd_flags & NODE_CMD_ALL_NX) && route->n_parts > 1) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "ERR MSETNX keys must all map to one shard to be atomic (these span %zu)",
                 route->n_parts);
        kv_free(group_of);
        proxy_route_close(route);
        return KV_EINVAL;
    }
    size_t start = 0;
    for (size_t p = 0; p < route->n_parts; p++) {
        route->parts[p].items = route->order + start;
        start += route->parts[p].n_items;
        route->parts[p].n_items = 0; /* refilled below */
    }
    for (size_t i = 0; i < n; i++) {
        size_t p = 0;
        while (route->parts[p].group != group_of[i]) {
            p++;
        }
        struct proxy_part *part = &route->parts[p];
        ((size_t *)part->items)[part->n_items++] = i;
    }
    kv_free(group_of);
    return KV_OK;
}

int proxy_part_encode(const struct proxy_plan *plan, const struct proxy_part *part,
                      uint64_t client_id, uint64_t seq, uint64_t ack_seq, struct kv_buf *out)
{
    struct node_op *ops = kv_malloc((part->n_items ? part->n_items : 1) * sizeof *ops);
    if (ops == NULL) {
        return KV_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < part->n_items; i++) {
        const struct proxy_item *it = &plan->items[part->items[i]];
        if (it->is_write) {
            ops[n++] = it->op;
        }
    }
    struct node_cmd cmd = {
        .client_id = client_id,
        .seq = seq,
        .ack_seq = ack_seq,
        .flags = plan->cmd_flags,
        .ops = ops,
        .n_ops = n,
    };
    int rc = n > 0 ? node_cmd_encode(&cmd, out) : KV_EINVAL;
    kv_free(ops);
    return rc;
}
