/* resp.c -- RESP request parser and reply writers (see resp.h). */
#include "resp.h"
#include "alloc.h"

#include <stdio.h>
#include <string.h>

/* Longest "*<n>\r\n" or "$<n>\r\n" header line we wait for. */
#define HEADER_LINE_MAX 32

void resp_parser_init(struct resp_parser *p)
{
    memset(p, 0, sizeof *p);
    p->args_max = RESP_ARGS_MAX;
    p->bulk_bytes_max = RESP_BULK_BYTES_MAX;
    p->mb_total = -1;
}

void resp_parser_close(struct resp_parser *p)
{
    kv_free(p->arg_off);
    kv_free(p->arg_len);
    kv_free(p->argv);
    resp_parser_init(p);
}

static void reset_progress(struct resp_parser *p)
{
    p->mb_total = -1;
    p->mb_done = 0;
    p->mb_off = 0;
}

static int fail(struct resp_parser *p, int rc, const char *msg)
{
    snprintf(p->errmsg, sizeof p->errmsg, "ERR Protocol error: %s", msg);
    reset_progress(p);
    return rc;
}

static int reserve_args(struct resp_parser *p, size_t n)
{
    if (n <= p->arg_cap) {
        return KV_OK;
    }
    size_t cap = p->arg_cap ? p->arg_cap : 8;
    while (cap < n) {
        cap *= 2;
    }
    size_t *off = kv_realloc(p->arg_off, cap * sizeof *off);
    if (off == NULL) {
        return KV_ENOMEM;
    }
    p->arg_off = off;
    size_t *len = kv_realloc(p->arg_len, cap * sizeof *len);
    if (len == NULL) {
        return KV_ENOMEM;
    }
    p->arg_len = len;
    const uint8_t **argv = kv_realloc(p->argv, cap * sizeof *argv);
    if (argv == NULL) {
        return KV_ENOMEM;
    }
    p->argv = argv;
    p->arg_cap = cap;
    return KV_OK;
}

/* Finds "\r\n" in data[from, size); returns its offset or -1. */
static long find_crlf(const uint8_t *data, size_t from, size_t size)
{
    for (size_t i = from; i + 1 < size; i++) {
        if (data[i] == '\r' && data[i + 1] == '\n') {
            return (long)i;
        }
    }
    return -1;
}

/* Parses a decimal integer (optional '-') spanning exactly [p, p + n). */
static int parse_ll(const uint8_t *s, size_t n, long long *out)
{
    if (n == 0 || n > 20) {
        return 0;
    }
    size_t i = s[0] == '-';
    if (i == n) {
        return 0;
    }
    long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (9223372036854775807LL - (s[i] - '0')) / 10) {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = s[0] == '-' ? -v : v;
    return 1;
}

/* Reads the header line at data[off] starting with `tag`; *value gets its
 * integer and *next the offset after "\r\n". */
static int header_line(struct resp_parser *p, const uint8_t *data, size_t size, size_t off,
                       char tag, const char *what, long long *value, size_t *next)
{
    if (off >= size) {
        return KV_EUNAVAILABLE;
    }
    if (data[off] != (uint8_t)tag) {
        char msg[64];
        snprintf(msg, sizeof msg, "expected '%c', got '%c'", tag,
                 data[off] >= 32 && data[off] < 127 ? data[off] : '?');
        return fail(p, KV_EPROTO, msg);
    }
    long end = find_crlf(data, off, size);
    if (end < 0) {
        return size - off > HEADER_LINE_MAX ? fail(p, KV_EPROTO, what) : KV_EUNAVAILABLE;
    }
    if (!parse_ll(data + off + 1, (size_t)end - off - 1, value)) {
        return fail(p, KV_EPROTO, what);
    }
    *next = (size_t)end + 2;
    return KV_OK;
}

static int parse_multibulk(struct resp_parser *p, const uint8_t *data, size_t size,
                           struct resp_request *req, size_t *consumed)
{
    int rc;
    if (p->mb_total < 0) {
        long long n;
        size_t next;
        rc = header_line(p, data, size, 0, '*', "invalid multibulk length", &n, &next);
        if (rc != KV_OK) {
            return rc;
        }
        if (n > (long long)p->args_max) {
            return fail(p, KV_ETOOBIG, "invalid multibulk length");
        }
        if (n <= 0) {
            req->argc = 0;
            *consumed = next;
            reset_progress(p);
            return KV_OK;
        }
        if (reserve_args(p, (size_t)n) != KV_OK) {
            reset_progress(p);
            return KV_ENOMEM;
        }
        p->mb_total = n;
        p->mb_done = 0;
        p->mb_off = next;
    }
    while (p->mb_done < (size_t)p->mb_total) {
        long long len;
        size_t next;
        rc = header_line(p, data, size, p->mb_off, '$', "invalid bulk length", &len, &next);
        if (rc != KV_OK) {
            return rc;
        }
        if (len < 0) {
            return fail(p, KV_EPROTO, "invalid bulk length");
        }
        if ((unsigned long long)len > p->bulk_bytes_max) {
            return fail(p, KV_ETOOBIG, "invalid bulk length");
        }
        if (next > RESP_REQUEST_BYTES_MAX || (size_t)len + 2 > RESP_REQUEST_BYTES_MAX - next) {
            return fail(p, KV_ETOOBIG, "request too large");
        }
        if (size - next < (size_t)len + 2) {
            return KV_EUNAVAILABLE;
        }
        if (data[next + len] != '\r' || data[next + len + 1] != '\n') {
            return fail(p, KV_EPROTO, "bulk string not terminated by CRLF");
        }
        p->arg_off[p->mb_done] = next;
        p->arg_len[p->mb_done] = (size_t)len;
        p->mb_done++;
        p->mb_off = next + (size_t)len + 2;
    }
    for (size_t i = 0; i < p->mb_done; i++) {
        p->argv[i] = data + p->arg_off[i];
    }
    req->argc = p->mb_done;
    req->argv = p->argv;
    req->argv_size = p->arg_len;
    *consumed = p->mb_off;
    reset_progress(p);
    return KV_OK;
}

