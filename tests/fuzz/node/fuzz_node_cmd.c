/* fuzz_node_cmd.c -- fuzz target for the command decoder of the group state
 * machine: the input is a Raft entry payload. A command that decodes must
 * re-encode and decode to the same operations. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fsm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct node_cmd cmd;
    struct node_cmd again;
    struct kv_buf b;
    if (node_cmd_decode(data, size, &cmd) != KV_OK) {
        return 0;
    }
    kv_buf_init(&b);
    if (node_cmd_encode(&cmd, &b) != KV_OK || node_cmd_decode(b.data, b.size, &again) != KV_OK) {
        abort();
    }
    if (again.n_ops != cmd.n_ops || again.seq != cmd.seq || again.flags != cmd.flags) {
        abort();
    }
    for (size_t i = 0; i < cmd.n_ops; i++) {
        const struct node_op *x = &cmd.ops[i];
        const struct node_op *y = &again.ops[i];
        if (x->type != y->type || x->key_size != y->key_size || x->value_size != y->value_size ||
            x->delta != y->delta || memcmp(x->key, y->key, x->key_size) != 0 ||
            (x->value_size > 0 && memcmp(x->value, y->value, x->value_size) != 0)) {
            abort();
        }
    }
    node_cmd_clear(&again);
    node_cmd_clear(&cmd);
    kv_buf_close(&b);
    return 0;
}
