/* transport_int.h -- internals of the RPC transport shared by its two
 * files: transport.c (the transport object, peers, calls, timers, public
 * API) and conn.c (one TCP connection: handshake, reads, frame dispatch,
 * batched writes). Nothing outside src/rpc includes this. */
#ifndef KV_RPC_TRANSPORT_INT_H
#define KV_RPC_TRANSPORT_INT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "frame.h"
#include "rng.h"
#include "transport.h"

/* Free space reserved in a connection's read buffer before each read. */
#define RPC_READ_CHUNK 65536u
/* listen(2) backlog. */
#define RPC_LISTEN_BACKLOG 128
/* Buckets of the pending-call hash (chains stay short up to calls_max). */
#define RPC_CALL_BUCKETS 4096u
/* Period of the sweep that enforces handshake deadlines. */
#define RPC_SWEEP_MS 100u
/* Largest frame accepted before the handshake completes: a stranger must
 * not make us buffer RPC_FRAME_PAYLOAD_MAX bytes. */
#define RPC_HELLO_FRAME_MAX 4096u
/* Buffers grown past this by one large frame are released once idle, so a
 * single snapshot chunk does not pin memory for the connection's life. */
#define RPC_BUF_KEEP_BYTES (4u * RPC_READ_CHUNK)
/* TCP keepalive delay: finds peers whose host vanished without a FIN. */
#define RPC_KEEPALIVE_S 30u
/* Bytes of a HELLO payload we send; longer ones are accepted (new fields
 * are ignored), shorter ones refused. */
#define RPC_HELLO_SIZE     24u
#define RPC_HELLO_ACK_SIZE 16u
/* Backoff doubling stops at this exponent (the cap applies long before). */
#define RPC_BACKOFF_SHIFT_MAX 20u

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* An intrusive circular doubly linked list; the head is a sentinel. */
struct link {
    struct link *prev;
    struct link *next;
};

static inline void link_init(struct link *h)
{
    h->prev = h;
    h->next = h;
}

static inline int link_empty(const struct link *h)
{
    return h->next == h;
}

static inline void link_insert_after(struct link *pos, struct link *n)
{
    n->prev = pos;
    n->next = pos->next;
    pos->next->prev = n;
    pos->next = n;
}

static inline void link_remove(struct link *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n;
    n->next = n;
}

/* A bounded queue of encoded frames waiting for a uv_write. */
struct outq {
    struct kv_buf pending; /* whole frames, not yet handed to uv_write */
    size_t frames;         /* frames in `pending` */
    size_t inflight;       /* bytes of the write in flight on our connection */
    size_t bytes_max;      /* limit on pending + inflight */
};

enum conn_state {
    CONN_DIALING,    /* dialer: uv_tcp_connect in progress */
    CONN_HELLO_WAIT, /* dialer: HELLO sent; acceptor: waiting for HELLO */
    CONN_READY,      /* handshake done; frames flow */
    CONN_REFUSING,   /* acceptor: REFUSE being written, then close */
    CONN_CLOSING,    /* uv_close called; freed in on_conn_closed */
};

struct peer {
    struct link link;                 /* in rpc_transport.peers */
    struct rpc_transport *t;          /* owner */
    uint64_t node_id;                 /* the peer's id (never 0) */
    int has_addr;                     /* 0: known only from an inbound HELLO */
    int numeric;                      /* host is an address: no lookup needed */
    char host[RPC_HOST_SIZE_MAX + 1]; /* as given to rpc_peer_add */
    uint16_t port;                    /* as given to rpc_peer_add */
    struct sockaddr_storage addr;     /* where to dial (resolved before each
                                         dial when host is a name) */
    uv_getaddrinfo_t gai;             /* name lookup, while `resolving` */
    int resolving;                    /* gai in flight (counts as a handle) */
    int timer_closed;                 /* retry's close callback ran */
    struct conn *conn;                /* current connection, or NULL */
    struct outq q;                    /* frames for this peer; survives reconnects */
    uv_timer_t retry;                 /* reconnect timer (dialer side) */
    uint32_t attempts;                /* failed dials since the last success */
    int removed;                      /* rpc_peer_remove'd; freed when retry closes */
};

