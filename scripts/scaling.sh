#!/usr/bin/env bash
# Thread scaling of domalloc against mimalloc v3 (and glibc) on a bigger machine that has only
# the carried prebuilt binaries: no cargo, no network, no libhwloc.
#
#   scripts/scaling.sh prepare          # here: build and stage target/scaling/
#   scripts/scaling.sh run [options]    # there: run and print the table
#   scripts/scaling-device.sh           # there, one command: run with the defaults,
#                                       # the table also to $OUT/scaling.{md,csv}
#
# prepare builds (in this checkout, with cargo) the workloads binary without the hwloc feature
# (threads are pinned with sched_setaffinity over the cores read from sysfs), libdomalloc.so and
# libmimalloc3.so (via scripts/bench.sh --list, which builds both), strips them and copies them
# to target/scaling/ (one directory to carry, a few MiB).
#
# run options:
#   --bin DIR         the staged binaries (default: <repo>/target/scaling)
#   --threads LIST    thread counts (default 1,2,4,8,16)
#   --workloads LIST  (default larson,xmalloc,test-stress,glibc-thread)
#   --scale F         work multiplier passed to every workload (default 0.5)
#   --reps N          repetitions per cell, interleaved over the allocators (default 2)
#   --allocators LIST glibc,mimalloc3,domalloc (default all three)
#   --timeout S       per-run limit (default 60)
#   --out DIR         also write scaling.md and scaling.csv there
# It prints one row per (workload, threads): the median wall seconds of each allocator and the
# ratio to mimalloc3 (lower is better); a run that fails (exit status, no RESULT line, a
# checksum that differs from the other allocators') shows as FAIL. With the defaults it takes
# about 2-3 minutes on 16 cores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

prepare() {
    cd "$repo"
    "$repo/scripts/bench.sh" --list
    local target=${CARGO_TARGET_DIR:-$repo/target}
    # The workloads binary without libhwloc (the carried machine may not have it).
    CARGO_TARGET_DIR="$repo/target/scaling-build" cargo build --release -p domalloc-bench-suite \
        --no-default-features --bin workloads
    mkdir -p "$repo/target/scaling"
    strip -o "$repo/target/scaling/workloads" "$repo/target/scaling-build/release/workloads"
    strip -o "$repo/target/scaling/libdomalloc.so" "$target/release/libdomalloc.so"
    strip -o "$repo/target/scaling/libmimalloc3.so" "$target/mimalloc3/libmimalloc3.so"
    ls -l "$repo/target/scaling"
    echo "carry: target/scaling   command: scripts/scaling-device.sh"
}

