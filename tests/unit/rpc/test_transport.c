/* test_transport.c -- the libuv RPC transport over real sockets on
 * 127.0.0.1 with ephemeral ports, several transports on one loop: ordered
 * one-way delivery, batching, compression, calls and their deadlines,
 * reconnect with backoff, the queue byte limit, refusal of garbage and of
 * incompatible handshakes, and shutdown. Every wait is bounded by a guard
 * timer that fails the test if it fires; uv_loop_close() must succeed at the
 * end of each test (no handle left open) and ASan checks the memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "crc32c.h"
#include "log.h"
#include "rng.h"
#include "transport.h"

#define GUARD_MS   5000u /* no single wait in these tests should take longer */
#define RECV_MAX   4096u
#define CLUSTER    7u
#define TYPE_MSG   1u
#define TYPE_REQ   2u
#define TYPE_RESP  3u
#define BIG_SIZE   (1024u * 1024u)
#define SMALL_SIZE 16u

/* One test node: a transport and what it received. */
struct node {
    struct rpc_transport *t;
    uint64_t id;
    int reply;                 /* answer requests with TYPE_RESP + same bytes */
    int reply_may_fail;        /* rpc_reply may return KV_ENOMEM */
    size_t n_recv;             /* messages received */
    uint32_t seq[RECV_MAX];    /* first 4 payload bytes of each (LE) */
    uint64_t from[RECV_MAX];   /* sender of each */
    size_t size[RECV_MAX];     /* payload size of each */
    uint32_t crc[RECV_MAX];    /* payload CRC-32C of each */
    struct rpc_token last_req; /* the last request seen */
    size_t n_req;              /* requests seen */
    int closing;               /* rpc_transport_close called */
    int closed;                /* close_cb ran */
};

struct fixture {
    uv_loop_t loop;
    struct node n[3];
};

static void on_recv(struct rpc_transport *t, const struct rpc_msg *msg, void *data)
{
    struct node *nd = data;
    assert_ptr_equal(nd->t, t);
    if (msg->token.request_id != 0) {
        nd->n_req++;
        nd->last_req = msg->token;
        if (nd->reply) {
            int rc = rpc_reply(t, &msg->token, TYPE_RESP, msg->payload, msg->size);
            if (rc != KV_OK) {
                print_message("reply rc=%d %s\n", rc, kv_errname(rc));
            }
            /* Under injected allocation failures a reply may fail cleanly. */
            assert_true(rc == KV_OK || (nd->reply_may_fail && rc == KV_ENOMEM));
        }
        return;
    }
    assert_true(nd->n_recv < RECV_MAX);
    size_t i = nd->n_recv++;
    nd->seq[i] = msg->size >= 4 ? kv_load_u32(msg->payload) : 0;
    nd->from[i] = msg->from;
    nd->size[i] = msg->size;
    nd->crc[i] = kv_crc32c(0, msg->payload, msg->size);
}

static void on_node_closed(void *data)
{
    struct node *nd = data;
    nd->closed++;
    nd->t = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

/* Closes every open transport, drains the loop and requires that nothing
 * is left open. */
static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 3; i++) {
        if (f->n[i].t != NULL && !f->n[i].closing) {
            rpc_transport_close(f->n[i].t, &f->n[i], on_node_closed);
        }
    }
    for (int i = 0; i < 100 && uv_run(&f->loop, UV_RUN_NOWAIT) != 0; i++) {
    }
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* Starts node `i` with id `id`, listening on 127.0.0.1 at `port` (0 =
 * ephemeral), with options adjusted by `o` when given. */
static void node_start_opts(struct fixture *f, int i, uint64_t id, uint16_t port,
                            struct rpc_transport_options *o)
{
    struct rpc_transport_options def;
    if (o == NULL) {
        rpc_transport_options_init(&def);
        def.cluster_id = CLUSTER;
        o = &def;
    }
    struct node *nd = &f->n[i];
    memset(nd, 0, sizeof *nd);
    nd->id = id;
    nd->reply = 1;
    o->node_id = id;
    o->listen_host = "127.0.0.1";
    o->listen_port = port;
    o->seed = id;
    o->recv_cb = on_recv;
    o->recv_data = nd;
    char errmsg[KV_ERRMSG_SIZE];
    int rc = rpc_transport_new(&f->loop, o, &nd->t, errmsg);
    if (rc != KV_OK) {
        fail_msg("rpc_transport_new: %s: %s", kv_errname(rc), errmsg);
    }
}

static void node_close(struct fixture *f, int i)
{
    f->n[i].closing = 1;
    rpc_transport_close(f->n[i].t, &f->n[i], on_node_closed);
}

