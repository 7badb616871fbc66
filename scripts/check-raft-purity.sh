#!/usr/bin/env bash
# check-raft-purity.sh -- the Raft core must stay pure and deterministic:
# no I/O, clock, threads or hidden randomness. Fails (exit 1) and names
# the offending lines if any file under src/raft includes <stdio.h>,
# <time.h>, <pthread.h> or a <sys/...> header, or calls rand()/srand(),
# time(), clock_gettime() or gettimeofday().
#   scripts/check-raft-purity.sh [dir]   (default: src/raft of this repo)
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/src/raft}"
if [ ! -d "$dir" ]; then
  echo "check-raft-purity: no such directory: $dir" >&2
  exit 2
fi
bad=0
report() {
  echo "check-raft-purity: $1" >&2
  bad=1
}
while IFS= read -r hit; do
  report "forbidden include: $hit"
done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*<(stdio\.h|time\.h|pthread\.h|sys/[^>]*)>' \
           "$dir"/*.c "$dir"/*.h 2>/dev/null)
while IFS= read -r hit; do
  report "forbidden call: $hit"
done < <(grep -nE '(^|[^A-Za-z0-9_])(s?rand|time|clock_gettime|gettimeofday)[[:space:]]*\(' \
           "$dir"/*.c "$dir"/*.h 2>/dev/null | grep -vE ':[[:space:]]*(/?\*|//)')
if [ $bad -ne 0 ]; then
  exit 1
fi
echo "check-raft-purity: $dir is pure"
