/* config.c -- the cluster configuration value: bootstrap, validation,
 * atomic changes (applied to a copy, validated, then swapped in) and the
 * protobuf encoding of proto/meta.proto. */
#define _GNU_SOURCE /* memrchr */
#include "config.h"
#include "alloc.h"

#include "meta.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void meta_config_init(struct meta_config *c)
{
    memset(c, 0, sizeof *c);
}

void meta_config_close(struct meta_config *c)
{
    kv_free(c->nodes);
    kv_free(c->shards);
    meta_config_init(c);
}

/* Makes room for n nodes and n shards (exact sizes; configs are small). */
static int reserve(struct meta_config *c, size_t n_nodes, size_t n_shards)
{
    struct meta_node *nodes = kv_realloc(c->nodes, (n_nodes ? n_nodes : 1) * sizeof *nodes);
    if (nodes == NULL) {
        return KV_ENOMEM;
    }
    c->nodes = nodes;
    struct meta_shard *shards = kv_realloc(c->shards, (n_shards ? n_shards : 1) * sizeof *shards);
    if (shards == NULL) {
        return KV_ENOMEM;
    }
    c->shards = shards;
    return KV_OK;
}

int meta_config_copy(struct meta_config *dst, const struct meta_config *src)
{
    struct meta_config tmp = *src;
    tmp.nodes = NULL;
    tmp.shards = NULL;
    if (reserve(&tmp, src->n_nodes + 1, src->n_shards + 1) != KV_OK) {
        meta_config_close(&tmp);
        return KV_ENOMEM;
    }
    if (src->n_nodes > 0) {
        memcpy(tmp.nodes, src->nodes, src->n_nodes * sizeof *tmp.nodes);
    }
    if (src->n_shards > 0) {
        memcpy(tmp.shards, src->shards, src->n_shards * sizeof *tmp.shards);
    }
    meta_config_close(dst);
    *dst = tmp;
    return KV_OK;
}

/* "host:port" with a non-empty host and a port in 1..65535. */
static int address_valid(const char *a)
{
    size_t n = strnlen(a, META_ADDRESS_SIZE_MAX);
    const char *colon = memrchr(a, ':', n);
    if (n == 0 || n == META_ADDRESS_SIZE_MAX || colon == NULL || colon == a) {
        return 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] != '\0' && *end == '\0' && port >= 1 && port <= 65535;
}

const struct meta_node *meta_config_node(const struct meta_config *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].id == id) {
            return &c->nodes[i];
        }
    }
    return NULL;
}

const struct meta_shard *meta_config_shard(const struct meta_config *c, uint64_t group_id)
{
    for (size_t i = 0; i < c->n_shards; i++) {
        if (c->shards[i].group_id == group_id) {
            return &c->shards[i];
        }
    }
    return NULL;
}

static int in_list(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == id) {
            return 1;
        }
    }
    return 0;
}

/* Members: known nodes, no duplicates, no id in both lists. */
static int check_members(const struct meta_config *c, const char *what, const uint64_t *voters,
                         uint32_t n_voters, const uint64_t *learners, uint32_t n_learners,
                         char *errmsg)
{
    if (n_voters == 0 || n_voters + n_learners > META_MEMBERS_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s: needs 1 to %u members with at least one voter", what,
                 META_MEMBERS_MAX);
        return KV_EINVAL;
    }
    for (uint32_t i = 0; i < n_voters + n_learners; i++) {
        uint64_t id = i < n_voters ? voters[i] : learners[i - n_voters];
        if (meta_config_node(c, id) == NULL) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "%s: member %llu is not a node of the cluster", what,
                     (unsigned long long)id);
            return KV_EINVAL;
        }
        int dup = i < n_voters ? in_list(voters, i, id) || in_list(learners, n_learners, id)
                               : in_list(learners, i - n_voters, id);
        if (dup) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "%s: member %llu listed twice", what,
                     (unsigned long long)id);
            return KV_EINVAL;
        }
    }
    return KV_OK;
}

static int validate_nodes(const struct meta_config *c, char *errmsg)
{
    if (c->n_nodes == 0 || c->n_nodes > META_NODES_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "a cluster has 1 to %u nodes, not %zu", META_NODES_MAX,
                 c->n_nodes);
        return KV_EINVAL;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        const struct meta_node *n = &c->nodes[i];
        if (n->id == 0 || !address_valid(n->address) || n->state > META_NODE_DRAINING) {
            snprintf(errmsg, KV_ERRMSG_SIZE,
                     "node %llu: needs a non-zero id and a host:port "
                     "address (got '%.64s')",
                     (unsigned long long)n->id, n->address);
            return KV_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (c->nodes[j].id == n->id || strcmp(c->nodes[j].address, n->address) == 0) {
                snprintf(errmsg, KV_ERRMSG_SIZE, "node %llu: id or address %s used twice",
                         (unsigned long long)n->id, n->address);
                return KV_EINVAL;
            }
        }
    }
    return KV_OK;
}

