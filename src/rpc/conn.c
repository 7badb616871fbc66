/* conn.c -- one RPC connection on libuv: the HELLO handshake (both
 * sides), reading and decoding frames from untrusted bytes, dispatching
 * them (control frames, responses, messages and requests), and batched
 * writes from a bounded queue. A bad frame closes this connection only,
 * with a logged reason. Part of the transport (transport_int.h). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "log.h"
#include "transport_int.h"

/* ---- Queues and writes -------------------------------------------------- */

void rpc__outq_init(struct outq *q, size_t bytes_max)
{
    kv_buf_init(&q->pending);
    q->frames = 0;
    q->inflight = 0;
    q->bytes_max = bytes_max;
}

/* Encodes one frame at the tail of `q`, within its byte limit. */
int rpc__outq_put(struct rpc_transport *t, struct outq *q, uint16_t type, uint8_t flags,
                  uint64_t request_id, const void *payload, size_t size)
{
    if (size > RPC_FRAME_PAYLOAD_MAX) {
        return KV_ETOOBIG;
    }
    if (q->pending.size + q->inflight >= q->bytes_max) {
        return KV_EBUSY; /* full: refuse before spending time encoding */
    }
    size_t mark = q->pending.size;
    int rc = rpc_frame_encode(&q->pending, type, flags, request_id, payload, size, t->o.compress);
    if (rc != KV_OK) {
        return rc;
    }
    size_t frame_size = q->pending.size - mark;
    if (q->pending.size + q->inflight > q->bytes_max) {
        q->pending.size = mark;
        return frame_size > q->bytes_max ? KV_ETOOBIG : KV_EBUSY;
    }
    if (q->pending.data[mark + 5] & RPC_FRAME_COMPRESSED) {
        t->stats.frames_compressed++;
    }
    q->frames++;
    return KV_OK;
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = 0;
    kv_buf_clear(&c->wbuf);
    if (c->wbuf.cap > RPC_BUF_KEEP_BYTES) {
        kv_buf_close(&c->wbuf);
    }
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status < 0) {
        rpc__conn_close(c, uv_strerror(status));
        return;
    }
    if (c->q != NULL) {
        c->q->inflight = 0;
        if (c->q->pending.size > 0) {
            rpc__schedule_idle(c->t);
        }
    }
}

/* Hands everything queued for `c` to one uv_write. */
void rpc__conn_flush(struct conn *c)
{
    struct outq *q = c->q;
    if (c->state != CONN_READY || c->writing || q == NULL || q->pending.size == 0) {
        return;
    }
    /* Swap buffers: the queue keeps the old write buffer's storage for
     * the next batch, so steady traffic allocates nothing. */
    struct kv_buf tmp = c->wbuf;
    c->wbuf = q->pending;
    q->pending = tmp;
    kv_buf_clear(&q->pending);
    q->inflight = c->wbuf.size;
    struct rpc_stats *s = &c->t->stats;
    s->writes++;
    s->frames_sent += q->frames;
    s->bytes_sent += c->wbuf.size;
    q->frames = 0;
    uv_buf_t b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.size);
    c->wreq.data = c;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        rpc__conn_close(c, uv_strerror(rc));
        return;
    }
    c->writing = 1;
}

static void on_ctl_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->ctl_writing = 0;
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status < 0) {
        rpc__conn_close(c, uv_strerror(status));
    } else if (c->state == CONN_REFUSING) {
        rpc__conn_close(c, "refused");
    }
}

/* Writes a handshake frame ahead of any queued data (libuv keeps the
 * order of writes on a stream). Returns KV_OK or an error (not written). */
static int conn_write_ctl(struct conn *c, uint16_t type, uint8_t flags, const void *payload,
                          size_t size)
{
    KV_ASSERT(!c->ctl_writing);
    kv_buf_clear(&c->ctl);
    int rc = rpc_frame_encode(&c->ctl, type, flags, 0, payload, size, 0);
    if (rc != KV_OK) {
        return rc;
    }
    uv_buf_t b = uv_buf_init((char *)c->ctl.data, (unsigned)c->ctl.size);
    c->creq.data = c;
    int urc = uv_write(&c->creq, (uv_stream_t *)&c->tcp, &b, 1, on_ctl_write);
    if (urc < 0) {
        return kv_err_from_errno(-urc);
    }
    c->ctl_writing = 1;
    return KV_OK;
}

