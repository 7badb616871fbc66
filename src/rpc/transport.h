/* transport.h -- the RPC transport: framed TCP connections between nodes
 * (and from clients such as the proxy) on a libuv loop the caller owns.
 *
 * The transport carries opaque payloads (the node layer puts protobuf-c
 * messages in them) in frames (frame.h). It keeps exactly one connection
 * per node pair, shared by all Raft groups: the node with the LOWER id
 * dials, the higher one accepts, so both ends agree without a tie-break.
 * Clients (proxies, tools) use node id 0, so they always dial; they may
 * send requests and get responses on their connection.
 *
 * Every connection opens with a HELLO frame from the dialer carrying its
 * node id, its cluster id and the node id it meant to reach; the acceptor
 * answers with a HELLO response, or refuses (a REFUSE frame with the
 * reason, then close) when the cluster id differs, the ids do not fit the
 * dialing rule, or the dialer reached the wrong node. A frame of another
 * protocol version, a malformed or oversized frame closes that connection
 * only, with a logged reason; the transport keeps serving everyone else.
 *
 * Outgoing frames are queued per peer and flushed in batches: every frame
 * queued during one loop turn goes out in one uv_write on the next turn
 * (and while a write is in flight, frames gather for the next one).
 * Payloads of RPC_FRAME_COMPRESS_MIN bytes or more are lz4-compressed when
 * that saves space. A queue holds at most queue_bytes_max bytes (queued +
 * in flight); a send that would pass it fails with KV_EBUSY, so a slow peer
 * costs bounded memory.
 *
 * Messages to a peer that is not connected (not yet, or between reconnects)
 * QUEUE within the byte limit and go out once the connection is up; they
 * are not failed with KV_ECLOSED. The dialing side reconnects with
 * exponential backoff and jitter, capped at backoff_max_ms.
 *
 * Threading: everything runs on the loop's thread; no function here may be
 * called from another thread. No locks. */
#ifndef KV_RPC_TRANSPORT_H
#define KV_RPC_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "err.h"
#include "frame.h"

struct rpc_transport; /* opaque; one per process role (server, proxy) */

/* Message types at or above this are the transport's own (HELLO, REFUSE);
 * callers use types below it. */
#define RPC_TYPE_RESERVED_MIN 0xff00u
#define RPC_TYPE_HELLO                                                                             \
    0xff00u                     /* payload: u64 node id, u64 cluster id,                           \
                                   u64 node id the dialer meant to reach                           \
                                   (0 = any); the response carries the                             \
                                   acceptor's node id and cluster id */
#define RPC_TYPE_REFUSE 0xff01u /* payload: a human-readable reason */

/* Defaults for the limits in struct rpc_transport_options. */
#define RPC_QUEUE_BYTES_MAX_DEFAULT  (16u * 1024u * 1024u) /* per peer/conn queue */
#define RPC_CONNS_MAX_DEFAULT        1024u                 /* open connections */
#define RPC_CALLS_MAX_DEFAULT        65536u                /* calls awaiting a reply */
#define RPC_BACKOFF_MIN_MS_DEFAULT   50u                   /* first reconnect delay */
#define RPC_BACKOFF_MAX_MS_DEFAULT   5000u                 /* cap on reconnect delay */
#define RPC_HELLO_TIMEOUT_MS_DEFAULT 5000u                 /* connect + handshake deadline */
/* Peers in the peer table (lookups are linear: clusters are small). */
#define RPC_PEERS_MAX 1024u
/* Longest host name or address accepted by rpc_peer_add. */
#define RPC_HOST_SIZE_MAX 255u

/* A token naming one inbound request, for rpc_reply. Plain value: copy it
 * and reply later (after a Raft commit); it goes stale, harmlessly, when
 * the connection the request came on closes. */
struct rpc_token {
    uint64_t conn_id;    /* transport-unique connection serial */
    uint64_t request_id; /* the request's id on that connection */
};

/* One received frame, as handed to the receive and call callbacks. */
struct rpc_msg {
    uint64_t from;          /* sender's node id; 0 for a client connection */
    uint16_t type;          /* caller-defined message type */
    const uint8_t *payload; /* borrowed: valid only during the callback */
    size_t size;            /* payload bytes (after decompression) */
    struct rpc_token token; /* token.request_id != 0: a request; reply
                               with rpc_reply(token); 0: one-way */
};

/* Called for every one-way message and request that arrives. */
typedef void (*rpc_recv_cb)(struct rpc_transport *t, const struct rpc_msg *msg, void *data);

/* Called exactly once per successful rpc_call: status KV_OK with the
 * response in *resp, or KV_ETIMEDOUT (deadline passed), KV_ECLOSED (the
 * connection to the peer dropped while the call waited -- the request may
 * or may not have been served -- or the peer was removed),
 * KV_ECANCELED (transport closed); resp is NULL unless status is KV_OK. */
typedef void (*rpc_call_cb)(struct rpc_transport *t, int status, const struct rpc_msg *resp,
                            void *data);

/* Called once when rpc_transport_close has closed every handle and freed
 * the transport. */
typedef void (*rpc_close_cb)(void *data);

struct rpc_transport_options {
    uint64_t node_id;          /* this node's id; 0 = a client (dials only) */
    uint64_t cluster_id;       /* both ends of a connection must agree */
    const char *listen_host;   /* numeric IPv4/IPv6 address to listen on, or
                                  NULL not to listen (clients) */
    uint16_t listen_port;      /* 0 picks an ephemeral port (rpc_transport_port) */
    size_t queue_bytes_max;    /* per-queue byte limit; 0 = default */
    uint32_t conns_max;        /* connections open at once; 0 = default */
    uint32_t calls_max;        /* calls in flight at once; 0 = default */
    uint32_t backoff_min_ms;   /* 0 = default */
    uint32_t backoff_max_ms;   /* 0 = default */
    uint32_t hello_timeout_ms; /* 0 = default */
    int compress;              /* lz4 for payloads >= RPC_FRAME_COMPRESS_MIN */
    uint64_t seed;             /* seeds the backoff jitter (struct kv_rng) */
    void *recv_data;           /* passed to recv_cb */
    rpc_recv_cb recv_cb;       /* receives one-way messages and requests;
                                  may be NULL for a pure client */
};

