/* err.h -- RaftKV's one error space: every fallible function returns one of
 * these codes (0 on success, negative on failure), and kv_strerror() names it.
 * errno values are mapped into this space at the I/O edge by kv_err_from_errno. */
#ifndef KV_ERR_H
#define KV_ERR_H

/* The single list of errors: X(symbol, value, message). Values are stable
 * because they may cross the wire in replies. */
#define KV_ERR_MAP(X)                                                                              \
    X(KV_OK, 0, "success")                                                                         \
    X(KV_ENOMEM, -1, "out of memory")                                                              \
    X(KV_EINVAL, -2, "invalid argument")                                                           \
    X(KV_ENOTFOUND, -3, "not found")                                                               \
    X(KV_EIO, -4, "input/output error")                                                            \
    X(KV_ECORRUPT, -5, "data is corrupted")                                                        \
    X(KV_ENOSPC, -6, "no space left on device")                                                    \
    X(KV_EEXIST, -7, "already exists")                                                             \
    X(KV_EOF, -8, "end of stream")                                                                 \
    X(KV_EBUSY, -9, "busy, retry later")                                                           \
    X(KV_ETIMEDOUT, -10, "timed out")                                                              \
    X(KV_ENOTLEADER, -11, "not the leader")                                                        \
    X(KV_ESTALE, -12, "stale configuration epoch")                                                 \
    X(KV_EWRONGGROUP, -13, "wrong group for key")                                                  \
    X(KV_ETOOBIG, -14, "too large")                                                                \
    X(KV_ECLOSED, -15, "closed")                                                                   \
    X(KV_EUNSUPPORTED, -16, "not supported")                                                       \
    X(KV_EPROTO, -17, "protocol error")                                                            \
    X(KV_EPERM, -18, "permission denied")                                                          \
    X(KV_ELOCKED, -19, "resource is locked by another process")                                    \
    X(KV_EPOISONED, -20, "an earlier write or sync failed; the object refuses more work")          \
    X(KV_ECANCELED, -21, "canceled")                                                               \
    X(KV_ENOENT, -22, "no such file or directory")                                                 \
    X(KV_ECOMPACTED, -23, "log entries were compacted away")                                       \
    X(KV_EUNAVAILABLE, -24, "log entries not available yet")

enum kv_err {
#define KV__ERR_ENUM(sym, val, msg) sym = val,
    KV_ERR_MAP(KV__ERR_ENUM)
#undef KV__ERR_ENUM
};

/* Size of the errmsg buffers that long-lived objects keep for context. */
#define KV_ERRMSG_SIZE 512

/* Returns a static, never-NULL description of `err`; unknown codes get
 * "unknown error". */
const char *kv_strerror(int err);

/* Returns the symbolic name ("KV_ENOMEM") of `err`, static, never NULL. */
const char *kv_errname(int err);

/* Maps a positive errno value to the closest kv_err (EIO for unknown ones). */
int kv_err_from_errno(int errno_value);

/* Marks a function whose result must be checked. */
#define KV_MUST_USE __attribute__((warn_unused_result))

/* Cheap assertions stay on in release builds: a programmer error aborts with
 * the file, line and expression instead of corrupting data. */
#define KV_ASSERT(expr) ((expr) ? (void)0 : kv__assert_fail(#expr, __FILE__, __LINE__))
_Noreturn void kv__assert_fail(const char *expr, const char *file, int line);

#endif
