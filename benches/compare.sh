#!/usr/bin/env bash
# Before/after comparison of two vwsd builds with benches/getrp.sh (and optionally
# benches/rss.sh), interleaved A B A B … so that load on a shared machine hits both alike.
# usage: benches/compare.sh BEFORE_VWSD [AFTER_VWSD [MORE_VWSD...]]   (AFTER defaults to
#        target/release/vwsd); builds are named A, B, C… in the order given.
# env: ROUNDS (default 3), RSS=1 to also run rss.sh once per build per round, plus getrp.sh's
#      and getrp-ab.sh's knobs. Prints every round and the median of the rounds per build.
set -euo pipefail
cd "$(dirname "$0")/.."
A="${1:?usage: compare.sh BEFORE_VWSD [AFTER_VWSD]}"
shift
BINS=("$A" "$@")
[ ${#BINS[@]} -ge 2 ] || BINS+=("target/release/vwsd")
NAMES=(A B C D E F)
WHO=("${NAMES[@]:0:${#BINS[@]}}")
ROUNDS="${ROUNDS:-3}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!BINS[@]}"; do
    who=${WHO[$i]} bin=${BINS[$i]}
    echo "== round $r $who ($bin), load: $(cut -d' ' -f1-3 /proc/loadavg)"
    VWSD="$bin" benches/getrp.sh > "$OUT/$who.$r.txt" 2>&1 || true
    grep -E 'client' "$OUT/$who.$r.txt" | grep -E 'median|req/s' | sed 's/^/   /'
    grep -E 'CPU per request' "$OUT/$who.$r.txt" | sed 's/^/   /'
    if [ "${RSS:-0}" = 1 ]; then
      VWSD="$bin" benches/rss.sh > "$OUT/$who.$r.rss" 2>&1 || true
      grep -E 'after|idle' "$OUT/$who.$r.rss" | sed 's/^/   rss /'
    fi
  done
done
echo
echo "median of $ROUNDS rounds (first property = CurrentState, second = hardware):"
printf '%-8s %-12s %14s %18s %14s\n' build property "1c median ms" "16c req/s" "CPU us/req"
for who in "${WHO[@]}"; do
  for k in 1 2; do
    med=$(for r in $(seq 1 "$ROUNDS"); do grep -E 'client median [0-9.]+ ms \(goal' "$OUT/$who.$r.txt" | sed -n "${k}p" | awk '{print $4}'; done | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "?")}')
    tput=$(for r in $(seq 1 "$ROUNDS"); do grep -E 'clients [0-9.]+ req/s \(goal' "$OUT/$who.$r.txt" | sed -n "${k}p" | awk '{print $3}'; done | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "?")}')
    cpu=$(for r in $(seq 1 "$ROUNDS"); do grep -E 'CPU per request' "$OUT/$who.$r.txt" | sed -n "${k}p" | awk '{print $5}'; done | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "?")}')
    printf '%-8s %-12s %14s %18s %14s\n' "$who" "$([ $k = 1 ] && echo CurrentState || echo hardware)" "$med" "$tput" "$cpu"
  done
done
for i in "${!BINS[@]}"; do echo "${WHO[$i]} = ${BINS[$i]}"; done