int meta_config_validate(const struct meta_config *c, char *errmsg)
{
    if (c->cluster_id == 0 || c->epoch == 0 || c->vnodes == 0 || c->vnodes > META_RING_VNODES_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "cluster id, epoch and vnodes (1..%u) must be set",
                 META_RING_VNODES_MAX);
        return KV_EINVAL;
    }
    int rc = validate_nodes(c, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    if (c->n_shards == 0 || c->n_shards > META_SHARDS_MAX ||
        c->n_shards * c->vnodes > META_RING_TOKENS_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "a cluster has 1 to %u shards (and shards x vnodes <= %u)",
                 META_SHARDS_MAX, META_RING_TOKENS_MAX);
        return KV_EINVAL;
    }
    for (size_t i = 0; i < c->n_shards; i++) {
        const struct meta_shard *s = &c->shards[i];
        char what[64];
        snprintf(what, sizeof what, "shard %llu", (unsigned long long)s->group_id);
        if (s->group_id == 0 || s->group_id >= c->next_group_id ||
            (i > 0 && c->shards[i - 1].group_id >= s->group_id)) {
            snprintf(errmsg, KV_ERRMSG_SIZE,
                     "%s: ids must be non-zero, unique, sorted and below "
                     "next_group_id",
                     what);
            return KV_EINVAL;
        }
        rc = check_members(c, what, s->voters, s->n_voters, s->learners, s->n_learners, errmsg);
        if (rc != KV_OK) {
            return rc;
        }
    }
    return check_members(c, "meta group", c->meta_voters, c->n_meta_voters, NULL, 0, errmsg);
}

static int cmp_node(const void *a, const void *b)
{
    uint64_t x = ((const struct meta_node *)a)->id;
    uint64_t y = ((const struct meta_node *)b)->id;
    return x < y ? -1 : x > y;
}

int meta_config_bootstrap(struct meta_config *c, uint64_t cluster_id, const struct meta_node *nodes,
                          size_t n_nodes, uint32_t shards, uint32_t replicas, uint32_t vnodes,
                          char *errmsg)
{
    if (n_nodes == 0 || n_nodes > META_NODES_MAX || shards == 0 || shards > META_SHARDS_MAX ||
        replicas == 0 || replicas > n_nodes || replicas > META_MEMBERS_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "bootstrap needs 1..%u nodes, 1..%u shards and 1..min(nodes, %u) replicas",
                 META_NODES_MAX, META_SHARDS_MAX, META_MEMBERS_MAX);
        return KV_EINVAL;
    }
    struct meta_config tmp;
    meta_config_init(&tmp);
    if (reserve(&tmp, n_nodes, shards) != KV_OK) {
        meta_config_close(&tmp);
        return KV_ENOMEM;
    }
    tmp.cluster_id = cluster_id;
    tmp.epoch = 1;
    tmp.vnodes = vnodes;
    memcpy(tmp.nodes, nodes, n_nodes * sizeof *nodes);
    tmp.n_nodes = n_nodes;
    qsort(tmp.nodes, n_nodes, sizeof *tmp.nodes, cmp_node);
    for (uint32_t g = 0; g < shards; g++) {
        struct meta_shard *s = &tmp.shards[g];
        memset(s, 0, sizeof *s);
        s->group_id = g + 1;
        for (uint32_t k = 0; k < replicas; k++) {
            s->voters[s->n_voters++] = tmp.nodes[(g + k) % n_nodes].id;
        }
    }
    tmp.n_shards = shards;
    tmp.next_group_id = shards + 1;
    for (uint32_t k = 0; k < replicas; k++) {
        tmp.meta_voters[tmp.n_meta_voters++] = tmp.nodes[k].id;
    }
    int rc = meta_config_validate(&tmp, errmsg);
    if (rc != KV_OK) {
        meta_config_close(&tmp);
        return rc;
    }
    meta_config_close(c);
    *c = tmp;
    return KV_OK;
}

/* ---- changes ------------------------------------------------------------- */

static int holds_replica(const struct meta_config *c, uint64_t node, uint64_t *group)
{
    for (size_t i = 0; i < c->n_shards; i++) {
        const struct meta_shard *s = &c->shards[i];
        if (in_list(s->voters, s->n_voters, node) || in_list(s->learners, s->n_learners, node)) {
            *group = s->group_id;
            return 1;
        }
    }
    *group = META_GROUP_ID;
    return in_list(c->meta_voters, c->n_meta_voters, node);
}