static void node_start(struct fixture *f, int i, uint64_t id)
{
    node_start_opts(f, i, id, 0, NULL);
}

/* Tells a and b about each other. */
static void link_nodes(struct fixture *f, int a, int b)
{
    assert_int_equal(
        rpc_peer_add(f->n[a].t, f->n[b].id, "127.0.0.1", rpc_transport_port(f->n[b].t)), KV_OK);
    assert_int_equal(
        rpc_peer_add(f->n[b].t, f->n[a].id, "127.0.0.1", rpc_transport_port(f->n[a].t)), KV_OK);
}

static void on_guard(uv_timer_t *timer)
{
    *(int *)timer->data = 1;
}

typedef int (*cond_fn)(const void *arg);

/* Runs the loop until cond(arg) holds or ms pass; returns 1 if it held. */
static int run_for(struct fixture *f, cond_fn cond, const void *arg, uint64_t ms)
{
    uv_timer_t guard;
    int fired = 0;
    uv_timer_init(&f->loop, &guard);
    guard.data = &fired;
    uv_timer_start(&guard, on_guard, ms, 0);
    while (!fired && (cond == NULL || !cond(arg))) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    int held = cond != NULL && cond(arg);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* let the guard's close complete */
    return held;
}

static void run_until(struct fixture *f, cond_fn cond, const void *arg)
{
    if (!run_for(f, cond, arg, GUARD_MS)) {
        fail_msg("condition not reached within %u ms", GUARD_MS);
    }
}

struct want {
    const struct node *nd;
    size_t count;
};

static int got_recv(const void *arg)
{
    const struct want *w = arg;
    return w->nd->n_recv >= w->count;
}

struct conn_want {
    const struct node *nd;
    uint64_t peer;
};

static int is_connected(const void *arg)
{
    const struct conn_want *w = arg;
    return rpc_peer_connected(w->nd->t, w->peer);
}

static void wait_connected(struct fixture *f, int a, int b)
{
    struct conn_want w1 = {&f->n[a], f->n[b].id};
    struct conn_want w2 = {&f->n[b], f->n[a].id};
    run_until(f, is_connected, &w1);
    run_until(f, is_connected, &w2);
}

static void put_seq(uint8_t *buf, uint32_t seq)
{
    memset(buf, (int)seq, SMALL_SIZE);
    kv_store_u32(buf, seq);
}

/* ---- One-way messages -------------------------------------------------- */

/* Messages sent before the connection exists are queued and delivered in
 * order; both directions share the one connection. */
static void test_oneway_in_order(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    link_nodes(f, 0, 1);
    uint8_t buf[SMALL_SIZE];
    for (uint32_t i = 0; i < 500; i++) {
        put_seq(buf, i);
        assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf), KV_OK);
        assert_int_equal(rpc_send(f->n[1].t, 1, TYPE_MSG, buf, sizeof buf), KV_OK);
    }
    struct want w1 = {&f->n[1], 500};
    struct want w0 = {&f->n[0], 500};
    run_until(f, got_recv, &w1);
    run_until(f, got_recv, &w0);
    for (uint32_t i = 0; i < 500; i++) {
        assert_int_equal(f->n[1].seq[i], i);
        assert_int_equal(f->n[1].from[i], 1);
        assert_int_equal(f->n[0].seq[i], i);
        assert_int_equal(f->n[0].from[i], 2);
    }
    /* Exactly one connection for the pair: node 1 dialed, node 2 accepted. */
    struct rpc_stats s0, s1;
    rpc_transport_stats(f->n[0].t, &s0);
    rpc_transport_stats(f->n[1].t, &s1);
    assert_int_equal(s0.dials, 1);
    assert_int_equal(s0.accepted, 0);
    assert_int_equal(s1.dials, 0);
    assert_int_equal(s1.accepted, 1);
}

/* Many small messages sent in one loop turn leave in one uv_write. */
static void test_batching(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);
    struct rpc_stats before, after;
    rpc_transport_stats(f->n[0].t, &before);
    uint8_t buf[SMALL_SIZE];
    for (uint32_t i = 0; i < 1000; i++) {
        put_seq(buf, i);
        assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf), KV_OK);
    }
    struct want w = {&f->n[1], 1000};
    run_until(f, got_recv, &w);
    rpc_transport_stats(f->n[0].t, &after);
    assert_int_equal(after.frames_sent - before.frames_sent, 1000);
    assert_int_equal(after.writes - before.writes, 1);
    assert_int_equal(after.bytes_sent - before.bytes_sent,
                     1000 * (RPC_FRAME_HEADER_SIZE + SMALL_SIZE));
    for (uint32_t i = 0; i < 1000; i++) {
        assert_int_equal(f->n[1].seq[i], i);
    }
}

