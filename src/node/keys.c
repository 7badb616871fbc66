/* keys.c -- the engine key layout of the data layer (see keys.h). */
#include "keys.h"
#include "buf.h"
#include "hash.h"

#include <string.h>

static void prefix(struct node_key *out, uint64_t group, uint8_t kind)
{
    kv_store_be64(out->bytes, group);
    out->bytes[8] = kind;
    out->size = NODE_KEY_PREFIX_SIZE;
}

void node_key_data(struct node_key *out, uint64_t group, const void *key, size_t key_size)
{
    KV_ASSERT(key_size > 0 && key_size <= NODE_USER_KEY_SIZE_MAX);
    prefix(out, group, NODE_KEY_DATA);
    kv_store_be32(out->bytes + out->size, kv_hash32(key, key_size));
    memcpy(out->bytes + out->size + 4, key, key_size);
    out->size += 4 + key_size;
}

void node_key_data_arc(struct node_key *out, uint64_t group, uint32_t hash, int end_of_ring)
{
    if (end_of_ring) {
        /* Just past every data key: the next kind byte. */
        prefix(out, group, NODE_KEY_DATA + 1);
        return;
    }
    prefix(out, group, NODE_KEY_DATA);
    kv_store_be32(out->bytes + out->size, hash);
    out->size += 4;
}

void node_key_meta(struct node_key *out, uint64_t group, const char *name)
{
    size_t n = strlen(name);
    KV_ASSERT(n > 0 && n < 64);
    prefix(out, group, NODE_KEY_META);
    memcpy(out->bytes + out->size, name, n);
    out->size += n;
}

void node_key_session(struct node_key *out, uint64_t group, uint64_t client, uint64_t seq)
{
    prefix(out, group, NODE_KEY_SESSION);
    kv_store_be64(out->bytes + out->size, client);
    kv_store_be64(out->bytes + out->size + 8, seq);
    out->size += 16;
}

void node_key_client(struct node_key *out, uint64_t group, uint64_t client)
{
    prefix(out, group, NODE_KEY_CLIENT);
    kv_store_be64(out->bytes + out->size, client);
    out->size += 8;
}

void node_key_group_start(struct node_key *out, uint64_t group)
{
    kv_store_be64(out->bytes, group);
    out->size = 8;
}

void node_key_group_end(struct node_key *out, uint64_t group)
{
    KV_ASSERT(group != UINT64_MAX);
    kv_store_be64(out->bytes, group + 1);
    out->size = 8;
}

int node_key_user(const uint8_t *k, size_t k_size, uint64_t group, const uint8_t **user,
                  size_t *user_size)
{
    struct node_key p;
    prefix(&p, group, NODE_KEY_DATA);
    if (k_size <= NODE_KEY_PREFIX_SIZE + 4 || memcmp(k, p.bytes, NODE_KEY_PREFIX_SIZE) != 0) {
        return KV_ECORRUPT;
    }
    *user = k + NODE_KEY_PREFIX_SIZE + 4;
    *user_size = k_size - NODE_KEY_PREFIX_SIZE - 4;
    return KV_OK;
}
