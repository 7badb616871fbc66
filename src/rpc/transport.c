/* transport.c -- the RPC transport on libuv: the transport object and
 * its listener, the peer table (dialing, name lookup, reconnects with
 * capped exponential backoff and jitter), request/response calls with
 * deadlines, the once-per-loop-turn flush, the public API and an orderly
 * asynchronous shutdown. Connections themselves live in conn.c.
 *
 * Re-entrancy: user callbacks run from three places only -- the receive
 * path (recv_cb and call responses, while decoding a read), the idle
 * handle (calls completed with an error: timeouts, dropped connections),
 * and rpc_transport_close (cancelled calls). Everything else (closing a
 * connection, failing its calls) only changes state and defers, so a
 * callback can call any rpc_* function, close the transport included. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "transport_int.h"

static void on_call_timer(uv_timer_t *timer);
static void on_idle(uv_idle_t *idle);
static void peer_dial(struct peer *p);

void rpc_transport_options_init(struct rpc_transport_options *o)
{
    memset(o, 0, sizeof *o);
    o->compress = 1;
}

/* ---- Handle accounting -------------------------------------------------- */

void rpc__handle_closed(struct rpc_transport *t)
{
    KV_ASSERT(t->handles_open > 0);
    t->handles_open--;
    if (!t->closing || t->handles_open > 0) {
        return;
    }
    KV_ASSERT(link_empty(&t->conns) && link_empty(&t->peers));
    rpc_close_cb cb = t->close_cb;
    void *data = t->close_data;
    kv_free(t);
    if (cb != NULL) {
        cb(data);
    }
}

static void on_plain_closed(uv_handle_t *h)
{
    rpc__handle_closed(h->data);
}

/* ---- Calls -------------------------------------------------------------- */

static struct call **call_slot(struct rpc_transport *t, uint64_t id)
{
    struct call **slot = &t->buckets[id % RPC_CALL_BUCKETS];
    while (*slot != NULL && (*slot)->id != id) {
        slot = &(*slot)->hnext;
    }
    return slot;
}

/* Unlinks a waiting call from the hash and the deadline list. */
static void call_detach(struct rpc_transport *t, struct call *k)
{
    struct call **slot = call_slot(t, k->id);
    KV_ASSERT(*slot == k);
    *slot = k->hnext;
    k->hnext = NULL;
    link_remove(&k->link);
}

static void call_timer_arm(struct rpc_transport *t)
{
    if (link_empty(&t->calls)) {
        uv_timer_stop(&t->call_timer);
        return;
    }
    struct call *k = CONTAINER(t->calls.next, struct call, link);
    uint64_t now = uv_now(t->loop);
    uint64_t delay = k->deadline_ms > now ? k->deadline_ms - now : 0;
    uv_timer_start(&t->call_timer, on_call_timer, delay, 0);
}

/* Moves a waiting call to the done list; its callback runs from the idle
 * handle, never from inside the caller's stack. */
static void call_finish_later(struct rpc_transport *t, struct call *k, int status)
{
    call_detach(t, k);
    k->status = status;
    link_insert_after(t->done.prev, &k->link);
    rpc__schedule_idle(t);
}

static void on_call_timer(uv_timer_t *timer)
{
    struct rpc_transport *t = timer->data;
    uint64_t now = uv_now(t->loop);
    while (!link_empty(&t->calls)) {
        struct call *k = CONTAINER(t->calls.next, struct call, link);
        if (k->deadline_ms > now) {
            break;
        }
        t->stats.calls_timed_out++;
        call_finish_later(t, k, KV_ETIMEDOUT);
    }
    call_timer_arm(t);
}

/* Fails every call waiting on `node_id` with `status` (deferred). */
void rpc__calls_fail_peer(struct rpc_transport *t, uint64_t node_id, int status)
{
    struct link *n = t->calls.next;
    while (n != &t->calls) {
        struct call *k = CONTAINER(n, struct call, link);
        n = n->next;
        if (k->peer == node_id) {
            call_finish_later(t, k, status);
        }
    }
    call_timer_arm(t);
}

/* Runs the callbacks of completed calls; stops if one closes the transport
 * (rpc_transport_close then reports the rest). */
