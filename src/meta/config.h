/* config.h -- the cluster configuration: nodes, shards (data Raft groups)
 * with their members, the meta group's members, the ring's token count and
 * the epoch that every change bumps. It is the state of the meta group
 * (group 0); proxies and clients read it to route keys. Encoded on disk and
 * on the wire as proto/meta.proto.
 *
 * A configuration is a plain value: changes apply to it atomically (a
 * change that fails validation leaves it untouched and says why), so every
 * replica of the meta group that applies the same changes holds the same
 * configuration. */
#ifndef KV_META_CONFIG_H
#define KV_META_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "ring.h"

#define META_NODES_MAX        1024u
#define META_SHARDS_MAX       META_RING_GROUPS_MAX
#define META_MEMBERS_MAX      9u /* voters + learners of one group (as the Raft core) */
#define META_ADDRESS_SIZE_MAX 256u
#define META_GROUP_ID         0u /* the meta group's own Raft group id */

enum meta_node_state {
    META_NODE_ACTIVE = 0,   /* serves its replicas */
    META_NODE_DRAINING = 1, /* replicas are moving away; gets no new ones */
};

struct meta_node {
    uint64_t id;                         /* never 0 */
    char address[META_ADDRESS_SIZE_MAX]; /* "host:port", NUL-terminated */
    uint32_t state;                      /* enum meta_node_state */
};

struct meta_shard {
    uint64_t group_id; /* never 0 */
    uint64_t voters[META_MEMBERS_MAX];
    uint32_t n_voters;
    uint64_t learners[META_MEMBERS_MAX];
    uint32_t n_learners;
};

struct meta_config {
    uint64_t cluster_id;     /* fixed at bootstrap, never 0 */
    uint64_t epoch;          /* bumped by every change, from 1 */
    uint32_t vnodes;         /* ring tokens per shard */
    struct meta_node *nodes; /* heap, n_nodes used, sorted by id */
    size_t n_nodes;
    struct meta_shard *shards; /* heap, n_shards used, sorted by group */
    size_t n_shards;
    uint64_t next_group_id;                 /* id of the next added shard */
    uint64_t meta_voters[META_MEMBERS_MAX]; /* members of group 0 */
    uint32_t n_meta_voters;
};

enum meta_change_type {
    META_CHANGE_ADD_NODE = 1,     /* node_id, address */
    META_CHANGE_REMOVE_NODE = 2,  /* node_id; it must hold no replica */
    META_CHANGE_DRAIN_NODE = 3,   /* node_id */
    META_CHANGE_ADD_SHARD = 4,    /* voters: the new shard's replicas */
    META_CHANGE_REMOVE_SHARD = 5, /* group_id; never the last shard */
    META_CHANGE_SET_MEMBERS = 6,  /* group_id, voters, learners */
};

struct meta_change {
    uint32_t type; /* enum meta_change_type */
    uint64_t node_id;
    char address[META_ADDRESS_SIZE_MAX];
    uint64_t group_id;
    uint64_t voters[META_MEMBERS_MAX];
    uint32_t n_voters;
    uint64_t learners[META_MEMBERS_MAX];
    uint32_t n_learners;
    uint64_t expect_epoch; /* non-zero: refuse unless it is the current epoch */
};

/* An empty configuration (epoch 0, no allocation). */
void meta_config_init(struct meta_config *c);
void meta_config_close(struct meta_config *c);

/* Deep copy into `dst` (which must be initialised; its contents replaced). */
int meta_config_copy(struct meta_config *dst, const struct meta_config *src) KV_MUST_USE;

/* The first configuration of a new cluster, epoch 1: `nodes` (ids and
 * addresses), `shards` data groups with ids 1..shards, each replicated on
 * `replicas` nodes placed round-robin so leaders spread, the meta group on
 * the first `replicas` nodes. KV_EINVAL with errmsg for bad input. */
int meta_config_bootstrap(struct meta_config *c, uint64_t cluster_id, const struct meta_node *nodes,
                          size_t n_nodes, uint32_t shards, uint32_t replicas, uint32_t vnodes,
                          char *errmsg) KV_MUST_USE;

/* Checks every invariant (unique ids and addresses, members exist, limits).
 * KV_OK or KV_EINVAL with errmsg. */
int meta_config_validate(const struct meta_config *c, char *errmsg) KV_MUST_USE;

/* Applies one change atomically: on success epoch + 1; on failure the
 * configuration is unchanged and errmsg says why: KV_ESTALE (expect_epoch
 * is not current), KV_EEXIST, KV_ENOTFOUND, KV_EBUSY (node still holds
 * replicas), KV_EINVAL. */
int meta_config_apply(struct meta_config *c, const struct meta_change *ch,
                      char *errmsg) KV_MUST_USE;

/* Protobuf encoding (proto/meta.proto). Decode validates and returns
 * KV_ECORRUPT (malformed bytes) or KV_EINVAL (a configuration that breaks
 * an invariant), with errmsg. */
int meta_config_encode(const struct meta_config *c, struct kv_buf *out) KV_MUST_USE;
int meta_config_decode(const uint8_t *data, size_t size, struct meta_config *c,
                       char *errmsg) KV_MUST_USE;
int meta_change_encode(const struct meta_change *ch, struct kv_buf *out) KV_MUST_USE;
int meta_change_decode(const uint8_t *data, size_t size, struct meta_change *ch) KV_MUST_USE;

/* Lookups; NULL when absent. Pointers live until the next change. */
const struct meta_node *meta_config_node(const struct meta_config *c, uint64_t id);
const struct meta_shard *meta_config_shard(const struct meta_config *c, uint64_t group_id);

/* Builds the ring of the configuration's shards (free with meta_ring_free). */
int meta_config_ring(const struct meta_config *c, struct meta_ring **out) KV_MUST_USE;

#endif
