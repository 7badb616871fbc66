/* conformance_model.h -- what the storage conformance cases
 * (test_conformance.c) share with conformance_model.c: the sorted-array
 * model of the expected content, the checks that compare an engine with it,
 * the per-case fixture (a fresh temp directory) and the directory helpers.
 *
 * Every check fails the current cmocka case with a message naming the
 * engine and the offending key; none returns an error. */
#ifndef CONFORMANCE_MODEL_H
#define CONFORMANCE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "stor.h"

/* Room for any path the suite builds under its temp directory. */
#define CM_PATH_SIZE_MAX 1024
/* Bytes of a key shown in a failure message (hex-escaped). */
#define CM_SHOW_KEY_BYTES 48
#define CM_SHOW_SIZE      (CM_SHOW_KEY_BYTES * 4 + 16)

/* ---- the model ---------------------------------------------------------- */

struct model_entry {
    uint8_t *key;
    size_t key_size;
    uint8_t *value;
    size_t value_size;
};

struct model {
    struct model_entry *items; /* sorted by stor key order, unique keys */
    size_t count;
    size_t cap;
};

/* malloc that aborts instead of failing (libc, not kv_malloc). */
void *cm_xmalloc(size_t size);
/* stor key order: bytewise, a prefix before its extensions. */
int cm_key_cmp(const void *a, size_t a_size, const void *b, size_t b_size);

void model_init(struct model *m);
void model_close(struct model *m);
/* Index of the first entry >= key (count when none). */
size_t model_lower(const struct model *m, const void *key, size_t key_size);
/* Index of `key`, or -1 when absent. */
long model_find(const struct model *m, const void *key, size_t key_size);
void model_put(struct model *m, const void *key, size_t key_size, const void *value,
               size_t value_size);
void model_delete(struct model *m, const void *key, size_t key_size);
/* Deletes [start, end); a NULL bound is open. */
void model_delete_range(struct model *m, const void *start, size_t start_size, const void *end,
                        size_t end_size);
/* Initializes `dst` as a deep copy of `src`. */
void model_copy(struct model *dst, const struct model *src);
/* Applies a batch to the model in order, the way stor_write must. */
void model_apply(struct model *m, const struct stor_batch *b);

/* Hex-escapes up to CM_SHOW_KEY_BYTES of `p` into `out`; returns out. */
const char *cm_show(const void *p, size_t size, char out[CM_SHOW_SIZE]);

/* ---- directories -------------------------------------------------------- */

/* Relative paths of everything under a directory, parents before children. */
struct tree {
    char **paths;
    int *is_dir;
    size_t count;
    size_t cap;
};

/* Removes `path` and everything under it; missing paths are ignored. */
void cm_remove_tree(const char *path);
/* Lists `root` into `t` (to be freed with tree_free). */
void tree_list(const char *root, struct tree *t);
void tree_free(struct tree *t);
/* Copies the directories and regular files under `from` into `to`. */
void cm_copy_tree(const char *from, const char *to);

/* ---- fixture ------------------------------------------------------------ */

/* What main knows before any case runs: passed to each case as prestate. */
struct cm_suite {
    const char *engine; /* engine under test */
};

struct fixture {
    const char *engine;
    int persistent;                 /* files survive close (every engine but memory) */
    char dir[CM_PATH_SIZE_MAX];     /* this case's temp dir, removed at teardown */
    char db_path[CM_PATH_SIZE_MAX]; /* the engine's directory inside it */
    enum stor_sync sync;            /* policy of the current open */
    struct stor_engine *e;          /* open engine, or NULL */
};

/* cmocka setup/teardown: *state is a struct cm_suite on entry to setup and
 * the case's struct fixture afterwards. */
int cm_setup(void **state);
int cm_teardown(void **state);
/* stor_open of engine `name` at `path` with default options and `sync`. */
int cm_open_engine(const char *name, const char *path, enum stor_sync sync,
                   struct stor_engine **out, char errmsg[KV_ERRMSG_SIZE]);
/* Opens fx->db_path (fx->e must be NULL); fails the case on error. */
void fx_open(struct fixture *fx, enum stor_sync sync);
/* Closes and opens again with the same sync policy. */
void fx_reopen(struct fixture *fx);
/* Returns 1 when `engine` can be opened here, 0 when it is not built yet;
 * exits on any other open error. */
int cm_engine_available(const char *engine);

/* ---- checks against the model ------------------------------------------- */

/* Iterates [start, end) of `e` (through `view` when not NULL) and checks
 * that it yields exactly the model's keys in that range, each once, with
 * the model's values, in key order when the engine is ordered. */
void cm_check_range(struct stor_engine *e, const struct stor_view *view, const struct model *m,
                    const void *start, size_t start_size, const void *end, size_t end_size,
                    const char *what);
/* Checks that `key` reads as KV_ENOTFOUND. */
void cm_check_absent(struct stor_engine *e, const struct stor_view *view, const void *key,
                     size_t key_size, const char *what);
/* Full content check: whole-range iteration plus a get of every key. */
void cm_check_all(struct stor_engine *e, const struct stor_view *view, const struct model *m,
                  const char *what);
/* Writes `b` to both the engine and the model. */
void cm_write_both(struct stor_engine *e, struct model *m, const struct stor_batch *b);
void cm_put_both(struct stor_engine *e, struct model *m, const void *key, size_t key_size,
                 const void *value, size_t value_size);
void cm_put_str(struct stor_engine *e, struct model *m, const char *key, const char *value);
/* Fills with `count` keys "<prefix><i>" and values derived from them. */
void cm_fill(struct stor_engine *e, struct model *m, const char *prefix, int count);

#endif