static void calls_run_done(struct rpc_transport *t)
{
    while (!t->closing && !link_empty(&t->done)) {
        struct call *k = CONTAINER(t->done.next, struct call, link);
        link_remove(&k->link);
        t->call_count--;
        k->cb(t, k->status, NULL, k->data);
        kv_free(k);
    }
}

/* A response arrived on `c`: completes the call it answers, if any. */
void rpc__call_respond(struct conn *c, const struct rpc_frame_header *hdr, const uint8_t *payload)
{
    struct rpc_transport *t = c->t;
    struct call **slot = call_slot(t, hdr->request_id);
    struct call *k = *slot;
    if (k == NULL || k->peer != c->remote || c->remote == 0) {
        kv_debug("rpc: late or stray response ignored request_id=%" PRIu64 " node=%" PRIu64,
                 hdr->request_id, c->remote);
        return;
    }
    call_detach(t, k);
    t->call_count--;
    call_timer_arm(t);
    struct rpc_msg msg = {
        .from = c->remote,
        .type = hdr->type,
        .payload = payload,
        .size = hdr->payload_size,
        .token = {.conn_id = c->id, .request_id = 0},
    };
    k->cb(t, KV_OK, &msg, k->data);
    kv_free(k);
}

/* ---- The once-per-turn flush -------------------------------------------- */

void rpc__schedule_idle(struct rpc_transport *t)
{
    if (!t->idle_scheduled && !t->closing) {
        t->idle_scheduled = 1;
        uv_idle_start(&t->idle, on_idle);
    }
}

static void on_idle(uv_idle_t *idle)
{
    struct rpc_transport *t = idle->data;
    uv_idle_stop(idle);
    t->idle_scheduled = 0;
    calls_run_done(t);
    if (t->closing) {
        return;
    }
    for (struct link *n = t->conns.next; n != &t->conns; n = n->next) {
        rpc__conn_flush(CONTAINER(n, struct conn, link));
    }
}

/* ---- Peers: dialing, lookups, backoff ----------------------------------- */

static uint32_t backoff_delay_ms(struct peer *p)
{
    const struct rpc_transport_options *o = &p->t->o;
    uint64_t base = o->backoff_min_ms;
    for (uint32_t i = 0; i < p->attempts && i < RPC_BACKOFF_SHIFT_MAX && base < o->backoff_max_ms;
         i++) {
        base *= 2;
    }
    if (base > o->backoff_max_ms) {
        base = o->backoff_max_ms;
    }
    /* "Equal jitter": half fixed, half random, so peers that lost the same
     * node do not redial in lockstep yet never retry at once. */
    return (uint32_t)(base / 2 + kv_rng_below(&p->t->rng, base / 2 + 1));
}

static void on_retry(uv_timer_t *timer)
{
    struct peer *p = timer->data;
    if (p->conn == NULL && !p->resolving && !p->removed && !p->t->closing) {
        peer_dial(p);
    }
}

void rpc__peer_schedule_retry(struct peer *p)
{
    uint32_t delay = backoff_delay_ms(p);
    if (p->attempts < UINT32_MAX) {
        p->attempts++;
    }
    kv_debug("rpc: redial scheduled node=%" PRIu64 " delay_ms=%u attempts=%u", p->node_id, delay,
             p->attempts);
    uv_timer_start(&p->retry, on_retry, delay, 0);
}

struct peer *rpc__peer_find(const struct rpc_transport *t, uint64_t node_id)
{
    for (struct link *n = t->peers.next; n != &t->peers; n = n->next) {
        struct peer *p = CONTAINER(n, struct peer, link);
        if (p->node_id == node_id && !p->removed) {
            return p;
        }
    }
    return NULL;
}

static void peer_free(struct peer *p)
{
    link_remove(&p->link);
    kv_buf_close(&p->q.pending);
    kv_free(p);
}

/* A removed peer is freed once its timer is closed and no lookup runs. */
static void on_peer_closed(uv_handle_t *h)
{
    struct peer *p = h->data;
    struct rpc_transport *t = p->t;
    p->timer_closed = 1;
    if (!p->resolving) {
        peer_free(p);
    }
    rpc__handle_closed(t);
}