/* ---- Life of a connection ----------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct rpc_transport *t = c->t;
    link_remove(&c->link);
    t->conn_count--;
    kv_buf_close(&c->wbuf);
    kv_buf_close(&c->ctl);
    kv_buf_close(&c->rbuf);
    kv_buf_close(&c->scratch);
    kv_buf_close(&c->own_q.pending);
    kv_free(c);
    rpc__handle_closed(t);
}

/* Allocates a connection with an initialised socket handle. */
static int conn_new(struct rpc_transport *t, struct conn **out)
{
    struct conn *c = kv_calloc(1, sizeof *c);
    if (c == NULL) {
        return KV_ENOMEM;
    }
    int rc = uv_tcp_init(t->loop, &c->tcp);
    if (rc < 0) {
        kv_free(c);
        return kv_err_from_errno(-rc);
    }
    t->handles_open++;
    c->t = t;
    c->tcp.data = c;
    c->connect_req.data = c;
    c->id = ++t->next_conn_id;
    c->deadline_ms = uv_now(t->loop) + t->o.hello_timeout_ms;
    kv_buf_init(&c->wbuf);
    kv_buf_init(&c->ctl);
    kv_buf_init(&c->rbuf);
    kv_buf_init(&c->scratch);
    rpc__outq_init(&c->own_q, t->o.queue_bytes_max);
    link_insert_after(t->conns.prev, &c->link);
    t->conn_count++;
    *out = c;
    return KV_OK;
}

/* Closes a connection (idempotent): detaches it from its peer, fails the
 * peer's waiting calls if the connection was up, schedules a redial when
 * we are the dialing side. No user callback runs from here. */
void rpc__conn_close(struct conn *c, const char *reason)
{
    if (c->state == CONN_CLOSING) {
        return;
    }
    struct rpc_transport *t = c->t;
    int was_ready = c->state == CONN_READY;
    if (was_ready) {
        kv_info("rpc: connection closed conn=%" PRIu64 " node=%" PRIu64 " reason=\"%s\"", c->id,
                c->remote, reason);
    } else {
        kv_debug("rpc: connection closed before handshake conn=%" PRIu64 " node=%" PRIu64
                 " reason=\"%s\"",
                 c->id, c->remote, reason);
    }
    if (c->dialed && !was_ready) {
        t->stats.dial_failures++;
    }
    c->state = CONN_CLOSING;
    struct peer *p = c->peer;
    c->peer = NULL;
    c->q = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    if (p == NULL || p->conn != c) {
        return;
    }
    p->conn = NULL;
    p->q.inflight = 0; /* that write's fate is unknown; its bytes are gone */
    if (t->closing) {
        return;
    }
    if (was_ready) {
        /* Requests that went out on it may or may not have been served. */
        rpc__calls_fail_peer(t, p->node_id, KV_ECLOSED);
        p->attempts = 0;
    }
    if (c->dialed && !p->removed && p->has_addr) {
        rpc__peer_schedule_retry(p);
    }
}

