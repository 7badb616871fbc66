/* num.h -- number parsing shared by the proxy and the state machine, with
 * Redis's rule for integers held in strings, so INCR and its arguments
 * accept and refuse exactly what Redis does. */
#ifndef KV_NUM_H
#define KV_NUM_H

#include <stddef.h>
#include <stdint.h>

/* Parses exactly `size` bytes as a signed 64-bit decimal: an optional '-',
 * then digits; no '+', spaces, leading zeros or "-0"; within range.
 * Returns 1 with *out set, or 0 (out untouched). */
int kv_parse_i64(const uint8_t *p, size_t size, int64_t *out);

#endif
