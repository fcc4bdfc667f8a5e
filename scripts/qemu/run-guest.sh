#!/usr/bin/env bash
# Boots a QEMU guest with emulated NUMA nodes and runs the numa-guest locality checks in it.
#
#   scripts/qemu/run-guest.sh [options] [-- guest args...]
#
# Options:
#   --topology NAME   2n (default) | 4n-unequal | memonly | sparse | 1n | hmat2s | hmat2s-cxl
#                     (--list describes them)
#   --binary PATH     program to run as the guest payload (default: build the static numa-guest,
#                     see --alloc). A dynamically linked program is fine: it is copied into the
#                     initramfs with every shared library `ldd` lists and the dynamic loader.
#   --c-program       the C path: numa-guest built with glibc malloc (--features system) and linked
#                     dynamically, so that --preload replaces malloc, calloc, posix_memalign, realloc
#                     and free under it; one thread per node and THP off in patterns 5 and 9 unless
#                     the guest args say otherwise (--tpn, --thp5, --thp9).
#   --preload PATH    shared library to LD_PRELOAD for the guest program (copied into the initramfs
#                     with its own dependencies), e.g. libdomalloc.so; needs a dynamic program
#   --alloc A         domalloc (default) | system: which build of numa-guest to make when no
#                     --binary is given (system = glibc malloc, the negative control)
#   --thp MODE        boot the guest with transparent_hugepage=MODE (always|madvise|never);
#                     default: the kernel's default (Debian: always, but the kernel turns THP off
#                     in guests with less than 512 MiB of RAM)
#   --env K=V         environment variable for the guest program (repeatable), e.g. DOMALLOC_VERBOSE=1
#   --file PATH       a file the guest program uses (repeatable; an absolute path): copied into the
#                     initramfs at the same path, with the shared libraries it needs (bench --guest:
#                     its shell script runs the workloads under the allocators' libraries)
#   --timeout S       wall-clock limit for the guest (default 600)
#   --start-timeout S a boot that has not reached /init (GUEST-START) after S seconds is killed
#                     and booted again (default 120; TCG now and then hangs in early boot)
#   --boot-attempts N boots tried before giving up with exit 2 (default 3)
#   --workdir DIR     where the initramfs and logs go (default numa-tests/work)
#   --log FILE        console log file (default WORKDIR/<topology>-<alloc>.log)
#   --list            print the topologies and exit
# Guest args (after --) go to numa-guest; see numa-tests/README.md. Example:
#   scripts/qemu/run-guest.sh --topology 4n-unequal --alloc system -- --tpn 1 2 4
#   scripts/qemu/run-guest.sh --c-program --preload target/release/libdomalloc.so -- 1 2 3 4 5
#   scripts/qemu/run-guest.sh --c-program -- 2 4        # glibc malloc, C path: the negative control
#   scripts/qemu/run-guest.sh -- --tpn 1,2 9:thp=never   # per-worker first touch (pattern 9)
#
# Exit status: 0 all checks passed, 1 some check failed or a run crashed, 2 the guest did not
# finish (boot failure, kernel panic, timeout), 3 a tool is missing, 4 the build failed.
# QEMU runs with -accel tcg (software emulation): no KVM needed (here /dev/kvm hangs).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

topology=2n
binary=
alloc=domalloc
thp=
timeout_s=600
start_timeout=120
boot_attempts=3
workdir=$repo/numa-tests/work
log=
preload=
c_program=0
envs=()
files=()
guest_args=()

die() { echo "run-guest: $1" >&2; exit "${2:-3}"; }
# True when $1 is a dynamically linked ELF (has a program interpreter).
is_dynamic() {
    if command -v readelf >/dev/null; then
        readelf -l "$1" 2>/dev/null | grep -q INTERP
    else
        ldd "$1" 2>/dev/null | grep -q '=>'
    fi
}

