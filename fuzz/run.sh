#!/usr/bin/env bash
# Runs the cargo-fuzz targets, each for a bounded time, and prints per target the executions,
# coverage (libFuzzer's cov/ft) and whether it found a crash, hang (-timeout) or OOM
# (-rss_limit_mb). Skips with a message, succeeding, where the nightly toolchain or cargo-fuzz
# is missing (FUZZ_INSTALL=1: install cargo-fuzz first).
#
# usage: fuzz/run.sh SECS [TARGET...]      env: SHARED (recordings), FUZZ_LOGS (log directory),
#   FUZZ_KEEP_GOING=1 (a campaign: libFuzzer's fork mode with one job, which records every crash,
#   hang and OOM in fuzz/artifacts/TARGET/ and goes on fuzzing until SECS is used up)
set -u
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
ALL="xml envelope description xpath der proxy_chain gridftp_reply mode_e wssec"
TARGETS=${*:-$ALL}
SHARED=${SHARED:-$([ -d ../shared/peers ] && echo ../shared || echo /work/shared)}
LOGS=${FUZZ_LOGS:-fuzz/logs}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: SKIPPED — no nightly Rust toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  if [ "${FUZZ_INSTALL:-0}" = 1 ]; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "fuzz: SKIPPED — cargo-fuzz could not be installed"; exit 0; }
  else
    echo "fuzz: SKIPPED — cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
  fi
fi

python3 fuzz/seed.py . "$SHARED" || exit 1
mkdir -p "$LOGS"
# Release with debug assertions and overflow checks, AddressSanitizer (cargo-fuzz's default).
cargo +nightly fuzz build -O -a || exit 1

rc=0
summary="$LOGS/summary.txt"
: > "$summary"
printf '%-14s %12s %8s %8s  %s\n' target execs cov ft result | tee -a "$summary"
for t in $TARGETS; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="$LOGS/$t.log"
  keep=()
  [ "${FUZZ_KEEP_GOING:-0}" = 1 ] && keep=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  cargo +nightly fuzz run -O -a "$t" "fuzz/corpus/$t" -- "${keep[@]}" \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  found=$(( $(ls "fuzz/artifacts/$t" | wc -l) - before ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  cov=$(grep -oE '(cov|ft): [0-9]+' "$log" | tail -2)
  c=$(echo "$cov" | sed -n 's/^cov: //p')
  f=$(echo "$cov" | sed -n 's/^ft: //p')
  if [ $status -eq 0 ] && [ "$found" -eq 0 ]; then
    result=ok
  elif [ $status -eq 0 ]; then
    result="$found new finding(s) in fuzz/artifacts/$t/ — see $log"
    rc=1
  else
    result="FAILED (exit $status): $(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+|SUMMARY: [A-Za-z]+: [a-z-]+' "$log") — see $log, fuzz/artifacts/$t/"
    rc=1
  fi
  printf '%-14s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${c:-?}" "${f:-?}" "$result" | tee -a "$summary"
done
exit $rc
