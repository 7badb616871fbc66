/* num.c -- Redis-rule integer parsing (see num.h). */
#include "num.h"

int kv_parse_i64(const uint8_t *p, size_t size, int64_t *out)
{
    if (size == 0 || size > 20) {
        return 0;
    }
    int neg = p[0] == '-';
    size_t i = (size_t)neg;
    if (i == size || (p[i] == '0' && size - i > 1) || (neg && p[i] == '0')) {
        return 0;
    }
    uint64_t v = 0;
    for (; i < size; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0;
        }
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1) {
            return 0;
        }
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > INT64_MAX) {
            return 0;
        }
        *out = (int64_t)v;
    }
    return 1;
}