/* A large compressible payload is compressed on the wire and arrives
 * intact; an incompressible one goes plain. */
static void test_large_payload(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);
    uint8_t *big = malloc(BIG_SIZE);
    assert_non_null(big);
    for (size_t i = 0; i < BIG_SIZE; i++) {
        big[i] = (uint8_t)("raftkv-"[i % 7] + (i / 4096) % 3);
    }
    struct rpc_stats before, after;
    rpc_transport_stats(f->n[0].t, &before);
    assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, big, BIG_SIZE), KV_OK);
    struct want w = {&f->n[1], 1};
    run_until(f, got_recv, &w);
    rpc_transport_stats(f->n[0].t, &after);
    assert_int_equal(f->n[1].size[0], BIG_SIZE);
    assert_int_equal(f->n[1].crc[0], kv_crc32c(0, big, BIG_SIZE));
    assert_int_equal(after.frames_compressed - before.frames_compressed, 1);
    assert_true(after.bytes_sent - before.bytes_sent < BIG_SIZE / 10);

    struct kv_rng rng;
    kv_rng_seed(&rng, 42);
    kv_rng_fill(&rng, big, BIG_SIZE);
    assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, big, BIG_SIZE), KV_OK);
    w.count = 2;
    run_until(f, got_recv, &w);
    assert_int_equal(f->n[1].crc[1], kv_crc32c(0, big, BIG_SIZE));
    rpc_transport_stats(f->n[0].t, &before);
    assert_int_equal(before.frames_compressed, after.frames_compressed);
    free(big);
}

/* ---- Calls ------------------------------------------------------------- */

struct call_rec {
    int calls;      /* callbacks run */
    int status;     /* last status */
    uint32_t seq;   /* first 4 bytes of the response */
    uint16_t type;  /* response type */
    uint64_t at_ms; /* kv_clock_ms() when the callback ran */
};

static void on_call(struct rpc_transport *t, int status, const struct rpc_msg *resp, void *data)
{
    struct call_rec *r = data;
    r->calls++;
    r->status = status;
    r->at_ms = kv_clock_ms();
    if (status == KV_OK) {
        assert_non_null(resp);
        assert_true(resp->size >= 4);
        r->seq = kv_load_u32(resp->payload);
        r->type = resp->type;
    } else {
        assert_null(resp);
    }
}

struct calls_want {
    const struct call_rec *r;
    int n;
};

static int calls_done(const void *arg)
{
    const struct calls_want *w = arg;
    for (int i = 0; i < w->n; i++) {
        if (w->r[i].calls == 0) {
            return 0;
        }
    }
    return 1;
}

static int got_req(const void *arg)
{
    const struct node *nd = arg;
    return nd->n_req > 0;
}

/* Calls in both directions get their own responses. */
static void test_calls(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    link_nodes(f, 0, 1);
    struct call_rec r[20];
    memset(r, 0, sizeof r);
    uint8_t buf[SMALL_SIZE];
    for (uint32_t i = 0; i < 20; i++) {
        put_seq(buf, 100 + i);
        struct rpc_transport *from = f->n[i % 2].t;
        uint64_t to = i % 2 == 0 ? 2 : 1;
        assert_int_equal(rpc_call(from, to, TYPE_REQ, buf, sizeof buf, 2000, &r[i], on_call),
                         KV_OK);
    }
    struct calls_want w = {r, 20};
    run_until(f, calls_done, &w);
    for (uint32_t i = 0; i < 20; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, KV_OK);
        assert_int_equal(r[i].seq, 100 + i);
        assert_int_equal(r[i].type, TYPE_RESP);
    }
    /* A token of a request whose connection is gone is refused cleanly. */
    struct rpc_token stale = {.conn_id = 999999, .request_id = 1};
    assert_int_equal(rpc_reply(f->n[1].t, &stale, TYPE_RESP, buf, sizeof buf), KV_ECLOSED);
    /* Unknown peers are refused without calling back. */
    struct call_rec none = {0};
    assert_int_equal(rpc_call(f->n[0].t, 77, TYPE_REQ, buf, sizeof buf, 100, &none, on_call),
                     KV_ENOTFOUND);
    assert_int_equal(rpc_send(f->n[0].t, 77, TYPE_MSG, buf, sizeof buf), KV_ENOTFOUND);
    run_for(f, NULL, NULL, 50);
    assert_int_equal(none.calls, 0);
}

/* A call to a peer that never answers completes with KV_ETIMEDOUT at its
 * deadline, not before and not much later. */