int rpc__peer_new(struct rpc_transport *t, uint64_t node_id, struct peer **out)
{
    if (t->peer_count >= RPC_PEERS_MAX) {
        return KV_EBUSY;
    }
    struct peer *p = kv_calloc(1, sizeof *p);
    if (p == NULL) {
        return KV_ENOMEM;
    }
    int rc = uv_timer_init(t->loop, &p->retry);
    if (rc < 0) {
        kv_free(p);
        return kv_err_from_errno(-rc);
    }
    t->handles_open++;
    t->peer_count++;
    p->t = t;
    p->node_id = node_id;
    p->retry.data = p;
    rpc__outq_init(&p->q, t->o.queue_bytes_max);
    link_insert_after(t->peers.prev, &p->link);
    *out = p;
    return KV_OK;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct peer *p = req->data;
    struct rpc_transport *t = p->t;
    p->resolving = 0;
    int live = !p->removed && !t->closing;
    if (status == 0 && live) {
        /* Prefer IPv4: our listeners usually bind one IPv4 address, and
         * "localhost" often lists ::1 first. */
        const struct addrinfo *pick = res;
        for (const struct addrinfo *a = res; a != NULL; a = a->ai_next) {
            if (a->ai_family == AF_INET) {
                pick = a;
                break;
            }
        }
        KV_ASSERT(pick->ai_addrlen <= sizeof p->addr);
        memset(&p->addr, 0, sizeof p->addr);
        memcpy(&p->addr, pick->ai_addr, pick->ai_addrlen);
        rpc__conn_dial(p);
    } else if (live) {
        kv_warn("rpc: cannot resolve node=%" PRIu64 " host=%s error=\"%s\"", p->node_id, p->host,
                uv_strerror(status));
        t->stats.dial_failures++;
        rpc__peer_schedule_retry(p);
    }
    uv_freeaddrinfo(res);
    if (p->removed && p->timer_closed) {
        peer_free(p);
    }
    rpc__handle_closed(t); /* last: it may free the transport */
}

/* Dials the peer, looking its name up first (again on every dial, so a
 * node that moved is found) unless it was given as an address. */
static void peer_dial(struct peer *p)
{
    struct rpc_transport *t = p->t;
    KV_ASSERT(p->conn == NULL && p->has_addr && !p->resolving);
    if (p->numeric) {
        rpc__conn_dial(p);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[8];
    snprintf(port, sizeof port, "%u", p->port);
    t->stats.dials++;
    p->gai.data = p;
    int rc = uv_getaddrinfo(t->loop, &p->gai, on_resolved, p->host, port, &hints);
    if (rc < 0) {
        kv_warn("rpc: cannot start a lookup node=%" PRIu64 " error=\"%s\"", p->node_id,
                uv_strerror(rc));
        t->stats.dial_failures++;
        rpc__peer_schedule_retry(p);
        return;
    }
    p->resolving = 1;
    t->handles_open++;
}

/* ---- Listener and handshake deadlines ----------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct rpc_transport *t = server->data;
    if (status < 0) {
        kv_warn("rpc: accept failed error=\"%s\"", uv_strerror(status));
        return;
    }
    rpc__conn_accept(t);
}

/* Closes connections that did not finish their handshake in time (a
 * silent client or an unreachable address must not hold a slot). */
static void on_sweep(uv_timer_t *timer)
{
    struct rpc_transport *t = timer->data;
    uint64_t now = uv_now(t->loop);
    if (t->accept_pending) {
        rpc__conn_accept(t);
    }
    for (struct link *n = t->conns.next; n != &t->conns; n = n->next) {
        struct conn *c = CONTAINER(n, struct conn, link);
        if ((c->state == CONN_DIALING || c->state == CONN_HELLO_WAIT ||
             c->state == CONN_REFUSING) &&
            c->deadline_ms <= now) {
            kv_warn("rpc: handshake timed out conn=%" PRIu64 " node=%" PRIu64, c->id, c->remote);
            rpc__conn_close(c, "handshake timed out");
        }
    }
}

/* ---- Peer table API ----------------------------------------------------- */

static int parse_addr(const char *host, uint16_t port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (host == NULL) {
        return KV_EINVAL;
    }
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0) {
        return KV_OK;
    }
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0) {
        return KV_OK;
    }
    return KV_EINVAL;
}

