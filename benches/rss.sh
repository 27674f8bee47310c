#!/usr/bin/env bash
# vwsd memory with many resources: starts a release vwsd on a free loopback port with a
# throw-away store, creates N resources through the fastest path there is (GT 4.0's counter
# sample, CounterService createCounter, POSTed by ApacheBench with CONC keep-alive clients),
# and reads VmRSS from /proc/PID/status: idle, after the creates, and after a restart that loads
# them all back from the store. Goal: <= 200 MiB with 100,000 resources.
# env: VWSD (binary, default target/release/vwsd), N (default 100000), CONC (default 16),
#      VWS_LOG (vwsd log level, default warn).
# usage: benches/rss.sh            (prints a table; exit 1 when a goal is missed)
set -euo pipefail
cd "$(dirname "$0")/.."
VWSD="${VWSD:-target/release/vwsd}"
N="${N:-100000}"
CONC="${CONC:-16}"
[ -x "$VWSD" ] || { echo "rss.sh: $VWSD not found; run: cargo build --release" >&2; exit 2; }
command -v ab >/dev/null || { echo "rss.sh: needs ab (apache2-utils)" >&2; exit 2; }

T="$(mktemp -d)"
PID=""
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=""
}
trap 'stop; rm -rf "$T"' EXIT

cat > "$T/vwsd.toml" <<EOF
[server]
http = "127.0.0.1:0"
data = "$T/data"
shutdown_grace_secs = 5
EOF

start() {
  : > "$T/stdout"
  VWS_LOG="${VWS_LOG:-warn}" "$VWSD" --config "$T/vwsd.toml" > "$T/stdout" 2>> "$T/vwsd.log" &
  PID=$!
  ADDR=""
  for _ in $(seq 1 600); do
    ADDR="$(sed -n 's#^vwsd listening on http://##p' "$T/stdout" | head -n1)"
    [ -n "$ADDR" ] && break
    kill -0 "$PID" 2>/dev/null || { echo "rss.sh: vwsd exited:" >&2; cat "$T/vwsd.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "rss.sh: vwsd did not start listening" >&2; exit 1; }
}
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

start
URL="http://$ADDR/wsrf/services/CounterService"
ACTION="http://counter.com/CounterPortType/createCounterRequest"
printf '%s' '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/03/addressing"><soapenv:Header>'\
"<wsa:To soapenv:mustUnderstand=\"0\">$URL</wsa:To><wsa:Action soapenv:mustUnderstand=\"0\">$ACTION</wsa:Action>"\
'</soapenv:Header><soapenv:Body><createCounter xmlns="http://counter.com"/></soapenv:Body></soapenv:Envelope>' > "$T/create.xml"
sleep 0.5
idle=$(rss_kib)
t0=$(date +%s.%N)
ab -q -k -n "$N" -c "$CONC" -p "$T/create.xml" -T 'text/xml; charset=utf-8' -H "SOAPAction: \"$ACTION\"" "$URL" > "$T/ab.txt"
t1=$(date +%s.%N)
failed=$(awk '/^Failed requests|^Non-2xx responses/{n += $3} END {print n + 0}' "$T/ab.txt")
[ "${failed:-0}" = 0 ] || { echo "rss.sh: $failed creates failed" >&2; sed -n '/^Concurrency/,/^Transfer/p' "$T/ab.txt" >&2; exit 1; }
sleep 1
created=$(rss_kib)
stop
t2=$(date +%s.%N)
start
t3=$(date +%s.%N)
sleep 1
loaded=$(rss_kib)
rows=$(sqlite3 "$T/data/"*.db 'select count(*) from resources' 2>/dev/null || echo "?")
stop

echo "vwsd $("$VWSD" --version 2>/dev/null | awk '{print $2}') ($VWSD); $N counters created by $CONC clients in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s; restart (load) $(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.1f", b-a}') s; rows in store: $rows"
printf '%-34s %10s\n' "vwsd VmRSS" "MiB"
printf '%-34s %10s\n' "idle, empty store" "$(mib "$idle")"
printf '%-34s %10s\n' "after $N creates" "$(mib "$created")"
printf '%-34s %10s\n' "after restart, $N loaded" "$(mib "$loaded")"
worst=$(( created > loaded ? created : loaded ))
if [ "$worst" -le $((200 * 1024)) ]; then echo "goal <= 200 MiB: PASS"; else echo "goal <= 200 MiB: FAIL"; exit 1; fi
