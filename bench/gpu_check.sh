#!/usr/bin/env bash
# The prepared proof for a GPU machine: run it from the repository root as soon as a session is
# lent one (the device tool's `run`), and record what it prints last in bench/README.md.
#
#   bash bench/gpu_check.sh                 # at most about 8 minutes; a table is printed last
#
# Such a machine has PyTorch and no package index. The project's other dependencies travel with
# the repository as wheels: on a machine with the index, `bash bench/gpu_wheels.sh` writes them
# to build/gpu-wheels (carry that folder along); this script installs from it what is missing.
# The project itself is used from the source tree (PYTHONPATH), never installed there.
#
# On a machine without CUDA it runs too (the CUDA parts are reported as skipped): that is how it
# is tried on the development machine. $GPU_CHECK_BUDGET (seconds, default 480) bounds the run:
# a step that would start after it is reported as skipped for time.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BUDGET=${GPU_CHECK_BUDGET:-480}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
ROWS=()
row() { ROWS+=("$(printf '%-40s %-9s %s' "$1" "$2" "$3")"); echo "== $1: $2 $3"; }
left() { echo $((BUDGET - SECONDS)); }
limit() { local most=$1 room=$(( BUDGET - SECONDS - 10 )); echo $(( room < most ? (room > 1 ? room : 1) : most )); }
finish() {  # the table, last, however the script ends (a step's failure, a kill from outside)
    trap - EXIT TERM INT
    if [ -d "$WORK/home" ]; then $PY -m leuktui --home "$WORK/home" scheduler stop >/dev/null 2>&1; fi
    rm -rf "$WORK"
    echo
    echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS}s of a ${BUDGET}s budget"
    printf '%s\n' "${ROWS[@]}"
}
trap finish EXIT
trap 'row "interrupted" "-" "by a signal after ${SECONDS}s"; exit 1' TERM INT

# -- 1. dependencies ----------------------------------------------------------------------------
# module:package for what the check imports; only the missing ones are installed, so the
# machine's own numpy (the one its torch was built with) stays.
NEEDED="textual:textual textual_plotext:textual-plotext rich:rich sqlalchemy:sqlalchemy alembic:alembic PIL:pillow
numpy:numpy sklearn:scikit-learn scipy:scipy psutil:psutil filelock:filelock pynvml:nvidia-ml-py pytest:pytest
pytest_asyncio:pytest-asyncio"
missing_packages() {
    $PY -c 'import importlib.util, sys
print(" ".join(p.split(":")[1] for p in sys.argv[1].split() if importlib.util.find_spec(p.split(":")[0]) is None))' "$NEEDED"
}
missing=$(missing_packages)
if [ -n "$missing" ] && [ -d build/gpu-wheels ]; then
    for package in $missing; do  # one by one: a package that cannot go in leaves the others be
        $PY -m pip install --quiet --no-index --find-links build/gpu-wheels "$package" 2>&1 | grep -v "^WARNING" | tail -2
    done
    missing=$(missing_packages)
fi
if [ -n "$missing" ]; then row "dependencies" "MISSING" "$missing (bench/gpu_wheels.sh, where there is an index)"; else row "dependencies" "ok" ""; fi

CUDA=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
DEVICE=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu only')" 2>/dev/null)
TORCH=$($PY -c "import torch, platform; print(torch.__version__, 'CUDA', torch.version.cuda, '; Python', platform.python_version())" 2>/dev/null)
row "machine" "$CUDA GPU" "$DEVICE; torch $TORCH; $(nproc) CPUs"

# -- 2. the tests marked gpu --------------------------------------------------------------------
out=$(timeout "$(limit 180)" $PY -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rs 2>&1)
rc=$?
summary=$(echo "$out" | tail -1)
if [ $rc = 124 ]; then row "tests marked gpu" "TIMEOUT" "$summary"
elif [ "$CUDA" = 0 ] && { [ $rc = 0 ] || [ $rc = 5 ]; }; then row "tests marked gpu" "skipped" "$summary (no CUDA)"
elif [ $rc = 0 ] && echo "$summary" | grep -q "passed"; then row "tests marked gpu" "ok" "$summary"
else row "tests marked gpu" "FAILED" "rc $rc: $summary"; echo "$out" | tail -30; fi

