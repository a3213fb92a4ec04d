#!/bin/bash
# Issue 19 round 3 A/B: the media-streams server before this round's fast path (BASE, the
# round-2 server) and after (this tree), driven by the same load generator (this tree's),
# alternating, at the same load.
#
#   bash bench/streams_ab_r3.sh [STREAMS] [SECONDS] [ROUNDS] [BASE]     (from the repo root)
#
# The old server is BASE's src/ with this tree's bench harness (bench/streams.py,
# _streams_server.py, _streams_client.py, modes.py) copied in, so only the server differs.
# Writes bench/results/issue19-r3/ab-{old,new}N.{txt,json}.
set -euo pipefail
N=${1:-1000}
D=${2:-6}
ROUNDS=${3:-2}
BASE=${4:-c4b2d6b}
ROOT=$(pwd)
OUT=$ROOT/bench/results/issue19-r3
mkdir -p "$OUT"
OLD=$(mktemp -d)
trap 'rm -rf "$OLD"' EXIT
git archive "$BASE" src | tar -x -C "$OLD"
cp src/recstream/bench/streams.py src/recstream/bench/_streams_server.py \
    src/recstream/bench/_streams_client.py src/recstream/bench/modes.py "$OLD/src/recstream/bench/"
for i in $(seq 1 "$ROUNDS"); do
    (cd "$OLD" && PYTHONPATH="$OLD/src" "$ROOT/.venv/bin/python" -m recstream bench streams \
        --streams "$N" --duration "$D" --keep-going --json "$OUT/ab-old$i.json" \
        > "$OUT/ab-old$i.txt" 2>&1)
    .venv/bin/python -m recstream bench streams --streams "$N" --duration "$D" --keep-going \
        --json "$OUT/ab-new$i.json" > "$OUT/ab-new$i.txt" 2>&1
done
for f in "$OUT"/ab-old*.txt "$OUT"/ab-new*.txt; do
    echo "$(basename "$f"): $(grep -h "^${N:0:1},${N:1} \|^$N " "$f")"
done