static void test_call_timeout(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    f->n[1].reply = 0;
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);
    struct call_rec r = {0};
    uint8_t buf[SMALL_SIZE];
    put_seq(buf, 1);
    uv_update_time(&f->loop);
    uint64_t start = kv_clock_ms();
    assert_int_equal(rpc_call(f->n[0].t, 2, TYPE_REQ, buf, sizeof buf, 200, &r, on_call), KV_OK);
    struct calls_want w = {&r, 1};
    run_until(f, calls_done, &w);
    assert_int_equal(r.status, KV_ETIMEDOUT);
    assert_int_equal(f->n[1].n_req, 1); /* it did arrive; nobody answered */
    uint64_t took = r.at_ms - start;
    assert_true(took >= 199);
    assert_true(took < 600); /* slack for a loaded machine */
    /* A late reply is ignored, never a second callback. */
    assert_int_equal(rpc_reply(f->n[1].t, &f->n[1].last_req, TYPE_RESP, buf, sizeof buf), KV_OK);
    run_for(f, NULL, NULL, 100);
    assert_int_equal(r.calls, 1);
    struct rpc_stats s;
    rpc_transport_stats(f->n[0].t, &s);
    assert_int_equal(s.calls_timed_out, 1);
}

/* A connection that drops fails the calls waiting on it with KV_ECLOSED
 * long before their deadline. */
static void test_call_closed_on_drop(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    f->n[1].reply = 0;
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);
    struct call_rec r = {0};
    uint8_t buf[SMALL_SIZE];
    put_seq(buf, 1);
    assert_int_equal(rpc_call(f->n[0].t, 2, TYPE_REQ, buf, sizeof buf, 4000, &r, on_call), KV_OK);
    run_until(f, got_req, &f->n[1]);
    uint64_t start = kv_clock_ms();
    node_close(f, 1);
    struct calls_want w = {&r, 1};
    run_until(f, calls_done, &w);
    assert_int_equal(r.status, KV_ECLOSED);
    assert_true(r.at_ms - start < 1000);
}

/* Closing the transport cancels waiting calls, each exactly once, before
 * rpc_transport_close returns. */
static void test_close_cancels_calls(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    f->n[1].reply = 0;
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);
    struct call_rec r[3];
    memset(r, 0, sizeof r);
    uint8_t buf[SMALL_SIZE];
    put_seq(buf, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(rpc_call(f->n[0].t, 2, TYPE_REQ, buf, sizeof buf, 4000, &r[i], on_call),
                         KV_OK);
    }
    run_for(f, NULL, NULL, 20);
    node_close(f, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, KV_ECANCELED);
    }
    for (int i = 0; i < 100 && f->n[0].closed == 0; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_int_equal(f->n[0].closed, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
    }
}

/* A client (node id 0, no listener) calls a node and gets its answer. */
static void test_client(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 5);
    struct rpc_transport_options o;
    rpc_transport_options_init(&o);
    o.cluster_id = CLUSTER;
    char errmsg[KV_ERRMSG_SIZE];
    assert_int_equal(rpc_transport_new(&f->loop, &o, &f->n[1].t, errmsg), KV_OK);
    assert_int_equal(rpc_transport_port(f->n[1].t), 0);
    /* By name: looked up before every dial. */
    assert_int_equal(rpc_peer_add(f->n[1].t, 5, "localhost", rpc_transport_port(f->n[0].t)), KV_OK);
    struct call_rec r = {0};
    uint8_t buf[SMALL_SIZE];
    put_seq(buf, 9);
    assert_int_equal(rpc_call(f->n[1].t, 5, TYPE_REQ, buf, sizeof buf, 2000, &r, on_call), KV_OK);
    struct calls_want w = {&r, 1};
    run_until(f, calls_done, &w);
    assert_int_equal(r.status, KV_OK);
    assert_int_equal(r.seq, 9);
    struct rpc_stats s;
    rpc_transport_stats(f->n[0].t, &s);
    assert_int_equal(s.accepted, 1);
    assert_int_equal(s.refused, 0);
}

/* ---- Reconnect and back-pressure --------------------------------------- */

struct stat_want {
    const struct node *nd;
    uint64_t dial_failures;
};

static int failures_reached(const void *arg)
{
    const struct stat_want *w = arg;
    struct rpc_stats s;
    rpc_transport_stats(w->nd->t, &s);
    return s.dial_failures >= w->dial_failures;
}

/* A peer that goes away is redialed with capped exponential backoff; a
 * message sent meanwhile waits in the queue and arrives once it is back. */
