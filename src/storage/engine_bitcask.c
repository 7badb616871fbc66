/* engine_bitcask.c -- placeholder until the bitcask engine lands (issue 2, in
 * progress this session): opening it fails with KV_EUNSUPPORTED. */
#include "stor_int.h"

#include <stdio.h>

static int bitcask_open(const struct stor_options *o, struct stor_engine **out, char *errmsg)
{
    snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask engine is not built yet");
    return KV_EUNSUPPORTED;
}

const struct stor_engine_ops stor__bitcask_ops = {
    .name = "bitcask",
    .ordered = 1,
    .open = bitcask_open,
};