static int change_node(struct meta_config *c, const struct meta_change *ch, char *errmsg)
{
    size_t i = 0;
    while (i < c->n_nodes && c->nodes[i].id != ch->node_id) {
        i++;
    }
    if (ch->type == META_CHANGE_ADD_NODE) {
        if (i < c->n_nodes) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "node %llu already exists",
                     (unsigned long long)ch->node_id);
            return KV_EEXIST;
        }
        /* Insert sorted by id; reserve() in apply left room for one more. */
        size_t at = 0;
        while (at < c->n_nodes && c->nodes[at].id < ch->node_id) {
            at++;
        }
        memmove(&c->nodes[at + 1], &c->nodes[at], (c->n_nodes - at) * sizeof *c->nodes);
        memset(&c->nodes[at], 0, sizeof c->nodes[at]);
        c->nodes[at].id = ch->node_id;
        snprintf(c->nodes[at].address, META_ADDRESS_SIZE_MAX, "%s", ch->address);
        c->n_nodes++;
        return KV_OK;
    }
    if (i == c->n_nodes) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "node %llu does not exist",
                 (unsigned long long)ch->node_id);
        return KV_ENOTFOUND;
    }
    if (ch->type == META_CHANGE_DRAIN_NODE) {
        c->nodes[i].state = META_NODE_DRAINING;
        return KV_OK;
    }
    uint64_t group;
    if (holds_replica(c, ch->node_id, &group)) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "node %llu still holds a replica of group %llu: move its replicas first",
                 (unsigned long long)ch->node_id, (unsigned long long)group);
        return KV_EBUSY;
    }
    memmove(&c->nodes[i], &c->nodes[i + 1], (c->n_nodes - i - 1) * sizeof *c->nodes);
    c->n_nodes--;
    return KV_OK;
}

static int no_draining(const struct meta_config *c, const struct meta_change *ch, char *errmsg)
{
    for (uint32_t i = 0; i < ch->n_voters + ch->n_learners; i++) {
        uint64_t id = i < ch->n_voters ? ch->voters[i] : ch->learners[i - ch->n_voters];
        const struct meta_node *n = meta_config_node(c, id);
        if (n != NULL && n->state == META_NODE_DRAINING) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "node %llu is draining and takes no new replicas",
                     (unsigned long long)id);
            return KV_EINVAL;
        }
    }
    return KV_OK;
}

static int change_shard(struct meta_config *c, const struct meta_change *ch, char *errmsg)
{
    size_t i = 0;
    while (i < c->n_shards && c->shards[i].group_id != ch->group_id) {
        i++;
    }
    if (ch->type == META_CHANGE_ADD_SHARD) {
        int rc = no_draining(c, ch, errmsg);
        if (rc != KV_OK) {
            return rc;
        }
        struct meta_shard *s = &c->shards[c->n_shards++];
        memset(s, 0, sizeof *s);
        s->group_id = c->next_group_id++;
        memcpy(s->voters, ch->voters, ch->n_voters * sizeof ch->voters[0]);
        s->n_voters = ch->n_voters;
        return KV_OK;
    }
    if (i == c->n_shards) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "shard %llu does not exist",
                 (unsigned long long)ch->group_id);
        return KV_ENOTFOUND;
    }
    if (ch->type == META_CHANGE_REMOVE_SHARD) {
        memmove(&c->shards[i], &c->shards[i + 1], (c->n_shards - i - 1) * sizeof *c->shards);
        c->n_shards--;
        return KV_OK;
    }
    struct meta_shard *s = &c->shards[i];
    memcpy(s->voters, ch->voters, ch->n_voters * sizeof ch->voters[0]);
    s->n_voters = ch->n_voters;
    memcpy(s->learners, ch->learners, ch->n_learners * sizeof ch->learners[0]);
    s->n_learners = ch->n_learners;
    return KV_OK;
}

