/* test_common.c -- unit tests for src/common: errors, buffers, varints,
 * CRC-32C, the ring hash, the PRNG and the allocator's fault injection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "alloc.h"
#include "buf.h"
#include "crc32c.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "num.h"
#include "rng.h"

static void test_strerror(void **state)
{
    assert_string_equal(kv_strerror(KV_OK), "success");
    assert_string_equal(kv_strerror(KV_ENOMEM), "out of memory");
    assert_string_equal(kv_errname(KV_ECORRUPT), "KV_ECORRUPT");
    assert_string_equal(kv_strerror(-9999), "unknown error");
    assert_int_equal(kv_err_from_errno(28 /* ENOSPC */), KV_ENOSPC);
    assert_int_equal(kv_err_from_errno(5 /* EIO */), KV_EIO);
}

static void test_crc32c_known_values(void **state)
{
    /* Check values from RFC 3720 (iSCSI), appendix B.4. */
    uint8_t zeros[32] = {0};
    uint8_t ones[32];
    uint8_t inc[32];
    memset(ones, 0xff, sizeof ones);
    for (int i = 0; i < 32; i++) {
        inc[i] = (uint8_t)i;
    }
    assert_int_equal(kv_crc32c(0, zeros, 32), 0x8a9136aa);
    assert_int_equal(kv_crc32c(0, ones, 32), 0x62a8ab43);
    assert_int_equal(kv_crc32c(0, inc, 32), 0x46dd794e);
    assert_int_equal(kv_crc32c(0, "123456789", 9), 0xe3069283);
}

static void test_crc32c_hw_matches_sw(void **state)
{
    struct kv_rng r;
    uint8_t data[1000];
    kv_rng_seed(&r, 7);
    kv_rng_fill(&r, data, sizeof data);
    for (size_t n = 0; n < sizeof data; n += 37) {
        assert_int_equal(kv_crc32c(0, data, n), kv__crc32c_sw(0, data, n));
        /* Incremental use equals one pass. */
        uint32_t c = kv_crc32c(0, data, n / 2);
        c = kv_crc32c(c, data + n / 2, n - n / 2);
        assert_int_equal(c, kv_crc32c(0, data, n));
    }
}

static void test_buf_and_varint(void **state)
{
    struct kv_buf b;
    kv_buf_init(&b);
    const uint64_t values[] = {0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, UINT64_MAX};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        assert_int_equal(kv_buf_put_varint(&b, values[i]), KV_OK);
    }
    assert_int_equal(kv_buf_put_u32(&b, 0xdeadbeef), KV_OK);
    assert_int_equal(kv_buf_put_u64(&b, 0x0123456789abcdefull), KV_OK);
    struct kv_reader r;
    kv_reader_init(&r, b.data, b.size);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        uint64_t v;
        assert_int_equal(kv_reader_varint(&r, &v), KV_OK);
        assert_true(v == values[i]);
    }
    uint32_t u32;
    uint64_t u64;
    assert_int_equal(kv_reader_u32(&r, &u32), KV_OK);
    assert_int_equal(u32, 0xdeadbeef);
    assert_int_equal(kv_reader_u64(&r, &u64), KV_OK);
    assert_true(u64 == 0x0123456789abcdefull);
    assert_int_equal(r.left, 0);
    assert_int_equal(kv_reader_u8(&r, (uint8_t *)&u32), KV_ECORRUPT);
    kv_buf_close(&b);
}

