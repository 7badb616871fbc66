/* err.c -- error names and messages, and the errno mapping. */
#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

const char *kv_strerror(int err)
{
    switch (err) {
#define KV__ERR_MSG(sym, val, msg)                                                                 \
    case val:                                                                                      \
        return msg;
        KV_ERR_MAP(KV__ERR_MSG)
#undef KV__ERR_MSG
    }
    return "unknown error";
}

const char *kv_errname(int err)
{
    switch (err) {
#define KV__ERR_NAME(sym, val, msg)                                                                \
    case val:                                                                                      \
        return #sym;
        KV_ERR_MAP(KV__ERR_NAME)
#undef KV__ERR_NAME
    }
    return "KV_EUNKNOWN";
}

int kv_err_from_errno(int errno_value)
{
    switch (errno_value) {
    case 0:
        return KV_OK;
    case ENOMEM:
        return KV_ENOMEM;
    case EINVAL:
        return KV_EINVAL;
    case ENOENT:
        return KV_ENOENT;
    case ENOSPC:
    case EDQUOT:
        return KV_ENOSPC;
    case EEXIST:
        return KV_EEXIST;
    case EACCES:
    case EPERM:
    case EROFS:
        return KV_EPERM;
    case EAGAIN:
    case EBUSY:
    case EADDRINUSE:
        return KV_EBUSY;
    case ETIMEDOUT:
        return KV_ETIMEDOUT;
    case ECANCELED:
        return KV_ECANCELED;
    case EFBIG:
    case E2BIG:
        return KV_ETOOBIG;
    default:
        return KV_EIO;
    }
}

void kv__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}
