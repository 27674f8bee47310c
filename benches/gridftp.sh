#!/usr/bin/env bash
# benches/gridftp.sh — 1 GiB localhost downloads: vws stage vs globus-url-copy (same streams and
# DCAU setting) vs cp, medians of ROUNDS interleaved rounds (default 5) after one warm-up, plus
# client CPU seconds per GiB.
# Brings up its own GSI GridFTP kit (target/gridftp-bench-kit, port 2814) and stops it at the end.
# Usage: [ROUNDS=N] benches/gridftp.sh [SIZE (default 1G)]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1G}
ROUNDS=${ROUNDS:-5}
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
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
line() { # label wall cpu
  printf '%-46s %6.2f s %7.0f MB/s %6.2f cpu-s/GiB\n' "$1" "$2" "$(echo "$BYTES / $2 / 1000000" | bc -l)" \
    "$(echo "$3 * 1073741824 / $BYTES" | bc -l)"
}
# pair LABEL_A LABEL_B -- CMD_A... -- CMD_B...: ROUNDS interleaved rounds (the order alternates
# each round, so drift and noise hit both clients alike) after one warm-up of each; prints both
# medians and leaves them in $WA and $WB.
pair() {
  local la=$1 lb=$2; shift 3
  local a=() b=()
  while [ "$1" != -- ]; do a+=("$1"); shift; done; shift
  b=("$@")
  run "${a[@]}" >/dev/null; run "${b[@]}" >/dev/null
  : > "$DATA/a"; : > "$DATA/b"
  for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then run "${a[@]}" >> "$DATA/a"; run "${b[@]}" >> "$DATA/b"
    else run "${b[@]}" >> "$DATA/b"; run "${a[@]}" >> "$DATA/a"; fi
  done
  WA=$(cut -d' ' -f1 "$DATA/a" | median); WB=$(cut -d' ' -f1 "$DATA/b" | median)
  line "$la" "$WA" "$(cut -d' ' -f2 "$DATA/a" | median)"
  line "$lb" "$WB" "$(cut -d' ' -f2 "$DATA/b" | median)"
}

echo "GridFTP $SIZE localhost download benchmark ($BYTES bytes, medians of $ROUNDS interleaved rounds)"
printf '%-46s %8s %12s %16s\n' "client" "wall" "rate" "client CPU"
pair "cp" "vws stage file:// (local copy, verified)" -- cp "$SRC" "$OUT" -- "$VWS" stage -q "file://$SRC" "file://$OUT"
CP=$WA
for P in 1 4; do
  for D in "" "-nodcau"; do
    VFLAG=""; [ -n "$D" ] && VFLAG="--no-dcau"
    pair "globus-url-copy -p $P $D" "vws stage --streams $P $VFLAG --no-verify" -- \
      globus-url-copy -p $P $D "$URL" "file://$OUT" -- "$VWS" stage -q --no-verify --streams $P $VFLAG "$URL" "file://$OUT"
    printf '  ratio vs globus-url-copy: %.2fx   vs cp: %.2fx\n' "$(echo "$WA / $WB" | bc -l)" "$(echo "$CP / $WB" | bc -l)"
    pair "globus-url-copy -p $P $D -verify-checksum" "vws stage --streams $P $VFLAG (verified)" -- \
      globus-url-copy -p $P $D -verify-checksum "$URL" "file://$OUT" -- "$VWS" stage -q --streams $P $VFLAG "$URL" "file://$OUT"
    printf '  ratio vs globus-url-copy (both verifying): %.2fx\n' "$(echo "$WA / $WB" | bc -l)"
  done
done
