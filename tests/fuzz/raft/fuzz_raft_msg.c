/* fuzz_raft_msg.c -- fuzz target for the Raft message codec: the input is a
 * protobuf raftkv.raft.Message from a peer. A message that decodes must
 * encode again, and the re-encoding must decode to the same fields. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "raft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct raft_msg m;
    struct raft_msg again;
    uint8_t *buf = NULL;
    size_t n = 0;
    memset(&m, 0, sizeof m);
    memset(&again, 0, sizeof again);
    if (raft_msg_decode(data, size, &m) != KV_OK) {
        return 0;
    }
    if (raft_msg_encode(&m, &buf, &n) != KV_OK || raft_msg_decode(buf, n, &again) != KV_OK) {
        abort();
    }
    if (again.type != m.type || again.term != m.term || again.index != m.index ||
        again.n_entries != m.n_entries || again.context_size != m.context_size) {
        abort();
    }
    for (size_t i = 0; i < m.n_entries; i++) {
        if (again.entries[i].size != m.entries[i].size ||
            (m.entries[i].size > 0 &&
             memcmp(again.entries[i].data, m.entries[i].data, m.entries[i].size) != 0)) {
            abort();
        }
    }
    kv_free(buf);
    raft_msg_clear(&m);
    raft_msg_clear(&again);
    return 0;
}
