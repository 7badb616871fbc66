#!/usr/bin/env bash
# mutation-check.sh -- proves the Raft simulator catches real bugs. Each
# mutation injects one known bug into a scratch copy of src/raft, builds the
# simulator against it and runs it over a range of seeds; the mutation is
# caught when the simulator fails (a checker reports a violation, or a core
# assertion fires). Ends with `caught N/N`; exits non-zero if any mutation
# survives or does not apply.
#   scripts/mutation-check.sh [--seeds N] [--only NAME]
set -u
seeds=50000
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "usage: $0 [--seeds N] [--only NAME]" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d /tmp/raft-mutation-XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

# name | file (under src/raft) | perl substitution applied to the whole file
mutations=(
  "vote_without_log_check|election.c|s/bool grant = can_vote && raft__log_up_to_date\(&r->log, m->index, m->log_term\);/bool grant = can_vote;/"
  "commit_previous_term|replication.c|s/if \(raft__log_term_or0\(&r->log, index\) != r->term\) \{/if (0) {/"
  "skip_prev_entry_check|replication.c|s/if \(raft__log_match_term\(&r->log, m->index, m->log_term\)\) \{\n(\s*)return accept_append/if (m->index <= raft__log_last(&r->log)) {\n\1return accept_append/"
  "learner_votes|election.c|s/if \(p->learner \|\| !p->vote_responded\) \{/if (!p->vote_responded) {/; s/if \(p->id == r->id \|\| p->learner\) \{/if (p->id == r->id) {/"
  "read_without_confirm|read_index.c|s/if \(raft__quorum\(r\) == 1 \|\| lease_valid\(r\)\) \{/if (1) {/"
  "vote_twice_in_term|election.c|s/bool can_vote =\s*r->vote == m->from \|\|/bool can_vote = true ||/"
  "heartbeat_commit_uncapped|replication.c|s/m->commit = p->match < r->log.committed \? p->match : r->log.committed;/m->commit = r->log.committed;/"
  "up_to_date_by_index_only|log.c|s/return last_term > my_term \|\| \(last_term == my_term && last_index >= raft__log_last\(l\)\);/return last_index >= raft__log_last(l);/"
  "accept_stale_term|raft.c|s/\} else if \(m->term < r->term\) \{/} else if (0) {/"
  "candidate_forgets_own_vote|election.c|s/r->vote = r->id;/r->vote = 0;/"
  "lease_too_long|read_index.c|s/r->round_tick\[slot\] \+ r->cfg.election_ticks \/ 2;/r->round_tick[slot] + r->cfg.election_ticks * 2;/"
  "read_index_from_applied|read_index.c|s/q->index = r->log.committed;/q->index = r->log.committed - (r->log.committed > 0);/"
)

top="$scratch/top"
mkdir -p "$top"
cat > "$top/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.18)
project(raft_mutant LANGUAGES C)
set(CMAKE_C_STANDARD 11)
set(CMAKE_C_EXTENSIONS ON)
add_compile_options(-O2 -g -Wno-unused-function -Wno-unused-variable -Wno-unused-but-set-variable)
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
add_subdirectory($root/proto proto)
add_subdirectory($root/src/common common)
add_subdirectory($scratch/raft raft)
add_executable(raft_sim $root/tests/sim/sim.c $root/tests/sim/sim_main.c)
target_include_directories(raft_sim PRIVATE $root/tests/sim)
target_link_libraries(raft_sim PRIVATE kv_raft kv_common)
CM

caught=0
total=0
status=0
for spec in "${mutations[@]}"; do
  IFS='|' read -r name file subst <<<"$spec"
  if [ -n "$only" ] && [ "$only" != "$name" ]; then
    continue
  fi
  total=$((total + 1))
  rm -rf "$scratch/raft" "$scratch/build"
  cp -r "$root/src/raft" "$scratch/raft"
  before="$(md5sum < "$scratch/raft/$file")"
  perl -0pi -e "$subst" "$scratch/raft/$file"
  if [ "$(md5sum < "$scratch/raft/$file")" = "$before" ]; then
    echo "mutation $name: DID NOT APPLY (pattern not found in $file)"
    status=1
    continue
  fi
  if ! cmake -S "$top" -B "$scratch/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        >"$scratch/cmake.log" 2>&1 ||
     ! cmake --build "$scratch/build" -j2 >"$scratch/build.log" 2>&1; then
    echo "mutation $name: BUILD FAILED"; tail -5 "$scratch/build.log"
    status=1
    continue
  fi
  out="$(timeout 300 nice "$scratch/build/raft_sim" --seeds "$seeds" 2>&1)"
  rc=$?
  if [ $rc -ne 0 ]; then
    caught=$((caught + 1))
    how="$(printf '%s\n' "$out" | grep -m1 -E '^FAIL|Assertion|assert' || echo "exit $rc")"
    echo "mutation $name: caught -- $how"
  else
    echo "mutation $name: SURVIVED $seeds seeds"
    status=1
  fi
done
echo "caught $caught/$total"
if [ $caught -ne $total ]; then
  status=1
fi
exit $status