static void test_reconnect_backoff(void **state)
{
    struct fixture *f = *state;
    struct rpc_transport_options o;
    rpc_transport_options_init(&o);
    o.cluster_id = CLUSTER;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 160;
    node_start_opts(f, 0, 1, 0, &o);
    node_start(f, 1, 2);
    uint16_t port = rpc_transport_port(f->n[1].t);
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);

    node_close(f, 1);
    uint64_t start = kv_clock_ms();
    struct stat_want sw = {&f->n[0], 3};
    run_until(f, failures_reached, &sw); /* three refused redials */
    run_for(f, NULL, NULL, 600);         /* an outage of ~0.6 s more */
    uint64_t outage_ms = kv_clock_ms() - start;
    uint8_t buf[SMALL_SIZE];
    put_seq(buf, 4242);
    assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf), KV_OK);
    struct rpc_stats s;
    rpc_transport_stats(f->n[0].t, &s);
    /* Delays are at least half of 20, 40, 80, 160, 160, ... ms: an outage
     * of T ms allows at most about 3 + T/80 attempts, far fewer than a
     * busy loop would make; and at least one per 160 ms once capped. */
    uint64_t failures = s.dial_failures;
    print_message("outage %llu ms: %llu failed dials\n", (unsigned long long)outage_ms,
                  (unsigned long long)failures);
    assert_true(failures >= 3 + (outage_ms - 310) / 320); /* halved: loaded CI */
    assert_true(failures <= 4 + outage_ms / 80);

    node_start_opts(f, 1, 2, port, NULL); /* back, on the same port */
    assert_int_equal(rpc_peer_add(f->n[1].t, 1, "127.0.0.1", rpc_transport_port(f->n[0].t)), KV_OK);
    struct want w = {&f->n[1], 1};
    run_until(f, got_recv, &w);
    assert_int_equal(f->n[1].seq[0], 4242);
    assert_true(rpc_peer_connected(f->n[0].t, 2));
}

/* The per-peer queue stops at its byte limit with KV_EBUSY instead of
 * growing; a frame larger than the whole queue is KV_ETOOBIG. */
static void test_queue_limit(void **state)
{
    struct fixture *f = *state;
    /* A port with nobody listening: grab one and give it back. */
    node_start(f, 1, 2);
    uint16_t dead_port = rpc_transport_port(f->n[1].t);
    node_close(f, 1);
    run_for(f, NULL, NULL, 10);

    struct rpc_transport_options o;
    rpc_transport_options_init(&o);
    o.cluster_id = CLUSTER;
    o.queue_bytes_max = 64 * 1024;
    node_start_opts(f, 0, 1, 0, &o);
    assert_int_equal(rpc_peer_add(f->n[0].t, 2, "127.0.0.1", dead_port), KV_OK);
    uint8_t buf[1024 - RPC_FRAME_HEADER_SIZE];
    memset(buf, 1, sizeof buf);
    int sent = 0;
    int rc;
    while ((rc = rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf)) == KV_OK) {
        sent++;
        assert_true(sent <= 64);
    }
    assert_int_equal(rc, KV_EBUSY);
    assert_int_equal(sent, 64); /* exactly 64 KiB of 1 KiB frames */
    struct call_rec r = {0};
    assert_int_equal(rpc_call(f->n[0].t, 2, TYPE_REQ, buf, 8, 100, &r, on_call), KV_EBUSY);
    run_for(f, NULL, NULL, 150);
    assert_int_equal(r.calls, 0); /* an error return never calls back */
    assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf), KV_EBUSY);

    /* Too big for any queue of this size (random: lz4 cannot shrink it). */
    node_start_opts(f, 2, 3, 0, &o);
    assert_int_equal(rpc_peer_add(f->n[2].t, 4, "127.0.0.1", dead_port), KV_OK);
    size_t big_size = 100 * 1024;
    uint8_t *big = malloc(big_size);
    struct kv_rng rng;
    kv_rng_seed(&rng, 1);
    kv_rng_fill(&rng, big, big_size);
    assert_int_equal(rpc_send(f->n[2].t, 4, TYPE_MSG, big, big_size), KV_ETOOBIG);
    free(big);
}

/* ---- Hostile and incompatible connections ------------------------------ */

struct raw {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uint8_t out[128];
    size_t out_size;
    char in[256];
    int eof;    /* the server closed the connection */
    int closed; /* our handle is closed */
};

static void raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct raw *r = h->data;
    *buf = uv_buf_init(r->in, sizeof r->in);
}

static void raw_closed(uv_handle_t *h)
{
    struct raw *r = h->data;
    r->closed = 1;
}

static void raw_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct raw *r = s->data;
    if (nread < 0) {
        r->eof = 1;
        uv_close((uv_handle_t *)&r->tcp, raw_closed);
    }
}

