/* bitcask_recover.c -- the bitcask engine's start-up: lists the directory
 * (removing leftovers of an interrupted merge), loads each merge file's
 * hint or scans the file, applies write files batch by batch (a batch
 * counts only with its commit record), keeps the newest record of each key
 * by sequence number, truncates a torn tail of the newest write file, and
 * refuses any other damage as corruption. */
#include "bitcask_int.h"
#include "alloc.h"
#include "crc32c.h"
#include "hash.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Read size while scanning a data file at start-up. */
#define BITCASK_SCAN_CHUNK_BYTES (1024u * 1024u)

/* ---- recovery -------------------------------------------------------------- */

/* Sequential reader over one file, used by the start-up scan. */
struct scan {
    struct bc_file *file;
    uint64_t file_size;
    struct kv_buf win; /* bytes [win_off, win_off + win.size) of the file */
    uint64_t win_off;
};

/* Makes [off, off + need) available (clamped at EOF); *p and *avail give
 * the bytes from `off`. */
static int scan_window(struct scan *s, uint64_t off, size_t need, const uint8_t **p, size_t *avail)
{
    if (off < s->win_off || off + need > s->win_off + s->win.size) {
        size_t want = need > BITCASK_SCAN_CHUNK_BYTES ? need : BITCASK_SCAN_CHUNK_BYTES;
        if (want > s->file_size - off) {
            want = (size_t)(s->file_size - off);
        }
        kv_buf_clear(&s->win);
        int rc = kv_buf_reserve(&s->win, want);
        if (rc != KV_OK) {
            return rc;
        }
        size_t got;
        rc = stor__bitcask_read_full(s->file->fd, s->win.data, want, off, &got);
        if (rc != KV_OK) {
            return rc;
        }
        s->win.size = got;
        s->win_off = off;
    }
    *p = s->win.data + (off - s->win_off);
    *avail = (size_t)(s->win_off + s->win.size - off);
    return KV_OK;
}

/* Decodes the record at `off`: KV_OK, KV_EOF (runs past the end of the
 * file), KV_ECORRUPT, or an I/O error. */
static int scan_record(struct scan *s, uint64_t off, struct bitcask_record *r)
{
    const uint8_t *p;
    size_t avail;
    int rc = scan_window(s, off, BITCASK_RECORD_HEADER_SIZE, &p, &avail);
    if (rc != KV_OK) {
        return rc;
    }
    rc = stor__bitcask_record_decode(p, avail, r);
    if (rc == KV_EOF && r->record_size > 0 && off + r->record_size <= s->file_size) {
        rc = scan_window(s, off, r->record_size, &p, &avail);
        if (rc == KV_OK) {
            rc = stor__bitcask_record_decode(p, avail, r);
        }
    }
    return rc;
}

/* Applies one recovered record to the keydir: the newest seq of a key wins,
 * whatever file it is in. Tombstones stay as dead entries until the end. */
static int recover_apply(struct bc_engine *e, struct bc_file *f, const uint8_t *key,
                         size_t key_size, uint32_t value_size, uint64_t offset, uint64_t seq,
                         int dead)
{
    uint64_t hash = kv_hash64(key, key_size);
    struct kd_entry *cur = stor__bitcask_kd_find(&e->kd, key, key_size, hash);
    if (seq >= e->next_seq) {
        e->next_seq = seq + 1;
    }
    if (seq > f->max_seq) {
        f->max_seq = seq;
    }
    if (cur != NULL && cur->seq >= seq) {
        return KV_OK; /* an older record: dead on arrival */
    }
    int rc = stor__bitcask_kd_reserve(&e->kd, 1);
    struct kd_entry *en = rc == KV_OK ? stor__bitcask_entry_new(key, key_size, hash) : NULL;
    if (en == NULL) {
        snprintf(stor__errbuf(&e->base), KV_ERRMSG_SIZE,
                 "bitcask: out of memory loading the keydir");
        return KV_ENOMEM;
    }
    en->value_size = value_size;
    en->offset = offset;
    en->seq = seq;
    en->file = f;
    en->dead = (uint8_t)dead;
    if (!dead) {
        f->live_bytes += stor__bitcask_entry_record_size(en);
    }
    struct kd_entry *old = stor__bitcask_kd_put(&e->kd, en);
    if (old != NULL) {
        if (!old->dead) {
            old->file->live_bytes -= stor__bitcask_entry_record_size(old);
        }
        stor__bitcask_entry_unref(old);
    }
    return KV_OK;
}

/* Pending records of a write file's unfinished batch: `recs` holds
 * struct pending, `keys` their keys back to back. */
