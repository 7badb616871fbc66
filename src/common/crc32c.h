/* crc32c.h -- CRC-32C (Castagnoli), the checksum of every record RaftKV
 * writes to disk or sends in a snapshot chunk. Uses the SSE4.2 instruction
 * when the CPU has it, a table otherwise; both give the same values. */
#ifndef KV_CRC32C_H
#define KV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) over `size` bytes and returns the new value. */
uint32_t kv_crc32c(uint32_t crc, const void *data, size_t size);

/* The portable table implementation, exposed so tests can compare it with
 * the hardware path. */
uint32_t kv__crc32c_sw(uint32_t crc, const void *data, size_t size);

#endif
