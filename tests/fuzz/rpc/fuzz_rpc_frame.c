/* fuzz_rpc_frame.c -- fuzz target for the RPC frame decoder: the input is a
 * peer's byte stream, decoded frame by frame as a connection does. A
 * decoded payload must have its stated size and lie inside the input or
 * the scratch buffer; errors must be the documented ones. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_buf scratch;
    char errmsg[KV_ERRMSG_SIZE];
    size_t off = 0;
    kv_buf_init(&scratch);
    while (off < size) {
        struct rpc_frame_header hdr;
        const uint8_t *payload;
        size_t used;
        int rc = rpc_frame_decode(data + off, size - off, &hdr, &payload, &used, &scratch, errmsg);
        if (rc != KV_OK) {
            if (rc != KV_EUNAVAILABLE && rc != KV_EPROTO && rc != KV_ETOOBIG && rc != KV_ECORRUPT &&
                rc != KV_ENOMEM) {
                abort();
            }
            break;
        }
        if (used < RPC_FRAME_HEADER_SIZE || used > size - off) {
            abort();
        }
        int in_input = payload >= data && payload + hdr.payload_size <= data + size;
        int in_scratch = payload == scratch.data && hdr.payload_size == scratch.size;
        if (hdr.payload_size > 0 && !in_input && !in_scratch) {
            abort();
        }
        off += used;
    }
    kv_buf_close(&scratch);
    return 0;
}
