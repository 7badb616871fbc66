/* fuzz_meta_config.c -- fuzz target for the cluster configuration decoder
 * (proto/meta.proto as read from the meta group or a peer): a
 * configuration that decodes must pass validation, re-encode, and decode
 * again to the same epoch and sizes; a change that decodes must stay within
 * its limits. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meta_config c;
    struct meta_config again;
    struct meta_change ch;
    struct kv_buf b;
    char errmsg[KV_ERRMSG_SIZE];
    meta_config_init(&c);
    meta_config_init(&again);
    kv_buf_init(&b);
    if (meta_config_decode(data, size, &c, errmsg) == KV_OK) {
        if (meta_config_validate(&c, errmsg) != KV_OK || meta_config_encode(&c, &b) != KV_OK ||
            meta_config_decode(b.data, b.size, &again, errmsg) != KV_OK || again.epoch != c.epoch ||
            again.n_nodes != c.n_nodes || again.n_shards != c.n_shards) {
            abort();
        }
    }
    if (meta_change_decode(data, size, &ch) == KV_OK &&
        (ch.n_voters > META_MEMBERS_MAX || ch.n_learners > META_MEMBERS_MAX)) {
        abort();
    }
    kv_buf_close(&b);
    meta_config_close(&c);
    meta_config_close(&again);
    return 0;
}
