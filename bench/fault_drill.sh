#!/usr/bin/env bash
# Fault drill: try each fault a careless user (or a scheduler) causes on a small real
# search (configs/quickstart.yaml's teacher and data, in-process, no attack) and print, per fault,
# the exit code, the seconds until it, and the last line of stderr. Run from the repository root
# after `bash scripts/setup.sh` and `rosearch teacher --config configs/quickstart.yaml`:
#   bash bench/fault_drill.sh [WORKDIR]        (default WORKDIR: a fresh mktemp -d)
set -u
PY=${PY:-.venv/bin/python}
W=${1:-$(mktemp -d)}
mkdir -p "$W"
CFG=configs/quickstart.yaml
SMALL=(--set workers.backend=inprocess --set attack.enabled=false --set run.device=cpu --set run.num_threads=1
       --set evolution.population_size=4 --set evolution.generations=2 --set distill.max_steps=30
       --set "run.output_dir=$W/runs")
rosearch() { "$PY" -m rosearch.cli "$@"; }
try() {  # try NAME CMD... : run CMD, report rc, seconds and the last stderr line
    local name=$1; shift
    local start=$SECONDS
    "$@" >"$W/$name.out" 2>"$W/$name.err"
    local rc=$?
    printf '%-22s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - start))" "$(grep -v '^\s*$' "$W/$name.err" | tail -1 | cut -c1-220)"
}
count() { "$PY" - "$1" <<'EOF'
import sqlite3, sys
print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro&immutable=1", uri=True).execute("SELECT COUNT(*) FROM candidates").fetchone()[0])
EOF
}

echo '{"mine": true}' >"$W/runs-parent-config.json"; mkdir -p "$W/runs"; cp "$W/runs-parent-config.json" "$W/config.json"
try name-dotdot rosearch search -c $CFG "${SMALL[@]}" --set run.name=..
cmp -s "$W/config.json" "$W/runs-parent-config.json" && echo "   user's config.json next to runs/: untouched"
try lr-inf rosearch search -c $CFG "${SMALL[@]}" --set distill.learning_rate=.inf
try max-length-1000 rosearch search -c $CFG "${SMALL[@]}" --set data.max_length=1000
try readonly-output rosearch search -c $CFG "${SMALL[@]}" --set run.output_dir=/sys/rosearch-runs
printf 'run:\n  name: caf\xe9\n' >"$W/latin1.yaml"
try non-utf8-config rosearch search -c "$W/latin1.yaml"
try attack-no-model rosearch attack --model /nonexistent
try attack-bad-recipe rosearch attack --model /nonexistent --recipe bogus
"$PY" - "$W/big.json" <<'EOF'
import dataclasses, json, random, sys
from rosearch.config import load_config
from rosearch.search_space.sampling import sample_genome
space = dataclasses.replace(load_config("configs/quickstart.yaml").search_space, param_budget=None)
genome = sample_genome(random.Random(0), space).to_dict()
json.dump(genome | {"hidden_size": 16384}, open(sys.argv[1], "w"))
EOF
try genome-h16384 /usr/bin/time -f "peak RSS %M KB" "$PY" -m rosearch.cli distill -c $CFG "${SMALL[@]}" \
    --set "search_space.hidden_sizes=[128,256,16384]" --set search_space.param_budget=null --genome "$W/big.json"
try genome-over-budget rosearch distill -c $CFG "${SMALL[@]}" --set "search_space.hidden_sizes=[128,256,16384]" --genome "$W/big.json"
try genome-missing rosearch distill -c $CFG "${SMALL[@]}" --genome "$W/nope.json"

# a real run, a second driver, kill -9, a copy of results.sqlite alone, resume
DB=$W/runs/drill/results.sqlite
"$PY" -m rosearch.cli search -c $CFG "${SMALL[@]}" --set run.name=drill >"$W/first.out" 2>"$W/first.err" &
FIRST=$!
until [ -f "$DB" ] && [ "$(count "$DB" 2>/dev/null || echo 0)" -ge 2 ]; do sleep 1; kill -0 $FIRST 2>/dev/null || break; done
try second-driver rosearch search -c $CFG "${SMALL[@]}" --set run.name=drill --resume
kill -9 $FIRST; wait $FIRST 2>/dev/null
mkdir -p "$W/archive"; cp "$DB" "$W/archive/results.sqlite"
echo "   kill -9 after $(count "$DB") finished candidates (live file); copy of results.sqlite alone: $(count "$W/archive/results.sqlite")"
try stats-archive rosearch stats "$W/archive" --out "$W/archive-stats"
try resume rosearch search -c $CFG "${SMALL[@]}" --set run.name=drill --resume
echo "   after resume: $(count "$DB") candidates; $(grep -o '"reused": [0-9]*' "$W/runs/drill/summary.json")"
try snapshot rosearch snapshot "$W/runs/drill" "$W/snap.sqlite"

# read-only copy (as nobody when root: root ignores file modes)
RO=$(mktemp -d); chmod 755 "$RO"; cp -r "$W/runs/drill" "$RO/run"; rm -f "$RO/run"/results.sqlite-*
chmod -R a-w "$RO/run"; mkdir -m 777 "$RO/out"
AS=(); [ "$(id -u)" = 0 ] && AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
try readonly-stats env HOME="$RO/out" "${AS[@]}" "$PY" -m rosearch.cli stats "$RO/run" --out "$RO/out/stats"
try readonly-report env HOME="$RO/out" MPLCONFIGDIR="$RO/out/mpl" "${AS[@]}" "$PY" -m rosearch.cli report "$RO/run" --out "$RO/out/r.html"

# a damaged store
cp -r "$W/runs/drill" "$W/runs/damaged"; rm -f "$W/runs/damaged"/results.sqlite-*
"$PY" - "$W/runs/damaged/results.sqlite" <<'EOF'
import sys
path = sys.argv[1]
raw = bytearray(open(path, "rb").read())
raw[4096:-4096] = bytes(len(raw) - 8192)  # zero every page but the first and last
open(path, "wb").write(raw)
EOF
try damaged-resume rosearch search -c $CFG "${SMALL[@]}" --set run.name=damaged --resume
try damaged-stats rosearch stats "$W/runs/damaged"

# every candidate fails (a finite but absurd learning rate: the loss goes non-finite)
try all-failed rosearch search -c $CFG "${SMALL[@]}" --set run.name=diverge --set evolution.generations=1 \
    --set distill.learning_rate=1.0e+30 --set workers.max_retries=0
echo "workdir: $W"
