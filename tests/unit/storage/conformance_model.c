/* conformance_model.c -- the model, checks and temp-directory helpers of the
 * storage conformance suite (test_conformance.c): shared by its cases so that
 * the case file stays about the cases. Model memory comes from libc, never
 * kv_malloc, so that allocation faults aimed at an engine never hit it. */
#define _GNU_SOURCE /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "stor.h"

#include "conformance_model.h"

/* ---- a sorted-array model of the expected content ------------------------ */

/* Model memory comes from libc, not kv_malloc, so that allocation fault
 * injection aimed at the engine never hits the model. */
void *cm_xmalloc(size_t size)
{
    void *p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        abort();
    }
    return p;
}

static uint8_t *xmemdup(const void *src, size_t size)
{
    uint8_t *p = cm_xmalloc(size);
    if (size > 0) {
        memcpy(p, src, size);
    }
    return p;
}

int cm_key_cmp(const void *a, size_t a_size, const void *b, size_t b_size)
{
    size_t n = a_size < b_size ? a_size : b_size;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return a_size < b_size ? -1 : a_size > b_size ? 1 : 0;
}

void model_init(struct model *m)
{
    memset(m, 0, sizeof *m);
}

void model_close(struct model *m)
{
    for (size_t i = 0; i < m->count; i++) {
        free(m->items[i].key);
        free(m->items[i].value);
    }
    free(m->items);
    model_init(m);
}

/* Index of the first entry >= key (count when none). */
size_t model_lower(const struct model *m, const void *key, size_t key_size)
{
    size_t lo = 0;
    size_t hi = m->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cm_key_cmp(m->items[mid].key, m->items[mid].key_size, key, key_size) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Index of `key`, or -1 when absent. */
long model_find(const struct model *m, const void *key, size_t key_size)
{
    size_t i = model_lower(m, key, key_size);
    if (i < m->count && cm_key_cmp(m->items[i].key, m->items[i].key_size, key, key_size) == 0) {
        return (long)i;
    }
    return -1;
}

void model_put(struct model *m, const void *key, size_t key_size, const void *value,
               size_t value_size)
{
    size_t i = model_lower(m, key, key_size);
    if (i < m->count && cm_key_cmp(m->items[i].key, m->items[i].key_size, key, key_size) == 0) {
        free(m->items[i].value);
        m->items[i].value = xmemdup(value, value_size);
        m->items[i].value_size = value_size;
        return;
    }
    if (m->count == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->items = realloc(m->items, m->cap * sizeof *m->items);
        if (m->items == NULL) {
            abort();
        }
    }
    memmove(&m->items[i + 1], &m->items[i], (m->count - i) * sizeof *m->items);
    m->items[i] = (struct model_entry){xmemdup(key, key_size), key_size, xmemdup(value, value_size),
                                       value_size};
    m->count++;
}

/* Removes [lo, hi) by index. */
static void model_erase(struct model *m, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++) {
        free(m->items[i].key);
        free(m->items[i].value);
    }
    memmove(&m->items[lo], &m->items[hi], (m->count - hi) * sizeof *m->items);
    m->count -= hi - lo;
}

void model_delete(struct model *m, const void *key, size_t key_size)
{
    long i = model_find(m, key, key_size);
    if (i >= 0) {
        model_erase(m, (size_t)i, (size_t)i + 1);
    }
}

void model_delete_range(struct model *m, const void *start, size_t start_size, const void *end,
                        size_t end_size)
{
    size_t lo = start ? model_lower(m, start, start_size) : 0;
    size_t hi = end ? model_lower(m, end, end_size) : m->count;
    if (lo < hi) {
        model_erase(m, lo, hi);
    }
}

void model_copy(struct model *dst, const struct model *src)
{
    model_init(dst);
    for (size_t i = 0; i < src->count; i++) {
        const struct model_entry *x = &src->items[i];
        model_put(dst, x->key, x->key_size, x->value, x->value_size);
    }
}

/* Applies a batch to the model in order, the way stor_write must. */
void model_apply(struct model *m, const struct stor_batch *b)
{
    struct stor_batch_op op;
    size_t pos = 0;
    int rc;
    while ((rc = stor_batch_next(b, &pos, &op)) == KV_OK) {
        if (op.op == STOR_OP_PUT) {
            model_put(m, op.key, op.key_size, op.value, op.value_size);
        } else if (op.op == STOR_OP_DELETE) {
            model_delete(m, op.key, op.key_size);
        } else {
            model_delete_range(m, op.key, op.key_size, op.value, op.value_size);
        }
    }
    assert_int_equal(rc, KV_EOF);
}