list_topologies() {
    cat <<'T'
2n          2 nodes x 2 CPUs, 512M + 512M (THP default: always)
4n-unequal  4 nodes x 1 CPU, 256M / 128M / 128M / 256M
memonly     node0: CPUs 0-1 256M, node1: CPUs 2-3 256M, node2: memory only 256M
sparse      online nodes 0,1,3 (node 2 possible but offline): node0 CPUs 0-1 256M, node1 CPUs 2-3
            256M, node3 memory only 128M. QEMU refuses gaps in -numa nodeid ("Node ID missing")
            and Linux numbers nodes densely in SRAT order, so the hole is made by a QEMU node whose
            only CPUs are not plugged (-smp 4,maxcpus=6) and a guest booted with possible_cpus=4.
1n          1 node, 4 CPUs, 512M (patterns 2-5 report SKIP)
1n8         1 node, 8 CPUs, 1024M (bench --guest: test-stress at 8 and 32 threads)
4n2         4 nodes x 2 CPUs, 256M each (bench --guest)
8n2         8 nodes x 2 CPUs, 192M each (bench --guest: the nearest thing here to a many-core node)
hmat2s      two sockets with memory tiers, described by ACPI HMAT (-machine hmat=on): node0 DDR,
            CPUs 0-1, 256M; node1 DDR, CPUs 2-3, 256M; node2 HBM-like, no CPUs, 320M, near
            node0; node3 HBM-like, no CPUs, 320M, near node1 (big enough for a 256M hbw_malloc). HMAT (ns, bytes/s): local DDR
            100ns 20G, local HBM 110ns 80G, the other socket's DDR/HBM 200ns 10G. SLIT: local
            10, DDR-near HBM 12, other socket 21 (23 to its HBM).
hmat2s-cxl  hmat2s plus node4: CXL-like, no CPUs, 256M, far from both sockets (300ns 5G; SLIT 30)
T
}

while [ $# -gt 0 ]; do
    case "$1" in
        --topology) topology=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --c-program) c_program=1; shift ;;
        --preload) preload=$2; shift 2 ;;
        --alloc) alloc=$2; shift 2 ;;
        --thp) thp=$2; shift 2 ;;
        --env) envs+=("$2"); shift 2 ;;
        --file) files+=("$2"); shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --start-timeout) start_timeout=$2; shift 2 ;;
        --boot-attempts) boot_attempts=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --log) log=$2; shift 2 ;;
        --list) list_topologies; exit 0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; guest_args=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# ---- tools -----------------------------------------------------------------------------------
find_kernel() {
    if [ -n "${QEMU_KERNEL:-}" ]; then echo "$QEMU_KERNEL"; return; fi
    ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1
}
find_busybox() {
    for b in ${BUSYBOX:-} /bin/busybox /usr/bin/busybox; do
        # A dynamically linked busybox would need its libraries in the initramfs.
        if [ -x "$b" ] && ! is_dynamic "$b"; then echo "$b"; return; fi
    done
}
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=("qemu-system-x86_64 (Debian: qemu-system-x86)")
kernel=$(find_kernel)
[ -n "$kernel" ] && [ -r "$kernel" ] || missing+=("a readable kernel /boot/vmlinuz-* or \$QEMU_KERNEL (Debian: linux-image-amd64)")
busybox=$(find_busybox)
[ -n "$busybox" ] || missing+=("a static busybox (Debian: busybox-static)")
command -v cpio >/dev/null || missing+=("cpio")
command -v gzip >/dev/null || missing+=("gzip")
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
        echo "run-guest: installing: ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-x86 linux-image-amd64 busybox-static cpio gzip >&2 \
            || die "apt-get install failed; missing: ${missing[*]}"
        kernel=$(find_kernel); busybox=$(find_busybox)
        command -v qemu-system-x86_64 >/dev/null && [ -r "$kernel" ] && [ -n "$busybox" ] \
            || die "still missing after apt-get install"
    else
        printf 'run-guest: missing:\n' >&2
        printf '  - %s\n' "${missing[@]}" >&2
        exit 3
    fi
fi