struct conn {
    struct link link;         /* in rpc_transport.conns */
    struct rpc_transport *t;  /* owner */
    uv_tcp_t tcp;             /* the socket */
    uv_connect_t connect_req; /* dialer's connect request */
    uv_write_t wreq;          /* the data write in flight, if `writing` */
    uv_write_t creq;          /* the control (HELLO/REFUSE) write */
    struct kv_buf wbuf;       /* bytes of the data write in flight */
    struct kv_buf ctl;        /* bytes of the control write */
    struct kv_buf rbuf;       /* received bytes not yet decoded */
    struct kv_buf scratch;    /* decompression output */
    struct outq own_q;        /* the queue of a client connection */
    struct outq *q;           /* queue flushed here once READY, else NULL */
    struct peer *peer;        /* the peer this connection serves, or NULL */
    uint64_t id;              /* transport-unique serial (rpc_token) */
    uint64_t remote;          /* remote node id (0 = client) */
    uint64_t deadline_ms;     /* handshake must finish by then (uv_now) */
    enum conn_state state;
    int dialed;      /* 1 when we dialed, 0 when accepted */
    int writing;     /* wreq in flight */
    int ctl_writing; /* creq in flight */
};

struct call {
    struct link link;     /* in calls (deadline order) or done */
    struct call *hnext;   /* hash chain */
    uint64_t id;          /* request id */
    uint64_t peer;        /* node the request went to */
    uint64_t deadline_ms; /* uv_now() time of expiry */
    int status;           /* result, once on the done list */
    void *data;
    rpc_call_cb cb;
};

struct rpc_transport {
    uv_loop_t *loop;                /* borrowed */
    struct rpc_transport_options o; /* limits filled in */
    uv_tcp_t listener;              /* when listening */
    int listening;
    int accept_pending; /* a connection waits for memory */
    uv_idle_t idle;     /* flush + deferred completions */
    int idle_scheduled;
    uv_timer_t call_timer; /* earliest call deadline */
    uv_timer_t sweep;      /* handshake deadlines */
    struct link peers;     /* struct peer */
    uint32_t peer_count;
    struct link conns; /* struct conn, closing ones too */
    uint32_t conn_count;
    struct link calls;                      /* waiting calls, deadline order */
    struct link done;                       /* completed calls to report */
    uint32_t call_count;                    /* calls on either list */
    struct call *buckets[RPC_CALL_BUCKETS]; /* waiting calls by id */
    uint64_t next_request_id;
    uint64_t next_conn_id;
    struct kv_rng rng; /* backoff jitter */
    struct rpc_stats stats;
    int closing;
    unsigned handles_open; /* uv handles not yet closed */
    void *close_data;
    rpc_close_cb close_cb;
};

/* ---- conn.c: one connection ---------------------------------------------- */

/* Initialises an empty queue holding at most bytes_max bytes. */
void rpc__outq_init(struct outq *q, size_t bytes_max);

/* Encodes one frame at the tail of `q` within its byte limit. Returns
 * KV_OK, KV_EBUSY (full), KV_ETOOBIG (over the frame limit or larger than
 * the whole queue) or KV_ENOMEM; `q` is unchanged on error. */
int rpc__outq_put(struct rpc_transport *t, struct outq *q, uint16_t type, uint8_t flags,
                  uint64_t request_id, const void *payload, size_t size);

/* Hands everything queued for a READY connection to one uv_write (no-op
 * while a write is in flight or nothing is queued). */
void rpc__conn_flush(struct conn *c);

/* Closes a connection (idempotent; no user callback runs from here):
 * detaches it from its peer, fails the peer's waiting calls (deferred)
 * when it was up, and schedules a redial on the dialing side. Freed in
 * its close callback. */
void rpc__conn_close(struct conn *c, const char *reason);

/* Opens a connection to the peer's resolved address, or schedules a
 * retry when no connection can be opened. */
void rpc__conn_dial(struct peer *p);

/* Accepts the connection the listener holds (see t->accept_pending). */
void rpc__conn_accept(struct rpc_transport *t);

/* ---- transport.c: the transport ------------------------------------------ */

/* One handle (or lookup) of `t` finished closing; the last one, once the
 * transport is closing, frees it and calls its close callback. */
void rpc__handle_closed(struct rpc_transport *t);

/* Fails every call waiting on `node_id` with `status`; the callbacks run
 * from the idle handle. */
void rpc__calls_fail_peer(struct rpc_transport *t, uint64_t node_id, int status);

/* A response arrived on `c`: completes the call it answers, if any (runs
 * the call's callback now). */
void rpc__call_respond(struct conn *c, const struct rpc_frame_header *hdr, const uint8_t *payload);

/* Arranges for the idle handle to flush queues and report completed calls
 * on this loop turn (or the next). */
void rpc__schedule_idle(struct rpc_transport *t);

/* Starts the peer's redial timer with the next backoff delay. */
void rpc__peer_schedule_retry(struct peer *p);

/* The live peer with `node_id`, or NULL. */
struct peer *rpc__peer_find(const struct rpc_transport *t, uint64_t node_id);

/* Adds an empty peer entry (no address). Returns KV_OK, KV_EBUSY
 * (RPC_PEERS_MAX) or KV_ENOMEM. */
int rpc__peer_new(struct rpc_transport *t, uint64_t node_id, struct peer **out);

#endif
