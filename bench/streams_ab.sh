#!/bin/bash
# Issue 19 A/B: the media-streams server before (aiohttp's WebSocket, at BASE) and after
# (this tree), driven by the same load generator, alternating, at the same load.
#
#   bash bench/streams_ab.sh [STREAMS] [SECONDS] [ROUNDS] [BASE]     (from the repo root)
#
# The old server is BASE's src/ with this tree's bench harness (bench/streams.py,
# _streams_server.py, modes.py) and frame helpers copied in, so only the server differs.
# Writes bench/results/streams-issue19-ab-{old,new}N.{txt,json}.
set -euo pipefail
N=${1:-400}
D=${2:-6}
ROUNDS=${3:-2}
BASE=${4:-b4b3c9c}
ROOT=$(pwd)
OUT=$ROOT/bench/results
OLD=$(mktemp -d)
trap 'rm -rf "$OLD"' EXIT
git archive "$BASE" src | tar -x -C "$OLD"
cp src/recstream/bench/streams.py src/recstream/bench/_streams_server.py \
    src/recstream/bench/modes.py "$OLD/src/recstream/bench/"
cp src/recstream/streams/frames.py "$OLD/src/recstream/streams/"
for i in $(seq 1 "$ROUNDS"); do
    (cd "$OLD" && PYTHONPATH="$OLD/src" "$ROOT/.venv/bin/python" -m recstream bench streams \
        --streams "$N" --duration "$D" --keep-going --json "$OUT/streams-issue19-ab-old$i.json" \
        > "$OUT/streams-issue19-ab-old$i.txt" 2>&1)
    .venv/bin/python -m recstream bench streams --streams "$N" --duration "$D" --keep-going \
        --json "$OUT/streams-issue19-ab-new$i.json" > "$OUT/streams-issue19-ab-new$i.txt" 2>&1
done
grep -h "^$N " "$OUT"/streams-issue19-ab-*.txt
