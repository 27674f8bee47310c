#!/usr/bin/env bash
# benches/gridftp.sh — 1 GiB localhost downloads: vws stage vs globus-url-copy (same streams and
# DCAU setting) vs cp, medians of 3 after one warm-up, plus client CPU seconds per GiB.
# Brings up its own GSI GridFTP kit (target/gridftp-bench-kit, port 2814) and stops it at the end.
# Usage: benches/gridftp.sh [SIZE (default 1G)]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1G}
KIT=$PWD/target/gridftp-bench-kit
PORT=2814
DATA=$PWD/target/gridftp-bench-data
mkdir -p "$DATA"
SHARED=${VWS_SHARED:-../shared}; [ -d "$SHARED/peers" ] || SHARED=/work/shared
eval "$("$SHARED"/peers/gsi-gridftp-up.sh "$KIT" $PORT)"
trap '"$SHARED"/peers/gsi-gridftp-down.sh "$KIT" >/dev/null 2>&1 || true' EXIT
cargo build --release --bin vws >&2
VWS=$PWD/target/release/vws
SRC=$DATA/src.bin
[ -s "$SRC" ] && [ "$(stat -c %s "$SRC")" = "$(numfmt --from=iec "$SIZE")" ] || head -c "$SIZE" /dev/urandom > "$SRC"
BYTES=$(stat -c %s "$SRC")
URL="gsiftp://127.0.0.1:$PORT$SRC"
OUT=$DATA/out.bin

# run CMD...: prints "wall cpu" (seconds) of one run
run() {
  rm -f "$OUT"
  /usr/bin/time -f "%e %U %S" -o "$DATA/time" "$@" >/dev/null 2>"$DATA/err" || { cat "$DATA/err" >&2; return 1; }
  read -r e u s < "$DATA/time"
  echo "$e $(echo "$u + $s" | bc -l)"
}
median3() { sort -n | sed -n 2p; }
measure() { # label cmd...
  local label=$1; shift
  run "$@" >/dev/null # warm-up
  local walls=() cpus=()
  for _ in 1 2 3; do
    read -r w c < <(run "$@")
    walls+=("$w"); cpus+=("$c")
  done
  local w c
  w=$(printf '%s\n' "${walls[@]}" | median3)
  c=$(printf '%s\n' "${cpus[@]}" | median3)
  local mbs
  mbs=$(echo "$BYTES / $w / 1000000" | bc -l)
  local cpg
  cpg=$(echo "$c * 1073741824 / $BYTES" | bc -l)
  printf '%-34s %8.2f s %9.0f MB/s %8.2f cpu-s/GiB\n' "$label" "$w" "$mbs" "$cpg"
  echo "$w" > "$DATA/last"
}

echo "GridFTP 1 GiB localhost download benchmark ($BYTES bytes, medians of 3)"
printf '%-34s %10s %14s %18s\n' "client" "wall" "rate" "client CPU"
measure "cp" cp "$SRC" "$OUT"; CP=$(cat "$DATA/last")
for P in 1 4; do
  for D in "" "-nodcau"; do
    VFLAG=""; [ -n "$D" ] && VFLAG="--no-dcau"
    measure "globus-url-copy -p $P $D" globus-url-copy -p $P $D "$URL" "file://$OUT"; G=$(cat "$DATA/last")
    measure "vws stage --streams $P $VFLAG --no-verify" "$VWS" stage -q --no-verify --streams $P $VFLAG "$URL" "file://$OUT"; V=$(cat "$DATA/last")
    printf '  ratio vs globus-url-copy: %.2fx   vs cp: %.2fx\n' "$(echo "$G / $V" | bc -l)" "$(echo "$CP / $V" | bc -l)"
    measure "globus-url-copy -p $P $D -verify-checksum" globus-url-copy -p $P $D -verify-checksum "$URL" "file://$OUT"; G=$(cat "$DATA/last")
    measure "vws stage --streams $P $VFLAG (verified)" "$VWS" stage -q --streams $P $VFLAG "$URL" "file://$OUT"; V=$(cat "$DATA/last")
    printf '  ratio vs globus-url-copy (both verifying): %.2fx\n' "$(echo "$G / $V" | bc -l)"
  done
done