/* Fills `o` with defaults: node 0, cluster 0, no listener, compression on,
 * every limit at its default. */
void rpc_transport_options_init(struct rpc_transport_options *o);

/* Counters, all monotonic since the transport was created. */
struct rpc_stats {
    uint64_t writes;            /* uv_write calls carrying queued frames */
    uint64_t frames_sent;       /* frames handed to those writes */
    uint64_t bytes_sent;        /* their bytes, headers included */
    uint64_t frames_compressed; /* frames queued lz4-compressed */
    uint64_t frames_received;   /* frames decoded, HELLOs included */
    uint64_t bytes_received;    /* raw bytes read */
    uint64_t dials;             /* outbound connection attempts */
    uint64_t dial_failures;     /* attempts that failed to connect or
                                   to complete the handshake */
    uint64_t accepted;          /* inbound connections accepted */
    uint64_t refused;           /* connections refused at the handshake
                                   (cluster, ids, protocol version) */
    uint64_t malformed;         /* connections closed for a bad frame */
    uint64_t calls_timed_out;   /* calls completed with KV_ETIMEDOUT */
};

/* Creates a transport on `loop` (borrowed; it must outlive the transport)
 * and starts listening when o->listen_host is set. On success *out is the
 * new transport, released with rpc_transport_close. Returns KV_EINVAL (bad
 * address or options; errmsg says which), the kv_err mapped from a failed
 * bind/listen (KV_EBUSY when the address is in use; errmsg names it), or KV_ENOMEM. After a failure
 * past the first handle, the half-built transport frees itself during the
 * loop's next turn (libuv frees handles only through the loop), so run the
 * loop before closing it. */
int rpc_transport_new(uv_loop_t *loop, const struct rpc_transport_options *o,
                      struct rpc_transport **out, char errmsg[KV_ERRMSG_SIZE]) KV_MUST_USE;

/* Closes every connection, timer and the listener; calls still waiting
 * complete with KV_ECANCELED (before this returns); close_cb runs from the
 * loop once every handle is closed and the transport is freed. Queued,
 * unsent frames are dropped. Call once. */
void rpc_transport_close(struct rpc_transport *t, void *data, rpc_close_cb close_cb);

/* The port the listener is bound to (useful with port 0), or 0 when not
 * listening. */
uint16_t rpc_transport_port(const struct rpc_transport *t);

/* Copies the counters into *out. */
void rpc_transport_stats(const struct rpc_transport *t, struct rpc_stats *out);

/* Adds (or re-addresses) peer `node_id` at host:port; `host` is a numeric
 * IPv4/IPv6 address or a name, looked up (uv_getaddrinfo, IPv4 preferred)
 * before every dial so a node that moved is found. When this node's id is
 * lower, it dials the peer now and keeps the connection up; otherwise the
 * peer dials us. A new address applies from the next dial. Returns KV_OK,
 * KV_EINVAL (id 0, our own id, empty host or one over RPC_HOST_SIZE_MAX
 * bytes), KV_EBUSY (RPC_PEERS_MAX reached), KV_ECLOSED or KV_ENOMEM. */
int rpc_peer_add(struct rpc_transport *t, uint64_t node_id, const char *host,
                 uint16_t port) KV_MUST_USE;

/* Removes a peer: closes its connection, drops its queue, and completes its
 * waiting calls with KV_ECLOSED. Returns KV_OK, KV_ENOTFOUND or KV_ECLOSED
 * (transport closing). */
int rpc_peer_remove(struct rpc_transport *t, uint64_t node_id) KV_MUST_USE;

/* 1 when a handshaken connection to `node_id` is up, else 0. */
int rpc_peer_connected(const struct rpc_transport *t, uint64_t node_id);

/* Queues a one-way message (payload copied; borrowed for the call only)
 * to peer `node_id`. Returns KV_OK, KV_ENOTFOUND (no such peer), KV_EBUSY
 * (the queue is at its byte limit: back off), KV_ETOOBIG (larger than the
 * frame limit or the whole queue), KV_ECLOSED (transport closing) or
 * KV_ENOMEM. `type` must be below RPC_TYPE_RESERVED_MIN. */
int rpc_send(struct rpc_transport *t, uint64_t node_id, uint16_t type, const void *payload,
             size_t size) KV_MUST_USE;

/* Sends a request (payload copied) to peer `node_id` and arranges for
 * call_cb to run exactly once (see rpc_call_cb) within timeout_ms (> 0).
 * Returns the errors of rpc_send, plus KV_EBUSY when calls_max calls are
 * waiting; on any error call_cb is never called. */
int rpc_call(struct rpc_transport *t, uint64_t node_id, uint16_t type, const void *payload,
             size_t size, uint32_t timeout_ms, void *data, rpc_call_cb call_cb) KV_MUST_USE;

/* Answers the request named by `token` (from rpc_msg.token), payload
 * copied. Returns KV_OK, KV_ECLOSED (that connection is gone: the caller
 * has seen KV_ECLOSED or will time out), KV_EBUSY, KV_ETOOBIG, KV_ENOMEM. */
int rpc_reply(struct rpc_transport *t, const struct rpc_token *token, uint16_t type,
              const void *payload, size_t size) KV_MUST_USE;

#endif
