/* fuzz_wal_record.c -- fuzz target for the WAL record decoder: the input is
 * the body of a segment (records back to back), decoded the way recovery
 * does. The decoder must never read out of bounds, never report a record
 * larger than its input, and every entry of a record it accepts must lie
 * inside that record. Built for libFuzzer when the compiler has it; the
 * same function also runs over the checked-in corpus from replay_main.c. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "wal_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walks the entries of an accepted ENTRIES or RESET record. */
static void walk_entries(const struct wal__rec *r)
{
    struct wal__entry_cursor c = {.area = r->entries, .size = r->entries_size, .pos = 0};
    volatile uint8_t sink = 0;
    for (uint64_t k = 0; k < r->b; k++) {
        uint64_t term;
        uint32_t type, esize;
        size_t off;
        if (wal__rec_entry_next(&c, &term, &type, &esize, &off) != KV_OK) {
            abort(); /* the decoder promised a valid entry area */
        }
        if (off + esize > r->entries_size) {
            abort();
        }
        if (esize > 0) {
            sink ^= r->entries[off] ^ r->entries[off + esize - 1];
        }
    }
    if (c.pos != r->entries_size) {
        abort();
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct wal__rec r;
        const char *why = NULL;
        int rc = wal__rec_decode(data + off, size - off, &r, &why);
        if (rc != KV_OK) {
            if ((rc != KV_EOF && rc != KV_ECORRUPT) || why == NULL) {
                abort();
            }
            break;
        }
        if (r.size < WAL__REC_HEADER_SIZE || r.size > size - off) {
            abort();
        }
        if (r.type == WAL__REC_ENTRIES || r.type == WAL__REC_RESET) {
            walk_entries(&r);
        }
        off += r.size;
    }
    return 0;
}
