#!/usr/bin/env bash
# guest/build.sh [OUTDIR]      (default: var/images/demo)
#
# Builds the demo guest vws boots, from Debian packages only (no root needed when the host
# tools below are installed: `make deps` installs them):
#
#   OUTDIR/vmlinuz     kernel extracted (not installed) from linux-image-cloud-amd64
#   OUTDIR/initrd.img  busybox-static initramfs whose /init (guest/init.sh):
#                        - finds the config disk vws writes at deploy (ext2, label vwscfg),
#                        - configures eth0 with the allocated IP, netmask, gateway, hostname,
#                        - prints on the console (ttyS0):
#                            VWS-GUEST-IP ip=A/P gw=G mac=M hostname=H
#                            VWS-GUEST-CERT sha256=HEX subject=SUBJECT
#                            VWS-GUEST-READY kernel=K disk=D uptime=U
#                        - powers off on the ACPI power button (QMP system_powerdown),
#                          printing VWS-GUEST-POWEROFF first.
#   OUTDIR/root.qcow2  64 MiB ext2 image (label vwsroot, file /vws-disk-id = VWS-DISK-OK)
#
# Idempotent (a stamp of this script, init.sh and the kernel package); downloaded .debs are
# cached in OUTDIR/.cache. FORCE=1 rebuilds. KERNEL_PKG overrides the kernel meta package.
set -euo pipefail

die() { echo "guest/build.sh: $*" >&2; exit 1; }
log() { echo "guest/build.sh: $*" >&2; }

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-var/images/demo}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=$OUT/.cache
mkdir -p "$CACHE"
KERNEL_PKG=${KERNEL_PKG:-linux-image-cloud-amd64}

for t in busybox cpio gzip dpkg-deb apt-get mkfs.ext2 qemu-img xz; do
    command -v "$t" >/dev/null || die "$t missing (run 'make deps')"
done
[ -x /bin/busybox ] || die "/bin/busybox missing: install busybox-static"
if ldd /bin/busybox >/dev/null 2>&1; then die "/bin/busybox is not static: install busybox-static"; fi

# Resolve the meta package to the versioned linux-image package.
pkg=$KERNEL_PKG
for _ in 1 2; do
    cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/{print $2; exit}')
    [ -n "$cand" ] && [ "$cand" != "(none)" ] || break
    dep=$(apt-cache show "$pkg=$cand" 2>/dev/null | awk -F': ' '/^Depends:/{print $2; exit}' |
          tr ',' '\n' | sed 's/ *(.*//; s/^ *//' | grep '^linux-image-[0-9]' | head -1 || true)
    [ -n "$dep" ] && pkg=$dep || break
done

STAMP="$(cat "$0" "$HERE/init.sh" | sha256sum | cut -c1-16) $pkg"
if [ "${FORCE:-0}" != 1 ] && [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$STAMP" ] &&
   [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/root.qcow2" ]; then
    exit 0
fi
log "kernel package: $pkg"
deb=$(ls "$CACHE"/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
    (cd "$CACHE" && apt-get download "$pkg" 2>&1 | grep -v 'unsandboxed' >&2 || true)
    deb=$(ls "$CACHE"/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
    [ -n "$deb" ] || die "could not download $pkg (apt-get update?)"
fi

WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -x "$deb" "$WORK/k"
kver=$(ls "$WORK/k/lib/modules" | head -1)
[ -n "$kver" ] || die "no modules in $deb"
cp "$WORK/k/boot/vmlinuz-$kver" "$WORK/vmlinuz"

R=$WORK/initrd
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,cfg,run,var/run,etc/vws,lib/modules,etc/acpi/PWRF}
cp /bin/busybox "$R/bin/busybox"
# Loaded in this order by /init (ext4, 8250 and devtmpfs are built into the Debian cloud kernel; missing modules are built in).
MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_blk evdev button"
for m in $MODS; do
    f=$(find "$WORK/k/lib/modules/$kver" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) | head -1)
    [ -n "$f" ] || { log "note: module $m not found (built in?)"; continue; }
    case $f in
    *.xz) xz -dc "$f" > "$R/lib/modules/$m.ko" ;;
    *.zst) zstd -qdc "$f" > "$R/lib/modules/$m.ko" ;;
    *) cp "$f" "$R/lib/modules/$m.ko" ;;
    esac
done
echo "$MODS" > "$R/lib/modules/load-order"
cp "$HERE/init.sh" "$R/init"
cat > "$R/etc/acpi/PWRF/00000080" <<'EOS'
#!/bin/sh
echo "VWS-GUEST-POWEROFF" > /dev/console
sync
poweroff -f
EOS
chmod 755 "$R/init" "$R/etc/acpi/PWRF/00000080"
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . | sort | cpio -o -H newc --quiet -R 0:0 --reproducible) | gzip -9n > "$WORK/initrd.img"

mkdir -p "$WORK/disk"
echo "VWS-DISK-OK" > "$WORK/disk/vws-disk-id"
truncate -s 64M "$WORK/root.raw"
mkfs.ext2 -q -F -L vwsroot -d "$WORK/disk" "$WORK/root.raw" >/dev/null
qemu-img convert -f raw -O qcow2 "$WORK/root.raw" "$WORK/root.qcow2"

for f in vmlinuz initrd.img root.qcow2; do mv -f "$WORK/$f" "$OUT/$f"; done
printf 'KERNEL_PKG=%s\nKERNEL_VERSION=%s\n' "$pkg" "$kver" > "$OUT/guest.env"
echo "$STAMP" > "$OUT/.stamp"
log "built in $OUT ($kver)"