/* ---- failure messages ---------------------------------------------------- */

/* Hex-escapes up to CM_SHOW_KEY_BYTES of `p` into `out`; returns out. */
const char *cm_show(const void *p, size_t size, char out[CM_SHOW_SIZE])
{
    const uint8_t *b = p;
    size_t o = 0;
    if (p == NULL) {
        snprintf(out, CM_SHOW_SIZE, "(null)");
        return out;
    }
    out[o++] = '"';
    for (size_t i = 0; i < size && i < CM_SHOW_KEY_BYTES; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '"' && b[i] != '\\') {
            out[o++] = (char)b[i];
        } else {
            o += (size_t)snprintf(out + o, CM_SHOW_SIZE - o, "\\x%02x", b[i]);
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    if (size > CM_SHOW_KEY_BYTES) {
        snprintf(out + o, CM_SHOW_SIZE - o, "...(%zu bytes)", size);
    }
    return out;
}

/* ---- directories ---------------------------------------------------------- */

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

void cm_remove_tree(const char *path)
{
    nftw(path, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void tree_add(struct tree *t, const char *rel, int is_dir)
{
    if (t->count == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 32;
        t->paths = realloc(t->paths, t->cap * sizeof *t->paths);
        t->is_dir = realloc(t->is_dir, t->cap * sizeof *t->is_dir);
        if (t->paths == NULL || t->is_dir == NULL) {
            abort();
        }
    }
    t->paths[t->count] = (char *)xmemdup(rel, strlen(rel) + 1);
    t->is_dir[t->count] = is_dir;
    t->count++;
}

/* Lists `root` breadth-first: the list itself is the work queue, so no
 * recursion and no separate stack. */
void tree_list(const char *root, struct tree *t)
{
    memset(t, 0, sizeof *t);
    tree_add(t, "", 1);
    for (size_t i = 0; i < t->count; i++) {
        if (!t->is_dir[i]) {
            continue;
        }
        char dir[CM_PATH_SIZE_MAX];
        snprintf(dir, sizeof dir, "%s/%s", root, t->paths[i]);
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            char rel[CM_PATH_SIZE_MAX];
            char full[CM_PATH_SIZE_MAX];
            struct stat st;
            snprintf(rel, sizeof rel, "%s%s%s", t->paths[i], t->paths[i][0] ? "/" : "", de->d_name);
            snprintf(full, sizeof full, "%s/%s", root, rel);
            if (lstat(full, &st) == 0 && (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode))) {
                tree_add(t, rel, S_ISDIR(st.st_mode));
            }
        }
        closedir(d);
    }
}

void tree_free(struct tree *t)
{
    for (size_t i = 0; i < t->count; i++) {
        free(t->paths[i]);
    }
    free(t->paths);
    free(t->is_dir);
}

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY);
    assert_true(in >= 0);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        assert_int_equal(write(out, buf, (size_t)n), n);
    }
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

void cm_copy_tree(const char *from, const char *to)
{
    struct tree t;
    tree_list(from, &t);
    for (size_t i = 0; i < t.count; i++) {
        char src[CM_PATH_SIZE_MAX];
        char dst[CM_PATH_SIZE_MAX];
        snprintf(src, sizeof src, "%s/%s", from, t.paths[i]);
        snprintf(dst, sizeof dst, "%s/%s", to, t.paths[i]);
        if (t.is_dir[i]) {
            assert_true(mkdir(dst, 0755) == 0 || errno == EEXIST);
        } else {
            copy_file(src, dst);
        }
    }
    tree_free(&t);
}

/* ---- fixture ------------------------------------------------------------- */

int cm_setup(void **state)
{
    const struct cm_suite *s = *state;
    struct fixture *fx = cm_xmalloc(sizeof *fx);
    memset(fx, 0, sizeof *fx);
    fx->engine = s->engine;
    fx->persistent = strcmp(s->engine, "memory") != 0;
    snprintf(fx->dir, sizeof fx->dir, "/tmp/conf-%s-XXXXXX", s->engine);
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    snprintf(fx->db_path, sizeof fx->db_path, "%s/db", fx->dir);
    *state = fx;
    return 0;
}

int cm_teardown(void **state)
{
    struct fixture *fx = *state;
    kv_alloc_fault_clear();
    stor_close(fx->e);
    cm_remove_tree(fx->dir);
    free(fx);
    return 0;
}