int rpc_peer_add(struct rpc_transport *t, uint64_t node_id, const char *host, uint16_t port)
{
    if (t->closing) {
        return KV_ECLOSED;
    }
    struct sockaddr_storage addr;
    if (node_id == 0 || node_id == t->o.node_id || host == NULL || host[0] == '\0' ||
        strlen(host) > RPC_HOST_SIZE_MAX) {
        return KV_EINVAL;
    }
    int numeric = parse_addr(host, port, &addr) == KV_OK;
    struct peer *p = rpc__peer_find(t, node_id);
    if (p == NULL) {
        int rc = rpc__peer_new(t, node_id, &p);
        if (rc != KV_OK) {
            return rc;
        }
    }
    /* A changed address takes effect at the next dial. */
    p->addr = addr;
    p->numeric = numeric;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    p->has_addr = 1;
    if (t->o.node_id < node_id && p->conn == NULL && !p->resolving &&
        !uv_is_active((uv_handle_t *)&p->retry)) {
        peer_dial(p);
    }
    return KV_OK;
}

int rpc_peer_remove(struct rpc_transport *t, uint64_t node_id)
{
    if (t->closing) {
        return KV_ECLOSED;
    }
    struct peer *p = rpc__peer_find(t, node_id);
    if (p == NULL) {
        return KV_ENOTFOUND;
    }
    p->removed = 1;
    t->peer_count--;
    if (p->conn != NULL) {
        rpc__conn_close(p->conn, "peer removed");
    }
    for (struct link *n = t->conns.next; n != &t->conns; n = n->next) {
        struct conn *c = CONTAINER(n, struct conn, link);
        if (c->peer == p) {
            c->peer = NULL;
            c->q = NULL;
        }
    }
    rpc__calls_fail_peer(t, node_id, KV_ECLOSED);
    if (p->resolving) {
        uv_cancel((uv_req_t *)&p->gai); /* fails harmlessly once running */
    }
    uv_close((uv_handle_t *)&p->retry, on_peer_closed);
    return KV_OK;
}

int rpc_peer_connected(const struct rpc_transport *t, uint64_t node_id)
{
    const struct peer *p = rpc__peer_find(t, node_id);
    return p != NULL && p->conn != NULL && p->conn->state == CONN_READY;
}

/* ---- Sending ------------------------------------------------------------ */

/* Queues a frame for peer `node_id` and schedules a flush if it is up. */
static int peer_put(struct rpc_transport *t, uint64_t node_id, uint16_t type, uint64_t request_id,
                    const void *payload, size_t size)
{
    KV_ASSERT(type < RPC_TYPE_RESERVED_MIN);
    KV_ASSERT(payload != NULL || size == 0);
    if (t->closing) {
        return KV_ECLOSED;
    }
    struct peer *p = rpc__peer_find(t, node_id);
    if (p == NULL) {
        return KV_ENOTFOUND;
    }
    int rc = rpc__outq_put(t, &p->q, type, 0, request_id, payload, size);
    if (rc != KV_OK) {
        return rc;
    }
    if (p->conn != NULL && p->conn->state == CONN_READY) {
        rpc__schedule_idle(t);
    }
    return KV_OK;
}

int rpc_send(struct rpc_transport *t, uint64_t node_id, uint16_t type, const void *payload,
             size_t size)
{
    return peer_put(t, node_id, type, 0, payload, size);
}

int rpc_call(struct rpc_transport *t, uint64_t node_id, uint16_t type, const void *payload,
             size_t size, uint32_t timeout_ms, void *data, rpc_call_cb call_cb)
{
    KV_ASSERT(call_cb != NULL && timeout_ms > 0);
    if (t->closing) {
        return KV_ECLOSED;
    }
    if (t->call_count >= t->o.calls_max) {
        return KV_EBUSY;
    }
    struct call *k = kv_calloc(1, sizeof *k);
    if (k == NULL) {
        return KV_ENOMEM;
    }
    k->id = ++t->next_request_id;
    int rc = peer_put(t, node_id, type, k->id, payload, size);
    if (rc != KV_OK) {
        kv_free(k);
        return rc;
    }
    k->peer = node_id;
    k->deadline_ms = uv_now(t->loop) + timeout_ms;
    k->data = data;
    k->cb = call_cb;
    struct call **slot = call_slot(t, k->id);
    KV_ASSERT(*slot == NULL);
    *slot = k;
    /* Deadlines mostly arrive in order: scan back from the tail. */
    struct link *pos = t->calls.prev;
    while (pos != &t->calls && CONTAINER(pos, struct call, link)->deadline_ms > k->deadline_ms) {
        pos = pos->prev;
    }
    link_insert_after(pos, &k->link);
    t->call_count++;
    if (t->calls.next == &k->link) {
        call_timer_arm(t);
    }
    return KV_OK;
}

