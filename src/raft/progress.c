/* progress.c -- the leader's view of one member's log: PROBE sends one
 * APPEND at a time until the match point is found, REPLICATE pipelines up
 * to inflight_max APPENDs (a ring of their last indices), SNAPSHOT waits
 * for the host to ship a snapshot. */
#include "raft_int.h"

void raft__progress_reset(struct raft_progress *p, uint64_t next, uint32_t state)
{
    p->state = (uint8_t)state;
    p->probe_sent = false;
    p->match = 0;
    p->next = next;
    p->pending_snapshot = 0;
    p->read_acked = 0;
    p->inflight_start = 0;
    p->inflight_count = 0;
    p->recent_active = false;
}

static void clear_inflight(struct raft_progress *p)
{
    p->inflight_start = 0;
    p->inflight_count = 0;
}

void raft__progress_become_probe(struct raft_progress *p)
{
    /* From SNAPSHOT, resume after the snapshot if it went through. */
    if (p->state == RAFT_PROGRESS_SNAPSHOT) {
        uint64_t after = p->pending_snapshot > p->match ? p->pending_snapshot : p->match;
        p->next = after + 1;
    } else {
        p->next = p->match + 1;
    }
    p->state = RAFT_PROGRESS_PROBE;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    clear_inflight(p);
}

void raft__progress_become_replicate(struct raft_progress *p)
{
    p->state = RAFT_PROGRESS_REPLICATE;
    p->probe_sent = false;
    p->next = p->match + 1;
    clear_inflight(p);
}

void raft__progress_become_snapshot(struct raft_progress *p, uint64_t index)
{
    p->state = RAFT_PROGRESS_SNAPSHOT;
    p->probe_sent = false;
    p->pending_snapshot = index;
    clear_inflight(p);
}

bool raft__progress_paused(const struct raft_progress *p, uint32_t inflight_max)
{
    switch (p->state) {
    case RAFT_PROGRESS_PROBE:
        return p->probe_sent;
    case RAFT_PROGRESS_REPLICATE:
        return p->inflight_count >= inflight_max;
    default:
        return true;
    }
}

bool raft__progress_update(struct raft_progress *p, uint64_t index)
{
    bool updated = false;
    if (p->match < index) {
        p->match = index;
        updated = true;
        p->probe_sent = false;
    }
    if (p->next < index + 1) {
        p->next = index + 1;
    }
    return updated;
}

bool raft__progress_decr(struct raft_progress *p, uint64_t rejected, uint64_t next_hint)
{
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        /* Stale if it refers to an index already matched. */
        if (rejected <= p->match) {
            return false;
        }
        p->next = p->match + 1;
        return true;
    }
    /* PROBE: only the rejection of the APPEND we sent last counts. */
    if (p->next - 1 != rejected) {
        return false;
    }
    uint64_t next = next_hint < rejected ? next_hint : rejected;
    if (next < p->match + 1) {
        next = p->match + 1;
    }
    if (next < 1) {
        next = 1;
    }
    p->next = next;
    p->probe_sent = false;
    return true;
}

void raft__progress_sent(struct raft_progress *p, uint64_t last, uint32_t inflight_max)
{
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        p->next = last + 1;
        KV_ASSERT(p->inflight != NULL && p->inflight_count < inflight_max);
        p->inflight[(p->inflight_start + p->inflight_count) % inflight_max] = last;
        p->inflight_count++;
    } else if (p->state == RAFT_PROGRESS_PROBE) {
        p->probe_sent = true;
    }
}

void raft__progress_free_to(struct raft_progress *p, uint64_t index, uint32_t inflight_max)
{
    while (p->inflight_count > 0 && p->inflight[p->inflight_start] <= index) {
        p->inflight_start = (p->inflight_start + 1) % inflight_max;
        p->inflight_count--;
    }
}