int cm_open_engine(const char *name, const char *path, enum stor_sync sync,
                   struct stor_engine **out, char errmsg[KV_ERRMSG_SIZE])
{
    struct stor_options o;
    stor_options_init(&o);
    o.path = path;
    o.sync = sync;
    return stor_open(name, &o, out, errmsg);
}

void fx_open(struct fixture *fx, enum stor_sync sync)
{
    char errmsg[KV_ERRMSG_SIZE];
    KV_ASSERT(fx->e == NULL);
    int rc = cm_open_engine(fx->engine, fx->db_path, sync, &fx->e, errmsg);
    if (rc != KV_OK) {
        fail_msg("%s: open %s: %s: %s", fx->engine, fx->db_path, kv_errname(rc), errmsg);
    }
    fx->sync = sync;
}

/* Closes and opens again; for the memory engine the content is gone, so
 * callers only reopen persistent engines. */
void fx_reopen(struct fixture *fx)
{
    stor_close(fx->e);
    fx->e = NULL;
    fx_open(fx, fx->sync);
}

/* ---- checks against the model ------------------------------------------- */

/* Iterates [start, end) of `e` (through `view` when not NULL) and checks
 * that it yields exactly the model's keys in that range, each once, with
 * the model's values, in key order when the engine is ordered. */
void cm_check_range(struct stor_engine *e, const struct stor_view *view, const struct model *m,
                    const void *start, size_t start_size, const void *end, size_t end_size,
                    const char *what)
{
    char s1[CM_SHOW_SIZE];
    char s2[CM_SHOW_SIZE];
    size_t lo = start ? model_lower(m, start, start_size) : 0;
    size_t hi = end ? model_lower(m, end, end_size) : m->count;
    if (hi < lo) {
        hi = lo; /* start >= end: an empty range */
    }
    uint8_t *seen = calloc(hi - lo + 1, 1);
    assert_non_null(seen);
    struct stor_iter *it = NULL;
    int rc = stor_iter_new(e, view, start, start_size, end, end_size, &it);
    if (rc != KV_OK) {
        fail_msg("%s: %s: iter_new [%s, %s): %s (%s)", stor_name(e), what,
                 cm_show(start, start_size, s1), cm_show(end, end_size, s2), kv_errname(rc),
                 stor_errmsg(e));
    }
    size_t n = 0;
    const uint8_t *k;
    const uint8_t *v;
    size_t ks;
    size_t vs;
    while ((rc = stor_iter_next(it, &k, &ks, &v, &vs)) == KV_OK) {
        long i = model_find(m, k, ks);
        if (i < (long)lo || i >= (long)hi) {
            fail_msg("%s: %s: iteration of [%s, %s) yielded %s, which %s", stor_name(e), what,
                     cm_show(start, start_size, s1), cm_show(end, end_size, s2), cm_show(k, ks, s2),
                     i < 0 ? "should not exist" : "is outside the range");
        }
        if (seen[(size_t)i - lo]) {
            fail_msg("%s: %s: iteration yielded %s twice", stor_name(e), what, cm_show(k, ks, s1));
        }
        seen[(size_t)i - lo] = 1;
        if (stor_is_ordered(e) && (size_t)i != lo + n) {
            fail_msg("%s: %s: iteration out of order: got %s at position %zu, want %s",
                     stor_name(e), what, cm_show(k, ks, s1), n,
                     cm_show(m->items[lo + n].key, m->items[lo + n].key_size, s2));
        }
        const struct model_entry *x = &m->items[i];
        if (vs != x->value_size || (vs > 0 && memcmp(v, x->value, vs) != 0)) {
            fail_msg("%s: %s: iteration gave a wrong value for %s (%zu bytes, want %zu)",
                     stor_name(e), what, cm_show(k, ks, s1), vs, x->value_size);
        }
        n++;
    }
    if (rc != KV_EOF) {
        fail_msg("%s: %s: iter_next: %s (%s)", stor_name(e), what, kv_errname(rc), stor_errmsg(e));
    }
    if (n != hi - lo) {
        fail_msg("%s: %s: iteration of [%s, %s) yielded %zu keys, want %zu", stor_name(e), what,
                 cm_show(start, start_size, s1), cm_show(end, end_size, s2), n, hi - lo);
    }
    stor_iter_free(it);
    free(seen);
}

/* Point-reads every model key (must match) and `absent` keys (must be
 * KV_ENOTFOUND unless the model has them). */
