#!/usr/bin/env bash
# test_cli.sh -- the raftkv binary's command line: --help and --version
# work, unknown commands and bad flags exit 2 with a message, and `raftkv
# demo` (today a storage smoke run) succeeds on every engine.
# Usage: test_cli.sh path/to/raftkv
set -u
bin="$1"
fails=0
check() { # check <name> <expected exit> <pattern in output> -- command...
    local name="$1" want="$2" pattern="$3"
    shift 4
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -ne "$want" ] || ! grep -q -- "$pattern" <<<"$out"; then
        echo "FAIL $name: exit $rc (want $want), output lacks '$pattern':"
        echo "$out" | head -5
        fails=$((fails + 1))
    else
        echo "ok   $name"
    fi
}
check help 0 "usage: raftkv" -- "$bin" --help
check version 0 "^raftkv [0-9]" -- "$bin" --version
check no-args 2 "usage: raftkv" -- "$bin"
check unknown 2 "unknown command 'frobnicate'" -- "$bin" frobnicate
check planned 2 "not available" -- "$bin" cli
check demo-help 0 "usage: raftkv demo" -- "$bin" demo --help
check demo-badflag 2 "unknown or incomplete option" -- "$bin" demo --bogus
check bench-engine-badflag 2 "" -- "$bin" bench-engine --ops 12x
check bench-engine-unknown-engine 2 "" -- "$bin" bench-engine --engine nosuch
check bench-raft-help 0 "bench-raft" -- "$bin" bench-raft --help
check bench-wal-help 0 "bench-wal" -- "$bin" bench-wal --help
check demo 0 "all engines OK" -- "$bin" demo
passed=$((12 - fails))
echo "cli: ${passed} passed, ${fails} failed"
[ "$fails" -eq 0 ]
