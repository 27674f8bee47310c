#!/bin/busybox sh
# /init of the vws demo guest (built into the initramfs by guest/build.sh).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
for pass in 1 2; do
    for m in $(cat /lib/modules/load-order); do
        grep -q "^$m " /proc/modules || { [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko 2>/dev/null; }
    done
done
acpid -c /etc/acpi -l /tmp/acpid.log
ip link set lo up
# Block devices: the workspace's disks, then the config disk vws wrote (ext2, label vwscfg).
want=$(grep -l 0x0002 /sys/bus/virtio/devices/virtio*/device 2>/dev/null | wc -l)
i=0; while [ "$(ls /dev/vd? 2>/dev/null | wc -l)" -lt "$want" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
disk=none; cfg=
for d in /dev/vd?; do
    [ -b "$d" ] || continue
    if mount -o ro "$d" /mnt 2>/dev/null; then
        if [ -f /mnt/vws-disk-id ]; then disk=$(cat /mnt/vws-disk-id); umount /mnt
        elif [ -f /mnt/vws/ip ]; then cfg=$d; umount /mnt; mount -o ro "$d" /cfg
        else umount /mnt; fi
    fi
done
if [ -n "$cfg" ]; then
    c=/cfg/vws
    ip=$(cat $c/ip); prefix=$(cat $c/prefix); gw=$(cat $c/gateway); hn=$(cat $c/hostname)
    hostname "$hn"
    cp $c/cert.pem $c/key.pem /etc/vws/ 2>/dev/null; chmod 600 /etc/vws/key.pem 2>/dev/null
    if [ -e /sys/class/net/eth0 ]; then
        ip link set eth0 up
        ip addr add "$ip/$prefix" dev eth0
        [ -n "$gw" ] && ip route add default via "$gw"
        mac=$(cat /sys/class/net/eth0/address)
    else mac=none; fi
    echo "VWS-GUEST-IP ip=$ip/$prefix gw=$gw mac=$mac hostname=$hn"
    fp=$(sed '/-----/d' $c/cert.pem | base64 -d | sha256sum | cut -d' ' -f1)
    echo "VWS-GUEST-CERT sha256=$fp subject=$(cat $c/subject)"
else
    echo "VWS-GUEST-NOCONFIG no config disk found"
fi
echo "VWS-GUEST-READY kernel=$(uname -r) disk=$disk uptime=$(cut -d' ' -f1 /proc/uptime)"
if grep -qw vws.shell /proc/cmdline; then
    while :; do setsid cttyhack sh -l; sleep 1; done
fi
while :; do sleep 3600; done