static void raw_written(uv_write_t *req, int status)
{
}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw *r = req->data;
    assert_int_equal(status, 0);
    uv_buf_t b = uv_buf_init((char *)r->out, (unsigned)r->out_size);
    assert_int_equal(uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written), 0);
    assert_int_equal(uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read), 0);
}

static int raw_done(const void *arg)
{
    const struct raw *r = arg;
    return r->eof && r->closed;
}

/* Connects `r` to 127.0.0.1:port and sends `size` bytes once connected. */
static void raw_start(struct fixture *f, struct raw *r, uint16_t port, const void *bytes,
                      size_t size)
{
    memset(r, 0, sizeof *r);
    assert_true(size <= sizeof r->out);
    memcpy(r->out, bytes, size);
    r->out_size = size;
    struct sockaddr_in addr;
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &addr), 0);
    assert_int_equal(uv_tcp_init(&f->loop, &r->tcp), 0);
    r->tcp.data = r;
    r->creq.data = r;
    assert_int_equal(
        uv_tcp_connect(&r->creq, &r->tcp, (const struct sockaddr *)&addr, raw_connected), 0);
}

/* Sends `size` raw bytes to 127.0.0.1:port and waits until the server
 * hangs up. */
static void raw_send_expect_hangup(struct fixture *f, uint16_t port, const void *bytes, size_t size)
{
    struct raw r;
    raw_start(f, &r, port, bytes, size);
    run_until(f, raw_done, &r);
}

/* Writes a frame header for a plain payload of `size` bytes. */
static void raw_header(uint8_t *h, uint8_t version, uint16_t type, uint32_t size)
{
    memset(h, 0, RPC_FRAME_HEADER_SIZE);
    kv_store_u32(h, RPC_FRAME_MAGIC);
    h[4] = version;
    h[6] = (uint8_t)(type & 0xff);
    h[7] = (uint8_t)(type >> 8);
    kv_store_u32(h + 8, size);
    kv_store_u32(h + 20, size);
}

/* Garbage and oversized frames close that connection only; the peers
 * keep talking. */
static void test_garbage_client(void **state)
{
    struct fixture *f = *state;
    node_start(f, 0, 1);
    node_start(f, 1, 2);
    link_nodes(f, 0, 1);
    wait_connected(f, 0, 1);
    uint16_t port = rpc_transport_port(f->n[1].t);
    const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_send_expect_hangup(f, port, http, sizeof http - 1);

    /* A valid header claiming a payload over the frame limit. */
    uint8_t hdr[RPC_FRAME_HEADER_SIZE] = {0};
    kv_store_u32(hdr, RPC_FRAME_MAGIC);
    hdr[4] = RPC_FRAME_VERSION;
    hdr[6] = (uint8_t)(RPC_TYPE_HELLO & 0xff);
    hdr[7] = (uint8_t)(RPC_TYPE_HELLO >> 8);
    kv_store_u32(hdr + 8, RPC_FRAME_PAYLOAD_MAX + 1);
    kv_store_u32(hdr + 20, RPC_FRAME_PAYLOAD_MAX + 1);
    raw_send_expect_hangup(f, port, hdr, sizeof hdr);

    /* A well-formed frame that is not a HELLO. */
    uint8_t frame[RPC_FRAME_HEADER_SIZE] = {0};
    kv_store_u32(frame, RPC_FRAME_MAGIC);
    frame[4] = RPC_FRAME_VERSION;
    frame[6] = TYPE_MSG;
    raw_send_expect_hangup(f, port, frame, sizeof frame);

    /* A handshake frame within the frame limit but far over the HELLO
     * limit: refused before it is buffered. */
    raw_header(frame, RPC_FRAME_VERSION, RPC_TYPE_HELLO, 1u << 20);
    raw_send_expect_hangup(f, port, frame, sizeof frame);

    struct rpc_stats s;
    rpc_transport_stats(f->n[1].t, &s);
    assert_int_equal(s.malformed, 4);
    assert_int_equal(s.accepted, 5);
    uint8_t buf[SMALL_SIZE];
    put_seq(buf, 77);
    assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf), KV_OK);
    struct want w = {&f->n[1], 1};
    run_until(f, got_recv, &w);
    assert_int_equal(f->n[1].seq[0], 77);
    assert_true(rpc_peer_connected(f->n[0].t, 2));
}

/* A HELLO of another protocol version, from another cluster, or from a
 * node that should not dial is refused. */
