#!/usr/bin/env bash
# `make deb-test`: the Debian package built by `make deb`, unpacked into a clean directory root:
# its files are there, the man pages render, the maintainer scripts are in the control archive,
# the systemd unit passes `systemd-analyze verify` (skipped with a message where systemd-analyze
# cannot run), and the shipped configuration passes `vwsd --check`.
set -euo pipefail
cd "$(dirname "$0")/.."
deb="$(ls -t target/debian/vws_*.deb 2>/dev/null | head -n1 || true)"
[ -n "$deb" ] || { echo "deb-test: no target/debian/vws_*.deb; run make deb" >&2; exit 2; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }
dpkg-deb -x "$deb" "$root"
for f in usr/sbin/vwsd usr/bin/vws etc/vws/vwsd.toml lib/systemd/system/vwsd.service \
         usr/share/man/man8/vwsd.8.gz usr/share/man/man1/vws.1.gz usr/share/doc/vws/README.md; do
  [ -e "$root/$f" ] || fail "$f missing from $deb"
done
[ -x "$root/usr/sbin/vwsd" ] && [ -x "$root/usr/bin/vws" ] || fail "binaries not executable"
zcat "$root/usr/share/man/man8/vwsd.8.gz" | grep -q '^\.TH vwsd 8' || fail "vwsd.8 is not a section 8 man page"
zcat "$root/usr/share/man/man1/vws.1.gz" | grep -q '^\.TH vws 1' || fail "vws.1 is not a section 1 man page"
zcat "$root/usr/share/man/man8/vwsd.8.gz" | grep -q 'log\\-format' || fail "vwsd.8 does not document --log-format"
if command -v man >/dev/null; then
  man -l "$root/usr/share/man/man8/vwsd.8.gz" > /dev/null 2>&1 || fail "man cannot render vwsd.8"
fi
ctl="$(dpkg-deb -I "$deb")"
for s in postinst prerm postrm; do grep -q " $s" <<<"$ctl" || fail "control archive has no $s"; done
grep -qw conffiles <<<"$ctl" || fail "no conffiles"
dpkg-deb -I "$deb" conffiles | grep -qx '/etc/vws/vwsd.toml' || fail "/etc/vws/vwsd.toml is not a conffile"
grep -q '^data = "/var/lib/vws"' "$root/etc/vws/vwsd.toml" || fail "the shipped config does not keep its data in /var/lib/vws"
unit="$root/lib/systemd/system/vwsd.service"
grep -q '^User=vws$' "$unit" && grep -q '^Restart=on-failure$' "$unit" && grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$unit" \
  || fail "the unit lacks User=vws, Restart=on-failure or ExecReload"
if command -v systemd-analyze >/dev/null; then
  # Verified against this system's units, with the binary paths pointing into the unpacked root
  # (the package is not installed here); the man page it documents is checked above.
  mkdir -p "$root/verify"
  sed -e "s#/usr/sbin/vwsd#$root/usr/sbin/vwsd#g" "$unit" > "$root/verify/vwsd.service"
  # It exits 0 on "Unknown key … ignoring": any output at all is a failure.
  if out="$(systemd-analyze verify --man=no "$root/verify/vwsd.service" 2>&1)" && [ -z "$out" ]; then
    echo "deb-test: systemd-analyze verify: ok"
  elif grep -qiE 'Failed to (connect|initialize|setup)|System has not been booted|Operation not permitted' <<<"$out"; then
    echo "deb-test: systemd-analyze verify cannot run here, skipped: $out"
  else
    fail "systemd-analyze verify: $out"
  fi
else
  echo "deb-test: systemd-analyze not installed, unit verification skipped"
fi
"$root/usr/sbin/vwsd" --config "$root/etc/vws/vwsd.toml" --check || fail "vwsd --check refused the shipped config"
echo "deb-test: $deb ok ($(du -h "$deb" | cut -f1))"
