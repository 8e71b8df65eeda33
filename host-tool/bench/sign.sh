#!/usr/bin/env bash
# Times `twinbank sign` against `imgtool sign` on the same 1 MiB input: whole process (start-up
# included), same key and options, RUNS runs each (default 9), median wall time. Both outputs are
# checked to be byte-identical first.
#
#   TWINBANK_IMGTOOL=/tmp/imgtool-venv/bin/imgtool host-tool/bench/sign.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
IMGTOOL=${TWINBANK_IMGTOOL:-imgtool}
RUNS=${RUNS:-9}
cargo build -q --release -p twinbank-host
TB=$PWD/target/release/twinbank
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
head -c 1048576 /dev/urandom > payload.bin
"$TB" keygen -o key.pem 2>/dev/null
# The 1 MiB payload does not fit a 1 MiB bank with its header: use a 2 MiB slot for both tools.
opts=(--version 1.2.3+4 --security-counter 7 --rom-fixed 0x21010000 --header-size 0x400 --slot-size 0x200000)
tb() { "$TB" sign -k key.pem "${opts[@]}" --board none.toml payload.bin -o tb.bin 2>/dev/null; }
it() { "$IMGTOOL" sign -k key.pem "${opts[@]}" --pad-header payload.bin it.bin >/dev/null; }
tb; it
cmp tb.bin it.bin || { echo "outputs differ" >&2; exit 1; }

median_ms() { # runs "$1" RUNS times, prints the median wall time in ms
    local times=() s e
    for _ in $(seq "$RUNS"); do
        s=$(date +%s%N); "$1"; e=$(date +%s%N)
        times+=($(( (e - s) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f\n", a[int((NR+1)/2)]/1000}'
}
t_tb=$(median_ms tb)
t_it=$(median_ms it)
echo "input: 1 MiB, $RUNS runs each, median wall time (whole process)"
echo "twinbank sign: ${t_tb} ms"
echo "imgtool sign:  ${t_it} ms ($("$IMGTOOL" version 2>/dev/null | tail -1))"
awk -v a="$t_it" -v b="$t_tb" 'BEGIN {printf "ratio imgtool/twinbank: %.1fx\n", a/b}'
