/* bitcask_keydir.c -- the bitcask engine's keydir: an in-memory hash table
 * (open addressing, linear probing, back-shift deletion) from each key to
 * its reference-counted entry, which names the file, offset and sequence
 * number of the key's latest record. The engine's live table, a batch's
 * overlay and recovery's table are all keydirs; views copy the slot array
 * and share the immutable entries. Locking is the callers' (bitcask_int.h). */
#include "bitcask_int.h"
#include "alloc.h"

#include <stdatomic.h>
#include <string.h>

/* The keydir grows before its load passes this percentage. */
#define BITCASK_LOAD_PCT_MAX   75u
#define BITCASK_KEYDIR_CAP_MIN 16u

/* ---- entries and the keydir ----------------------------------------------- */

struct kd_entry *stor__bitcask_entry_new(const void *key, size_t key_size, uint64_t hash)
{
    struct kd_entry *en = kv_malloc(sizeof *en + key_size);
    if (en == NULL) {
        return NULL;
    }
    memset(en, 0, sizeof *en);
    atomic_init(&en->refs, 1);
    en->key_size = (uint16_t)key_size;
    en->hash = hash;
    memcpy(en->key, key, key_size);
    return en;
}

void stor__bitcask_entry_unref(struct kd_entry *en)
{
    if (en != NULL && atomic_fetch_sub(&en->refs, 1) == 1) {
        kv_free(en);
    }
}

void stor__bitcask_kd_init(struct keydir *kd)
{
    kd->slots = NULL;
    kd->cap = 0;
    kd->count = 0;
}

/* Drops every entry and frees the table. */
void stor__bitcask_kd_close(struct keydir *kd)
{
    for (size_t i = 0; i < kd->cap; i++) {
        stor__bitcask_entry_unref(kd->slots[i]);
    }
    kv_free(kd->slots);
    stor__bitcask_kd_init(kd);
}

/* Drops every entry, keeping the table's storage. */
void stor__bitcask_kd_clear(struct keydir *kd)
{
    for (size_t i = 0; i < kd->cap; i++) {
        stor__bitcask_entry_unref(kd->slots[i]);
        kd->slots[i] = NULL;
    }
    kd->count = 0;
}

/* Slot holding `key`, or the empty slot where it would go. */
size_t stor__bitcask_kd_probe(const struct keydir *kd, const void *key, size_t key_size,
                              uint64_t hash)
{
    size_t mask = kd->cap - 1;
    size_t i = (size_t)hash & mask;
    for (;;) {
        const struct kd_entry *en = kd->slots[i];
        if (en == NULL ||
            (en->hash == hash && en->key_size == key_size && memcmp(en->key, key, key_size) == 0)) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

struct kd_entry *stor__bitcask_kd_find(const struct keydir *kd, const void *key, size_t key_size,
                                       uint64_t hash)
{
    if (kd->cap == 0) {
        return NULL;
    }
    return kd->slots[stor__bitcask_kd_probe(kd, key, key_size, hash)];
}

/* Makes room for `extra` more keys within the load limit. KV_ENOMEM leaves
 * the table unchanged. */
int stor__bitcask_kd_reserve(struct keydir *kd, size_t extra)
{
    size_t need = kd->count + extra;
    size_t cap = kd->cap ? kd->cap : BITCASK_KEYDIR_CAP_MIN;
    while (need * 100u > cap * BITCASK_LOAD_PCT_MAX) {
        cap *= 2;
    }
    if (cap == kd->cap) {
        return KV_OK;
    }
    struct kd_entry **slots = kv_calloc(cap, sizeof *slots);
    if (slots == NULL) {
        return KV_ENOMEM;
    }
    struct keydir grown = {.slots = slots, .cap = cap, .count = kd->count};
    for (size_t i = 0; i < kd->cap; i++) {
        struct kd_entry *en = kd->slots[i];
        if (en != NULL) {
            grown.slots[stor__bitcask_kd_probe(&grown, en->key, en->key_size, en->hash)] = en;
        }
    }
    kv_free(kd->slots);
    *kd = grown;
    return KV_OK;
}

/* Puts `en` (ownership passes to the table) in place of any entry with its
 * key; returns the replaced entry (the caller's now) or NULL. Room must have
 * been reserved. */
struct kd_entry *stor__bitcask_kd_put(struct keydir *kd, struct kd_entry *en)
{
    KV_ASSERT(kd->cap > 0);
    size_t i = stor__bitcask_kd_probe(kd, en->key, en->key_size, en->hash);
    struct kd_entry *old = kd->slots[i];
    kd->slots[i] = en;
    if (old == NULL) {
        kd->count++;
        KV_ASSERT(kd->count < kd->cap);
    }
    return old;
}

/* Removes the entry in slot `i` (returned, the caller's now), shifting
 * later members of its probe run back so lookups never stop early. */
struct kd_entry *stor__bitcask_kd_remove_slot(struct keydir *kd, size_t i)
{
    size_t mask = kd->cap - 1;
    struct kd_entry *old = kd->slots[i];
    KV_ASSERT(old != NULL);
    kd->slots[i] = NULL;
    kd->count--;
    size_t hole = i;
    for (size_t j = (i + 1) & mask; kd->slots[j] != NULL; j = (j + 1) & mask) {
        size_t home = (size_t)kd->slots[j]->hash & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            kd->slots[hole] = kd->slots[j];
            kd->slots[j] = NULL;
            hole = j;
        }
    }
    return old;
}

struct kd_entry *stor__bitcask_kd_remove(struct keydir *kd, const void *key, size_t key_size,
                                         uint64_t hash)
{
    if (kd->cap == 0) {
        return NULL;
    }
    size_t i = stor__bitcask_kd_probe(kd, key, key_size, hash);
    return kd->slots[i] ? stor__bitcask_kd_remove_slot(kd, i) : NULL;
}
