#!/usr/bin/env bash
# `make interop`: WSDL-generated stubs against a running vwsd (issue 13).
#
# Starts a vwsd (interop/vwsd.sh: loopback, free port, plain HTTP, the Xen driver on the strict
# fake xl), generates stubs from its live ?wsdl with three generators, builds the scenario
# program committed for each (interop/axis/Scenario.java, interop/zeep/scenario.py,
# interop/gsoap/scenario.cpp) and runs it:
#   create -> InvalidDescriptionFault (ErrorCode text) -> GetResourceProperty -> GetMultipleResourceProperties -> QueryResourceProperties
#   -> SetTerminationTime -> InvalidResourcePropertyQNameFault -> deploy -> start -> stop
#   -> undeploy -> Destroy -> ResourceUnknownFault
# Generated stubs and builds go to target/interop/ (nothing generated is committed). Prints one
# table, generator x operation -> PASS/FAIL, and exits non-zero on any FAIL.
#
# Usage: interop/run.sh [VWSD_BINARY]   (default target/release/vwsd)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
vwsd=$(realpath "${1:-target/release/vwsd}")
out=$repo/target/interop
OPS=(create InvalidDescriptionFault GetResourceProperty GetMultipleResourceProperties QueryResourceProperties SetTerminationTime
     InvalidResourcePropertyQNameFault deploy start stop undeploy Destroy ResourceUnknownFault)
GENS=(axis zeep gsoap)
start_s=$(date +%s)

./interop/setup.sh "$out" || { echo "make interop: set-up failed" >&2; exit 1; }
for g in "${GENS[@]}"; do rm -rf "${out:?}/$g"; mkdir -p "$out/$g"; done

base=$(./interop/vwsd.sh "$out/server" "$vwsd") || { echo "make interop: vwsd did not start" >&2; exit 1; }
trap 'kill "$(cat "$out/server/vwsd.pid")" 2>/dev/null' EXIT
image=file:images/disk.img
echo "make interop: vwsd at $base (log: $out/server/vwsd.log)"

# -- Axis 1.4 WSDL2Java -W (noWrapped, as GT 4.0 generated its stubs), Java 17 -----------------
AXIS_CP=$(ls /usr/share/java/{axis,jaxrpc,saaj,wsdl4j,commons-logging,commons-discovery,javax.mail,javax.activation}.jar 2>/dev/null | paste -sd:)
build_axis() {
  local d=$out/axis
  for s in WorkspaceFactoryService WorkspaceService; do
    java -cp "$AXIS_CP" org.apache.axis.wsdl.WSDL2Java -W -o "$d/gen" "$base/$s?wsdl" || return 1
  done
  cp interop/axis/Scenario.java "$d/gen/"
  find "$d/gen" -name '*.java' > "$d/sources"
  javac -nowarn -encoding UTF-8 -cp "$AXIS_CP" -d "$d/classes" @"$d/sources"
}
run_axis() { java -cp "$out/axis/classes:$AXIS_CP" Scenario "$base" "$image"; }

# -- gSOAP: wsdl2h (default options; a typemap.dat fixing the prefixes) + soapcpp2 -C ------------
build_gsoap() {
  local d=$out/gsoap
  (
    cd "$d" || exit 1
    { grep -v '^wsrp ' /usr/share/gsoap/WS/typemap.dat; cat "$repo/interop/gsoap/typemap.prefixes"; } > typemap.dat
    wsdl2h -o vws.h "$base/WorkspaceFactoryService?wsdl" "$base/WorkspaceService?wsdl" || exit 1
    cp "$repo/interop/gsoap/key-header.h" "$repo/interop/gsoap/scenario.cpp" .
    soapcpp2 -C -x -I/usr/share/gsoap/import key-header.h || exit 1
    cp ./*.nsmap vws.nsmap 2>/dev/null || cp "$(ls ./*.nsmap | head -1)" vws.nsmap
    # shellcheck disable=SC2046
    g++ -O0 -w -o scenario scenario.cpp soapC.cpp soapClient.cpp $(pkg-config --cflags --libs gsoap++)
  )
}
run_gsoap() { "$out/gsoap/scenario" "$base" "$image"; }

# -- zeep, from the live ?wsdl at run time -------------------------------------------------------
build_zeep() { "$out/venv/bin/python" -c 'import zeep' ; }
run_zeep() { "$out/venv/bin/python" interop/zeep/scenario.py "$base" "$image"; }

# Build Axis and gSOAP in the background while zeep runs; then run the others.
build_axis > "$out/axis/build.log" 2>&1 & axis_pid=$!
build_gsoap > "$out/gsoap/build.log" 2>&1 & gsoap_pid=$!
run_one() {
  local g=$1 build_rc=$2
  if [ "$build_rc" != 0 ]; then
    echo "make interop: $g stubs did not generate or build (exit $build_rc); $out/$g/build.log:" >&2
    tail -n 30 "$out/$g/build.log" >&2
    for op in "${OPS[@]}"; do echo "RESULT $op FAIL stubs did not build"; done > "$out/$g/results.txt"
    return
  fi
  "run_$g" > "$out/$g/results.txt" 2> "$out/$g/run.log"
}
build_zeep > "$out/zeep/build.log" 2>&1; run_one zeep $?
wait "$gsoap_pid"; run_one gsoap $?
wait "$axis_pid"; run_one axis $?

# -- the table -------------------------------------------------------------------------------
fail=0
printf '\n%-34s' "operation"; for g in "${GENS[@]}"; do printf ' %-6s' "$g"; done; echo
for op in "${OPS[@]}"; do
  printf '%-34s' "$op"
  for g in "${GENS[@]}"; do
    r=$(awk -v op="$op" '$1 == "RESULT" && $2 == op { print $3; exit }' "$out/$g/results.txt")
    [ "$r" = PASS ] || { r=${r:-MISSING}; fail=1; }
    printf ' %-6s' "$r"
  done
  echo
done
echo
if [ "$fail" = 1 ]; then
  echo "make interop: FAILED. Details (RESULT lines and program output):"
  for g in "${GENS[@]}"; do
    grep -v ' PASS ' "$out/$g/results.txt" | sed "s/^/  $g: /"
    echo "  $g: stderr in $out/$g/run.log, build log in $out/$g/build.log"
  done
else
  echo "make interop: all ${#OPS[@]} operations pass with ${GENS[*]} ($(( $(date +%s) - start_s )) s)"
fi
exit "$fail"
