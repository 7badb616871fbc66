/* log.h -- leveled logging, one key=value line per event, to stderr.
 * kv_log checks the level before its arguments are evaluated. */
#ifndef KV_LOG_H
#define KV_LOG_H

enum kv_log_level {
    KV_LOG_DEBUG = 0,
    KV_LOG_INFO = 1,
    KV_LOG_WARN = 2,
    KV_LOG_ERROR = 3,
    KV_LOG_OFF = 4,
};

/* The process-wide threshold: messages below it are dropped unevaluated.
 * Set once at start-up from flags; read without locking. */
extern int kv_log_threshold;

/* Sets the threshold; accepts "debug", "info", "warn", "error", "off".
 * Returns 0, or KV_EINVAL for an unknown name (threshold unchanged). */
int kv_log_set_level_name(const char *name);

/* Writes one line: "<iso time> <level> <msg>\n". Use the kv_log macro. */
void kv__log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define kv_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= kv_log_threshold) {                                                         \
            kv__log_write((level), __FILE__, __LINE__, __VA_ARGS__);                               \
        }                                                                                          \
    } while (0)

#define kv_debug(...) kv_log(KV_LOG_DEBUG, __VA_ARGS__)
#define kv_info(...)  kv_log(KV_LOG_INFO, __VA_ARGS__)
#define kv_warn(...)  kv_log(KV_LOG_WARN, __VA_ARGS__)
#define kv_error(...) kv_log(KV_LOG_ERROR, __VA_ARGS__)

#endif
