/* main.c -- the `raftkv` binary: dispatches to a subcommand. */
#include "cmd.h"
#include "version.h"

#include <stdio.h>
#include <string.h>

struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct subcommand subcommands[] = {
    {"bench-engine", cmd_bench_engine, "benchmark the storage engines (put, get, 50/50 mix)"},
    {"bench-raft", cmd_bench_raft,
     "benchmark the Raft core: commits/s, memory and CPU per idle group"},
    {"bench-wal", cmd_bench_wal, "benchmark the shared Raft log against the raw disk"},
    {"demo", cmd_demo, "smoke run of the storage engines (a local cluster later)"},
};
#define SUBCOMMAND_COUNT (sizeof subcommands / sizeof subcommands[0])

/* Subcommands that later issues bring; named so users know they are coming. */
static const char *const planned[] = {"server", "proxy", "cli", "bench"};

static void usage(FILE *out)
{
    fprintf(out, "usage: raftkv <command> [options]\n"
                 "       raftkv --help | --version\n\n"
                 "RaftKV is a distributed key-value store: Multi-Raft groups behind a\n"
                 "Redis-protocol proxy, on pluggable storage engines.\n\ncommands:\n");
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++) {
        fprintf(out, "  %-14s %s\n", subcommands[i].name, subcommands[i].summary);
    }
    fprintf(out, "\nnot yet available: ");
    for (size_t i = 0; i < sizeof planned / sizeof planned[0]; i++) {
        fprintf(out, "%s%s", i ? ", " : "", planned[i]);
    }
    fprintf(out, "\n\nRun 'raftkv <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("raftkv %s\n", RAFTKV_VERSION);
        return 0;
    }
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++) {
        if (strcmp(name, subcommands[i].name) == 0) {
            return subcommands[i].run(argc - 1, argv + 1);
        }
    }
    for (size_t i = 0; i < sizeof planned / sizeof planned[0]; i++) {
        if (strcmp(name, planned[i]) == 0) {
            fprintf(stderr, "raftkv: '%s' is not available in this version yet\n", name);
            return 2;
        }
    }
    fprintf(stderr, "raftkv: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}