int meta_config_apply(struct meta_config *c, const struct meta_change *ch, char *errmsg)
{
    if (ch->expect_epoch != 0 && ch->expect_epoch != c->epoch) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "configuration changed: epoch is %llu, not %llu",
                 (unsigned long long)c->epoch, (unsigned long long)ch->expect_epoch);
        return KV_ESTALE;
    }
    if (ch->n_voters > META_MEMBERS_MAX || ch->n_learners > META_MEMBERS_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "at most %u members", META_MEMBERS_MAX);
        return KV_EINVAL;
    }
    struct meta_config work;
    meta_config_init(&work);
    int rc = meta_config_copy(&work, c); /* with room for one more node and shard */
    if (rc != KV_OK) {
        return rc;
    }
    switch (ch->type) {
    case META_CHANGE_ADD_NODE:
    case META_CHANGE_REMOVE_NODE:
    case META_CHANGE_DRAIN_NODE:
        rc = change_node(&work, ch, errmsg);
        break;
    case META_CHANGE_ADD_SHARD:
    case META_CHANGE_REMOVE_SHARD:
    case META_CHANGE_SET_MEMBERS:
        rc = change_shard(&work, ch, errmsg);
        break;
    default:
        snprintf(errmsg, KV_ERRMSG_SIZE, "unknown change type %u", ch->type);
        rc = KV_EINVAL;
    }
    if (rc == KV_OK) {
        work.epoch++;
        rc = meta_config_validate(&work, errmsg);
    }
    if (rc != KV_OK) {
        meta_config_close(&work);
        return rc;
    }
    meta_config_close(c);
    *c = work;
    return KV_OK;
}

int meta_config_ring(const struct meta_config *c, struct meta_ring **out)
{
    uint64_t *groups = kv_malloc((c->n_shards ? c->n_shards : 1) * sizeof *groups);
    if (groups == NULL) {
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < c->n_shards; i++) {
        groups[i] = c->shards[i].group_id;
    }
    int rc = meta_ring_new(groups, c->n_shards, c->vnodes, out);
    kv_free(groups);
    return rc;
}

/* ---- protobuf ------------------------------------------------------------ */

/* Packs `msg` into `out` (appended). */
static int pack(const ProtobufCMessage *msg, struct kv_buf *out)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    int rc = kv_buf_reserve(out, n);
    if (rc != KV_OK) {
        return rc;
    }
    out->size += protobuf_c_message_pack(msg, out->data + out->size);
    return KV_OK;
}

int meta_config_encode(const struct meta_config *c, struct kv_buf *out)
{
    Raftkv__Meta__Config pb = RAFTKV__META__CONFIG__INIT;
    size_t nn = c->n_nodes ? c->n_nodes : 1;
    size_t ns = c->n_shards ? c->n_shards : 1;
    Raftkv__Meta__Node *nodes = kv_calloc(nn, sizeof *nodes);
    Raftkv__Meta__Node **node_ptrs = kv_calloc(nn, sizeof *node_ptrs);
    Raftkv__Meta__Shard *shards = kv_calloc(ns, sizeof *shards);
    Raftkv__Meta__Shard **shard_ptrs = kv_calloc(ns, sizeof *shard_ptrs);
    int rc = KV_ENOMEM;
    if (nodes != NULL && node_ptrs != NULL && shards != NULL && shard_ptrs != NULL) {
        pb.cluster_id = c->cluster_id;
        pb.epoch = c->epoch;
        pb.vnodes = c->vnodes;
        pb.next_group_id = c->next_group_id;
        pb.n_meta_voters = c->n_meta_voters;
        pb.meta_voters = (uint64_t *)c->meta_voters;
        for (size_t i = 0; i < c->n_nodes; i++) {
            raftkv__meta__node__init(&nodes[i]);
            nodes[i].id = c->nodes[i].id;
            nodes[i].address = (char *)c->nodes[i].address;
            nodes[i].state = (Raftkv__Meta__NodeState)c->nodes[i].state;
            node_ptrs[i] = &nodes[i];
        }
        for (size_t i = 0; i < c->n_shards; i++) {
            raftkv__meta__shard__init(&shards[i]);
            shards[i].group_id = c->shards[i].group_id;
            shards[i].n_voters = c->shards[i].n_voters;
            shards[i].voters = (uint64_t *)c->shards[i].voters;
            shards[i].n_learners = c->shards[i].n_learners;
            shards[i].learners = (uint64_t *)c->shards[i].learners;
            shard_ptrs[i] = &shards[i];
        }
        pb.n_nodes = c->n_nodes;
        pb.nodes = node_ptrs;
        pb.n_shards = c->n_shards;
        pb.shards = shard_ptrs;
        rc = pack(&pb.base, out);
    }
    kv_free(nodes);
    kv_free(node_ptrs);
    kv_free(shards);
    kv_free(shard_ptrs);
    return rc;
}

static int copy_ids(uint64_t *dst, uint32_t *n_dst, const uint64_t *src, size_t n)
{
    if (n > META_MEMBERS_MAX) {
        return KV_EINVAL;
    }
    if (n > 0) {
        memcpy(dst, src, n * sizeof *src);
    }
    *n_dst = (uint32_t)n;
    return KV_OK;
}

