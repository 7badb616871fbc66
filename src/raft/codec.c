/* codec.c -- conversions between the core's plain C messages and the wire
 * form (proto/raft.proto through protobuf-c). Encoding points the protobuf
 * structs at the core's bytes (no payload copy); decoding unpacks with an
 * allocator that goes through kv_malloc, then copies into owned memory. */
#include "raft_int.h"

#include <string.h>

#include "alloc.h"
#include "raft.pb-c.h"

static void *pb_alloc(void *data, size_t size)
{
    (void)data;
    return kv_malloc(size);
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    kv_free(ptr);
}

static ProtobufCAllocator pb_allocator(void)
{
    ProtobufCAllocator a = {.alloc = pb_alloc, .free = pb_free, .allocator_data = NULL};
    return a;
}

int raft_conf_change_encode(const struct raft_conf_change *cc, uint8_t *buf, size_t cap,
                            size_t *size)
{
    Raftkv__Raft__ConfChange pb = RAFTKV__RAFT__CONF_CHANGE__INIT;
    pb.type = (Raftkv__Raft__ConfChangeType)cc->type;
    pb.node_id = cc->node_id;
    size_t need = raftkv__raft__conf_change__get_packed_size(&pb);
    if (need > cap) {
        return KV_ETOOBIG;
    }
    *size = raftkv__raft__conf_change__pack(&pb, buf);
    return KV_OK;
}

/* A bump allocator over a caller's stack buffer: decoding a conf change
 * must not depend on the heap, because it runs while a committed entry is
 * applied, where a failure would leave this replica with a different
 * membership than the others. */
struct arena {
    uint8_t *next;
    size_t left;
};

static void *arena_alloc(void *data, size_t size)
{
    struct arena *a = data;
    size = (size + 15) & ~(size_t)15;
    if (size > a->left) {
        return NULL;
    }
    void *p = a->next;
    a->next += size;
    a->left -= size;
    return p;
}

static void arena_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

/* Enough for one unpacked ConfChange (no repeated or bytes fields). */
#define CONF_CHANGE_ARENA_BYTES 256

int raft_conf_change_decode(const uint8_t *buf, size_t size, struct raft_conf_change *cc)
{
    _Alignas(16) uint8_t space[CONF_CHANGE_ARENA_BYTES];
    struct arena arena = {.next = space, .left = sizeof space};
    ProtobufCAllocator a = {.alloc = arena_alloc, .free = arena_free, .allocator_data = &arena};
    Raftkv__Raft__ConfChange *pb = raftkv__raft__conf_change__unpack(&a, size, buf);
    if (pb == NULL) {
        return KV_ECORRUPT;
    }
    cc->type = (uint32_t)pb->type;
    cc->node_id = pb->node_id;
    raftkv__raft__conf_change__free_unpacked(pb, &a);
    return cc->node_id == 0 ? KV_ECORRUPT : KV_OK;
}

int raft_msg_encode(const struct raft_msg *m, uint8_t **buf, size_t *size)
{
    int rc = KV_ENOMEM;
    Raftkv__Raft__Message pb = RAFTKV__RAFT__MESSAGE__INIT;
    Raftkv__Raft__SnapshotMeta snap = RAFTKV__RAFT__SNAPSHOT_META__INIT;
    Raftkv__Raft__ConfState conf = RAFTKV__RAFT__CONF_STATE__INIT;
    Raftkv__Raft__Entry *ents = NULL;
    Raftkv__Raft__Entry **ptrs = NULL;
    pb.type = (Raftkv__Raft__MessageType)m->type;
    pb.group_id = m->group_id;
    pb.from = m->from;
    pb.to = m->to;
    pb.term = m->term;
    pb.log_term = m->log_term;
    pb.index = m->index;
    pb.commit = m->commit;
    pb.reject = m->reject;
    pb.reject_hint = m->reject_hint;
    pb.read_seq = m->read_seq;
    pb.transfer = m->transfer;
    pb.context.data = m->context;
    pb.context.len = m->context_size;
    if (m->n_entries > 0) {
        ents = kv_calloc(m->n_entries, sizeof *ents);
        ptrs = kv_calloc(m->n_entries, sizeof *ptrs);
        if (ents == NULL || ptrs == NULL) {
            goto err_entries;
        }
        for (size_t i = 0; i < m->n_entries; i++) {
            Raftkv__Raft__Entry init = RAFTKV__RAFT__ENTRY__INIT;
            ents[i] = init;
            ents[i].term = m->entries[i].term;
            ents[i].index = m->entries[i].index;
            ents[i].type = (Raftkv__Raft__EntryType)m->entries[i].type;
            ents[i].data.data = m->entries[i].data;
            ents[i].data.len = m->entries[i].size;
            ptrs[i] = &ents[i];
        }
        pb.entries = ptrs;
        pb.n_entries = m->n_entries;
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        snap.index = m->snap.index;
        snap.term = m->snap.term;
        conf.voters = (uint64_t *)m->snap.conf.voters;
        conf.n_voters = m->snap.conf.n_voters;
        conf.learners = (uint64_t *)m->snap.conf.learners;
        conf.n_learners = m->snap.conf.n_learners;
        snap.conf_state = &conf;
        pb.snapshot = &snap;
    }
    size_t n = raftkv__raft__message__get_packed_size(&pb);
    uint8_t *out = kv_malloc(n > 0 ? n : 1);
    if (out == NULL) {
        goto err_entries;
    }
    *size = raftkv__raft__message__pack(&pb, out);
    *buf = out;
    rc = KV_OK;
err_entries:
    kv_free(ptrs);
    kv_free(ents);
    return rc;
}