static void test_reader_rejects_bad_varints(void **state)
{
    /* Truncated: continuation bit set on the last byte. */
    const uint8_t trunc[] = {0x80, 0x80};
    /* Eleven bytes: longer than any 64-bit varint. */
    const uint8_t too_long[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    struct kv_reader r;
    uint64_t v;
    kv_reader_init(&r, trunc, sizeof trunc);
    assert_int_equal(kv_reader_varint(&r, &v), KV_ECORRUPT);
    kv_reader_init(&r, too_long, sizeof too_long);
    assert_int_equal(kv_reader_varint(&r, &v), KV_ECORRUPT);
    const uint8_t *p;
    kv_reader_init(&r, trunc, sizeof trunc);
    assert_int_equal(kv_reader_bytes(&r, 3, &p), KV_ECORRUPT);
}

static void test_hash_is_stable(void **state)
{
    /* The ring hash decides placement: these values must never change. */
    assert_int_equal(kv_hash32("", 0), 0x02cc5d05);
    assert_int_equal(kv_hash32("a", 1), 0x550d7456);
    assert_int_equal(kv_hash32("raftkv", 6), kv_hash32("raftkv", 6));
    assert_true(kv_hash32("key:1", 5) != kv_hash32("key:2", 5));
}

static void test_rng_deterministic(void **state)
{
    struct kv_rng a;
    struct kv_rng b;
    kv_rng_seed(&a, 42);
    kv_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) {
        assert_true(kv_rng_next(&a) == kv_rng_next(&b));
    }
    int hist[10] = {0};
    for (int i = 0; i < 10000; i++) {
        uint64_t v = kv_rng_below(&a, 10);
        assert_true(v < 10);
        hist[v]++;
    }
    for (int i = 0; i < 10; i++) {
        assert_true(hist[i] > 800 && hist[i] < 1200);
    }
}

static void test_alloc_fault_injection(void **state)
{
    kv_alloc_fault_after(2);
    void *a = kv_malloc(10);
    void *b = kv_malloc(10);
    void *c = kv_malloc(10);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_int_equal(kv_alloc_fault_hits(), 1);
    kv_alloc_fault_clear();
    c = kv_malloc(10);
    assert_non_null(c);
    kv_free(a);
    kv_free(b);
    kv_free(c);

    /* A failed buffer growth leaves the buffer as it was. */
    struct kv_buf buf;
    kv_buf_init(&buf);
    assert_int_equal(kv_buf_append(&buf, "abc", 3), KV_OK);
    kv_alloc_fault_after(0);
    char big[200] = {0};
    assert_int_equal(kv_buf_append(&buf, big, sizeof big), KV_ENOMEM);
    kv_alloc_fault_clear();
    assert_int_equal(buf.size, 3);
    assert_memory_equal(buf.data, "abc", 3);
    kv_buf_close(&buf);
}

static void test_log_levels(void **state)
{
    assert_int_equal(kv_log_set_level_name("warn"), KV_OK);
    assert_int_equal(kv_log_threshold, KV_LOG_WARN);
    assert_int_equal(kv_log_set_level_name("loud"), KV_EINVAL);
    assert_int_equal(kv_log_threshold, KV_LOG_WARN);
    int evaluated = 0;
    kv_debug("x=%d", ++evaluated); /* below threshold: arguments not evaluated */
    assert_int_equal(evaluated, 0);
    kv_log_set_level_name("info");
}

static void test_parse_i64(void **state)
{
    int64_t v = 7;
    const char *good[] = {"0", "-1", "42", "9223372036854775807", "-9223372036854775808"};
    const int64_t want[] = {0, -1, 42, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(kv_parse_i64((const uint8_t *)good[i], strlen(good[i]), &v), 1);
        assert_true(v == want[i]);
    }
    const char *bad[] = {"",
                         "-",
                         "+1",
                         " 1",
                         "1 ",
                         "01",
                         "-0",
                         "1.5",
                         "abc",
                         "9223372036854775808",
                         "-9223372036854775809",
                         "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        assert_int_equal(kv_parse_i64((const uint8_t *)bad[i], strlen(bad[i]), &v), 0);
        assert_true(v == 7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_crc32c_known_values),
        cmocka_unit_test(test_crc32c_hw_matches_sw),
        cmocka_unit_test(test_buf_and_varint),
        cmocka_unit_test(test_reader_rejects_bad_varints),
        cmocka_unit_test(test_hash_is_stable),
        cmocka_unit_test(test_rng_deterministic),
        cmocka_unit_test(test_alloc_fault_injection),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_parse_i64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
