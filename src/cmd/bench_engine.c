/* bench_engine.c -- `raftkv bench-engine`: placeholder until the benchmark lands. */
#include "cmd.h"

#include <stdio.h>

int cmd_bench_engine(int argc, char **argv)
{
    fprintf(stderr, "bench-engine: not implemented yet\n");
    return 1;
}
