/* sim_main.c -- `raft_sim`: runs the Raft simulator over a range of seeds.
 * ctest runs a fixed range; the soak runs as many as asked:
 *   raft_sim --seeds N [--start S] [--steps K] [--verbose]
 * Exit status: 0 all seeds passed, 1 a seed failed (it is printed with the
 * command that replays it), 2 bad usage or out of memory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "sim.h"

static int usage(void)
{
    fprintf(stderr, "usage: raft_sim [--seeds N] [--start S] [--steps K] [--verbose] "
                    "[--keep-going]\n");
    return 2;
}

int main(int argc, char **argv)
{
    uint64_t seeds = 100, start = 1;
    uint32_t steps = 600;
    bool verbose = false, keep_going = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
            seeds = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--start") == 0 && i + 1 < argc) {
            start = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            steps = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--verbose") == 0) {
            verbose = true;
        } else if (strcmp(argv[i], "--keep-going") == 0) {
            keep_going = true;
        } else {
            return usage();
        }
    }
    struct sim_stats st;
    memset(&st, 0, sizeof st);
    uint64_t failures = 0;
    uint64_t t0 = kv_clock_ms();
    for (uint64_t k = 0; k < seeds; k++) {
        struct sim_options opt = {.seed = start + k, .steps = steps, .verbose = verbose};
        int rc = sim_run(&opt, &st);
        if (rc == 2) {
            fprintf(stderr, "seed %llu: simulator out of memory\n", (unsigned long long)opt.seed);
            return 2;
        }
        if (rc != 0) {
            failures++;
            if (!keep_going) {
                break;
            }
        }
    }
    uint64_t ms = kv_clock_ms() - t0;
    printf("seeds=%llu start=%llu failures=%llu steps=%llu msgs=%llu writes_acked=%llu "
           "reads_checked=%llu leaders=%llu crashes=%llu conf_changes=%llu snapshots=%llu "
           "transfers=%llu alloc_faults=%llu ms=%llu\n",
           (unsigned long long)seeds, (unsigned long long)start, (unsigned long long)failures,
           (unsigned long long)st.steps, (unsigned long long)st.msgs_delivered,
           (unsigned long long)st.writes_acked, (unsigned long long)st.reads_checked,
           (unsigned long long)st.leaders_elected, (unsigned long long)st.crashes,
           (unsigned long long)st.conf_changes, (unsigned long long)st.snapshots_installed,
           (unsigned long long)st.transfers, (unsigned long long)st.alloc_faults,
           (unsigned long long)ms);
    return failures > 0 ? 1 : 0;
}