/* Refuses the handshake: logs, sends the reason, closes after the write. */
static void conn_refuse(struct conn *c, const char *reason)
{
    struct rpc_transport *t = c->t;
    t->stats.refused++;
    kv_warn("rpc: refusing connection conn=%" PRIu64 " node=%" PRIu64 " reason=\"%s\"", c->id,
            c->remote, reason);
    if (c->ctl_writing || conn_write_ctl(c, RPC_TYPE_REFUSE, 0, reason, strlen(reason)) != KV_OK) {
        rpc__conn_close(c, reason);
        return;
    }
    c->state = CONN_REFUSING;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

/* ---- Handshake ---------------------------------------------------------- */

/* Acceptor: the first frame was a HELLO; checks it and attaches the
 * connection to its peer (or serves it as a client). */
static void conn_on_hello(struct conn *c, const uint8_t *payload, size_t size)
{
    struct rpc_transport *t = c->t;
    char why[KV_ERRMSG_SIZE];
    struct kv_reader r;
    uint64_t node = 0, cluster = 0, target = 0;
    kv_reader_init(&r, payload, size);
    if (kv_reader_u64(&r, &node) != KV_OK || kv_reader_u64(&r, &cluster) != KV_OK ||
        kv_reader_u64(&r, &target) != KV_OK) {
        conn_refuse(c, "HELLO too short");
        return;
    }
    c->remote = node;
    if (cluster != t->o.cluster_id) {
        snprintf(why, sizeof why,
                 "cluster id mismatch: dialer has %" PRIu64 ", this node has %" PRIu64, cluster,
                 t->o.cluster_id);
        conn_refuse(c, why);
        return;
    }
    if (target != 0 && target != t->o.node_id) {
        snprintf(why, sizeof why, "dialer wanted node %" PRIu64 " but this is node %" PRIu64,
                 target, t->o.node_id);
        conn_refuse(c, why);
        return;
    }
    if (node != 0 && node >= t->o.node_id) {
        snprintf(why, sizeof why,
                 "node %" PRIu64 " may not dial node %" PRIu64 ": the lower id dials", node,
                 t->o.node_id);
        conn_refuse(c, why);
        return;
    }
    struct peer *p = NULL;
    if (node != 0) {
        p = rpc__peer_find(t, node);
        if (p == NULL && rpc__peer_new(t, node, &p) != KV_OK) {
            conn_refuse(c, "peer table full or out of memory");
            return;
        }
        if (p->conn != NULL) {
            /* The peer restarted or its old connection died unnoticed. */
            rpc__conn_close(p->conn, "replaced by a new connection from the same node");
        }
    }
    uint8_t ack[RPC_HELLO_ACK_SIZE];
    kv_store_u64(ack, t->o.node_id);
    kv_store_u64(ack + 8, t->o.cluster_id);
    if (conn_write_ctl(c, RPC_TYPE_HELLO, RPC_FRAME_RESPONSE, ack, sizeof ack) != KV_OK) {
        rpc__conn_close(c, "cannot write HELLO response");
        return;
    }
    if (p != NULL) {
        p->conn = c;
        c->peer = p;
        c->q = &p->q;
    } else {
        c->q = &c->own_q;
    }
    c->state = CONN_READY;
    kv_info("rpc: accepted conn=%" PRIu64 " node=%" PRIu64 "%s", c->id, node,
            node == 0 ? " (client)" : "");
    if (c->q->pending.size > 0) {
        rpc__schedule_idle(t);
    }
}

/* Dialer: the acceptor answered our HELLO. */
static void conn_on_hello_ack(struct conn *c, const uint8_t *payload, size_t size)
{
    struct rpc_transport *t = c->t;
    struct kv_reader r;
    uint64_t node = 0, cluster = 0;
    kv_reader_init(&r, payload, size);
    if (kv_reader_u64(&r, &node) != KV_OK || kv_reader_u64(&r, &cluster) != KV_OK ||
        node != c->remote || cluster != t->o.cluster_id || c->peer == NULL) {
        kv_warn("rpc: bad HELLO response conn=%" PRIu64 " expected node=%" PRIu64
                " got node=%" PRIu64 " cluster=%" PRIu64,
                c->id, c->remote, node, cluster);
        rpc__conn_close(c, "bad HELLO response");
        return;
    }
    c->state = CONN_READY;
    c->q = &c->peer->q;
    c->peer->attempts = 0;
    kv_info("rpc: connected conn=%" PRIu64 " node=%" PRIu64, c->id, c->remote);
    if (c->q->pending.size > 0) {
        rpc__schedule_idle(t);
    }
}

/* Handles one transport-reserved frame. */
static void conn_on_control(struct conn *c, const struct rpc_frame_header *hdr,
                            const uint8_t *payload)
{
    int response = (hdr->flags & RPC_FRAME_RESPONSE) != 0;
    if (hdr->type == RPC_TYPE_HELLO && !response && !c->dialed && c->state == CONN_HELLO_WAIT) {
        conn_on_hello(c, payload, hdr->payload_size);
    } else if (hdr->type == RPC_TYPE_HELLO && response && c->dialed &&
               c->state == CONN_HELLO_WAIT) {
        conn_on_hello_ack(c, payload, hdr->payload_size);
    } else if (hdr->type == RPC_TYPE_REFUSE && c->dialed) {
        int n = hdr->payload_size > 200 ? 200 : (int)hdr->payload_size;
        kv_warn("rpc: node refused us conn=%" PRIu64 " node=%" PRIu64 " reason=\"%.*s\"", c->id,
                c->remote, n, (const char *)payload);
        rpc__conn_close(c, "refused by peer");
    } else if (hdr->type == RPC_TYPE_HELLO || hdr->type == RPC_TYPE_REFUSE) {
        c->t->stats.malformed++;
        kv_warn("rpc: unexpected handshake frame conn=%" PRIu64 " type=%u", c->id, hdr->type);
        rpc__conn_close(c, "unexpected handshake frame");
    }
    /* Other reserved types come from newer versions: ignored. */
}

/* ---- Reading and dispatch ----------------------------------------------- */

/* Dispatches one decoded frame. */
static void conn_on_frame(struct conn *c, const struct rpc_frame_header *hdr,
                          const uint8_t *payload)
{
    struct rpc_transport *t = c->t;
    if (hdr->type >= RPC_TYPE_RESERVED_MIN) {
        conn_on_control(c, hdr, payload);
        return;
    }
    if (c->state != CONN_READY) {
        t->stats.malformed++;
        kv_warn("rpc: frame before HELLO conn=%" PRIu64 " type=%u", c->id, hdr->type);
        rpc__conn_close(c, "frame before HELLO");
        return;
    }
    if (hdr->flags & RPC_FRAME_RESPONSE) {
        rpc__call_respond(c, hdr, payload);
        return;
    }
    if (t->o.recv_cb == NULL) {
        return;
    }
    struct rpc_msg msg = {
        .from = c->remote,
        .type = hdr->type,
        .payload = payload,
        .size = hdr->payload_size,
        .token = {.conn_id = c->id, .request_id = hdr->request_id},
    };
    t->o.recv_cb(t, &msg, t->o.recv_data);
}

/* A frame failed to decode: the stream cannot be resynchronised. */
static void conn_on_bad_frame(struct conn *c, size_t off, int rc, const char *errmsg)
{
    const uint8_t *d = c->rbuf.data + off;
    if (rc == KV_EPROTO && c->rbuf.size - off > 4 && kv_load_u32(d) == RPC_FRAME_MAGIC &&
        d[4] != RPC_FRAME_VERSION && c->state == CONN_HELLO_WAIT && !c->dialed) {
        conn_refuse(c, errmsg); /* a node of another protocol version */
        return;
    }
    c->t->stats.malformed++;
    kv_warn("rpc: closing connection on a bad frame conn=%" PRIu64 " node=%" PRIu64
            " error=%s reason=\"%s\"",
            c->id, c->remote, kv_errname(rc), errmsg);
    rpc__conn_close(c, errmsg);
}

/* Decodes and dispatches every whole frame in the read buffer. */
static void conn_process(struct conn *c)
{
    char errmsg[KV_ERRMSG_SIZE];
    size_t off = 0;
    while (c->state == CONN_READY || c->state == CONN_HELLO_WAIT) {
        struct rpc_frame_header hdr;
        const uint8_t *payload = NULL;
        size_t used = 0;
        errmsg[0] = '\0';
        int rc = rpc_frame_decode(c->rbuf.data + off, c->rbuf.size - off, &hdr, &payload, &used,
                                  &c->scratch, errmsg);
        if (rc == KV_EUNAVAILABLE) {
            if (c->state == CONN_HELLO_WAIT && c->rbuf.size - off >= RPC_FRAME_HEADER_SIZE &&
                kv_load_u32(c->rbuf.data + off + 8) > RPC_HELLO_FRAME_MAX) {
                snprintf(errmsg, sizeof errmsg, "handshake frame over %u bytes",
                         RPC_HELLO_FRAME_MAX);
                conn_on_bad_frame(c, off, KV_ETOOBIG, errmsg);
                return;
            }
            break;
        }
        if (rc != KV_OK) {
            if (rc == KV_ENOMEM) {
                snprintf(errmsg, sizeof errmsg, "out of memory decompressing a frame");
            }
            conn_on_bad_frame(c, off, rc, errmsg);
            return;
        }
        off += used;
        c->t->stats.frames_received++;
        conn_on_frame(c, &hdr, payload);
    }
    if (c->state == CONN_CLOSING) {
        return;
    }
    memmove(c->rbuf.data, c->rbuf.data + off, c->rbuf.size - off);
    c->rbuf.size -= off;
    if (c->rbuf.size == 0 && c->rbuf.cap > RPC_BUF_KEEP_BYTES) {
        kv_buf_close(&c->rbuf);
    }
    if (c->scratch.cap > RPC_BUF_KEEP_BYTES) {
        kv_buf_close(&c->scratch);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    if (kv_buf_reserve(&c->rbuf, RPC_READ_CHUNK) != KV_OK) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)c->rbuf.data + c->rbuf.size, (unsigned)(c->rbuf.cap - c->rbuf.size));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread < 0) {
        rpc__conn_close(c, nread == UV_EOF ? "closed by the other end" : uv_strerror((int)nread));
        return;
    }
    if (c->state == CONN_CLOSING || c->state == CONN_REFUSING) {
        return;
    }
    c->rbuf.size += (size_t)nread;
    c->t->stats.bytes_received += (uint64_t)nread;
    conn_process(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status < 0) {
        rpc__conn_close(c, uv_strerror(status));
        return;
    }
    struct rpc_transport *t = c->t;
    uint8_t hello[RPC_HELLO_SIZE];
    kv_store_u64(hello, t->o.node_id);
    kv_store_u64(hello + 8, t->o.cluster_id);
    kv_store_u64(hello + 16, c->remote);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, RPC_KEEPALIVE_S);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        rpc__conn_close(c, uv_strerror(rc));
        return;
    }
    if (conn_write_ctl(c, RPC_TYPE_HELLO, 0, hello, sizeof hello) != KV_OK) {
        rpc__conn_close(c, "cannot write HELLO");
        return;
    }
    c->state = CONN_HELLO_WAIT;
}