struct pending {
    uint64_t offset;
    uint64_t seq;
    size_t key_pos; /* in keys */
    uint32_t value_size;
    uint16_t key_size;
    uint8_t dead;
};

struct pendings {
    struct kv_buf recs;
    struct kv_buf keys;
};

/* Looks for any whole, valid record starting in (from, EOF): if one exists,
 * the damage at `from` is not a torn tail but corruption. */
static int valid_record_after(struct scan *s, uint64_t from, int *found)
{
    *found = 0;
    for (uint64_t off = from + 1; off + BITCASK_RECORD_HEADER_SIZE <= s->file_size; off++) {
        struct bitcask_record r;
        int rc = scan_record(s, off, &r);
        if (rc == KV_OK) {
            *found = 1;
            return KV_OK;
        }
        if (rc != KV_EOF && rc != KV_ECORRUPT) {
            return rc;
        }
    }
    return KV_OK;
}

static int recover_commit(struct bc_engine *e, struct bc_file *f, struct pendings *pend,
                          const struct bitcask_record *r)
{
    size_t count = pend->recs.size / sizeof(struct pending);
    const struct pending *ps = (const struct pending *)(const void *)pend->recs.data;
    if (kv_load_u32(r->value) != count || count == 0 || ps[0].seq != r->seq) {
        return KV_ECORRUPT;
    }
    for (size_t i = 0; i < count; i++) {
        if (ps[i].seq != r->seq + i) {
            return KV_ECORRUPT;
        }
        int rc = recover_apply(e, f, pend->keys.data + ps[i].key_pos, ps[i].key_size,
                               ps[i].value_size, ps[i].offset, ps[i].seq, ps[i].dead);
        if (rc != KV_OK) {
            return rc;
        }
    }
    if (r->seq + count > e->next_seq) {
        e->next_seq = r->seq + count;
    }
    kv_buf_clear(&pend->recs);
    kv_buf_clear(&pend->keys);
    return KV_OK;
}

/* Scans one data or merge file, applying whole batches (write files) or
 * every record (merge files). *good_end is the end of the last whole batch;
 * *bad_off where scanning stopped on damage (== size when none); *torn is 1
 * when the record there has a sound header but runs past the end of the
 * file (a write cut short, not garbage). */
static int scan_records(struct bc_engine *e, struct scan *s, uint64_t *good_end, uint64_t *bad_off,
                        int *torn, struct pendings *pend)
{
    struct bc_file *f = s->file;
    uint64_t off = 0;
    *good_end = 0;
    *torn = 0;
    while (off < s->file_size) {
        struct bitcask_record r;
        int rc = scan_record(s, off, &r);
        if (rc == KV_EOF || rc == KV_ECORRUPT) {
            *torn = rc == KV_EOF;
            break;
        }
        if (rc != KV_OK) {
            return rc;
        }
        if (f->kind == FILE_MERGE) {
            if (r.type != BITCASK_PUT) {
                break;
            }
            rc = recover_apply(e, f, r.key, r.key_size, r.value_size, off, r.seq, 0);
            *good_end = off + r.record_size;
        } else if (r.type == BITCASK_COMMIT) {
            rc = recover_commit(e, f, pend, &r);
            if (rc == KV_ECORRUPT) {
                break;
            }
            *good_end = off + r.record_size;
        } else {
            struct pending p = {.offset = off,
                                .seq = r.seq,
                                .key_pos = pend->keys.size,
                                .value_size = r.value_size,
                                .key_size = (uint16_t)r.key_size,
                                .dead = r.type == BITCASK_TOMBSTONE};
            rc = kv_buf_append(&pend->keys, r.key, r.key_size);
            if (rc == KV_OK) {
                rc = kv_buf_append(&pend->recs, &p, sizeof p);
            }
        }
        if (rc != KV_OK) {
            return rc;
        }
        off += r.record_size;
    }
    *bad_off = off;
    return KV_OK;
}