static void test_hello_refused(void **state)
{
    struct fixture *f = *state;
    node_start(f, 1, 2);
    uint16_t port = rpc_transport_port(f->n[1].t);

    /* Protocol version 2: refused at the header. */
    uint8_t hello[RPC_FRAME_HEADER_SIZE + 24] = {0};
    kv_store_u32(hello, RPC_FRAME_MAGIC);
    hello[4] = RPC_FRAME_VERSION + 1;
    hello[6] = (uint8_t)(RPC_TYPE_HELLO & 0xff);
    hello[7] = (uint8_t)(RPC_TYPE_HELLO >> 8);
    kv_store_u32(hello + 8, 24);
    kv_store_u32(hello + 20, 24);
    kv_store_u64(hello + RPC_FRAME_HEADER_SIZE, 1);
    kv_store_u64(hello + RPC_FRAME_HEADER_SIZE + 8, CLUSTER);
    kv_store_u64(hello + RPC_FRAME_HEADER_SIZE + 16, 2);
    raw_send_expect_hangup(f, port, hello, sizeof hello);
    struct rpc_stats s;
    rpc_transport_stats(f->n[1].t, &s);
    assert_int_equal(s.refused, 1);

    /* Right version, higher node id than the acceptor's: refused. */
    hello[4] = RPC_FRAME_VERSION;
    kv_store_u64(hello + RPC_FRAME_HEADER_SIZE, 3);
    raw_send_expect_hangup(f, port, hello, sizeof hello);
    rpc_transport_stats(f->n[1].t, &s);
    assert_int_equal(s.refused, 2);

    /* A real transport of another cluster dials and is refused. */
    struct rpc_transport_options o;
    rpc_transport_options_init(&o);
    o.cluster_id = CLUSTER + 1;
    o.backoff_min_ms = 1000; /* one attempt within this test */
    o.backoff_max_ms = 1000;
    node_start_opts(f, 0, 1, 0, &o);
    assert_int_equal(rpc_peer_add(f->n[0].t, 2, "127.0.0.1", port), KV_OK);
    struct stat_want sw = {&f->n[0], 1};
    run_until(f, failures_reached, &sw);
    rpc_transport_stats(f->n[1].t, &s);
    assert_int_equal(s.refused, 3);
    assert_false(rpc_peer_connected(f->n[0].t, 2));
    assert_false(rpc_peer_connected(f->n[1].t, 1));
}

/* A client HELLO carrying a field this version does not know is accepted
 * (the extra bytes are ignored), and what follows it is delivered. */
static void test_hello_extra_fields(void **state)
{
    struct fixture *f = *state;
    node_start(f, 1, 2);
    uint8_t bytes[2 * RPC_FRAME_HEADER_SIZE + 32 + SMALL_SIZE];
    uint8_t *p = bytes;
    raw_header(p, RPC_FRAME_VERSION, RPC_TYPE_HELLO, 32);
    p += RPC_FRAME_HEADER_SIZE;
    kv_store_u64(p, 0); /* a client */
    kv_store_u64(p + 8, CLUSTER);
    kv_store_u64(p + 16, 2);
    kv_store_u64(p + 24, 0xfeedfacecafebeefull); /* from a future version */
    p += 32;
    raw_header(p, RPC_FRAME_VERSION, TYPE_MSG, SMALL_SIZE);
    p += RPC_FRAME_HEADER_SIZE;
    put_seq(p, 31337);
    struct raw r;
    raw_start(f, &r, rpc_transport_port(f->n[1].t), bytes, sizeof bytes);
    struct want w = {&f->n[1], 1};
    run_until(f, got_recv, &w);
    assert_int_equal(f->n[1].seq[0], 31337);
    assert_int_equal(f->n[1].from[0], 0);
    uv_close((uv_handle_t *)&r.tcp, raw_closed);
    run_for(f, NULL, NULL, 20);
    assert_true(r.closed);
    struct rpc_stats s;
    rpc_transport_stats(f->n[1].t, &s);
    assert_int_equal(s.refused, 0);
    assert_int_equal(s.malformed, 0);
}

static int both_closed(const void *arg)
{
    const struct fixture *f = arg;
    return f->n[0].t == NULL && f->n[1].t == NULL;
}

/* One round of the allocation-failure loop: with the Nth allocation and
 * all after it failing, two nodes start, link, send and call; every
 * failure must be a clean error. Returns 1 if both nodes and both peer
 * entries were set up (so recovery can be checked). */
