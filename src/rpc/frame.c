/* frame.c -- RPC frame encoding and the bounds-checked decoder. */
#include "frame.h"

#include <lz4.h>
#include <stdio.h>
#include <string.h>

static void put_header(uint8_t *h, const struct rpc_frame_header *hdr)
{
    kv_store_u32(h, RPC_FRAME_MAGIC);
    h[4] = hdr->version;
    h[5] = hdr->flags;
    h[6] = (uint8_t)hdr->type;
    h[7] = (uint8_t)(hdr->type >> 8);
    kv_store_u32(h + 8, hdr->wire_size);
    kv_store_u64(h + 12, hdr->request_id);
    kv_store_u32(h + 20, hdr->payload_size);
}

int rpc_frame_encode(struct kv_buf *out, uint16_t type, uint8_t flags, uint64_t request_id,
                     const void *payload, size_t payload_size, int compress)
{
    KV_ASSERT((flags & ~RPC_FRAME_FLAGS_KNOWN) == 0);
    KV_ASSERT((flags & RPC_FRAME_COMPRESSED) == 0); /* set here, not by callers */
    if (payload_size > RPC_FRAME_PAYLOAD_MAX) {
        return KV_ETOOBIG;
    }
    size_t mark = out->size;
    size_t bound = (size_t)LZ4_compressBound((int)payload_size);
    int rc =
        kv_buf_reserve(out, RPC_FRAME_HEADER_SIZE + (bound > payload_size ? bound : payload_size));
    if (rc != KV_OK) {
        return rc;
    }
    struct rpc_frame_header hdr = {
        .version = RPC_FRAME_VERSION,
        .flags = flags,
        .type = type,
        .wire_size = (uint32_t)payload_size,
        .request_id = request_id,
        .payload_size = (uint32_t)payload_size,
    };
    uint8_t *body = out->data + mark + RPC_FRAME_HEADER_SIZE;
    if (compress && payload_size >= RPC_FRAME_COMPRESS_MIN) {
        int n = LZ4_compress_default(payload, (char *)body, (int)payload_size, (int)bound);
        if (n > 0 && (size_t)n < payload_size) {
            hdr.flags |= RPC_FRAME_COMPRESSED;
            hdr.wire_size = (uint32_t)n;
        }
    }
    if ((hdr.flags & RPC_FRAME_COMPRESSED) == 0 && payload_size > 0) {
        memcpy(body, payload, payload_size);
    }
    put_header(out->data + mark, &hdr);
    out->size = mark + RPC_FRAME_HEADER_SIZE + hdr.wire_size;
    return KV_OK;
}

int rpc_frame_decode(const uint8_t *data, size_t size, struct rpc_frame_header *hdr,
                     const uint8_t **payload, size_t *consumed, struct kv_buf *scratch,
                     char errmsg[KV_ERRMSG_SIZE])
{
    *consumed = 0;
    /* Check the magic as soon as 4 bytes arrived, so a peer speaking some
     * other protocol is refused at once rather than after 24 bytes. */
    if (size >= 4 && kv_load_u32(data) != RPC_FRAME_MAGIC) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bad frame magic 0x%08x (not a RaftKV peer?)",
                 kv_load_u32(data));
        return KV_EPROTO;
    }
    if (size < RPC_FRAME_HEADER_SIZE) {
        return KV_EUNAVAILABLE;
    }
    hdr->version = data[4];
    hdr->flags = data[5];
    hdr->type = (uint16_t)(data[6] | data[7] << 8);
    hdr->wire_size = kv_load_u32(data + 8);
    hdr->request_id = kv_load_u64(data + 12);
    hdr->payload_size = kv_load_u32(data + 20);
    if (hdr->version != RPC_FRAME_VERSION) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "incompatible protocol version %u (this node speaks version %u)", hdr->version,
                 RPC_FRAME_VERSION);
        return KV_EPROTO;
    }
    if ((hdr->flags & ~RPC_FRAME_FLAGS_KNOWN) != 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "unknown frame flags 0x%02x", hdr->flags);
        return KV_EPROTO;
    }
    int compressed = (hdr->flags & RPC_FRAME_COMPRESSED) != 0;
    if (hdr->payload_size > RPC_FRAME_PAYLOAD_MAX || hdr->wire_size > RPC_FRAME_PAYLOAD_MAX ||
        (!compressed && hdr->wire_size != hdr->payload_size)) {
        snprintf(errmsg, KV_ERRMSG_SIZE,
                 "frame of %u bytes (%u on the wire) is over the %u limit "
                 "or inconsistent",
                 hdr->payload_size, hdr->wire_size, RPC_FRAME_PAYLOAD_MAX);
        return KV_ETOOBIG;
    }
    if (size - RPC_FRAME_HEADER_SIZE < hdr->wire_size) {
        return KV_EUNAVAILABLE;
    }
    const uint8_t *body = data + RPC_FRAME_HEADER_SIZE;
    if (!compressed) {
        *payload = body;
    } else {
        kv_buf_clear(scratch);
        if (kv_buf_reserve(scratch, hdr->payload_size) != KV_OK) {
            return KV_ENOMEM;
        }
        int n = LZ4_decompress_safe((const char *)body, (char *)scratch->data, (int)hdr->wire_size,
                                    (int)hdr->payload_size);
        if (n < 0 || (uint32_t)n != hdr->payload_size) {
            snprintf(errmsg, KV_ERRMSG_SIZE,
                     "compressed payload does not decompress to its stated %u bytes",
                     hdr->payload_size);
            return KV_ECORRUPT;
        }
        scratch->size = (size_t)n;
        *payload = scratch->data;
    }
    *consumed = RPC_FRAME_HEADER_SIZE + hdr->wire_size;
    return KV_OK;
}
