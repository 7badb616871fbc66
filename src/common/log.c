/* log.c -- the stderr log sink. One fprintf per line keeps lines whole
 * when several threads log at once (stdio locks the stream per call). */
#include "log.h"
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int kv_log_threshold = KV_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int kv_log_set_level_name(const char *name)
{
    for (int i = 0; i <= KV_LOG_OFF; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            kv_log_threshold = i;
            return KV_OK;
        }
    }
    return KV_EINVAL;
}

void kv__log_write(int level, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    char stamp[32];
    struct timeval tv;
    struct tm tm;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (level < 0 || level > KV_LOG_ERROR) {
        level = KV_LOG_ERROR;
    }
    fprintf(stderr, "%s.%03ldZ %-5s %s src=%s:%d\n", stamp, (long)(tv.tv_usec / 1000),
            level_names[level], msg, base, line);
}
