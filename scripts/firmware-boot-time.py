#!/usr/bin/env python3
# SeaBIOS to a boot sector's marker on this host's /dev/kvm: vt-vmm --firmware vs
# QEMU -M pc with the same SeaBIOS and disk, 4 runs each interleaved, the
# first dropped, medians. Usage: scripts/firmware-boot-time.py DISK.img
# (DISK: the boot sector of crates/vt-vmm/tests/firmware_boot.rs).
import subprocess, time, sys, os, signal, statistics
img = sys.argv[1]
def t(cmd, marker=b"VT-BOOT"):
    s = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    buf = b""
    while True:
        b = os.read(p.stdout.fileno(), 4096)
        if not b: break
        buf += b
        if marker in buf.replace(b".", b"").replace(b"\r", b"").replace(b"\n", b""): break
    el = time.monotonic() - s
    p.kill(); p.wait()
    return el * 1000 if marker in buf.replace(b".", b"").replace(b"\r", b"").replace(b"\n", b"") else None
ours = [os.environ.get("VT_VMM", "target/debug/vt-vmm"), "--firmware", "/usr/share/seabios/bios-256k.bin", "--disk", "path="+img, "--memory", "128", "--cpus", "2"]
qemu = ["qemu-system-x86_64", "-M", "pc,accel=kvm", "-cpu", "qemu64", "-smp", "2", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot", "-bios", "/usr/share/seabios/bios-256k.bin", "-drive", "file="+img+",if=virtio,format=raw,readonly=on"]
o=[];q=[]
for i in range(4):
    o.append(t(ours)); q.append(t(qemu))
print("ours", o); print("qemu", q)
o=o[1:]; q=q[1:]
print("median ours %.0f ms qemu %.0f ms ratio %.2f" % (statistics.median(o), statistics.median(q), statistics.median(o)/statistics.median(q)))
