#!/usr/bin/env bash
# Metrics overhead (`make bench-ops`): GetResourceProperty throughput ({nimbus}CurrentState, CONC
# clients, keep-alive) of a real vwsd with the Prometheus /metrics listener off and on,
# alternating ROUNDS times (off, on, off, on, …) so drift and neighbours hit both alike; prints a
# table side by side and the change of the medians. Goal: on is at most 3 % slower.
# env: ROUNDS (default 3), N_TPUT (default 20000), CONC (default 16), and benches/getrp.sh's knobs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
export N_TPUT="${N_TPUT:-20000}" N_LAT="${N_LAT:-500}" N_WARM="${N_WARM:-2000}" CONC="${CONC:-16}"
export GETRP_QNAME='{http://www.globus.org/2008/06/workspace}CurrentState'
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rate() { awk -v c="$CONC" '$1 == c && $2 == "clients" { for (i = 3; i <= NF; i++) if ($(i+1) == "req/s") { print $i; exit } }'; }
off=(); on=()
for r in $(seq 1 "$ROUNDS"); do
  a=$(METRICS_LISTEN= ./benches/getrp.sh 2>&1 | tee /dev/stderr | rate)
  port=$(free_port)
  b=$(METRICS_LISTEN="127.0.0.1:$port" ./benches/getrp.sh 2>&1 | tee /dev/stderr | rate)
  off+=("$a"); on+=("$b")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
echo
echo "GetResourceProperty, $CONC clients, keep-alive, $N_TPUT requests per run ($(nproc) CPUs, shared)"
printf '%-8s %14s %14s\n' round "metrics off" "metrics on"
for i in "${!off[@]}"; do printf '%-8s %10s r/s %10s r/s\n' "$((i + 1))" "${off[$i]}" "${on[$i]}"; done
mo=$(median "${off[@]}"); mn=$(median "${on[@]}")
printf '%-8s %10s r/s %10s r/s\n' median "$mo" "$mn"
awk -v a="$mo" -v b="$mn" 'BEGIN { d = (a - b) / a * 100; printf "metrics on is %.1f %% %s (goal: <= 3 %% slower): %s\n", (d < 0 ? -d : d), (d < 0 ? "faster" : "slower"), (d <= 3 ? "PASS" : "FAIL") }'