static int copy_conf(struct raft_conf_state *dst, const Raftkv__Raft__ConfState *src)
{
    memset(dst, 0, sizeof *dst);
    if (src == NULL) {
        return KV_OK;
    }
    if (src->n_voters > RAFT_MEMBERS_MAX || src->n_learners > RAFT_MEMBERS_MAX) {
        return KV_ECORRUPT;
    }
    /* memcpy from a NULL array is undefined even for 0 bytes (found by
     * fuzz_raft_msg): copy only what is there. */
    if (src->n_voters > 0) {
        memcpy(dst->voters, src->voters, src->n_voters * sizeof(uint64_t));
    }
    dst->n_voters = (uint32_t)src->n_voters;
    if (src->n_learners > 0) {
        memcpy(dst->learners, src->learners, src->n_learners * sizeof(uint64_t));
    }
    dst->n_learners = (uint32_t)src->n_learners;
    return KV_OK;
}

static int fill_from_pb(struct raft_msg *m, const Raftkv__Raft__Message *pb)
{
    m->type = (uint32_t)pb->type;
    m->group_id = pb->group_id;
    m->from = pb->from;
    m->to = pb->to;
    m->term = pb->term;
    m->log_term = pb->log_term;
    m->index = pb->index;
    m->commit = pb->commit;
    m->reject = pb->reject;
    m->reject_hint = pb->reject_hint;
    m->read_seq = pb->read_seq;
    m->transfer = pb->transfer;
    if (pb->snapshot != NULL) {
        m->snap.index = pb->snapshot->index;
        m->snap.term = pb->snapshot->term;
        int rc = copy_conf(&m->snap.conf, pb->snapshot->conf_state);
        if (rc != KV_OK) {
            return rc;
        }
    }
    if (pb->context.len > RAFT_CONTEXT_BYTES_MAX) {
        return KV_ECORRUPT;
    }
    if (pb->context.len > 0) {
        m->context = kv_memdup(pb->context.data, pb->context.len);
        if (m->context == NULL) {
            return KV_ENOMEM;
        }
        m->context_size = pb->context.len;
    }
    if (pb->n_entries > 0) {
        m->entries = kv_calloc(pb->n_entries, sizeof *m->entries);
        if (m->entries == NULL) {
            return KV_ENOMEM;
        }
        for (size_t i = 0; i < pb->n_entries; i++) {
            const Raftkv__Raft__Entry *e = pb->entries[i];
            struct raft_entry *d = &m->entries[i];
            d->term = e->term;
            d->index = e->index;
            d->type = (uint32_t)e->type;
            d->size = e->data.len;
            if (e->data.len > 0) {
                d->data = kv_memdup(e->data.data, e->data.len);
                if (d->data == NULL) {
                    return KV_ENOMEM;
                }
            }
            m->n_entries = i + 1;
        }
    }
    return KV_OK;
}

int raft_msg_decode(const uint8_t *buf, size_t size, struct raft_msg *m)
{
    memset(m, 0, sizeof *m);
    ProtobufCAllocator a = pb_allocator();
    Raftkv__Raft__Message *pb = raftkv__raft__message__unpack(&a, size, buf);
    if (pb == NULL) {
        /* protobuf-c does not tell a short allocation from bad bytes. */
        return KV_ECORRUPT;
    }
    int rc = fill_from_pb(m, pb);
    raftkv__raft__message__free_unpacked(pb, &a);
    if (rc != KV_OK) {
        raft_msg_clear(m);
    }
    return rc;
}

int raft_msg_copy(struct raft_msg *dst, const struct raft_msg *src)
{
    *dst = *src;
    dst->entries = NULL;
    dst->n_entries = 0;
    dst->context = NULL;
    dst->context_size = 0;
    if (src->context_size > 0) {
        dst->context = kv_memdup(src->context, src->context_size);
        if (dst->context == NULL) {
            return KV_ENOMEM;
        }
        dst->context_size = src->context_size;
    }
    if (src->n_entries > 0) {
        dst->entries = kv_calloc(src->n_entries, sizeof *dst->entries);
        if (dst->entries == NULL) {
            raft_msg_clear(dst);
            return KV_ENOMEM;
        }
        for (size_t i = 0; i < src->n_entries; i++) {
            dst->entries[i] = src->entries[i];
            dst->entries[i].data = NULL;
            if (src->entries[i].size > 0) {
                dst->entries[i].data = kv_memdup(src->entries[i].data, src->entries[i].size);
                if (dst->entries[i].data == NULL) {
                    raft_msg_clear(dst);
                    return KV_ENOMEM;
                }
            }
            dst->n_entries = i + 1;
        }
    }
    return KV_OK;
}

void raft_msg_clear(struct raft_msg *m)
{
    raft__msg_free_owned(m);
    memset(m, 0, sizeof *m);
}