int rpc_reply(struct rpc_transport *t, const struct rpc_token *token, uint16_t type,
              const void *payload, size_t size)
{
    KV_ASSERT(type < RPC_TYPE_RESERVED_MIN && token->request_id != 0);
    if (t->closing) {
        return KV_ECLOSED;
    }
    for (struct link *n = t->conns.next; n != &t->conns; n = n->next) {
        struct conn *c = CONTAINER(n, struct conn, link);
        if (c->id != token->conn_id) {
            continue;
        }
        if (c->state != CONN_READY || c->q == NULL) {
            return KV_ECLOSED;
        }
        int rc = rpc__outq_put(t, c->q, type, RPC_FRAME_RESPONSE, token->request_id, payload, size);
        if (rc == KV_OK) {
            rpc__schedule_idle(t);
        }
        return rc;
    }
    return KV_ECLOSED;
}

/* ---- Life cycle --------------------------------------------------------- */

static int options_check(const struct rpc_transport_options *in, struct rpc_transport_options *o,
                         char errmsg[KV_ERRMSG_SIZE])
{
    *o = *in;
    if (o->queue_bytes_max == 0) {
        o->queue_bytes_max = RPC_QUEUE_BYTES_MAX_DEFAULT;
    }
    if (o->conns_max == 0) {
        o->conns_max = RPC_CONNS_MAX_DEFAULT;
    }
    if (o->calls_max == 0) {
        o->calls_max = RPC_CALLS_MAX_DEFAULT;
    }
    if (o->backoff_min_ms == 0) {
        o->backoff_min_ms = RPC_BACKOFF_MIN_MS_DEFAULT;
    }
    if (o->backoff_max_ms == 0) {
        o->backoff_max_ms = RPC_BACKOFF_MAX_MS_DEFAULT;
    }
    if (o->hello_timeout_ms == 0) {
        o->hello_timeout_ms = RPC_HELLO_TIMEOUT_MS_DEFAULT;
    }
    if (o->backoff_min_ms > o->backoff_max_ms) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "backoff_min_ms %u is above backoff_max_ms %u",
                 o->backoff_min_ms, o->backoff_max_ms);
        return KV_EINVAL;
    }
    if (o->queue_bytes_max < RPC_FRAME_HEADER_SIZE || o->queue_bytes_max > UINT32_MAX) {
        /* One uv_write carries a whole queue, and uv_buf_t lengths are
         * unsigned int. */
        snprintf(errmsg, KV_ERRMSG_SIZE, "queue_bytes_max %zu is outside [%u, %u]",
                 o->queue_bytes_max, RPC_FRAME_HEADER_SIZE, UINT32_MAX);
        return KV_EINVAL;
    }
    return KV_OK;
}

static int transport_listen(struct rpc_transport *t, char errmsg[KV_ERRMSG_SIZE])
{
    struct sockaddr_storage addr;
    if (parse_addr(t->o.listen_host, t->o.listen_port, &addr) != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "listen address \"%s\" is not a numeric IPv4/IPv6 address",
                 t->o.listen_host);
        return KV_EINVAL;
    }
    int rc = uv_tcp_init(t->loop, &t->listener);
    if (rc < 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "uv_tcp_init: %s", uv_strerror(rc));
        return kv_err_from_errno(-rc);
    }
    t->handles_open++;
    t->listening = 1;
    t->listener.data = t;
    rc = uv_tcp_bind(&t->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *)&t->listener, RPC_LISTEN_BACKLOG, on_connection);
    }
    if (rc < 0) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "cannot listen on %s:%u: %s", t->o.listen_host,
                 t->o.listen_port, uv_strerror(rc));
        /* kv_err_from_errno has no "address in use"; busy says retry. */
        return rc == UV_EADDRINUSE ? KV_EBUSY : kv_err_from_errno(-rc);
    }
    return KV_OK;
}

