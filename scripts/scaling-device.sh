#!/usr/bin/env bash
# One command for the bigger machine: the thread-scaling table of scaling.sh with the staged
# binaries of `scripts/scaling.sh prepare` (carry target/scaling), written to $OUT
# (the device runner's output folder) when it is set. Extra arguments go to `scaling.sh run`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/scaling.sh" run --bin "$here/../target/scaling" ${OUT:+--out "$OUT"} "$@"
