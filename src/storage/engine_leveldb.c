/* engine_leveldb.c -- placeholder until the leveldb engine lands (issue 2, in
 * progress this session): opening it fails with KV_EUNSUPPORTED. */
#include "stor_int.h"

#include <stdio.h>

static int leveldb_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    snprintf(errmsg, KV_ERRMSG_SIZE, "leveldb engine is not built yet");
    return KV_EUNSUPPORTED;
}

const struct stor_engine_ops stor__leveldb_ops = {
    .name = "leveldb",
    .ordered = 1,
    .open = leveldb_open,
};
