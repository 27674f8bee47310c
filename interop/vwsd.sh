#!/usr/bin/env bash
# Start a vwsd for the interop scenario: loopback, a free port, plain HTTP, security off, the Xen
# driver against the strict fake xl (tests/fake-xl/xl, configs checked with Xen's libxlutil), so
# deploy -> start -> stop -> undeploy run in well under a second without a hypervisor.
# Usage: interop/vwsd.sh WORKDIR VWSD_BINARY   -> prints the base URL (http://ADDR/wsrf/services),
# leaves the pid in WORKDIR/vwsd.pid and the log in WORKDIR/vwsd.log.
set -euo pipefail
work=$1; vwsd=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$work/data" "$work/xl-state"
mkdir -p "$work/data/images" "$work/xl-state"
# The guest files the fake xl insists exist, and a 1 MiB raw disk image to stage by file: URL.
printf 'kernel' > "$work/data/images/vmlinuz"
printf 'initrd' > "$work/data/images/initrd.img"
head -c 1048576 /dev/zero > "$work/data/images/disk.img"
cat > "$work/xl" <<XL
#!/bin/sh
FAKE_XL_DIR='$work/xl-state' FAKE_XL_ACK_TIMEOUT=2 exec '$repo/tests/fake-xl/xl' "\$@"
XL
chmod +x "$work/xl"
cat > "$work/vwsd.toml" <<TOML
[server]
http = "127.0.0.1:0"
data = "$work/data"
shutdown_grace_secs = 2

[policy]
allowed_categories = ["vm"]
allowed_vmms = ["xen", "kvm", "qemu"]
max_ram_mib = 1024
max_lifetime_secs = 86400
default_lifetime_secs = 3600

[staging]
file_roots = ["images"]

[vmm]
driver = "xen"
xl = "$work/xl"
kernel = "images/vmlinuz"
ramdisk = "images/initrd.img"
stop_timeout_secs = 5

[network]
subnet = "10.20.0.0/24"
gateway = "10.20.0.1"
first = "10.20.0.10"
last = "10.20.0.250"
TOML
: > "$work/vwsd.out"
"$vwsd" --config "$work/vwsd.toml" > "$work/vwsd.out" 2> "$work/vwsd.log" &
echo $! > "$work/vwsd.pid"
for _ in $(seq 1 100); do
  line=$(head -n1 "$work/vwsd.out" 2>/dev/null || true)
  case "$line" in
    "vwsd listening on http://"*) echo "${line#vwsd listening on }/wsrf/services"; exit 0 ;;
  esac
  kill -0 "$(cat "$work/vwsd.pid")" 2>/dev/null || { echo "vwsd exited:" >&2; cat "$work/vwsd.log" >&2; exit 1; }
  sleep 0.1
done
echo "vwsd did not start; log:" >&2; cat "$work/vwsd.log" >&2; exit 1