/* Fills `c` from an unpacked message; limits checked before copying. */
static int from_pb(struct meta_config *c, const Raftkv__Meta__Config *pb, char *errmsg)
{
    if (pb->n_nodes > META_NODES_MAX || pb->n_shards > META_SHARDS_MAX) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "configuration over the limits (%zu nodes, %zu shards)",
                 pb->n_nodes, pb->n_shards);
        return KV_EINVAL;
    }
    if (reserve(c, pb->n_nodes, pb->n_shards) != KV_OK) {
        return KV_ENOMEM;
    }
    c->cluster_id = pb->cluster_id;
    c->epoch = pb->epoch;
    c->vnodes = pb->vnodes;
    c->next_group_id = pb->next_group_id;
    int rc = copy_ids(c->meta_voters, &c->n_meta_voters, pb->meta_voters, pb->n_meta_voters);
    for (size_t i = 0; i < pb->n_nodes && rc == KV_OK; i++) {
        struct meta_node *n = &c->nodes[i];
        memset(n, 0, sizeof *n);
        n->id = pb->nodes[i]->id;
        n->state = (uint32_t)pb->nodes[i]->state;
        const char *a = pb->nodes[i]->address ? pb->nodes[i]->address : "";
        if (strlen(a) >= META_ADDRESS_SIZE_MAX) {
            rc = KV_EINVAL;
        }
        snprintf(n->address, sizeof n->address, "%s", a);
        c->n_nodes = i + 1;
    }
    for (size_t i = 0; i < pb->n_shards && rc == KV_OK; i++) {
        struct meta_shard *s = &c->shards[i];
        memset(s, 0, sizeof *s);
        s->group_id = pb->shards[i]->group_id;
        rc = copy_ids(s->voters, &s->n_voters, pb->shards[i]->voters, pb->shards[i]->n_voters);
        if (rc == KV_OK) {
            rc = copy_ids(s->learners, &s->n_learners, pb->shards[i]->learners,
                          pb->shards[i]->n_learners);
        }
        c->n_shards = i + 1;
    }
    if (rc != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "configuration field over its limit");
        return rc;
    }
    return meta_config_validate(c, errmsg);
}

int meta_config_decode(const uint8_t *data, size_t size, struct meta_config *c, char *errmsg)
{
    Raftkv__Meta__Config *pb = raftkv__meta__config__unpack(NULL, size, data);
    if (pb == NULL) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "cluster configuration does not decode");
        return KV_ECORRUPT;
    }
    struct meta_config tmp;
    meta_config_init(&tmp);
    int rc = from_pb(&tmp, pb, errmsg);
    raftkv__meta__config__free_unpacked(pb, NULL);
    if (rc != KV_OK) {
        meta_config_close(&tmp);
        return rc;
    }
    meta_config_close(c);
    *c = tmp;
    return KV_OK;
}

int meta_change_encode(const struct meta_change *ch, struct kv_buf *out)
{
    Raftkv__Meta__Change pb = RAFTKV__META__CHANGE__INIT;
    pb.type = (Raftkv__Meta__Change__Type)ch->type;
    pb.node_id = ch->node_id;
    pb.address = (char *)ch->address;
    pb.group_id = ch->group_id;
    pb.n_voters = ch->n_voters;
    pb.voters = (uint64_t *)ch->voters;
    pb.n_learners = ch->n_learners;
    pb.learners = (uint64_t *)ch->learners;
    pb.expect_epoch = ch->expect_epoch;
    return pack(&pb.base, out);
}

int meta_change_decode(const uint8_t *data, size_t size, struct meta_change *ch)
{
    Raftkv__Meta__Change *pb = raftkv__meta__change__unpack(NULL, size, data);
    if (pb == NULL) {
        return KV_ECORRUPT;
    }
    memset(ch, 0, sizeof *ch);
    ch->type = (uint32_t)pb->type;
    ch->node_id = pb->node_id;
    ch->group_id = pb->group_id;
    ch->expect_epoch = pb->expect_epoch;
    const char *a = pb->address ? pb->address : "";
    int rc = strlen(a) < META_ADDRESS_SIZE_MAX ? KV_OK : KV_ECORRUPT;
    snprintf(ch->address, sizeof ch->address, "%s", a);
    if (rc == KV_OK && (copy_ids(ch->voters, &ch->n_voters, pb->voters, pb->n_voters) ||
                        copy_ids(ch->learners, &ch->n_learners, pb->learners, pb->n_learners))) {
        rc = KV_ECORRUPT;
    }
    raftkv__meta__change__free_unpacked(pb, NULL);
    return rc;
}