/* Closes every handle the transport holds; the last close callback frees
 * it. Shared by rpc_transport_close and a failed rpc_transport_new. */
static void transport_close_handles(struct rpc_transport *t)
{
    if (t->listening) {
        uv_close((uv_handle_t *)&t->listener, on_plain_closed);
    }
    uv_close((uv_handle_t *)&t->idle, on_plain_closed);
    uv_close((uv_handle_t *)&t->call_timer, on_plain_closed);
    uv_close((uv_handle_t *)&t->sweep, on_plain_closed);
    for (struct link *n = t->conns.next; n != &t->conns; n = n->next) {
        rpc__conn_close(CONTAINER(n, struct conn, link), "transport closing");
    }
    for (struct link *n = t->peers.next; n != &t->peers; n = n->next) {
        struct peer *p = CONTAINER(n, struct peer, link);
        if (p->resolving) {
            uv_cancel((uv_req_t *)&p->gai);
        }
        if (!p->removed) {
            p->removed = 1;
            uv_close((uv_handle_t *)&p->retry, on_peer_closed);
        }
    }
}

int rpc_transport_new(uv_loop_t *loop, const struct rpc_transport_options *o,
                      struct rpc_transport **out, char errmsg[KV_ERRMSG_SIZE])
{
    struct rpc_transport_options checked;
    errmsg[0] = '\0';
    int rc = options_check(o, &checked, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct rpc_transport *t = kv_calloc(1, sizeof *t);
    if (t == NULL) {
        return KV_ENOMEM;
    }
    t->loop = loop;
    t->o = checked;
    link_init(&t->peers);
    link_init(&t->conns);
    link_init(&t->calls);
    link_init(&t->done);
    kv_rng_seed(&t->rng, checked.seed);
    /* Idle and timer init cannot fail on Unix (they touch no kernel). */
    uv_idle_init(loop, &t->idle);
    uv_timer_init(loop, &t->call_timer);
    uv_timer_init(loop, &t->sweep);
    t->idle.data = t;
    t->call_timer.data = t;
    t->sweep.data = t;
    t->handles_open = 3;
    uv_timer_start(&t->sweep, on_sweep, RPC_SWEEP_MS, RPC_SWEEP_MS);
    uv_unref((uv_handle_t *)&t->sweep); /* alone, it must not keep the loop up */
    if (checked.listen_host != NULL) {
        rc = transport_listen(t, errmsg);
        if (rc != KV_OK) {
            /* Handles exist: libuv frees them only through the loop, so the
             * transport frees itself on the loop's next turn, silently. */
            t->closing = 1;
            transport_close_handles(t);
            return rc;
        }
        kv_info("rpc: listening node=%" PRIu64 " addr=%s:%u", checked.node_id, checked.listen_host,
                rpc_transport_port(t));
    }
    *out = t;
    return KV_OK;
}

void rpc_transport_close(struct rpc_transport *t, void *data, rpc_close_cb close_cb)
{
    KV_ASSERT(!t->closing);
    t->closing = 1;
    t->close_data = data;
    t->close_cb = close_cb;
    uv_timer_stop(&t->call_timer);
    /* Report every call exactly once: already-completed ones with their
     * status, waiting ones as cancelled. Detach first so callbacks (which
     * see a closing transport) cannot disturb the walk. */
    while (!link_empty(&t->calls)) {
        struct call *k = CONTAINER(t->calls.next, struct call, link);
        call_detach(t, k);
        k->status = KV_ECANCELED;
        link_insert_after(t->done.prev, &k->link);
    }
    while (!link_empty(&t->done)) {
        struct call *k = CONTAINER(t->done.next, struct call, link);
        link_remove(&k->link);
        t->call_count--;
        k->cb(t, k->status, NULL, k->data);
        kv_free(k);
    }
    transport_close_handles(t);
}

uint16_t rpc_transport_port(const struct rpc_transport *t)
{
    if (!t->listening) {
        return 0;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&t->listener, (struct sockaddr *)&ss, &len) != 0) {
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void rpc_transport_stats(const struct rpc_transport *t, struct rpc_stats *out)
{
    *out = t->stats;
}