static int scan_file(struct bc_engine *e, struct bc_file *f, int newest_write, char *errmsg)
{
    struct scan s = {.file = f, .file_size = f->size, .win_off = 0};
    struct pendings pend;
    kv_buf_init(&s.win);
    kv_buf_init(&pend.recs);
    kv_buf_init(&pend.keys);
    uint64_t good_end;
    uint64_t bad_off;
    int torn;
    int rc = scan_records(e, &s, &good_end, &bad_off, &torn, &pend);
    char p[BITCASK_PATH_SIZE_MAX];
    stor__bitcask_file_path(e, f->id, stor__bitcask_kind_suffix(f->kind), p);
    if (rc == KV_OK && good_end < f->size) {
        int found = 0;
        if (newest_write && bad_off < f->size && !torn) {
            rc = valid_record_after(&s, bad_off, &found);
        }
        if (rc != KV_OK) {
            /* I/O error, reported below */
        } else if (!newest_write || found) {
            snprintf(errmsg, KV_ERRMSG_SIZE,
                     "bitcask: %s: bad or incomplete record at byte offset %" PRIu64
                     " (file size %" PRIu64 ")",
                     p, bad_off < f->size ? bad_off : good_end, f->size);
            rc = KV_ECORRUPT;
        } else {
            kv_warn("bitcask: truncating torn tail path=%s offset=%" PRIu64
                    " dropped_bytes=%" PRIu64,
                    p, good_end, f->size - good_end);
            if (ftruncate(f->fd, (off_t)good_end) != 0 || fdatasync(f->fd) != 0) {
                snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: truncate %s: %s", p, strerror(errno));
                rc = KV_EIO;
            }
            f->size = good_end;
        }
    }
    if (rc == KV_EIO && errmsg[0] == '\0') {
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: read %s failed", p);
    }
    kv_buf_close(&s.win);
    kv_buf_close(&pend.recs);
    kv_buf_close(&pend.keys);
    return rc;
}

/* Checks (apply 0) or applies (apply 1) the entries of a hint file whose
 * `n` bytes at `d` passed their checksum. */
static int hint_walk(struct bc_engine *e, struct bc_file *f, const uint8_t *d, size_t n, int apply)
{
    uint64_t entries = 0;
    size_t end = n - BITCASK_HINT_TRAILER_SIZE;
    size_t pos = BITCASK_HINT_HEADER_SIZE;
    while (pos < end) {
        if (end - pos < BITCASK_HINT_ENTRY_SIZE) {
            return KV_ECORRUPT;
        }
        const uint8_t *x = d + pos;
        uint32_t ks = (uint32_t)x[0] | (uint32_t)x[1] << 8;
        uint32_t vs = kv_load_u32(x + 2);
        uint64_t off = kv_load_u64(x + 6);
        if (ks == 0 || ks > STOR_KEY_SIZE_MAX || vs > STOR_VALUE_SIZE_MAX ||
            end - pos - BITCASK_HINT_ENTRY_SIZE < ks || off > f->size ||
            f->size - off < stor__bitcask_record_size(ks, vs)) {
            return KV_ECORRUPT;
        }
        if (apply) {
            int rc = recover_apply(e, f, x + BITCASK_HINT_ENTRY_SIZE, ks, vs, off,
                                   kv_load_u64(x + 14), 0);
            if (rc != KV_OK) {
                return rc;
            }
        }
        pos += BITCASK_HINT_ENTRY_SIZE + ks;
        entries++;
    }
    return entries == kv_load_u64(d + n - 12) ? KV_OK : KV_ECORRUPT;
}

/* Loads a merge file's hint; KV_ECORRUPT (or KV_ENOENT) means "scan
 * instead", anything else fails the open. */
static int load_hint(struct bc_engine *e, struct bc_file *f)
{
    char p[BITCASK_PATH_SIZE_MAX];
    stor__bitcask_file_path(e, f->id, "hint", p);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return KV_ENOENT;
    }
    struct kv_buf h;
    kv_buf_init(&h);
    off_t size = lseek(fd, 0, SEEK_END);
    int rc = KV_ECORRUPT;
    size_t got = 0;
    if (size >= (off_t)(BITCASK_HINT_HEADER_SIZE + BITCASK_HINT_TRAILER_SIZE)) {
        rc = kv_buf_reserve(&h, (size_t)size);
        if (rc == KV_OK) {
            rc = stor__bitcask_read_full(fd, h.data, (size_t)size, 0, &got);
        }
        if (rc == KV_OK && got != (size_t)size) {
            rc = KV_ECORRUPT;
        }
    }
    close(fd);
    const uint8_t *d = h.data;
    size_t n = got;
    if (rc == KV_OK &&
        (kv_load_u32(d) != BITCASK_HINT_MAGIC || kv_load_u32(d + 4) != BITCASK_HINT_VERSION ||
         kv_load_u32(d + 8) != f->id || kv_load_u32(d + n - 16) != BITCASK_HINT_MAGIC ||
         kv_crc32c(0, d, n - 4) != kv_load_u32(d + n - 4))) {
        rc = KV_ECORRUPT;
    }
    /* The checksum held; still check every entry against the data file
     * before applying any, so a hint can never point the keydir outside it
     * nor be half applied when it turns out bad. */
    if (rc == KV_OK) {
        rc = hint_walk(e, f, d, n, 0);
    }
    if (rc == KV_OK) {
        rc = hint_walk(e, f, d, n, 1);
    }
    kv_buf_close(&h);
    return rc;
}

