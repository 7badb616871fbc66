/* test_rpc_frame.c -- the RPC frame codec: round trips (plain and lz4),
 * incremental arrival byte by byte, and rejection of malformed, oversized
 * and incompatible frames without reading out of bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "frame.h"
#include "rng.h"

static void roundtrip(size_t payload_size, int compress, int compressible)
{
    struct kv_rng rng;
    struct kv_buf wire;
    struct kv_buf scratch;
    uint8_t *payload = test_malloc(payload_size + 1);
    kv_rng_seed(&rng, payload_size);
    if (compressible) {
        memset(payload, 'x', payload_size);
    } else {
        kv_rng_fill(&rng, payload, payload_size);
    }
    kv_buf_init(&wire);
    kv_buf_init(&scratch);
    assert_int_equal(
        rpc_frame_encode(&wire, 7, RPC_FRAME_RESPONSE, 99, payload, payload_size, compress), KV_OK);
    if (compress && compressible && payload_size >= RPC_FRAME_COMPRESS_MIN) {
        assert_true(wire.size < payload_size); /* it really compressed */
    }
    struct rpc_frame_header hdr;
    const uint8_t *out;
    size_t consumed;
    char errmsg[KV_ERRMSG_SIZE];
    /* Every strict prefix asks for more bytes and consumes nothing. */
    for (size_t n = 0; n < wire.size; n += 1 + n / 7) {
        assert_int_equal(rpc_frame_decode(wire.data, n, &hdr, &out, &consumed, &scratch, errmsg),
                         KV_EUNAVAILABLE);
        assert_int_equal(consumed, 0);
    }
    assert_int_equal(
        rpc_frame_decode(wire.data, wire.size, &hdr, &out, &consumed, &scratch, errmsg), KV_OK);
    assert_int_equal(consumed, wire.size);
    assert_int_equal(hdr.type, 7);
    assert_int_equal(hdr.request_id, 99);
    assert_true(hdr.flags & RPC_FRAME_RESPONSE);
    assert_int_equal(hdr.payload_size, payload_size);
    if (payload_size > 0) {
        assert_memory_equal(out, payload, payload_size);
    }
    kv_buf_close(&wire);
    kv_buf_close(&scratch);
    test_free(payload);
}

static void test_roundtrips(void **state)
{
    roundtrip(0, 0, 0);
    roundtrip(1, 1, 0);
    roundtrip(100, 1, 1);
    roundtrip(RPC_FRAME_COMPRESS_MIN, 1, 1);
    roundtrip(100000, 1, 1);
    roundtrip(100000, 1, 0); /* incompressible: sent plain */
    roundtrip(100000, 0, 1);
}

static void test_two_frames_back_to_back(void **state)
{
    struct kv_buf wire;
    struct kv_buf scratch;
    kv_buf_init(&wire);
    kv_buf_init(&scratch);
    assert_int_equal(rpc_frame_encode(&wire, 1, 0, 1, "abc", 3, 0), KV_OK);
    assert_int_equal(rpc_frame_encode(&wire, 2, 0, 2, "defg", 4, 0), KV_OK);
    struct rpc_frame_header hdr;
    const uint8_t *out;
    size_t used;
    size_t used2;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(rpc_frame_decode(wire.data, wire.size, &hdr, &out, &used, &scratch, errmsg),
                     KV_OK);
    assert_int_equal(hdr.type, 1);
    assert_memory_equal(out, "abc", 3);
    assert_int_equal(
        rpc_frame_decode(wire.data + used, wire.size - used, &hdr, &out, &used2, &scratch, errmsg),
        KV_OK);
    assert_int_equal(hdr.type, 2);
    assert_memory_equal(out, "defg", 4);
    assert_int_equal(used + used2, wire.size);
    kv_buf_close(&wire);
    kv_buf_close(&scratch);
}

static int decode_all(struct kv_buf *wire, char *errmsg)
{
    struct kv_buf scratch;
    struct rpc_frame_header hdr;
    const uint8_t *out;
    size_t consumed;
    kv_buf_init(&scratch);
    int rc = rpc_frame_decode(wire->data, wire->size, &hdr, &out, &consumed, &scratch, errmsg);
    kv_buf_close(&scratch);
    return rc;
}

static void test_rejects_bad_frames(void **state)
{
    struct kv_buf wire;
    char errmsg[KV_ERRMSG_SIZE];
    uint8_t big[RPC_FRAME_COMPRESS_MIN * 2];
    memset(big, 'y', sizeof big);
    kv_buf_init(&wire);

    /* Another protocol: refused from its first 4 bytes. */
    assert_int_equal(kv_buf_set(&wire, "GET / HTTP/1.1\r\n", 16), KV_OK);
    assert_int_equal(decode_all(&wire, errmsg), KV_EPROTO);
    assert_non_null(strstr(errmsg, "magic"));

    /* A future version: a clear error naming both versions. */
    kv_buf_clear(&wire);
    assert_int_equal(rpc_frame_encode(&wire, 1, 0, 1, "abc", 3, 0), KV_OK);
    wire.data[4] = RPC_FRAME_VERSION + 1;
    assert_int_equal(decode_all(&wire, errmsg), KV_EPROTO);
    assert_non_null(strstr(errmsg, "version"));

    /* Unknown flags. */
    wire.data[4] = RPC_FRAME_VERSION;
    wire.data[5] = 0x80;
    assert_int_equal(decode_all(&wire, errmsg), KV_EPROTO);

    /* Oversized: refused from the header alone, before the body arrives. */
    wire.data[5] = 0;
    kv_store_u32(wire.data + 8, RPC_FRAME_PAYLOAD_MAX + 1);
    kv_store_u32(wire.data + 20, RPC_FRAME_PAYLOAD_MAX + 1);
    assert_int_equal(decode_all(&wire, errmsg), KV_ETOOBIG);

    /* Plain frame whose two sizes disagree. */
    kv_store_u32(wire.data + 8, 3);
    kv_store_u32(wire.data + 20, 4);
    assert_int_equal(decode_all(&wire, errmsg), KV_ETOOBIG);

    /* Compressed frame whose body is garbage, or whose stated size lies. */
    kv_buf_clear(&wire);
    assert_int_equal(rpc_frame_encode(&wire, 1, 0, 1, big, sizeof big, 1), KV_OK);
    assert_true(wire.data[5] & RPC_FRAME_COMPRESSED);
    kv_store_u32(wire.data + 20, sizeof big + 1);
    assert_int_equal(decode_all(&wire, errmsg), KV_ECORRUPT);
    kv_store_u32(wire.data + 20, sizeof big);
    memset(wire.data + RPC_FRAME_HEADER_SIZE, 0xff, wire.size - RPC_FRAME_HEADER_SIZE);
    assert_int_equal(decode_all(&wire, errmsg), KV_ECORRUPT);

    /* Encoding refuses oversized payloads. */
    kv_buf_clear(&wire);
    assert_int_equal(rpc_frame_encode(&wire, 1, 0, 1, big, (size_t)RPC_FRAME_PAYLOAD_MAX + 1, 0),
                     KV_ETOOBIG);
    assert_int_equal(wire.size, 0);
    kv_buf_close(&wire);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrips),
        cmocka_unit_test(test_two_frames_back_to_back),
        cmocka_unit_test(test_rejects_bad_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
