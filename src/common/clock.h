/* clock.h -- the monotonic clock, read only at the edges (server loops,
 * benchmarks), never inside the Raft core. */
#ifndef KV_CLOCK_H
#define KV_CLOCK_H

#include <stdint.h>

/* Nanoseconds / milliseconds since an arbitrary fixed point; never go back. */
uint64_t kv_clock_ns(void);
uint64_t kv_clock_ms(void);

#endif
