/* keys.h -- how the data layer lays keys out in the storage engine. Every
 * key of a group shares the group's 8-byte big-endian id as its prefix, so
 * one group is one contiguous range (one snapshot stream); then a kind
 * byte; user data then sorts by ring hash, so a hash arc of the ring is a
 * contiguous range too (migration streams a range and deletes a range):
 *
 *   data     group | 'd' | be32 ring hash(key) | key
 *   meta     group | 'm' | name                  (applied index, ...)
 *   session  group | 's' | be64 client | be64 seq   (exactly-once results)
 *   client   group | 'c' | be64 client              (session watermark)
 */
#ifndef KV_NODE_KEYS_H
#define KV_NODE_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "stor.h"

#define NODE_KEY_PREFIX_SIZE 9u /* group id + kind byte */
/* Longest user key: the engine limit less the data-key prefix and hash. */
#define NODE_USER_KEY_SIZE_MAX (STOR_KEY_SIZE_MAX - NODE_KEY_PREFIX_SIZE - 4u)

enum node_key_kind {
    NODE_KEY_DATA = 'd',
    NODE_KEY_META = 'm',
    NODE_KEY_SESSION = 's',
    NODE_KEY_CLIENT = 'c',
};

/* Scratch big enough for any engine key. */
struct node_key {
    uint8_t bytes[STOR_KEY_SIZE_MAX];
    size_t size;
};

/* Builds the data key of user key `key` (1..NODE_USER_KEY_SIZE_MAX bytes,
 * checked by the caller) in group `group`. */
void node_key_data(struct node_key *out, uint64_t group, const void *key, size_t key_size);

/* Builds the first data key at ring position `hash` (inclusive start of an
 * arc); hash 2^32 (pass `end_of_ring` = 1) gives the end of the group's data. */
void node_key_data_arc(struct node_key *out, uint64_t group, uint32_t hash, int end_of_ring);

/* Builds a meta key for `name` (a short ASCII name). */
void node_key_meta(struct node_key *out, uint64_t group, const char *name);

void node_key_session(struct node_key *out, uint64_t group, uint64_t client, uint64_t seq);
void node_key_client(struct node_key *out, uint64_t group, uint64_t client);

/* The whole group: [group, group + 1). */
void node_key_group_start(struct node_key *out, uint64_t group);
void node_key_group_end(struct node_key *out, uint64_t group);

/* Extracts the user key from a data key; returns KV_ECORRUPT when `k` is
 * not a data key of `group`. *user borrows k. */
int node_key_user(const uint8_t *k, size_t k_size, uint64_t group, const uint8_t **user,
                  size_t *user_size) KV_MUST_USE;

#endif
