/* test_resp.c -- the RESP codec: requests whole, pipelined and arriving
 * byte by byte; binary-safe arguments; inline commands; every malformed or
 * oversized input refused with Redis's wording; reply encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "resp.h"

static int parse_str(struct resp_parser *p, const char *s, size_t n, struct resp_request *req,
                     size_t *used)
{
    return resp_parse(p, (const uint8_t *)s, n, req, used);
}

static void assert_arg(const struct resp_request *req, size_t i, const char *s, size_t n)
{
    assert_true(i < req->argc);
    assert_int_equal(req->argv_size[i], n);
    assert_memory_equal(req->argv[i], s, n);
}

static void test_multibulk_and_pipeline(void **state)
{
    struct resp_parser p;
    struct resp_request req;
    size_t used;
    const char wire[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\n";
    size_t n = sizeof wire - 1;
    resp_parser_init(&p);
    assert_int_equal(parse_str(&p, wire, n, &req, &used), KV_OK);
    assert_int_equal(req.argc, 3);
    assert_arg(&req, 0, "SET", 3);
    assert_arg(&req, 1, "k", 1);
    assert_arg(&req, 2, "a\r\nb", 4); /* binary safe */
    assert_int_equal(parse_str(&p, wire + used, n - used, &req, &used), KV_OK);
    assert_int_equal(req.argc, 1);
    assert_arg(&req, 0, "PING", 4);
    resp_parser_close(&p);
}

static void test_byte_by_byte_resumes(void **state)
{
    struct resp_parser p;
    struct resp_request req;
    size_t used = 0;
    const char wire[] = "*4\r\n$4\r\nMSET\r\n$0\r\n\r\n$2\r\nab\r\n$3\r\nxyz\r\n";
    size_t n = sizeof wire - 1;
    resp_parser_init(&p);
    for (size_t have = 0; have < n; have++) {
        assert_int_equal(parse_str(&p, wire, have, &req, &used), KV_EUNAVAILABLE);
        assert_int_equal(used, 0);
    }
    assert_int_equal(parse_str(&p, wire, n, &req, &used), KV_OK);
    assert_int_equal(used, n);
    assert_int_equal(req.argc, 4);
    assert_arg(&req, 1, "", 0);
    assert_arg(&req, 3, "xyz", 3);
    /* *0 and *-1 are empty requests, consumed and skipped by callers. */
    assert_int_equal(parse_str(&p, "*0\r\n", 4, &req, &used), KV_OK);
    assert_int_equal(req.argc, 0);
    assert_int_equal(used, 4);
    assert_int_equal(parse_str(&p, "*-1\r\n", 5, &req, &used), KV_OK);
    assert_int_equal(req.argc, 0);
    resp_parser_close(&p);
}

static void test_inline(void **state)
{
    struct resp_parser p;
    struct resp_request req;
    size_t used;
    resp_parser_init(&p);
    const char *line = "  set  \"hello world\" 'x y'\tz\r\nPING\n";
    assert_int_equal(parse_str(&p, line, strlen(line), &req, &used), KV_OK);
    assert_int_equal(req.argc, 4);
    assert_arg(&req, 0, "set", 3);
    assert_arg(&req, 1, "hello world", 11);
    assert_arg(&req, 2, "x y", 3);
    assert_arg(&req, 3, "z", 1);
    assert_int_equal(parse_str(&p, line + used, strlen(line) - used, &req, &used), KV_OK);
    assert_arg(&req, 0, "PING", 4);
    assert_int_equal(parse_str(&p, "\r\n", 2, &req, &used), KV_OK);
    assert_int_equal(req.argc, 0);
    assert_int_equal(parse_str(&p, "GET k", 5, &req, &used), KV_EUNAVAILABLE);
    assert_int_equal(parse_str(&p, "GET \"k\r\n", 8, &req, &used), KV_EPROTO);
    assert_string_equal(p.errmsg, "ERR Protocol error: unbalanced quotes in request");
    resp_parser_close(&p);
}

static void expect_error(const char *wire, size_t n, int code, const char *msg)
{
    struct resp_parser p;
    struct resp_request req;
    size_t used;
    resp_parser_init(&p);
    assert_int_equal(resp_parse(&p, (const uint8_t *)wire, n, &req, &used), code);
    assert_string_equal(p.errmsg, msg);
    resp_parser_close(&p);
}

static void test_malformed(void **state)
{
    expect_error("*abc\r\n", 6, KV_EPROTO, "ERR Protocol error: invalid multibulk length");
    expect_error("*2\r\n+OK\r\n", 9, KV_EPROTO, "ERR Protocol error: expected '$', got '+'");
    expect_error("*1\r\n$-5\r\n", 9, KV_EPROTO, "ERR Protocol error: invalid bulk length");
    expect_error("*1\r\n$x\r\n", 8, KV_EPROTO, "ERR Protocol error: invalid bulk length");
    expect_error("*1\r\n$1\r\nabc\r\n", 13, KV_EPROTO,
                 "ERR Protocol error: bulk string not terminated by CRLF");
    expect_error("*1\r\n$999999999999\r\n", 20, KV_ETOOBIG,
                 "ERR Protocol error: invalid bulk length");
    expect_error("*99999999\r\n", 11, KV_ETOOBIG, "ERR Protocol error: invalid multibulk length");
    /* A header line that never ends is refused once it is implausibly long. */
    char endless[100];
    memset(endless, '9', sizeof endless);
    endless[0] = '*';
    expect_error(endless, sizeof endless, KV_EPROTO,
                 "ERR Protocol error: invalid multibulk length");
    /* An inline line over the limit. */
    size_t big = RESP_INLINE_BYTES_MAX + 10;
    char *line = test_malloc(big);
    memset(line, 'a', big);
    expect_error(line, big, KV_ETOOBIG, "ERR Protocol error: too big inline request");
    test_free(line);
}

static void test_replies(void **state)
{
    struct kv_buf b;
    kv_buf_init(&b);
    assert_int_equal(resp_add_simple(&b, "OK"), KV_OK);
    assert_int_equal(resp_add_error(&b, "ERR bad\r\nthing"), KV_OK);
    assert_int_equal(resp_add_int(&b, -42), KV_OK);
    assert_int_equal(resp_add_bulk(&b, "a\0b", 3), KV_OK);
    assert_int_equal(resp_add_bulk(&b, "", 0), KV_OK);
    assert_int_equal(resp_add_null(&b, 0), KV_OK);
    assert_int_equal(resp_add_null(&b, 1), KV_OK);
    assert_int_equal(resp_add_array(&b, 2), KV_OK);
    assert_int_equal(resp_add_map(&b, 2, 0), KV_OK);
    assert_int_equal(resp_add_map(&b, 2, 1), KV_OK);
    const char want[] = "+OK\r\n-ERR bad  thing\r\n:-42\r\n$3\r\na\0b\r\n$0\r\n\r\n$-1\r\n_\r\n"
                        "*2\r\n*4\r\n%2\r\n";
    assert_int_equal(b.size, sizeof want - 1);
    assert_memory_equal(b.data, want, b.size);
    kv_buf_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multibulk_and_pipeline),
        cmocka_unit_test(test_byte_by_byte_resumes),
        cmocka_unit_test(test_inline),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
