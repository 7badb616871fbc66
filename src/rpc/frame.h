/* frame.h -- the RPC wire frame: a fixed 24-byte header and a payload
 * (a protobuf-c message), optionally lz4-compressed. This is the part of
 * src/rpc that needs no event loop: encoding, and an incremental decoder
 * for untrusted bytes from a socket. Connections, batching and reconnects
 * (libuv) build on it.
 *
 * Header, all integers little-endian:
 *   u32 magic "RKVF" | u8 version | u8 flags | u16 message type
 *   u32 payload bytes on the wire | u64 request id
 *   u32 payload bytes after decompression (= wire bytes when uncompressed)
 * A peer that sees a different version refuses the connection with a clear
 * error; fields inside payloads evolve the protobuf way. */
#ifndef KV_RPC_FRAME_H
#define KV_RPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define RPC_FRAME_MAGIC       0x46564b52u /* "RKVF" read as little-endian u32 */
#define RPC_FRAME_VERSION     1
#define RPC_FRAME_HEADER_SIZE 24
/* Largest payload accepted (after decompression); a frame claiming more is
 * malformed and closes the connection. Snapshot chunks stay well below. */
#define RPC_FRAME_PAYLOAD_MAX (64u * 1024u * 1024u)
/* Payloads at least this large are compressed when that saves space. */
#define RPC_FRAME_COMPRESS_MIN 4096u

enum rpc_frame_flag {
    RPC_FRAME_COMPRESSED = 1u << 0, /* payload is an lz4 block */
    RPC_FRAME_RESPONSE = 1u << 1,   /* answers the request with the same id */
};
#define RPC_FRAME_FLAGS_KNOWN (RPC_FRAME_COMPRESSED | RPC_FRAME_RESPONSE)

struct rpc_frame_header {
    uint8_t version;
    uint8_t flags;         /* rpc_frame_flag bits */
    uint16_t type;         /* message type; meaning defined by the node RPC */
    uint32_t wire_size;    /* payload bytes that follow the header */
    uint64_t request_id;   /* pairs responses with requests; 0 = one-way */
    uint32_t payload_size; /* payload bytes once decompressed */
};

/* Appends one frame (header + payload, lz4-compressed when `compress` is
 * set, the payload is at least RPC_FRAME_COMPRESS_MIN bytes and
 * compression shrinks it) to `out`. Returns KV_OK, KV_ETOOBIG (payload over
 * RPC_FRAME_PAYLOAD_MAX) or KV_ENOMEM (out unchanged on error). */
int rpc_frame_encode(struct kv_buf *out, uint16_t type, uint8_t flags, uint64_t request_id,
                     const void *payload, size_t payload_size, int compress) KV_MUST_USE;

/* Decodes the frame at the start of `data` (bytes received so far).
 * Returns KV_OK with *hdr filled, *payload (size hdr->payload_size)
 * written into `scratch` when compressed or pointing into `data`
 * otherwise, and *consumed = bytes of this frame; KV_EUNAVAILABLE when
 * more bytes are needed (nothing consumed); KV_EPROTO for a bad magic,
 * unknown flags or an incompatible version (errmsg says which);
 * KV_ETOOBIG for a payload over the limit; KV_ECORRUPT for a payload that
 * does not decompress to its stated size. After any error other than
 * KV_EUNAVAILABLE the stream cannot be resynchronised: close it. */
int rpc_frame_decode(const uint8_t *data, size_t size, struct rpc_frame_header *hdr,
                     const uint8_t **payload, size_t *consumed, struct kv_buf *scratch,
                     char errmsg[KV_ERRMSG_SIZE]) KV_MUST_USE;

#endif
