/* engine_memory.c -- the in-memory reference engine: an ordered, persistent
 * (path-copying) treap. A write builds a new version of the tree that
 * shares every untouched node with the old one, then publishes it with one
 * pointer swap, so a batch is atomic and a view is just a reference to a
 * root: O(1) to take, and it never changes.
 *
 * Nodes are immutable once published and reference-counted; items (the
 * key and value bytes) are shared by every node version that holds them, so
 * a path copy never copies a value. Priorities are a hash of the key, which
 * keeps the shape (and so every test run) deterministic. The recursion in
 * split/merge/free is bounded by the tree height, O(log n) expected. */
#include "stor_int.h"
#include "alloc.h"
#include "hash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct item {
    atomic_uint refs;
    size_t key_size;
    size_t value_size;
    uint8_t bytes[]; /* key, then value */
};

struct node {
    atomic_uint refs;
    struct item *item;
    struct node *left;
    struct node *right;
    uint64_t prio;  /* heap order: a parent's prio >= its children's */
    uint64_t count; /* nodes in this subtree */
};

struct mem_engine {
    struct stor_engine base;
    pthread_mutex_t root_lock;  /* guards `root` (swap and take-a-reference) */
    pthread_mutex_t write_lock; /* serialises writers */
    struct node *root;          /* current version; one reference held here */
};

struct mem_view {
    struct stor_view base;
    struct node *root; /* referenced version */
};

#define ITER_STACK_MAX 256 /* far above any reachable treap height */

struct mem_iter {
    struct stor_iter base;
    struct node *root; /* referenced, keeps the version alive */
    struct node *stack[ITER_STACK_MAX];
    int depth;
    struct kv_buf end;
    int has_end;
};

static const uint8_t *item_key(const struct item *it)
{
    return it->bytes;
}

static const uint8_t *item_value(const struct item *it)
{
    return it->bytes + it->key_size;
}

static void item_unref(struct item *it)
{
    if (it != NULL && atomic_fetch_sub(&it->refs, 1) == 1) {
        kv_free(it);
    }
}

static struct node *node_ref(struct node *n)
{
    if (n != NULL) {
        atomic_fetch_add(&n->refs, 1);
    }
    return n;
}

static void node_unref(struct node *n)
{
    if (n != NULL && atomic_fetch_sub(&n->refs, 1) == 1) {
        node_unref(n->left);
        node_unref(n->right);
        item_unref(n->item);
        kv_free(n);
    }
}

static uint64_t count_of(const struct node *n)
{
    return n ? n->count : 0;
}

/* A new node holding `item` (reference taken) and the given children
 * (ownership of those references passes to the node). */
static struct node *node_new(struct item *item, struct node *left, struct node *right)
{
    struct node *n = kv_malloc(sizeof *n);
    if (n == NULL) {
        return NULL;
    }
    atomic_init(&n->refs, 1);
    atomic_fetch_add(&item->refs, 1);
    n->item = item;
    n->left = left;
    n->right = right;
    n->prio = kv_hash64(item_key(item), item->key_size);
    n->count = 1 + count_of(left) + count_of(right);
    return n;
}

static int cmp_item(const struct item *it, const void *key, size_t key_size)
{
    return stor__key_cmp(item_key(it), it->key_size, key, key_size);
}

/* Splits `t` (borrowed) into owned trees: *l with keys < key (or <= key when
 * `inclusive`), *r with the rest. On failure both are left NULL (or unset
 * when a deeper call failed) and nothing leaks. */
static int split(struct node *t, const void *key, size_t key_size, int inclusive, struct node **l,
                 struct node **r)
{
    if (t == NULL) {
        *l = *r = NULL;
        return KV_OK;
    }
    int c = cmp_item(t->item, key, key_size);
    int goes_left = inclusive ? c <= 0 : c < 0;
    struct node *a;
    struct node *b;
    if (goes_left) {
        int rc = split(t->right, key, key_size, inclusive, &a, &b);
        if (rc != KV_OK) {
            return rc;
        }
        *l = node_new(t->item, node_ref(t->left), a);
        *r = b;
        if (*l == NULL) {
            node_unref(t->left);
            node_unref(a);
            node_unref(b);
            *l = *r = NULL;
            return KV_ENOMEM;
        }
    } else {
        int rc = split(t->left, key, key_size, inclusive, &a, &b);
        if (rc != KV_OK) {
            return rc;
        }
        *r = node_new(t->item, b, node_ref(t->right));
        *l = a;
        if (*r == NULL) {
            node_unref(t->right);
            node_unref(a);
            node_unref(b);
            *l = *r = NULL;
            return KV_ENOMEM;
        }
    }
    return KV_OK;
}

/* Joins `a` and `b` (borrowed; every key of a < every key of b) into an
 * owned tree *out. */