static void check_gets(struct stor_engine *e, const struct stor_view *view, const struct model *m,
                       const char *what)
{
    char s1[CM_SHOW_SIZE];
    struct kv_buf value;
    kv_buf_init(&value);
    for (size_t i = 0; i < m->count; i++) {
        const struct model_entry *x = &m->items[i];
        int rc = stor_get(e, view, x->key, x->key_size, &value);
        if (rc != KV_OK) {
            fail_msg("%s: %s: get %s: %s (%s)", stor_name(e), what,
                     cm_show(x->key, x->key_size, s1), kv_errname(rc), stor_errmsg(e));
        }
        if (value.size != x->value_size ||
            (value.size > 0 && memcmp(value.data, x->value, value.size) != 0)) {
            fail_msg("%s: %s: get %s: wrong value (%zu bytes, want %zu)", stor_name(e), what,
                     cm_show(x->key, x->key_size, s1), value.size, x->value_size);
        }
    }
    kv_buf_close(&value);
}

void cm_check_absent(struct stor_engine *e, const struct stor_view *view, const void *key,
                     size_t key_size, const char *what)
{
    char s1[CM_SHOW_SIZE];
    struct kv_buf value;
    kv_buf_init(&value);
    int rc = stor_get(e, view, key, key_size, &value);
    if (rc != KV_ENOTFOUND) {
        fail_msg("%s: %s: get %s: %s, want KV_ENOTFOUND", stor_name(e), what,
                 cm_show(key, key_size, s1), kv_errname(rc));
    }
    kv_buf_close(&value);
}

/* Full content check: whole-range iteration plus a get of every key. */
void cm_check_all(struct stor_engine *e, const struct stor_view *view, const struct model *m,
                  const char *what)
{
    cm_check_range(e, view, m, NULL, 0, NULL, 0, what);
    check_gets(e, view, m, what);
}

/* Writes `b` to both the engine and the model. */
void cm_write_both(struct stor_engine *e, struct model *m, const struct stor_batch *b)
{
    int rc = stor_write(e, b);
    if (rc != KV_OK) {
        fail_msg("%s: write of %u ops: %s (%s)", stor_name(e), b->count, kv_errname(rc),
                 stor_errmsg(e));
    }
    model_apply(m, b);
}

void cm_put_both(struct stor_engine *e, struct model *m, const void *key, size_t key_size,
                 const void *value, size_t value_size)
{
    struct stor_batch b;
    stor_batch_init(&b);
    assert_int_equal(stor_batch_put(&b, key, key_size, value, value_size), KV_OK);
    cm_write_both(e, m, &b);
    stor_batch_close(&b);
}

void cm_put_str(struct stor_engine *e, struct model *m, const char *key, const char *value)
{
    cm_put_both(e, m, key, strlen(key), value, strlen(value));
}

/* Fills with `count` keys "<prefix><i>" and values derived from them. */
void cm_fill(struct stor_engine *e, struct model *m, const char *prefix, int count)
{
    struct stor_batch b;
    stor_batch_init(&b);
    for (int i = 0; i < count; i++) {
        char key[64];
        char value[96];
        int ks = snprintf(key, sizeof key, "%s%05d", prefix, i);
        int vs = snprintf(value, sizeof value, "value-of-%s-%d", key, i * 7919);
        assert_int_equal(stor_batch_put(&b, key, (size_t)ks, value, (size_t)vs), KV_OK);
    }
    cm_write_both(e, m, &b);
    stor_batch_close(&b);
}

/* ---- engine probe ------------------------------------------------------- */

/* Returns 1 when `engine` can be opened here, 0 when it is not built yet. */
int cm_engine_available(const char *engine)
{
    char dir[CM_PATH_SIZE_MAX];
    char path[CM_PATH_SIZE_MAX];
    char errmsg[KV_ERRMSG_SIZE];
    struct stor_engine *e;
    snprintf(dir, sizeof dir, "/tmp/conf-probe-%s-XXXXXX", engine);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(path, sizeof path, "%s/db", dir);
    int rc = cm_open_engine(engine, path, STOR_SYNC_NONE, &e, errmsg);
    if (rc == KV_OK) {
        stor_close(e);
    }
    cm_remove_tree(dir);
    if (rc == KV_EUNSUPPORTED) {
        return 0;
    }
    if (rc != KV_OK) {
        fprintf(stderr, "test_conformance: cannot open %s: %s: %s\n", engine, kv_errname(rc),
                errmsg);
        exit(1);
    }
    return 1;
}
