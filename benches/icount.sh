#!/usr/bin/env bash
# Instructions per GetResourceProperty request of a vwsd build, counted by valgrind's callgrind
# (deterministic: unlike wall or CPU time it does not move with the load of a shared machine).
# Starts VWSD under callgrind (instrumentation off), creates a workspace, warms up with N_WARM
# keep-alive requests, then counts only the N requests of one keep-alive client
# ({nimbus}CurrentState) and prints instructions per request.
# usage: benches/icount.sh [VWSD...]   (default target/release/vwsd); env: N (default 1000),
#        N_WARM (default 300), VWS_LOG (default info), VWS (client binary),
#        METRICS_LISTEN (ADDR:PORT: run with the Prometheus recorder on),
#        CONC (keep-alive clients of the counted run, default 1),
#        CACHE=1 (also simulate the caches: I1 and D1 misses per request; on a VM without
#        hardware counters this is how a build that runs the same instructions but more slowly
#        shows where the time goes: a larger hot-path footprint misses the 32 KiB I1 more).
set -euo pipefail
cd "$(dirname "$0")/.."
VWS="${VWS:-target/release/vws}"
N="${N:-1000}"; N_WARM="${N_WARM:-300}"
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { echo "needs valgrind" >&2; exit 2; }
BINS=("$@"); [ ${#BINS[@]} -gt 0 ] || BINS=(target/release/vwsd)
for VWSD in "${BINS[@]}"; do
  T="$(mktemp -d)"
  printf '[server]\nhttp = "127.0.0.1:0"\ndata = "%s/data"\nshutdown_grace_secs = 5\n' "$T" > "$T/vwsd.toml"
  [ -n "${METRICS_LISTEN:-}" ] && printf '[metrics]\nlisten = "%s"\n' "$METRICS_LISTEN" >> "$T/vwsd.toml"
  CG=(); [ "${CACHE:-0}" = 1 ] && CG=(--cache-sim=yes)
  VWS_LOG="${VWS_LOG:-info}" valgrind --tool=callgrind "${CG[@]}" --instr-atstart=no --callgrind-out-file="$T/cg.out" \
    "$VWSD" --config "$T/vwsd.toml" > "$T/stdout" 2> "$T/vwsd.log" &
  PID=$!
  ADDR=""
  for _ in $(seq 1 600); do
    ADDR="$(sed -n 's#^vwsd listening on http://##p' "$T/stdout" 2>/dev/null | head -n1 || true)"; [ -n "$ADDR" ] && break; sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "vwsd did not start" >&2; cat "$T/vwsd.log" >&2; kill $PID; exit 1; }
  BASE="http://$ADDR/wsrf/services"
  "$VWS" --service "$BASE/WorkspaceFactoryService" create conf/samples/workspace.xml --epr-out "$T/epr.xml" > /dev/null
  python3 - "$BASE/WorkspaceService" "$T/epr.xml" > "$T/body.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
url, ref = sys.argv[1:3]
hdrs = [ET.tostring(c, encoding="unicode").strip() for el in ET.parse(ref).getroot().iter()
        if el.tag.split("}")[-1] in ("ReferenceProperties", "ReferenceParameters") for c in el]
sys.stdout.write('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
  'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/03/addressing"><soapenv:Header>'
  '<wsa:To soapenv:mustUnderstand="0">%s</wsa:To><wsa:Action soapenv:mustUnderstand="0">'
  'http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties/GetResourceProperty</wsa:Action>%s'
  '</soapenv:Header><soapenv:Body><GetResourceProperty xmlns="http://docs.oasis-open.org/wsrf/2004/06/'
  'wsrf-WS-ResourceProperties-1.2-draft-01.xsd" xmlns:rp="http://www.globus.org/2008/06/workspace">'
  'rp:CurrentState</GetResourceProperty></soapenv:Body></soapenv:Envelope>' % (url, "".join(hdrs)))
PY
  H=(-p "$T/body.xml" -T 'text/xml; charset=utf-8' -H 'SOAPAction: "http://docs.oasis-open.org/wsrf/2004/06/wsrf-WS-ResourceProperties/GetResourceProperty"')
  ab -q -k -n "$N_WARM" -c 1 "${H[@]}" "$BASE/WorkspaceService" > "$T/warm.out" 2>&1
  callgrind_control -i on "$PID" > /dev/null 2>&1
  ab -q -k -n "$N" -c "${CONC:-1}" "${H[@]}" "$BASE/WorkspaceService" > "$T/ab.out" 2>&1
  callgrind_control -d "$PID" > /dev/null 2>&1
  callgrind_control -i off "$PID" > /dev/null 2>&1
  grep -q "^Complete requests: *$N" "$T/ab.out" && grep -q "^Failed requests: *0" "$T/ab.out" || { echo "ab failed" >&2; cat "$T/ab.out" >&2; }
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
  # summary: Ir [Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw]
  awk -v n="$N" -v b="$VWSD" -v c="${CONC:-1}" '/^(summary|totals):/ {
        printf "%-40s %10.0f instructions per request (%d requests, %d clients)", b, $2 / n, n, c
        if (NF >= 10) printf "; I1 misses %.0f, D1 misses %.0f per request", $5 / n, ($6 + $7) / n
        printf "\n"; exit }' "$T"/cg.out.1
  [ -n "${KEEP:-}" ] && echo "kept $T" || rm -rf "$T"
done