static int merge(struct node *a, struct node *b, struct node **out)
{
    if (a == NULL || b == NULL) {
        *out = node_ref(a ? a : b);
        return KV_OK;
    }
    struct node *sub;
    if (a->prio >= b->prio) {
        int rc = merge(a->right, b, &sub);
        if (rc != KV_OK) {
            return rc;
        }
        *out = node_new(a->item, node_ref(a->left), sub);
        if (*out == NULL) {
            node_unref(a->left);
            node_unref(sub);
            return KV_ENOMEM;
        }
    } else {
        int rc = merge(a, b->left, &sub);
        if (rc != KV_OK) {
            return rc;
        }
        *out = node_new(b->item, sub, node_ref(b->right));
        if (*out == NULL) {
            node_unref(b->right);
            node_unref(sub);
            return KV_ENOMEM;
        }
    }
    return KV_OK;
}

/* Removes [start, end) from *root (owned; replaced on success). end NULL:
 * unbounded. With `end == start` and `inclusive_end`, removes one key. */
static int cut(struct node **root, const void *start, size_t start_size, const void *end,
               size_t end_size, int inclusive_end)
{
    struct node *l = NULL;
    struct node *rest = NULL;
    struct node *mid = NULL;
    struct node *r = NULL;
    struct node *joined = NULL;
    int rc = split(*root, start, start_size, 0, &l, &rest);
    if (rc != KV_OK) {
        return rc;
    }
    if (end != NULL) {
        rc = split(rest, end, end_size, inclusive_end, &mid, &r);
    } else {
        mid = node_ref(rest);
    }
    if (rc == KV_OK) {
        rc = merge(l, r, &joined);
    }
    node_unref(l);
    node_unref(rest);
    node_unref(mid);
    node_unref(r);
    if (rc == KV_OK) {
        node_unref(*root);
        *root = joined;
    }
    return rc;
}

static int insert(struct node **root, const void *key, size_t key_size, const void *value,
                  size_t value_size)
{
    struct item *it = kv_malloc(sizeof *it + key_size + value_size);
    if (it == NULL) {
        return KV_ENOMEM;
    }
    atomic_init(&it->refs, 1);
    it->key_size = key_size;
    it->value_size = value_size;
    memcpy(it->bytes, key, key_size);
    if (value_size > 0) {
        memcpy(it->bytes + key_size, value, value_size);
    }
    struct node *leaf = node_new(it, NULL, NULL);
    item_unref(it); /* the leaf holds it now (or it is freed on failure) */
    if (leaf == NULL) {
        return KV_ENOMEM;
    }
    struct node *l = NULL;
    struct node *rest = NULL;
    struct node *old = NULL;
    struct node *r = NULL;
    struct node *t1 = NULL;
    struct node *t2 = NULL;
    int rc = split(*root, key, key_size, 0, &l, &rest);
    if (rc == KV_OK) {
        rc = split(rest, key, key_size, 1, &old, &r);
    }
    if (rc == KV_OK) {
        rc = merge(l, leaf, &t1);
    }
    if (rc == KV_OK) {
        rc = merge(t1, r, &t2);
    }
    node_unref(leaf);
    node_unref(l);
    node_unref(rest);
    node_unref(old);
    node_unref(r);
    node_unref(t1);
    if (rc == KV_OK) {
        node_unref(*root);
        *root = t2;
    }
    return rc;
}

static const struct node *find(const struct node *n, const void *key, size_t key_size)
{
    while (n != NULL) {
        int c = cmp_item(n->item, key, key_size);
        if (c == 0) {
            return n;
        }
        n = c > 0 ? n->left : n->right;
    }
    return NULL;
}

static struct node *take_root(struct mem_engine *m)
{
    pthread_mutex_lock(&m->root_lock);
    struct node *r = node_ref(m->root);
    pthread_mutex_unlock(&m->root_lock);
    return r;
}

/* ---- vtable -------------------------------------------------------------- */

static int mem_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    struct mem_engine *m = kv_calloc(1, sizeof *m);
    if (m == NULL) {
        return KV_ENOMEM;
    }
    m->base.ops = &stor__memory_ops;
    pthread_mutex_init(&m->root_lock, NULL);
    pthread_mutex_init(&m->write_lock, NULL);
    *out = &m->base;
    return KV_OK;
}

static void mem_close(struct stor_engine *e)
{
    struct mem_engine *m = (struct mem_engine *)e;
    node_unref(m->root);
    pthread_mutex_destroy(&m->root_lock);
    pthread_mutex_destroy(&m->write_lock);
    kv_free(m);
}

static int mem_get(struct stor_engine *e, const struct stor_view *view, const void *key,
                   size_t key_size, struct kv_buf *value)
{
    struct mem_engine *m = (struct mem_engine *)e;
    struct node *root = view ? node_ref(((const struct mem_view *)view)->root) : take_root(m);
    const struct node *n = find(root, key, key_size);
    int rc = KV_ENOTFOUND;
    if (n != NULL) {
        rc = kv_buf_set(value, item_value(n->item), n->item->value_size);
    }
    node_unref(root);
    return rc;
}