# ---- topology --------------------------------------------------------------------------------
extra_append=
machine=pc
case "$topology" in
    2n)
        mem=1024; smp="4"
        numa=(-object memory-backend-ram,id=m0,size=512M -object memory-backend-ram,id=m1,size=512M
              -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1) ;;
    4n-unequal)
        mem=768; smp="4"
        numa=(-object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=128M
              -object memory-backend-ram,id=m2,size=128M -object memory-backend-ram,id=m3,size=256M
              -numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1
              -numa node,nodeid=2,cpus=2,memdev=m2 -numa node,nodeid=3,cpus=3,memdev=m3) ;;
    memonly)
        mem=768; smp="4"
        numa=(-object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M
              -object memory-backend-ram,id=m2,size=256M
              -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
              -numa node,nodeid=2,memdev=m2) ;;
    sparse)
        mem=640; smp="4,maxcpus=6"; extra_append="possible_cpus=4"
        numa=(-object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M
              -object memory-backend-ram,id=m3,size=128M
              -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
              -numa node,nodeid=2,cpus=4-5 -numa node,nodeid=3,memdev=m3) ;;
    1n)
        mem=512; smp="4"; numa=() ;;
    1n8)
        mem=1024; smp="8"; numa=() ;;
    4n2)
        mem=1024; smp="8"
        numa=(-object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M
              -object memory-backend-ram,id=m2,size=256M -object memory-backend-ram,id=m3,size=256M
              -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
              -numa node,nodeid=2,cpus=4-5,memdev=m2 -numa node,nodeid=3,cpus=6-7,memdev=m3) ;;
    8n2)
        mem=1536; smp="16"; numa=()
        for n in 0 1 2 3 4 5 6 7; do
            numa+=(-object "memory-backend-ram,id=m$n,size=192M" -numa "node,nodeid=$n,cpus=$((2 * n))-$((2 * n + 1)),memdev=m$n")
        done ;;
    hmat2s|hmat2s-cxl)
        # Two sockets, each a DDR node with CPUs and a CPU-less high-bandwidth node beside it;
        # the -cxl variant adds a CPU-less capacity node far from both. The tiers are told to
        # the guest kernel only through HMAT (bandwidth, latency) and SLIT (distances).
        machine=pc,hmat=on; mem=1152; smp="4,sockets=2,cores=2"
        numa=(-object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M
              -object memory-backend-ram,id=m2,size=320M -object memory-backend-ram,id=m3,size=320M
              -numa node,nodeid=0,cpus=0-1,memdev=m0 -numa node,nodeid=1,cpus=2-3,memdev=m1
              -numa node,nodeid=2,memdev=m2,initiator=0 -numa node,nodeid=3,memdev=m3,initiator=1)
        targets=(0 1 2 3)
        [ "$topology" = hmat2s-cxl ] && {
            mem=1408; targets+=(4)
            numa+=(-object memory-backend-ram,id=m4,size=256M -numa node,nodeid=4,memdev=m4,initiator=0)
        }
        # lat_bw INITIATOR TARGET: "latency(ns) bandwidth" and the SLIT distance.
        hmat_of() {
            local i=$1 t=$2
            case "$t" in
                4) echo "300 5G 30" ;;
                *) local sock=$(( t % 2 )) hbm=$(( t / 2 ))
                   if [ "$sock" = "$i" ]; then
                       [ "$hbm" = 1 ] && echo "110 80G 12" || echo "100 20G 10"
                   else
                       [ "$hbm" = 1 ] && echo "200 10G 23" || echo "200 10G 21"
                   fi ;;
            esac
        }
        for i in 0 1; do
            for t in "${targets[@]}"; do
                read -r lat bw _ < <(hmat_of "$i" "$t")
                numa+=(-numa "hmat-lb,initiator=$i,target=$t,hierarchy=memory,data-type=access-latency,latency=$lat"
                       -numa "hmat-lb,initiator=$i,target=$t,hierarchy=memory,data-type=access-bandwidth,bandwidth=$bw")
            done
        done
        # SLIT: from a CPU node as in hmat_of; between CPU-less nodes, via their sockets.
        for a in "${targets[@]}"; do
            for b in "${targets[@]}"; do
                [ "$a" -lt "$b" ] || continue
                if [ "$a" -le 1 ]; then
                    read -r _ _ d < <(hmat_of "$a" "$b")
                elif [ "$b" = 4 ]; then d=30
                else d=21; fi
                numa+=(-numa "dist,src=$a,dst=$b,val=$d")
            done
        done ;;
    *) die "unknown topology $topology (see --list)" ;;
