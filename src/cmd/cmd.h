/* cmd.h -- the raftkv binary's subcommands. Each takes argc/argv with
 * argv[0] being the subcommand's name and returns the process exit code:
 * 0 success, 1 runtime failure, 2 bad usage. */
#ifndef KV_CMD_H
#define KV_CMD_H

int cmd_bench_engine(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_bench_raft(int argc, char **argv);
int cmd_bench_wal(int argc, char **argv);

#endif