static int apply_op(struct node **root, const struct stor_batch_op *op)
{
    switch (op->op) {
    case STOR_OP_PUT:
        return insert(root, op->key, op->key_size, op->value, op->value_size);
    case STOR_OP_DELETE:
        return cut(root, op->key, op->key_size, op->key, op->key_size, 1);
    case STOR_OP_DELETE_RANGE:
        return cut(root, op->key, op->key_size, op->value, op->value_size, 0);
    }
    return KV_ECORRUPT;
}

static int mem_write(struct stor_engine *e, const struct stor_batch *b)
{
    struct mem_engine *m = (struct mem_engine *)e;
    pthread_mutex_lock(&m->write_lock);
    struct node *work = take_root(m);
    struct stor_batch_op op;
    size_t pos = 0;
    int rc;
    while ((rc = stor_batch_next(b, &pos, &op)) == KV_OK) {
        rc = apply_op(&work, &op);
        if (rc != KV_OK) {
            break;
        }
    }
    if (rc == KV_EOF) {
        pthread_mutex_lock(&m->root_lock);
        struct node *old = m->root;
        m->root = work;
        pthread_mutex_unlock(&m->root_lock);
        node_unref(old);
        rc = KV_OK;
    } else {
        node_unref(work); /* nothing published: the batch left no trace */
        stor__set_errmsg(e, "memory: write batch failed: %s", kv_strerror(rc));
    }
    pthread_mutex_unlock(&m->write_lock);
    return rc;
}

static int mem_view_new(struct stor_engine *e, struct stor_view **out)
{
    struct mem_view *v = kv_malloc(sizeof *v);
    if (v == NULL) {
        return KV_ENOMEM;
    }
    v->root = take_root((struct mem_engine *)e);
    *out = &v->base;
    return KV_OK;
}

static void mem_view_free(struct stor_view *view)
{
    struct mem_view *v = (struct mem_view *)view;
    node_unref(v->root);
    kv_free(v);
}

static int mem_iter_new(struct stor_engine *e, const struct stor_view *view, const void *start,
                        size_t start_size, const void *end, size_t end_size, struct stor_iter **out)
{
    struct mem_iter *it = kv_calloc(1, sizeof *it);
    if (it == NULL) {
        return KV_ENOMEM;
    }
    kv_buf_init(&it->end);
    if (end != NULL && kv_buf_set(&it->end, end, end_size) != KV_OK) {
        kv_free(it);
        return KV_ENOMEM;
    }
    it->has_end = end != NULL;
    it->root = node_ref(((const struct mem_view *)view)->root);
    /* Descend to the first key >= start, stacking the nodes still to visit. */
    struct node *n = it->root;
    while (n != NULL) {
        if (start == NULL || cmp_item(n->item, start, start_size) >= 0) {
            KV_ASSERT(it->depth < ITER_STACK_MAX);
            it->stack[it->depth++] = n;
            n = n->left;
        } else {
            n = n->right;
        }
    }
    *out = &it->base;
    return KV_OK;
}

static int mem_iter_next(struct stor_iter *iter, const uint8_t **key, size_t *key_size,
                         const uint8_t **value, size_t *value_size)
{
    struct mem_iter *it = (struct mem_iter *)iter;
    if (it->depth == 0) {
        return KV_EOF;
    }
    struct node *n = it->stack[--it->depth];
    if (it->has_end && cmp_item(n->item, it->end.data, it->end.size) >= 0) {
        it->depth = 0;
        return KV_EOF;
    }
    for (struct node *c = n->right; c != NULL; c = c->left) {
        KV_ASSERT(it->depth < ITER_STACK_MAX);
        it->stack[it->depth++] = c;
    }
    *key = item_key(n->item);
    *key_size = n->item->key_size;
    *value = item_value(n->item);
    *value_size = n->item->value_size;
    return KV_OK;
}

static void mem_iter_free(struct stor_iter *iter)
{
    struct mem_iter *it = (struct mem_iter *)iter;
    node_unref(it->root);
    kv_buf_close(&it->end);
    kv_free(it);
}

static int mem_stats(struct stor_engine *e, struct stor_stats *out)
{
    struct node *root = take_root((struct mem_engine *)e);
    out->key_count = count_of(root);
    out->key_count_exact = 1;
    out->disk_bytes = 0;
    node_unref(root);
    return KV_OK;
}

const struct stor_engine_ops stor__memory_ops = {
    .name = "memory",
    .ordered = 1,
    .open = mem_open,
    .close = mem_close,
    .get = mem_get,
    .write = mem_write,
    .view_new = mem_view_new,
    .view_free = mem_view_free,
    .iter_new = mem_iter_new,
    .iter_next = mem_iter_next,
    .iter_free = mem_iter_free,
    .stats = mem_stats,
};