esac

# ---- guest binary ----------------------------------------------------------------------------
mkdir -p "$workdir"
if [ -z "$binary" ]; then
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    case "$c_program:$alloc" in
        1:*) features=(--features system); target_dir=$target_dir/dynamic-guest; rustflags=
             guest_args=(--tpn 1 --thp5 never --thp9 never "${guest_args[@]}"); alloc=dynamic-system ;;
        0:domalloc) features=(); rustflags="-C target-feature=+crt-static" ;;
        0:system) features=(--features system); rustflags="-C target-feature=+crt-static" ;;
        *) die "unknown --alloc $alloc" ;;
    esac
    # The static builds name the target triple: RUSTFLAGS then leave build scripts alone.
    triple=(); built=$target_dir/release/numa-guest
    [ -n "$rustflags" ] && { triple=(--target x86_64-unknown-linux-gnu); built=$target_dir/x86_64-unknown-linux-gnu/release/numa-guest; }
    echo "run-guest: building numa-guest ($alloc)" >&2
    (cd "$repo" && CARGO_TARGET_DIR=$target_dir RUSTFLAGS="${RUSTFLAGS:-}${rustflags:+ $rustflags}" cargo build --release -p domalloc-numa-tests \
        --bin numa-guest "${triple[@]}" "${features[@]}" >&2) || die "cargo build failed" 4
    binary=$workdir/numa-guest-$alloc
    cp "$built" "$binary"
fi
[ -x "$binary" ] || die "no executable $binary" 4
dynamic=0
is_dynamic "$binary" && dynamic=1
if [ -n "$preload" ]; then
    [ -r "$preload" ] || die "no library $preload" 4
    [ "$dynamic" = 1 ] || die "--preload needs a dynamically linked program ($binary is static: LD_PRELOAD would be ignored)" 4
    command -v ldd >/dev/null || die "--preload needs ldd"
