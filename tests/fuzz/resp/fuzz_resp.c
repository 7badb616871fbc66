/* fuzz_resp.c -- fuzz target for the RESP request parser: the input is a
 * client's byte stream. It is fed in two pieces (split at a point taken
 * from the first byte) to exercise resumption, then parsed request by
 * request. Every argument must lie inside the input, every request must
 * consume bytes, and a parse may only fail with the documented codes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const struct resp_request *req, const uint8_t *base, size_t size)
{
    for (size_t i = 0; i < req->argc; i++) {
        if (req->argv[i] < base || req->argv[i] + req->argv_size[i] > base + size) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct resp_parser p;
    struct resp_request req;
    size_t used;
    size_t off = 0;
    size_t split = size > 0 ? data[0] % (size + 1) : 0;
    resp_parser_init(&p);
    /* First a prefix (as if the rest had not arrived yet), then all of it. */
    int rc = resp_parse(&p, data, split, &req, &used);
    if (rc == KV_OK) {
        check_request(&req, data, split);
    }
    resp_parser_close(&p); /* a caller closes on error; start clean either way */
    for (int guard = 0; guard < 100000 && off < size; guard++) {
        rc = resp_parse(&p, data + off, size - off, &req, &used);
        if (rc != KV_OK) {
            if (rc != KV_EUNAVAILABLE && rc != KV_EPROTO && rc != KV_ETOOBIG && rc != KV_ENOMEM) {
                abort();
            }
            break;
        }
        if (used == 0 || used > size - off) {
            abort();
        }
        check_request(&req, data + off, size - off);
        off += used;
    }
    resp_parser_close(&p);
    return 0;
}
