#!/usr/bin/env bash
# Real HPC codes under libdomalloc, each run under glibc's malloc and under LD_PRELOAD=libdomalloc.so
# for every rank, with the results compared:
#
#   hpcc            HPC Challenge, 2 MPI ranks, small problem (N=1000): every verification line
#                   (HPL and PTRANS residual checks, RandomAccess errors, STREAM validation) passes
#                   and the deterministic results (HPL norms and residual, FFT error, sizes) are
#                   identical under both allocators;
#   lammps-mpi      LAMMPS Lennard-Jones melt (bench/in.lj, 4000 atoms, 100 steps), 2 MPI ranks:
#                   the thermo table (energies, temperature, pressure) is identical;
#   lammps-openmp   the same with OMP_NUM_THREADS=2 in one process (with `-sf omp` when this LAMMPS
#                   has the OPENMP package; Debian 12's has not, which the log says);
#   *-stats         the domalloc runs write one statistics file per rank (DOMALLOC_STATS=json
#                   DOMALLOC_STATS_FILE=<dir>/stats.%r.json): each must appear, follow the schema
#                   (`domalloc report --strict` checks keys, types and invariants) and merge into a
#                   table and an SVG chart;
#   mpi-exchange-report  tests/c/mpi_exchange.c on 4 ranks (mpirun -np 4) with per-rank files,
#                   merged by `domalloc report`;
#   *-prof-*-ranks  hpcc and LAMMPS on 2 and 4 ranks with the heap profiler (DOMALLOC_PROF=1, one
#                   profile per rank): each rank's file appears with live bytes at its peak, and
#                   `domalloc report --prof` merges them into a flame graph and top-call-sites
#                   tables naming the program's functions (LAMMPS_NS::Memory::..., Open MPI's; the
#                   stripped hpcc's own code as hpcc+offset).
#
# A library without the statistics writer (DOMALLOC_STATS_FILE) FAILS the *-stats checks with a
# message saying so: nothing is skipped.
#
#   scripts/test-apps.sh                 everything
#   scripts/test-apps.sh lammps          only the tests whose name contains "lammps"
#   DOMALLOC_LIB=path/libdomalloc.so     the library under test (default: target/release's)
#   NO_BUILD=1                           do not run cargo build (use what DOMALLOC_LIB and
#                                        target/release/domalloc are)
#   KEEP_WORK=1                          keep the outputs (the script prints where)
#
# As root on Debian it installs hpcc, lammps, openmpi-bin, libopenmpi-dev and python3
# (--no-install-recommends: about 35 packages; 15-60 s with a near mirror). Run time on 2 cores:
# about a minute after the build. Prints one line per test and "N passed, M failed".
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REL=$CARGO_TARGET_DIR/release
LIB=${DOMALLOC_LIB:-$REL/libdomalloc.so}
TOOL=${DOMALLOC_TOOL:-$REL/domalloc}
FILTER=${1:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/domalloc-apps.XXXXXX")
KEEP_WORK=${KEEP_WORK:-}
trap '[ -n "$KEEP_WORK" ] || rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0
FAILED_NAMES=()

say() { printf '%s\n' "$*"; }

# ---- packages and build ----

ensure_packages() {
    local want=(hpcc lammps openmpi-bin libopenmpi-dev python3) missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "missing Debian packages: ${missing[*]} (run as root on Debian to install them)"
        return 1
    fi
    local t0=$SECONDS
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
        { tail -n 20 "$WORK/apt.log"; return 1; }
    say "installed in $((SECONDS - t0))s"
}

ensure_packages || { say "0 passed, 1 failed"; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
    say "building libdomalloc and the domalloc command (release) in $CARGO_TARGET_DIR"
    if ! cargo build --release -p domalloc-ffi -p domalloc-tools >"$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log"
        say "FAIL  build"
        say "0 passed, 1 failed"
        exit 1
    fi
fi
for f in "$LIB" "$TOOL"; do
    [ -e "$f" ] || { say "FAIL  $f does not exist"; say "0 passed, 1 failed"; exit 1; }
done
LIB=$(readlink -f "$LIB")
say "library under test: $LIB"

# ---- bookkeeping ----

selected() { [ -z "$FILTER" ] || [[ "$1" == *"$FILTER"* ]]; }

# run_test NAME TIMEOUT FUNCTION: PASS when FUNCTION exits 0 (output in $WORK/NAME.log; its last
# line starting with "ok:" is shown).
run_test() {
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    selected "$name" || return 0
    timeout -k 10 "$limit" bash -c "$(declare -f); $(declare -p LIB TOOL WORK ROOT MPIRUN RANK_CHECK); \"\$@\"" _ "$@" \
        >"$WORK/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        PASSED=$((PASSED + 1))
        local info
        info=$(grep '^ok:' "$WORK/$name.log" | tail -1 | cut -c5-130)
        say "PASS  $name ($((SECONDS - t0))s)${info:+  -- $info}"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        [ $rc -eq 124 ] && say "FAIL  $name: timed out after ${limit}s" || say "FAIL  $name (exit $rc, $((SECONDS - t0))s)"
        tail -n 30 "$WORK/$name.log" | sed 's/^/      | /'
    fi
}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One thread per rank in the BLAS, so results do not depend on thread scheduling.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# Idle ranks yield the CPU: the machine has 2 cores shared with other work (CI, helpers).
MPIRUN=(mpirun --oversubscribe --mca btl self,vader --mca mpi_yield_when_idle 1)
# Every rank first proves (with shell built-ins only: a child process would write statistics of
# its own) that the library is mapped into it, then becomes the program.
RANK_CHECK='lib=$1; shift; f=; while IFS= read -r l; do case $l in *"$lib"*) f=1;; esac; done </proc/$$/maps
[ -n "$f" ] || { echo "rank ${OMPI_COMM_WORLD_RANK:-?}: $lib is not loaded" >&2; exit 97; }; exec "$@"'

# under_domalloc STATS_DIR NP CMD...: CMD on NP ranks with libdomalloc preloaded in each and
# DOMALLOC_STATS=json DOMALLOC_STATS_FILE=STATS_DIR/stats.%r.json.
under_domalloc() {
    local dir=$1 np=$2
    shift 2
    mkdir -p "$dir"
    "${MPIRUN[@]}" -np "$np" -x LD_PRELOAD="$LIB" -x DOMALLOC_STATS=json -x DOMALLOC_STATS_FILE="$dir/stats.%r.json" \
        sh -c "$RANK_CHECK" sh "$(basename "$LIB")" "$@"
}

# check_stats DIR NRANKS: one statistics file per rank in DIR, each following the schema, merged by
# `domalloc report` into a table, a CSV file and an SVG chart.
check_stats() {
    local dir=$1 n=$2 r missing=()
    local files=("$dir"/stats.*.json)
    if [ ! -e "${files[0]}" ]; then
        echo "no statistics file in $dir after a run with DOMALLOC_STATS=json DOMALLOC_STATS_FILE=$dir/stats.%r.json:"
        echo "the library under test ($LIB) does not write DOMALLOC_STATS_FILE (the statistics writer of issue 14"
        echo "is not in this build); expected stats.0.json ... stats.$((n - 1)).json"
        return 1
    fi
    for ((r = 0; r < n; r++)); do
        [ -s "$dir/stats.$r.json" ] || missing+=("stats.$r.json")
    done
    ls -l "$dir"
    [ ${#missing[@]} -eq 0 ] || { echo "missing or empty: ${missing[*]} (one file per rank expected)"; return 1; }
    [ ${#files[@]} -eq "$n" ] || { echo "${#files[@]} files for $n ranks (%r not replaced by the rank?)"; return 1; }
    "$TOOL" report --strict --svg "$dir/report.svg" --csv "$dir/report.csv" "${files[@]}" >"$dir/report.txt" ||
        { echo "domalloc report --strict rejected the files"; return 1; }
    cat "$dir/report.txt"
    grep -q '^<svg' "$dir/report.svg" || { echo "no SVG chart"; return 1; }
    [ "$(wc -l <"$dir/report.csv")" -gt "$n" ] || { echo "CSV too short"; return 1; }
    "$TOOL" report --json "${files[@]}" >"$dir/report.json" || return 1
    python3 - "$dir/report.json" "$n" "$(hostname)" <<'EOF' || return 1
import json, sys
doc = json.load(open(sys.argv[1]))
n, host = int(sys.argv[2]), sys.argv[3]
ranks = doc["ranks"]
assert [r["rank"] for r in ranks] == list(range(n)), "ranks %s, expected 0..%d" % ([r["rank"] for r in ranks], n - 1)
assert len({r["pid"] for r in ranks}) == n, "one process per rank"
assert all(r["host"] == host for r in ranks), "host names %s, expected %s" % ({r["host"] for r in ranks}, host)
assert all(r["totals"]["allocs"] > 0 for r in ranks), "every rank allocated through domalloc"
EOF
    echo "ok: $n ranks, one statistics file each, merged by domalloc report (table, CSV, SVG)"
}

# ---- HPCC ----

hpcc_input() { # hpcc_input DIR: a small HPL problem (N=1000) on a 1x2 grid; the other tests size from it
    cat >"$1/hpccinf.txt" <<'EOF'
HPLinpack benchmark input file
Innovative Computing Laboratory, University of Tennessee
HPL.out      output file name (if any)
8            device out (6=stdout,7=stderr,file)
1            # of problems sizes (N)
1000         Ns
1            # of NBs
80           NBs
0            PMAP process mapping (0=Row-,1=Column-major)
1            # of process grids (P x Q)
1            Ps
2            Qs
16.0         threshold
1            # of panel fact
2            PFACTs (0=left, 1=Crout, 2=Right)
1            # of recursive stopping criterium
4            NBMINs (>= 1)
1            # of panels in recursion
2            NDIVs
1            # of recursive panel fact.
1            RFACTs (0=left, 1=Crout, 2=Right)
1            # of broadcast
1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)
1            # of lookahead depth
1            DEPTHs (>=0)
2            SWAP (0=bin-exch,1=long,2=mix)
64           swapping threshold
0            L1 in (0=transposed,1=no-transposed) form
0            U  in (0=transposed,1=no-transposed) form
1            Equilibration (0=no,1=yes)
8            memory alignment in double (> 0)
##### This line (no. 32) is ignored (it serves as a separator). ######
0                      		Number of additional problem sizes for PTRANS
1200 10000 30000        	values of N
0                       	number of additional blocking sizes for PTRANS
40 9 8 13 13 20 16 32 64       	values of NB
EOF
}

# hpcc_verdict OUTFILE: the verification lines and the deterministic results of one run (timings
# and rates left out; DGEMM's scaled residual too: its matrix is seeded from the clock).
hpcc_verdict() {
    local out=$1
    grep -E '\.\.\.\.\.\. (PASSED|FAILED)$|tests completed and (passed|failed) residual checks|Found [0-9]+ errors in|Solution Validates|Failed Validation' "$out" |
        sed -E 's/^ +//'
    # PTRANS's result table: the check column only.
    awk '$1 == "WALL" && ($9 == "PASSED" || $9 == "FAILED") { print "PTRANS " $2, $3, $4, $5, $6, $7, $9, $11 }' "$out"
    sed -n '/^Begin of Summary section/,/^End of Summary section/p' "$out" | grep -E \
        '^(Success|CommWorldProcs|HPL_(N|NB|nprow|npcol|RnormI|Anorm1|AnormI|Xnorm1|XnormI|BnormI)|DGEMM_N|PTRANS_(residual|n|nb)|(MPI)?RandomAccess(_LCG)?_(N|Errors|ErrorsFraction)|STREAM_VectorSize|(MPI)?FFT_N|MPIFFT_maxErr)='
}

hpcc_passes() { # hpcc_passes VERDICT: the run passed every check it reports
    grep -qx 'Success=1' "$1" || { echo "Success is not 1"; return 1; }
    grep -q '\.\.\.\.\.\. PASSED$' "$1" || { echo "no passed HPL residual check"; return 1; }
    ! grep -Eq 'FAILED|[1-9][0-9]* tests completed and failed|Found [1-9][0-9]* errors|Failed Validation|_Errors=[1-9]' "$1" ||
        { echo "a check failed:"; grep -E 'FAILED|failed|errors|Errors=' "$1"; return 1; }
}

hpcc_same_results() {
    local g="$WORK/hpcc/glibc" d="$WORK/hpcc/domalloc"
    mkdir -p "$g" "$d"
    hpcc_input "$g"
    hpcc_input "$d"
    (cd "$g" && "${MPIRUN[@]}" -np 2 hpcc) >"$g/stdout" 2>&1 || { tail -20 "$g/stdout"; echo "hpcc failed under glibc"; return 1; }
    (cd "$d" && under_domalloc "$WORK/hpcc/stats" 2 hpcc) >"$d/stdout" 2>&1 ||
        { tail -20 "$d/stdout"; echo "hpcc failed under domalloc"; return 1; }
    local a
    for a in glibc domalloc; do
        hpcc_verdict "$WORK/hpcc/$a/hpccoutf.txt" >"$WORK/hpcc/$a.verdict"
        echo "== $a"
        cat "$WORK/hpcc/$a.verdict"
        hpcc_passes "$WORK/hpcc/$a.verdict" || { echo "hpcc's checks under $a"; return 1; }
    done
    diff "$WORK/hpcc/glibc.verdict" "$WORK/hpcc/domalloc.verdict" ||
        { echo "hpcc's results differ between glibc and domalloc"; return 1; }
    echo "ok: $(grep -c . "$WORK/hpcc/glibc.verdict") verification lines and results identical; $(grep -o '[0-9.]* \.\.\.\.\.\. PASSED' "$WORK/hpcc/glibc.verdict" | head -1)"
}

# ---- LAMMPS ----

lammps_input() {
    cat >"$1/in.lj" <<'EOF'
# 3d Lennard-Jones melt (LAMMPS bench/in.lj; 4000 atoms, 100 steps)
variable     x index 1
variable     y index 1
variable     z index 1
variable     xx equal 10*$x
variable     yy equal 10*$y
variable     zz equal 10*$z
units        lj
atom_style   atomic
lattice      fcc 0.8442
region       box block 0 ${xx} 0 ${yy} 0 ${zz}
create_box   1 box
create_atoms 1 box
mass         1 1.0
velocity     all create 1.44 87287 loop geom
pair_style   lj/cut 2.5
pair_coeff   1 1 1.0 1.0 2.5
neighbor     0.3 bin
neigh_modify delay 0 every 20 check no
fix          1 all nve
thermo       20
run          100
EOF
}

lammps_thermo() { # lammps_thermo LOG: the thermo table (header and one row per 20 steps)
    sed -n '/^ *Step /,/^Loop time/p' "$1" | grep -v '^Loop time'
}

lmp_bin() { command -v lmp || command -v lmp_openmpi || command -v lmp_serial || command -v lmp_mpi; }

# lammps_compare MODE: runs in.lj under glibc and domalloc and compares the thermo tables.
lammps_compare() {
    local mode=$1 lmp np args=() g d
    lmp=$(lmp_bin) || { echo "no LAMMPS binary (lmp) installed"; return 1; }
    g="$WORK/lammps-$mode/glibc"
    d="$WORK/lammps-$mode/domalloc"
    mkdir -p "$g" "$d"
    lammps_input "$g"
    lammps_input "$d"
    if [ "$mode" = mpi ]; then
        np=2
    else
        np=1
        if "$lmp" -h | sed -n '/^Installed packages/,/^List of/p' | grep -qw OPENMP; then
            args=(-sf omp -pk omp 2)
            echo "this LAMMPS has the OPENMP package: -sf omp -pk omp 2"
        else
            echo "this LAMMPS ($("$lmp" -h | grep -m1 -o 'Large-scale.*\|LAMMPS ([^)]*)' || echo "$lmp")) has no OPENMP package:"
            echo "one process with OMP_NUM_THREADS=2 and the plain pair style (no -sf omp)"
        fi
        export OMP_NUM_THREADS=2
    fi
    (cd "$g" && "${MPIRUN[@]}" -np $np -x OMP_NUM_THREADS "$lmp" "${args[@]}" -in in.lj -log log.lammps -screen none) >"$g/stdout" 2>&1 ||
        { tail -20 "$g/stdout" "$g/log.lammps"; echo "LAMMPS failed under glibc"; return 1; }
    (cd "$d" && under_domalloc "$WORK/lammps-$mode/stats" $np "$lmp" "${args[@]}" -in in.lj -log log.lammps -screen none) >"$d/stdout" 2>&1 ||
        { tail -20 "$d/stdout" "$d/log.lammps"; echo "LAMMPS failed under domalloc"; return 1; }
    lammps_thermo "$g/log.lammps" >"$g/thermo"
    lammps_thermo "$d/log.lammps" >"$d/thermo"
    grep -h '^Loop time' "$g/log.lammps" "$d/log.lammps"
    echo "== glibc"
    cat "$g/thermo"
    [ "$(grep -c '^ *[0-9]' "$g/thermo")" -eq 6 ] || { echo "expected 6 thermo rows (steps 0-100 by 20)"; return 1; }
    diff "$g/thermo" "$d/thermo" || { echo "the thermo output differs between glibc and domalloc"; return 1; }
    echo "ok: thermo table identical ($np rank(s)); step 100: $(tail -1 "$g/thermo" | awk '{ print "Temp " $2 ", TotEng " $5 ", Press " $6 }')"
}

# ---- a small MPI program on 4 ranks, merged by domalloc report ----

mpi_exchange_report() {
    local dir="$WORK/mpi-exchange"
    mkdir -p "$dir"
    mpicc -O2 -Wall -I"$ROOT/tests/c" -o "$dir/mpi_exchange" "$ROOT/tests/c/mpi_exchange.c" -ldl || return 1
    under_domalloc "$dir/stats" 4 "$dir/mpi_exchange" || { echo "mpi_exchange failed"; return 1; }
    check_stats "$dir/stats" 4
}

# ---- heap profiles of hpcc and LAMMPS on 2 and 4 ranks ----

# under_domalloc_prof DIR NP CMD...: CMD on NP ranks with libdomalloc preloaded and its heap
# profiler on (DOMALLOC_PROF=1; DOMALLOC_PROF_SAMPLE=64k, these runs being short), one profile per
# rank: DIR/<rank>.prof.
under_domalloc_prof() {
    local dir=$1 np=$2
    shift 2
    mkdir -p "$dir"
    "${MPIRUN[@]}" -np "$np" -x LD_PRELOAD="$LIB" -x DOMALLOC_PROF=1 -x DOMALLOC_PROF_SAMPLE=64k \
        -x DOMALLOC_PROF_FILE="$dir/%r.prof" sh -c "$RANK_CHECK" sh "$(basename "$LIB")" "$@"
}

# check_prof DIR NP NAME...: one profile per rank in DIR, each with sampled live bytes at its peak,
# merged by `domalloc report --prof` into a flame graph (DIR/flame.svg, bytes live at the peak) and
# the top-call-sites tables, which must name every NAME (a function of the program).
check_prof() {
    local dir=$1 n=$2 r f peak name
    shift 2
    ls -l "$dir"
    for ((r = 0; r < n; r++)); do
        f="$dir/$r.prof"
        [ -s "$f" ] || { echo "missing or empty: $r.prof (one profile per rank expected)"; return 1; }
        peak=$(sed -n 's/^# sampled live_bytes [0-9]* peak \([0-9]*\) .*/\1/p' "$f")
        [ "${peak:-0}" -gt 0 ] || { echo "$f: no sampled live bytes at the peak"; return 1; }
    done
    [ "$(ls "$dir"/*.prof | wc -l)" -eq "$n" ] || { echo "more profiles than ranks (%r not replaced by the rank?)"; return 1; }
    "$TOOL" report --prof "$dir"/*.prof --top 10 --svg "$dir/flame.svg" >"$dir/report.txt" ||
        { echo "domalloc report --prof failed on the rank profiles"; return 1; }
    cat "$dir/report.txt"
    local ranks
    ranks=$(seq -s ', ' 0 $((n - 1)) | sed 's/\([0-9][0-9]*\)/rank \1/g')
    grep -qF "$n profile(s) ($ranks)" "$dir/report.txt" || { echo "the report does not merge ranks 0-$((n - 1))"; return 1; }
    grep -Eq '^top call sites by bytes live at the peak \(total [1-9]' "$dir/report.txt" ||
        { echo "no bytes live at the peak in the merged report"; return 1; }
    grep -q '<svg ' "$dir/flame.svg" || { echo "no flame graph"; return 1; }
    for name in "$@"; do
        # A name with `|` is a choice of fixed strings (sampled call sites differ from run to run).
        if [[ $name == *"|"* ]]; then
            grep -qE -- "$name" "$dir/report.txt" || { echo "the report names none of $name"; return 1; }
        else
            grep -qF -- "$name" "$dir/report.txt" || { echo "the report names no $name"; return 1; }
        fi
    done
    echo "ok: $n rank profiles merged, $(sed -n 's/^top call sites by bytes live at the peak (total \(.*\)):/\1/p' "$dir/report.txt") live at the peak; names $*"
}

hpcc_prof() { # hpcc_prof NP: hpcc on a 1xNP grid, profiled
    local np=$1 dir="$WORK/hpcc-prof-$1"
    mkdir -p "$dir"
    hpcc_input "$dir"
    sed -i "s/^2            Qs/$np            Qs/" "$dir/hpccinf.txt"
    (cd "$dir" && under_domalloc_prof "$dir/prof" "$np" hpcc) >"$dir/stdout" 2>&1 ||
        { tail -20 "$dir/stdout"; echo "hpcc failed under domalloc with DOMALLOC_PROF=1"; return 1; }
    grep -qx 'Success=1' "$dir/hpccoutf.txt" || { echo "hpcc's checks failed"; return 1; }
    # Debian's hpcc is stripped (its own frames are hpcc+offset); Open MPI's are named.
    # Open MPI's own allocations: which of its functions the samples catch varies (a 2-rank run
    # once named ompi_ and opal_ functions but no mca_base_ one).
    check_prof "$dir/prof" "$np" 'hpcc+0x' 'mca_base_|ompi_|opal_'
}

lammps_prof() { # lammps_prof NP: in.lj on NP ranks, profiled
    local np=$1 dir="$WORK/lammps-prof-$1" lmp
    lmp=$(lmp_bin) || { echo "no LAMMPS binary (lmp) installed"; return 1; }
    mkdir -p "$dir"
    lammps_input "$dir"
    (cd "$dir" && under_domalloc_prof "$dir/prof" "$np" "$lmp" -in in.lj -log log.lammps -screen none) >"$dir/stdout" 2>&1 ||
        { tail -20 "$dir/stdout" "$dir/log.lammps"; echo "LAMMPS failed under domalloc with DOMALLOC_PROF=1"; return 1; }
    [ "$(lammps_thermo "$dir/log.lammps" | grep -c '^ *[0-9]')" -eq 6 ] || { echo "expected 6 thermo rows"; return 1; }
    check_prof "$dir/prof" "$np" 'LAMMPS_NS::Memory::'
}

run_test hpcc-same-results 300 hpcc_same_results
run_test hpcc-stats-files 60 check_stats "$WORK/hpcc/stats" 2
run_test lammps-mpi-same-thermo 300 lammps_compare mpi
run_test lammps-mpi-stats-files 60 check_stats "$WORK/lammps-mpi/stats" 2
run_test lammps-openmp-same-thermo 300 lammps_compare openmp
run_test mpi-exchange-report 180 mpi_exchange_report
run_test hpcc-prof-2-ranks 120 hpcc_prof 2
run_test hpcc-prof-4-ranks 120 hpcc_prof 4
run_test lammps-prof-2-ranks 120 lammps_prof 2
run_test lammps-prof-4-ranks 120 lammps_prof 4

say ""
[ $FAILED -gt 0 ] && say "failed: ${FAILED_NAMES[*]}"
[ -n "$KEEP_WORK" ] && say "outputs kept in $WORK"
say "$PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]