static int faulty_round(struct fixture *f, long n, struct call_rec *r)
{
    int ready = 1;
    r->calls = -1; /* no call made (yet) */
    kv_alloc_fault_after(n);
    for (int i = 0; i < 2; i++) {
        struct rpc_transport_options o;
        rpc_transport_options_init(&o);
        o.cluster_id = CLUSTER;
        o.backoff_min_ms = 10;
        o.backoff_max_ms = 80;
        struct node *nd = &f->n[i];
        memset(nd, 0, sizeof *nd);
        nd->id = (uint64_t)i + 1;
        nd->reply = 1;
        nd->reply_may_fail = 1;
        o.node_id = nd->id;
        o.listen_host = "127.0.0.1";
        o.recv_cb = on_recv;
        o.recv_data = nd;
        char errmsg[KV_ERRMSG_SIZE];
        int rc = rpc_transport_new(&f->loop, &o, &nd->t, errmsg);
        if (rc != KV_OK) {
            assert_int_equal(rc, KV_ENOMEM);
            nd->t = NULL;
            ready = 0;
        }
    }
    for (int i = 0; i < 2 && ready; i++) {
        struct node *other = &f->n[1 - i];
        int rc = rpc_peer_add(f->n[i].t, other->id, "127.0.0.1", rpc_transport_port(other->t));
        assert_true(rc == KV_OK || rc == KV_ENOMEM);
        ready = ready && rc == KV_OK;
    }
    if (ready) {
        uint8_t buf[SMALL_SIZE];
        put_seq(buf, 5);
        int rc = rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf);
        assert_true(rc == KV_OK || rc == KV_ENOMEM);
        rc = rpc_call(f->n[0].t, 2, TYPE_REQ, buf, sizeof buf, 1000, r, on_call);
        assert_true(rc == KV_OK || rc == KV_ENOMEM);
        if (rc == KV_OK) {
            r->calls = 0; /* now owed exactly one callback */
        }
    }
    run_for(f, NULL, NULL, 15);
    kv_alloc_fault_clear();
    return ready;
}

/* The allocation-failure loop: no crash, no leak (ASan), every accepted
 * call reported exactly once, and once memory is back the nodes recover
 * (redial, re-accept) and deliver a new message. */
static void test_alloc_failures(void **state)
{
    struct fixture *f = *state;
    kv_log_threshold = KV_LOG_OFF; /* the warnings are expected here */
    for (long n = 0; n < 48; n++) {
        struct call_rec r = {0};
        int ready = faulty_round(f, n, &r);
        if (ready) {
            uint8_t buf[SMALL_SIZE];
            put_seq(buf, 6);
            size_t before = f->n[1].n_recv;
            assert_int_equal(rpc_send(f->n[0].t, 2, TYPE_MSG, buf, sizeof buf), KV_OK);
            struct want w = {&f->n[1], before + 1};
            run_until(f, got_recv, &w);
            assert_int_equal(f->n[1].seq[f->n[1].n_recv - 1], 6);
        }
        for (int i = 0; i < 2; i++) {
            if (f->n[i].t != NULL) {
                node_close(f, i);
            }
        }
        run_until(f, both_closed, f);
        assert_true(r.calls == 1 || r.calls == -1);
    }
    kv_log_threshold = KV_LOG_ERROR;
}

static void test_bad_options(void **state)
{
    struct fixture *f = *state;
    struct rpc_transport_options o;
    struct rpc_transport *t = NULL;
    char errmsg[KV_ERRMSG_SIZE];
    rpc_transport_options_init(&o);
    o.listen_host = "not-an-address";
    assert_int_equal(rpc_transport_new(&f->loop, &o, &t, errmsg), KV_EINVAL);
    assert_non_null(strstr(errmsg, "not-an-address"));
    rpc_transport_options_init(&o);
    o.backoff_min_ms = 500;
    o.backoff_max_ms = 100;
    assert_int_equal(rpc_transport_new(&f->loop, &o, &t, errmsg), KV_EINVAL);
    /* A port already taken: the half-built transport frees itself. */
    node_start(f, 0, 1);
    rpc_transport_options_init(&o);
    o.listen_host = "127.0.0.1";
    o.listen_port = rpc_transport_port(f->n[0].t);
    assert_int_equal(rpc_transport_new(&f->loop, &o, &t, errmsg), KV_EBUSY);
    assert_non_null(strstr(errmsg, "cannot listen"));
    assert_int_equal(rpc_peer_add(f->n[0].t, 1, "127.0.0.1", 1), KV_EINVAL); /* itself */
    assert_int_equal(rpc_peer_add(f->n[0].t, 0, "127.0.0.1", 1), KV_EINVAL);
    assert_int_equal(rpc_peer_add(f->n[0].t, 2, "", 1), KV_EINVAL);
    char longname[RPC_HOST_SIZE_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(rpc_peer_add(f->n[0].t, 2, longname, 1), KV_EINVAL);
    assert_int_equal(rpc_peer_remove(f->n[0].t, 9), KV_ENOTFOUND);
}

int main(void)
{
    kv_log_threshold = getenv("RAFTKV_TEST_LOG") ? KV_LOG_DEBUG : KV_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_oneway_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_closed_on_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hello_extra_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