/* ---- Dialing and accepting ---------------------------------------------- */

/* Opens a connection to p->addr. */
void rpc__conn_dial(struct peer *p)
{
    struct rpc_transport *t = p->t;
    KV_ASSERT(p->conn == NULL && p->has_addr && !p->resolving);
    struct conn *c;
    if (t->conn_count >= t->o.conns_max || conn_new(t, &c) != KV_OK) {
        kv_warn("rpc: cannot open a connection node=%" PRIu64 " conns=%u", p->node_id,
                t->conn_count);
        rpc__peer_schedule_retry(p);
        return;
    }
    t->stats.dials++;
    c->dialed = 1;
    c->peer = p;
    c->remote = p->node_id;
    c->state = CONN_DIALING;
    p->conn = c;
    int rc =
        uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&p->addr, on_connect);
    if (rc < 0) {
        rpc__conn_close(c, uv_strerror(rc));
    }
}

/* Accepts the connection libuv holds for us. libuv stops watching the
 * listener until uv_accept is called, so when there is no memory for a
 * connection, the sweep timer retries (accept_pending) rather than
 * leaving the listener deaf. */
void rpc__conn_accept(struct rpc_transport *t)
{
    struct conn *c;
    if (conn_new(t, &c) != KV_OK) {
        if (!t->accept_pending) {
            kv_warn("rpc: cannot accept a connection yet: out of memory");
        }
        t->accept_pending = 1;
        return;
    }
    t->accept_pending = 0;
    if (uv_accept((uv_stream_t *)&t->listener, (uv_stream_t *)&c->tcp) < 0) {
        rpc__conn_close(c, "accept failed");
        return;
    }
    t->stats.accepted++;
    c->state = CONN_HELLO_WAIT;
    if (t->conn_count > t->o.conns_max) {
        kv_warn("rpc: connection limit reached conns_max=%u", t->o.conns_max);
        rpc__conn_close(c, "connection limit reached");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, RPC_KEEPALIVE_S);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        rpc__conn_close(c, uv_strerror(rc));
    }
}
