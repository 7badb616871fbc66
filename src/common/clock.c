/* clock.c -- CLOCK_MONOTONIC wrapper. */
#include "clock.h"

#include <time.h>

uint64_t kv_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t kv_clock_ms(void)
{
    return kv_clock_ns() / 1000000u;
}