# -- 3. one run on two processes (DDP) ----------------------------------------------------------
$PY -m leuktui data synth "$WORK/cells" --n-train 64 --n-valid 32 --n-test 8 --size 64 >/dev/null
if [ "$(left)" -gt 60 ]; then
    if [ "$CUDA" != 0 ]; then where="on one GPU (gloo: NCCL takes a GPU per process)"; else where="on the CPU (gloo)"; fi
    timeout "$(limit 150)" env LEUKTUI_SHARE_GPUS=1 $PY -m leuktui --home "$WORK/ddp" run --data-dir "$WORK/cells" --image-size 64 \
        --epochs 2 --batch-size 16 --nproc 2 --name ddp >"$WORK/ddp.log" 2>&1
    result=$($PY -m leuktui --home "$WORK/ddp" ls --json | $PY -c "
import json, sys
runs = json.load(sys.stdin)
ok = len(runs) == 1 and runs[0]['status'] == 'completed'
print(f\"{runs[0]['status'] if runs else 'no run'}, val acc {runs[0].get('best_val_acc') if runs else '-'}\")
sys.exit(0 if ok else 1)")
    if [ $? = 0 ] && grep -q "rank 1/2" "$WORK/ddp/runs/1/train.log"; then row "DDP, 2 processes $where" "ok" "$result"
    else row "DDP, 2 processes $where" "FAILED" "$result"; tail -20 "$WORK/ddp.log"; tail -20 "$WORK/ddp/runs/1/train.log" 2>/dev/null; fi
else
    row "DDP, 2 processes" "skipped" "out of time"
fi

# -- 4. the scheduler, two runs at once ---------------------------------------------------------
if [ "$(left)" -gt 60 ]; then
    for seed in 0 1; do
        $PY -m leuktui --home "$WORK/home" queue --data-dir "$WORK/cells" --image-size 64 --epochs 2 --batch-size 16 \
            --seed $seed --no-start --force >/dev/null
    done
    if [ "$CUDA" != 0 ]; then share="--per-gpu 2"; want=cuda; else share="--max-parallel 2"; want=cpu; fi
    timeout "$(limit 240)" $PY -m leuktui --home "$WORK/home" scheduler start --foreground --idle-timeout 3 $share >"$WORK/scheduler.log" 2>&1
    result=$($PY -m leuktui --home "$WORK/home" ls --json | $PY -c "
import json, sys
runs = json.load(sys.stdin)
print(' '.join(f\"{r['id']}:{r['status']}@{r['device']}\" for r in runs))
done = len(runs) == 2 and all(r['status'] == 'completed' for r in runs)
together = done and max(r['started_at'] for r in runs) < min(r['finished_at'] for r in runs)  # at the same time
where = done and all((r['device'] or '').startswith('$want') for r in runs)
print('at once' if together else 'NOT at once', 'on $want' if where else 'NOT all on $want')
sys.exit(0 if done and together and where else 1)")
    if [ $? = 0 ]; then row "scheduler, 2 runs ($share)" "ok" "$(echo $result)"; else
        row "scheduler, 2 runs ($share)" "FAILED" "$(echo $result)"; tail -20 "$WORK/scheduler.log"
        for id in 1 2; do $PY -m leuktui --home "$WORK/home" cancel $id >/dev/null 2>&1; done
    fi
else
    row "scheduler, 2 runs" "skipped" "out of time"
fi

# -- 5. throughput ------------------------------------------------------------------------------
throughput() {  # model size batch compile seconds images steps -> "eager / compiled img/s"
    local line count
    line=$(timeout "$(limit "$5")" $PY bench/train_throughput.py --engine-only --model "$1" --size "$2" --batch-size "$3" \
           --images "$6" --steps "$7" --warmup 3 $4 2>&1 | grep "img/s" | sed 's/.*: *\([0-9.]*\) img\/s.*/\1/' | paste -sd/ -)
    count=$(echo "$line" | tr '/' '\n' | grep -c .)
    if [ -z "$line" ]; then echo "failed or timed out"
    elif [ -n "$4" ] && [ "$count" -lt 2 ]; then echo "$line / compiled: timed out"
    else echo "$line"; fi
}
if [ "$CUDA" != 0 ]; then
    for spec in "resnet18 450 128" "resnet50 450 64" "resnet152 450 32" "resnet50 224 256"; do
        set -- $spec
        if [ "$(left)" -gt 90 ]; then
            row "train img/s $1 $2 px (eager/compiled)" "ok" "$(throughput "$1" "$2" "$3" --compile 170 1024 30)"
        else
            row "train img/s $1 $2 px" "skipped" "out of time"
        fi
    done
else
    row "train img/s resnet18 64 px (CPU)" "ok" "$(throughput resnet18 64 16 "" 120 64 4) (a CPU figure, not the GPU's)"
fi

# (the table: finish, on exit)
