#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 120 s each) and
# prints executions and crashes. Outside CI's time budget.
#   scripts/fuzz.sh [seconds-per-target]
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; where
# there is none, RUSTC_BOOTSTRAP=1 lets stable build with -Z flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-120}
if rustup toolchain list 2>/dev/null | grep -q nightly; then tc=(+nightly); else tc=(); export RUSTC_BOOTSTRAP=1; fi
mkdir -p corpus/parse_event corpus/canonicalize artifacts
# Seeds: the shipped signature vectors.
node -e '
  const v = require("../test-vectors/signatures.json").vectors
  const fs = require("fs")
  v.forEach((x, i) => { fs.writeFileSync(`corpus/parse_event/seed-${i}`, x.message); fs.writeFileSync(`corpus/canonicalize/seed-${i}`, x.message) })'
status=0
for target in parse_event canonicalize; do
  log=$(mktemp)
  if cargo "${tc[@]}" fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=70000 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
  crashes=$(ls "artifacts/$target" 2>/dev/null | grep -c '^crash-' || true)
  echo "$target: $result, $execs executions in ${secs}s, $crashes crash file(s)"
  [ "$result" = ok ] || tail -40 "$log"
  rm -f "$log"
done
exit $status