run() {
    local bin=$repo/target/scaling threads=1,2,4,8,16 workloads=larson,xmalloc,test-stress,glibc-thread
    local scale=0.5 reps=2 allocators=glibc,mimalloc3,domalloc timeout_s=60 out=
    while [ $# -gt 0 ]; do
        case "$1" in
            --bin) bin=$2; shift 2 ;;
            --threads) threads=$2; shift 2 ;;
            --workloads) workloads=$2; shift 2 ;;
            --scale) scale=$2; shift 2 ;;
            --reps) reps=$2; shift 2 ;;
            --allocators) allocators=$2; shift 2 ;;
            --timeout) timeout_s=$2; shift 2 ;;
            --out) out=$2; shift 2 ;;
            *) echo "scaling.sh: unknown option $1" >&2; exit 64 ;;
        esac
    done
    local w=$bin/workloads
    [ -x "$w" ] || { echo "scaling.sh: no $w (run 'scaling.sh prepare' where cargo is)" >&2; exit 3; }
    IFS=, read -r -a TS <<<"$threads"
    IFS=, read -r -a WS <<<"$workloads"
    IFS=, read -r -a AS <<<"$allocators"
    declare -A LIB=([glibc]="" [mimalloc3]="$bin/libmimalloc3.so" [domalloc]="$bin/libdomalloc.so")
    local a
    for a in "${AS[@]}"; do
        local lib=${LIB[$a]-missing}
        [ "$lib" = missing ] && { echo "scaling.sh: unknown allocator $a" >&2; exit 64; }
        local probe
        probe=$(LD_PRELOAD=$lib "$w" probe 2>&1 | tail -n 1)
        if [ -n "$lib" ] && [[ "$probe" != *"malloc_from=$lib"* ]]; then
            echo "scaling.sh: preloading $lib does not replace malloc: $probe" >&2; exit 3
        fi
        echo "allocator $a: $probe"
    done
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs, Linux $(uname -r)"
    echo "settings: scale $scale, $reps reps interleaved, threads ${threads}, pinned round-robin over cores"
    local tmp; tmp=$(mktemp -d)
    local start=$SECONDS wl t rep
    : >"$tmp/runs"
    for wl in "${WS[@]}"; do
        for t in "${TS[@]}"; do
            for rep in $(seq 1 "$reps"); do
                for a in "${AS[@]}"; do
                    local t0 t1 rc=0 res
                    t0=$(date +%s%N)
                    res=$(LD_PRELOAD=${LIB[$a]} timeout -k 5 "$timeout_s" "$w" "$wl" --threads "$t" --scale "$scale" 2>"$tmp/err") || rc=$?
                    t1=$(date +%s%N)
                    res=$(grep '^RESULT' <<<"$res" | head -n 1 || true)
                    local sum=${res##*checksum=}; sum=${sum%% *}
                    if [ "$rc" = 0 ] && [ -n "$res" ]; then
                        echo "$wl $t $a $(( (t1 - t0) / 1000000 )) $sum ok" >>"$tmp/runs"
                    else
                        echo "$wl $t $a 0 - FAIL(exit$rc:$(tail -n 1 "$tmp/err" | tr ' ' '_' | cut -c1-60))" >>"$tmp/runs"
                    fi
                    printf '  %-13s threads %2s %-10s rep %s  %s\n' "$wl" "$t" "$a" "$rep" "$(tail -n 1 "$tmp/runs" | cut -d' ' -f4,6)"
                done
            done
        done
    done
    # Table: median ms per cell, ratio to mimalloc3; a checksum that differs from the most
    # common one of the (workload, threads) marks that run FAIL.
    awk -v allocs="$allocators" '
        function median(list,   n, v, i, j, x) {
            n = split(list, v, " ")
            for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] + 0 > x + 0; j--) v[j + 1] = v[j]; v[j + 1] = x }
            return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
        { key = $1 " " $2; if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
          if ($6 == "ok") { cnt[key, $5]++ } ; run[NR] = $0 }
        END {
            for (r = 1; r <= NR; r++) {
                split(run[r], f, " "); key = f[1] " " f[2]; best = ""
                for (k in cnt) { split(k, kk, SUBSEP); if (kk[1] == key && (best == "" || cnt[k] > cnt[best])) best = k }
                split(best, bb, SUBSEP)
                if (f[6] == "ok" && f[5] == bb[2]) ms[key, f[3]] = ms[key, f[3]] " " f[4]; else fail[key, f[3]] = 1
            }
            na = split(allocs, A, ",")
            printf "| workload | threads |"; for (i = 1; i <= na; i++) printf " %s s | x mimalloc3 |", A[i]; printf "\n"
            printf "| :--- | ---: |"; for (i = 1; i <= na; i++) printf " ---: | ---: |"; printf "\n"
            for (o = 1; o <= nk; o++) {
                key = order[o]; split(key, kk, " "); printf "| %s | %s |", kk[1], kk[2]
                ref = ((key, "mimalloc3") in ms) ? median(substr(ms[key, "mimalloc3"], 2)) : 0
                for (i = 1; i <= na; i++) {
                    if ((key, A[i]) in fail && !((key, A[i]) in ms)) { printf " FAIL | - |"; continue }
                    m = median(substr(ms[key, A[i]], 2)); bang = ((key, A[i]) in fail) ? "!" : ""
                    printf " %.3f%s | %s |", m / 1000, bang, (ref > 0 ? sprintf("%.2f", m / ref) : "-")
                }
                printf "\n"
            }
        }' "$tmp/runs" >"$tmp/table"
    echo
    cat "$tmp/table"
    echo
    echo "took $((SECONDS - start)) s; '!' = some runs of the cell failed; lower is better"
    if [ -n "$out" ]; then
        mkdir -p "$out"
        { echo "# Thread scaling"; echo; echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs";
          echo "settings: scale $scale, $reps reps, median wall seconds (process start to exit), ratio to mimalloc3"; echo; cat "$tmp/table"; } >"$out/scaling.md"
        { echo "workload,threads,allocator,wall_ms,checksum,status"; tr ' ' ',' <"$tmp/runs"; } >"$out/scaling.csv"
        echo "wrote $out/scaling.md and $out/scaling.csv"
    fi
    rm -rf "$tmp"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    -h|--help|"") sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "scaling.sh: unknown command $1 (prepare | run)" >&2; exit 64 ;;
esac
