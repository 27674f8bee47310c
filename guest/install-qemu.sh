#!/usr/bin/env bash
# guest/install-qemu.sh — installs qemu-system-x86 (with qemu-utils) if missing, on Debian.
# Pitfall handled: qemu-utils preinstalled from bookworm-backports (…~bpo12+1) Breaks the
# bookworm qemu-system-common; then the matching backports build is installed instead.
set -euo pipefail
command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null && exit 0
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
v=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
case $v in
*bpo12*)
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "qemu-utils is $v (backports): adding the bookworm-backports apt source" >&2
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
            $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
        apt update -qq
    fi
    apt install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils ;;
*)
    apt update -qq || true
    apt install -y -qq --no-install-recommends qemu-system-x86 qemu-utils ;;
esac
