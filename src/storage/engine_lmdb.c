/* engine_lmdb.c -- placeholder until the lmdb engine lands (issue 2, in
 * progress this session): opening it fails with KV_EUNSUPPORTED. */
#include "stor_int.h"

#include <stdio.h>

static int lmdb_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    snprintf(errmsg, KV_ERRMSG_SIZE, "lmdb engine is not built yet");
    return KV_EUNSUPPORTED;
}

const struct stor_engine_ops stor__lmdb_ops = {
    .name = "lmdb",
    .ordered = 1,
    .open = lmdb_open,
};
