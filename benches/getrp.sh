#!/usr/bin/env bash
# GetResourceProperty benchmark of a real vwsd (second half of `make bench`): starts a release
# vwsd on a free loopback port with a throw-away store, creates one workspace from
# conf/samples/workspace.xml with the vws client, then runs ../shared/bench/getrp-ab.sh
# (ApacheBench, keep-alive) for {nimbus}CurrentState and {vws}hardware, and stops vwsd (SIGTERM).
# Goals: median <= 0.05 ms with 1 client, >= 60,000 req/s with 16 clients. Also prints vwsd's
# CPU time per request (utime+stime delta over the run / requests).
# env: VWSD / VWS (binaries, default target/release/...), VWS_LOG (vwsd log level, default info),
#      METRICS_LISTEN (ADDR:PORT: run with [metrics] listen, /metrics scraped at the end),
#      GETRP_QNAME (only this property), and getrp-ab.sh's own knobs (N_LAT, N_TPUT, CONC, N_WARM,
#      KEEPALIVE).
set -euo pipefail
cd "$(dirname "$0")/.."
VWSD="${VWSD:-target/release/vwsd}"
VWS="${VWS:-target/release/vws}"
SHARED=${VWS_SHARED:-../shared}; [ -d "$SHARED/bench" ] || SHARED=/work/shared
AB_SCRIPT=$SHARED/bench/getrp-ab.sh
for f in "$VWSD" "$VWS"; do
  [ -x "$f" ] || { echo "getrp.sh: $f not found; run: cargo build --release" >&2; exit 2; }
done
[ -f "$AB_SCRIPT" ] || { echo "getrp.sh: $AB_SCRIPT not found" >&2; exit 2; }

T="$(mktemp -d)"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT

cat > "$T/vwsd.toml" <<EOF
[server]
http = "127.0.0.1:0"
data = "$T/data"
shutdown_grace_secs = 5
EOF
if [ -n "${METRICS_LISTEN:-}" ]; then
  printf '[metrics]\nlisten = "%s"\n' "$METRICS_LISTEN" >> "$T/vwsd.toml"
fi
VWS_LOG="${VWS_LOG:-info}" "$VWSD" --config "$T/vwsd.toml" > "$T/stdout" 2> "$T/vwsd.log" &
PID=$!
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's#^vwsd listening on http://##p' "$T/stdout" | head -n1)"
  [ -n "$ADDR" ] && break
  kill -0 "$PID" 2>/dev/null || { echo "getrp.sh: vwsd exited:" >&2; cat "$T/vwsd.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "getrp.sh: vwsd did not start listening" >&2; cat "$T/vwsd.log" >&2; exit 1; }
BASE="http://$ADDR/wsrf/services"

"$VWS" --service "$BASE/WorkspaceFactoryService" create conf/samples/workspace.xml --epr-out "$T/epr.xml" > /dev/null
echo "vwsd $("$VWSD" --version 2>/dev/null | awk '{print $2}') pid $PID on $ADDR; workspace EPR:"
sed 's/^/  /' "$T/epr.xml"

# utime + stime of vwsd, in clock ticks (fields 14 and 15 of /proc/PID/stat, after the comm)
cpu_ticks() { sed 's/^.*) //' "/proc/$PID/stat" | awk '{print $12 + $13}'; }
status=0
QNAMES=('{http://www.globus.org/2008/06/workspace}CurrentState' '{http://vws.dev/2026/11/workspace}hardware')
[ -n "${GETRP_QNAME:-}" ] && QNAMES=("$GETRP_QNAME")
for q in "${QNAMES[@]}"; do
  echo
  cpu0=$(cpu_ticks)
  RP_QNAME="$q" "$AB_SCRIPT" "$BASE/WorkspaceService" "$T/epr.xml" | tee "$T/ab.txt" || status=$?
  cpu1=$(cpu_ticks)
  # vwsd CPU (utime+stime from /proc) over every request of this run (warm-up, 1 client, N
  # clients, the sanity check): far less sensitive to machine load than the latencies.
  nreq=$(( ${N_WARM:-5000} + ${N_LAT:-2000} + ${N_TPUT:-20000} + 1 ))
  awk -v d=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v n=$nreq \
    'BEGIN { printf "  vwsd CPU per request %.1f us (%d requests)\n", d * 1e6 / hz / n, n }'
  # verdicts against the goals, from getrp-ab.sh's summary lines
  awk '/^1 client/ { for (i = 1; i <= NF; i++) if ($i == "median") m = $(i + 1);
                     printf "  1 client median %s ms (goal <= 0.05): %s\n", m, (m + 0 <= 0.05 ? "PASS" : "FAIL") }
       /^[0-9]+ clients/ && $1 >= 16 { r = $4;
                     printf "  %s clients %s req/s (goal >= 60,000): %s\n", $1, r, (r + 0 >= 60000 ? "PASS" : "FAIL") }' "$T/ab.txt"
done
if [ -n "${METRICS_LISTEN:-}" ]; then
  n=$(curl -s "http://$METRICS_LISTEN/metrics" | awk '/^vws_requests_total\{/ && /GetResourceProperty/ && /outcome="ok"/ {s += $NF} END {print s + 0}')
  echo "metrics: vws_requests_total{GetResourceProperty,ok} = $n"
fi
echo
echo "note: $(nproc) CPUs shared by vwsd, ab and anything else running: numbers are noisy."
rss=$(awk '/^VmRSS/{print $2, $3}' "/proc/$PID/status" 2>/dev/null || true)
echo "vwsd RSS after the runs: ${rss:-?}"
exit $status