/* Inline commands ("SET a b\r\n", as typed into telnet): split on spaces
 * and tabs; "..." or '...' group words (no escape sequences). */
static int parse_inline(struct resp_parser *p, const uint8_t *data, size_t size,
                        struct resp_request *req, size_t *consumed)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL) {
        return size > RESP_INLINE_BYTES_MAX ? fail(p, KV_ETOOBIG, "too big inline request")
                                            : KV_EUNAVAILABLE;
    }
    size_t line = (size_t)(nl - data);
    if (line > RESP_INLINE_BYTES_MAX) {
        return fail(p, KV_ETOOBIG, "too big inline request");
    }
    size_t end = line > 0 && data[line - 1] == '\r' ? line - 1 : line;
    size_t argc = 0;
    size_t i = 0;
    while (i < end) {
        while (i < end && (data[i] == ' ' || data[i] == '\t')) {
            i++;
        }
        if (i == end) {
            break;
        }
        if (argc >= p->args_max) {
            return fail(p, KV_ETOOBIG, "too many arguments");
        }
        if (reserve_args(p, argc + 1) != KV_OK) {
            return KV_ENOMEM;
        }
        size_t start = i;
        if (data[i] == '"' || data[i] == '\'') {
            uint8_t q = data[i++];
            start = i;
            while (i < end && data[i] != q) {
                i++;
            }
            if (i == end || (i + 1 < end && data[i + 1] != ' ' && data[i + 1] != '\t')) {
                return fail(p, KV_EPROTO, "unbalanced quotes in request");
            }
            p->arg_off[argc] = start;
            p->arg_len[argc] = i - start;
            i++;
        } else {
            while (i < end && data[i] != ' ' && data[i] != '\t') {
                i++;
            }
            p->arg_off[argc] = start;
            p->arg_len[argc] = i - start;
        }
        p->argv[argc] = data + p->arg_off[argc];
        argc++;
    }
    req->argc = argc;
    req->argv = p->argv;
    req->argv_size = p->arg_len;
    *consumed = line + 1;
    return KV_OK;
}

int resp_parse(struct resp_parser *p, const uint8_t *data, size_t size, struct resp_request *req,
               size_t *consumed)
{
    *consumed = 0;
    req->argc = 0;
    if (size == 0) {
        return KV_EUNAVAILABLE;
    }
    if (data[0] == '*') {
        return parse_multibulk(p, data, size, req, consumed);
    }
    return parse_inline(p, data, size, req, consumed);
}

/* ---- replies ---- */

static int add_line(struct kv_buf *out, char tag, const char *s, size_t n)
{
    int rc = kv_buf_reserve(out, n + 3);
    if (rc != KV_OK) {
        return rc;
    }
    out->data[out->size++] = (uint8_t)tag;
    memcpy(out->data + out->size, s, n);
    out->size += n;
    out->data[out->size++] = '\r';
    out->data[out->size++] = '\n';
    return KV_OK;
}

static int add_count(struct kv_buf *out, char tag, long long n)
{
    char tmp[24];
    int len = snprintf(tmp, sizeof tmp, "%lld", n);
    return add_line(out, tag, tmp, (size_t)len);
}

/* Simple strings and errors cannot carry CR or LF: they are replaced by
 * spaces so a message never breaks the stream. */
static int add_text(struct kv_buf *out, char tag, const char *s)
{
    size_t n = strlen(s);
    size_t mark = out->size;
    int rc = add_line(out, tag, s, n);
    if (rc == KV_OK) {
        for (size_t i = mark + 1; i < mark + 1 + n; i++) {
            if (out->data[i] == '\r' || out->data[i] == '\n') {
                out->data[i] = ' ';
            }
        }
    }
    return rc;
}

int resp_add_simple(struct kv_buf *out, const char *s)
{
    return add_text(out, '+', s);
}

int resp_add_error(struct kv_buf *out, const char *s)
{
    return add_text(out, '-', s);
}

int resp_add_int(struct kv_buf *out, int64_t v)
{
    return add_count(out, ':', v);
}

int resp_add_bulk(struct kv_buf *out, const void *p, size_t n)
{
    size_t mark = out->size;
    int rc = add_count(out, '$', (long long)n);
    if (rc == KV_OK) {
        rc = kv_buf_reserve(out, n + 2);
    }
    if (rc != KV_OK) {
        out->size = mark;
        return rc;
    }
    if (n > 0) {
        memcpy(out->data + out->size, p, n);
    }
    out->size += n;
    out->data[out->size++] = '\r';
    out->data[out->size++] = '\n';
    return KV_OK;
}

int resp_add_bulk_str(struct kv_buf *out, const char *s)
{
    return resp_add_bulk(out, s, strlen(s));
}

int resp_add_null(struct kv_buf *out, int resp3)
{
    return resp3 ? kv_buf_append(out, "_\r\n", 3) : kv_buf_append(out, "$-1\r\n", 5);
}

int resp_add_array(struct kv_buf *out, size_t n)
{
    return add_count(out, '*', (long long)n);
}

int resp_add_map(struct kv_buf *out, size_t n, int resp3)
{
    return resp3 ? add_count(out, '%', (long long)n) : add_count(out, '*', (long long)n * 2);
}