/* A directory entry of ours: id and suffix parsed from the name. */
static int parse_name(const char *name, uint32_t *id, const char **suffix)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return 0;
        }
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (name[10] != '.' || v > UINT32_MAX - 1) {
        return 0;
    }
    *id = (uint32_t)v;
    *suffix = name + 11;
    return 1;
}

/* Opens every data and merge file into the table; removes leftovers of an
 * interrupted merge (*.tmp) and hints without their merge file. */
static int list_files(struct bc_engine *e, char *errmsg)
{
    DIR *d = opendir(e->path);
    if (d == NULL) {
        int err = errno;
        snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: opendir %s: %s", e->path, strerror(err));
        return kv_err_from_errno(err);
    }
    int rc = KV_OK;
    struct dirent *de;
    while (rc == KV_OK && (de = readdir(d)) != NULL) {
        uint32_t id;
        const char *suffix;
        if (!parse_name(de->d_name, &id, &suffix)) {
            continue;
        }
        char p[BITCASK_PATH_SIZE_MAX];
        snprintf(p, sizeof p, "%s/%s", e->path, de->d_name);
        if (strcmp(suffix, "merge.tmp") == 0 || strcmp(suffix, "hint.tmp") == 0) {
            kv_info("bitcask: removing unfinished merge output path=%s", p);
            unlink(p);
            continue;
        }
        if (id >= e->next_file_id) {
            e->next_file_id = id + 1;
        }
        int is_data = strcmp(suffix, "data") == 0;
        if (!is_data && strcmp(suffix, "merge") != 0) {
            continue;
        }
        if (e->file_count >= BITCASK_FILE_COUNT_MAX) {
            snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: %s holds more than %u files", e->path,
                     BITCASK_FILE_COUNT_MAX);
            rc = KV_ETOOBIG;
            break;
        }
        int fd = open(p, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: open %s: %s", p, strerror(err));
            rc = kv_err_from_errno(err);
            break;
        }
        struct bc_file *f = stor__bitcask_file_new(id, is_data ? FILE_WRITE : FILE_MERGE, fd);
        off_t size = lseek(fd, 0, SEEK_END);
        if (f == NULL || size < 0 || stor__bitcask_table_add(e, f) != KV_OK) {
            rc = f == NULL || size >= 0 ? KV_ENOMEM : KV_EIO;
            kv_free(f);
            close(fd);
            break;
        }
        f->size = (uint64_t)size;
    }
    closedir(d);
    return rc;
}

int stor__bitcask_recover(struct bc_engine *e, char *errmsg)
{
    int rc = list_files(e, errmsg);
    if (rc != KV_OK) {
        return rc;
    }
    struct bc_file *newest_write = NULL;
    for (size_t i = 0; i < e->file_count; i++) {
        if (e->files[i]->kind == FILE_WRITE) {
            newest_write = e->files[i];
        }
    }
    for (size_t i = 0; i < e->file_count && rc == KV_OK; i++) {
        struct bc_file *f = e->files[i];
        if (f->kind == FILE_MERGE) {
            rc = load_hint(e, f);
            if (rc == KV_OK) {
                continue;
            }
            if (rc != KV_ECORRUPT && rc != KV_ENOENT) {
                snprintf(errmsg, KV_ERRMSG_SIZE, "bitcask: loading hint of file %010" PRIu32 ": %s",
                         f->id, kv_strerror(rc));
                return rc;
            }
            /* Nothing of a bad hint was applied (hint_walk checks first). */
            kv_warn("bitcask: hint unusable, scanning path=%s id=%" PRIu32 " reason=%s", e->path,
                    f->id, rc == KV_ENOENT ? "missing" : "corrupt");
        }
        rc = scan_file(e, f, f == newest_write, errmsg);
    }
    if (rc != KV_OK) {
        return rc;
    }
    /* Drop the tombstones recovery kept to decide between files. */
    for (size_t i = 0; i < e->kd.cap;) {
        struct kd_entry *en = e->kd.slots[i];
        if (en != NULL && en->dead) {
            stor__bitcask_entry_unref(stor__bitcask_kd_remove_slot(&e->kd, i));
            continue; /* a shifted entry may now sit in slot i */
        }
        i++;
    }
    if (newest_write != NULL) {
        e->active = newest_write; /* rolled by the next write if full */
        return KV_OK;
    }
    rc = stor__bitcask_roll(e);
    if (rc != KV_OK) {
        snprintf(errmsg, KV_ERRMSG_SIZE, "%s", stor__errbuf(&e->base));
    }
    return rc;
}