fi
tag=$(basename "$binary")
tag=${tag#numa-guest-}
if [ -n "$preload" ]; then
    ptag=$(basename "$preload"); ptag=${ptag#lib}; ptag=${ptag%%.so*}
    tag=$tag-$ptag
fi

# Shared libraries (and the dynamic loader) a dynamic ELF needs, one absolute path a line, as
# the guest's loader finds them: without the caller's LD_LIBRARY_PATH (cargo test sets one that
# holds target/release; the guest has none, only the program's RUNPATH).
shared_deps() {
    env -u LD_LIBRARY_PATH ldd "$1" 2>/dev/null | awk '
        $2 == "=>" && $3 ~ /^\// { print $3; next }
        $1 ~ /^\// { print $1 }'
}

# ---- initramfs -------------------------------------------------------------------------------
root=$(mktemp -d "$workdir/initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp "$busybox" "$root/bin/busybox"
if command -v strip >/dev/null; then
    strip -o "$root/numa-guest" "$binary" 2>/dev/null || cp "$binary" "$root/numa-guest"
else
    cp "$binary" "$root/numa-guest"
fi
guest_preload=
deps=
if [ "$dynamic" = 1 ]; then
    deps=$(shared_deps "$binary")
    [ -n "$deps" ] || die "ldd found no libraries for $binary" 4
    if [ -n "$preload" ]; then
        mkdir -p "$root/preload"
        guest_preload=/preload/$(basename "$preload")
        cp -L "$preload" "$root$guest_preload"
        deps="$deps"$'\n'"$(shared_deps "$preload")"
    fi
fi
for f in "${files[@]}"; do
    [[ $f == /* ]] && [ -r "$f" ] || die "--file $f: not an absolute path to a readable file" 4
    mkdir -p "$root$(dirname "$f")"
    strip -o "$root$f" "$f" 2>/dev/null || cp -L "$f" "$root$f"
    deps="$deps"$'\n'"$(shared_deps "$f")"
done
for lib in $(printf '%s\n' "$deps" | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The loader may be asked for through the /lib64 link on merged-/usr systems.
if [ -n "$deps" ] && [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ] && [ -e /lib64/ld-linux-x86-64.so.2 ]; then
    mkdir -p "$root/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/bin
# Automatic NUMA balancing would migrate pages after the fact; the checks are about placement.
echo 0 > /proc/sys/kernel/numa_balancing 2>/dev/null
args=
case "$(cat /proc/cmdline)" in *" -- "*) args=$(sed 's/^.* -- //' /proc/cmdline) ;; esac
echo "GUEST-START cpus=$(nproc) kernel=$(uname -r) args: $args"
if [ -n "$GUEST_PRELOAD" ]; then
    echo "GUEST-PRELOAD $GUEST_PRELOAD"
    LD_PRELOAD=$GUEST_PRELOAD /numa-guest $args
else
    /numa-guest $args
fi
rc=$?
echo "GUEST-EXIT rc=$rc"
poweroff -f
INIT
# The preload path is baked into /init (not passed on the kernel command line).
sed -i "2i GUEST_PRELOAD=$guest_preload" "$root/init"
chmod +x "$root/init"
initrd=$workdir/initramfs-$topology-$tag.cpio.gz
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd"

# ---- boot ------------------------------------------------------------------------------------
# nokaslr: the kernel image lands on the same node every boot, so per-node free memory (and
# with it the results on small nodes) does not change from boot to boot.
append="console=ttyS0 quiet loglevel=3 panic=-1 nokaslr numa_balancing=disable"
[ -n "$thp" ] && append="$append transparent_hugepage=$thp"
[ -n "$extra_append" ] && append="$append $extra_append"
for e in "${envs[@]}"; do append="$append $e"; done
append="$append -- ${guest_args[*]}"
[ -n "$log" ] || log=$workdir/$topology-$tag.log

# A TCG guest on a loaded host now and then hangs in early boot (before /init prints
# GUEST-START; the kernel is quiet, so nothing shows). That is QEMU, not the program under test:
# such a boot is killed after --start-timeout seconds and retried (at most --boot-attempts).
# A guest that started is never retried: its result stands.
echo "run-guest: topology=$topology binary=$binary kernel=$kernel timeout=${timeout_s}s log=$log" >&2
raw=$log.raw
rm -f "$log".boot-*
attempt=1
while :; do
    start=$(date +%s)
    : > "$raw"
    set +e
    timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -machine "$machine" \
        -smp "$smp" -m "${mem}M" "${numa[@]}" \
        -nographic -monitor none -no-reboot -nic none \
        -kernel "$kernel" -initrd "$initrd" -append "$append" </dev/null >"$raw" 2>&1 &
    qpid=$!
    # Stream the console while it runs (tail exits once qemu has and the file is drained).
    tail -n +1 -f --pid="$qpid" "$raw" | tr -d '\r' &
    tpid=$!
    hung=0
    while kill -0 "$qpid" 2>/dev/null; do
        grep -q GUEST-START "$raw" && break
        if [ $(( $(date +%s) - start )) -ge "$start_timeout" ]; then
            hung=1
            kill "$qpid" 2>/dev/null
            break
        fi
        sleep 1
    done
    wait "$qpid"
    qrc=$?
    wait "$tpid"
    set -e
    tr -d '\r' < "$raw" > "$log"
    rm -f "$raw"
    if [ "$hung" = 0 ]; then
        echo "run-guest: qemu exit $qrc after $(( $(date +%s) - start ))s" >&2
        break
    fi
    cp "$log" "$log.boot-$attempt"
    if [ "$attempt" -ge "$boot_attempts" ]; then
        echo "run-guest: no GUEST-START within ${start_timeout}s in $attempt boots (logs $log.boot-*)" >&2
        exit 2
    fi
    echo "run-guest: no GUEST-START within ${start_timeout}s (boot $attempt of $boot_attempts hung; log $log.boot-$attempt); booting again" >&2
    attempt=$((attempt + 1))
done

grc=$(sed -n 's/.*GUEST-EXIT rc=\([0-9]*\).*/\1/p' "$log" | tail -n 1)
if [ -z "$grc" ]; then
    [ "$qrc" = 124 ] && echo "run-guest: guest timed out after ${timeout_s}s" >&2
    echo "run-guest: guest did not finish (no GUEST-EXIT line)" >&2
    exit 2
fi
[ "$grc" = 0 ] && exit 0 || exit 1
