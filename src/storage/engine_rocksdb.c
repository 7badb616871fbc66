/* engine_rocksdb.c -- placeholder until the rocksdb engine lands (issue 2, in
 * progress this session): opening it fails with KV_EUNSUPPORTED. */
#include "stor_int.h"

#include <stdio.h>

static int rocksdb_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    snprintf(errmsg, KV_ERRMSG_SIZE, "rocksdb engine is not built yet");
    return KV_EUNSUPPORTED;
}

const struct stor_engine_ops stor__rocksdb_ops = {
    .name = "rocksdb",
    .ordered = 1,
    .open = rocksdb_open,
};
