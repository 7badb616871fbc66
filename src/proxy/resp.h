/* resp.h -- the Redis protocol (RESP2 and RESP3) as the proxy speaks it: an
 * incremental, bounded parser for client requests (multibulk arrays of bulk
 * strings, and inline commands as redis-cli sends them by hand), and reply
 * writers for both protocol versions.
 *
 * The parser never reads past what it was given, never allocates more than
 * its limits allow, and reports malformed input with the error text Redis
 * itself uses, so clients see familiar messages. */
#ifndef KV_PROXY_RESP_H
#define KV_PROXY_RESP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/* Limits of one request (Redis's own defaults are 1M args and 512 MB bulk;
 * ours follow the value limit of the store). */
#define RESP_ARGS_MAX          (1024u * 1024u)
#define RESP_BULK_BYTES_MAX    (16u * 1024u * 1024u + 1024u)
#define RESP_INLINE_BYTES_MAX  (64u * 1024u)
#define RESP_REQUEST_BYTES_MAX (512u * 1024u * 1024u)

/* One parsed request: argv[i] points into the parser's buffer and stays
 * valid until the next resp_parse call. */
struct resp_request {
    size_t argc;
    const uint8_t **argv;
    size_t *argv_size;
};

/* Incremental parser state for one connection. Between calls that return
 * KV_EUNAVAILABLE the caller must pass the same request again, from its
 * first byte, with more bytes after it (the buffer may move): the parser
 * resumes where it stopped, so a large request arriving in many pieces costs
 * linear time. */
struct resp_parser {
    size_t args_max; /* limits, defaults from resp_parser_init */
    size_t bulk_bytes_max;
    long long mb_total; /* arguments of the multibulk in progress, -1: none */
    size_t mb_done;     /* arguments of it already parsed */
    size_t mb_off;      /* request bytes parsed so far */
    /* Argument slices (offsets into the caller's buffer). */
    size_t *arg_off;
    size_t *arg_len;
    const uint8_t **argv;
    size_t arg_cap;
    char errmsg[128]; /* protocol error text, "ERR Protocol error: ..." */
};

void resp_parser_init(struct resp_parser *p);
void resp_parser_close(struct resp_parser *p);

/* Parses one request from data[0, size). Returns:
 *  KV_OK: *req filled, *consumed = its bytes (argc may be 0 for an empty
 *         inline line, which callers skip);
 *  KV_EUNAVAILABLE: incomplete, nothing consumed (call again with more);
 *  KV_EPROTO: malformed, p->errmsg holds the reply text; the connection
 *         cannot be resynchronised and must be closed after replying;
 *  KV_ETOOBIG: a limit was exceeded (errmsg says which); close likewise;
 *  KV_ENOMEM. */
int resp_parse(struct resp_parser *p, const uint8_t *data, size_t size, struct resp_request *req,
               size_t *consumed) KV_MUST_USE;

/* ---- replies ---- Each appends to `out` and returns KV_OK or KV_ENOMEM. */
int resp_add_simple(struct kv_buf *out, const char *s) KV_MUST_USE;         /* +OK */
int resp_add_error(struct kv_buf *out, const char *s) KV_MUST_USE;          /* -ERR ... */
int resp_add_int(struct kv_buf *out, int64_t v) KV_MUST_USE;                /* :42 */
int resp_add_bulk(struct kv_buf *out, const void *p, size_t n) KV_MUST_USE; /* $n */
int resp_add_bulk_str(struct kv_buf *out, const char *s) KV_MUST_USE;
/* Null: $-1 in RESP2, _ in RESP3. */
int resp_add_null(struct kv_buf *out, int resp3) KV_MUST_USE;
int resp_add_array(struct kv_buf *out, size_t n) KV_MUST_USE; /* *n */
/* Map header: %n in RESP3, an array of 2n elements in RESP2. */
int resp_add_map(struct kv_buf *out, size_t n, int resp3) KV_MUST_USE;

#endif
