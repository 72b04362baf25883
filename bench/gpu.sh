#!/usr/bin/env bash
# The GPU run of issue 20 (item 5): on a machine with an NVIDIA GPU, in under 8 minutes, install what the
# bench needs and run bench/e2e.py (through its CLI only) for
#   Spark-TTS on vllm (CUDA, bf16), on torch (bf16, static cache: the decode step compiled and replayed
#   as a CUDA graph) and on sglang when bench/e2e.py lists it and it installs; Orpheus and MegaTTS3 on torch;
# then print RTF, first audio and aggregate audio seconds per wall second at c=1/16/64 from the JSONs.
#
#   bench/gpu.sh                  # the GPU run (a venv in $VENV, checkpoints in $CACHE, JSONs in $OUT)
#   bench/gpu.sh --dry-run        # print every step and check the e2e flags it uses exist; runs nothing heavy
#   bench/gpu.sh --cpu            # the same invocations on the tiny models, on this CPU, in this Python
#                                 # (no install): proves the script's logic in about two minutes
#   WHEELS=/path bench/gpu.sh     # install offline from a wheelhouse (pip --no-index --find-links)
#
# Environment: VENV (default ~/.cache/flashtts/gpu-venv), CACHE (~/.cache/flashtts/bench), OUT
# (./bench-gpu), PYTHON (the interpreter that makes the venv, or runs everything with --cpu),
# STEP_TIMEOUT (seconds per bench step, default 150).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry ;;
    --cpu) MODE=cpu ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

VENV="${VENV:-$HOME/.cache/flashtts/gpu-venv}"
CACHE="${CACHE:-$HOME/.cache/flashtts/bench}"
OUT="${OUT:-$PWD/bench-gpu}"
STEP_TIMEOUT="${STEP_TIMEOUT:-150}"
START=$SECONDS

if [ "$MODE" = cpu ]; then
  PY="${PYTHON:-python3}"
  SIZE=(--size tiny)
  CONC=1,2
  DEVICE=(--llm_device cpu --tokenizer_device cpu --detokenizer_device cpu)
  CACHE="$OUT/cache"
else
  PY="$VENV/bin/python"
  SIZE=(--size full)
  CONC=1,16,64
  DEVICE=(--llm_device cuda --tokenizer_device cuda --detokenizer_device cuda)
fi
E2E=("$PY" "$ROOT/bench/e2e.py" "${SIZE[@]}" --cache "$CACHE" --load-timeout 300)

say() { printf '\n[gpu.sh %4ds] %s\n' "$((SECONDS - START))" "$*"; }

# run NAME CMD...: print it; in the dry run stop there; else run it time-boxed (a failure is reported,
# the next step still runs: one backend that does not install must not cost the others).
run() {
  local name="$1"; shift
  say "$name: $(printf '%q ' "$@")"
  [ "$MODE" = dry ] && return 0
  if ! timeout "$STEP_TIMEOUT" "$@"; then
    echo "[gpu.sh] $name failed or ran past ${STEP_TIMEOUT} s (its server log is under $OUT/bench-e2e-logs)" >&2
  fi
}

pip_install() {
  if [ -n "${WHEELS:-}" ]; then
    "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "$@"
  else
    "$VENV/bin/pip" install -q "$@"
  fi
}

# -- the machine ---------------------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: use --cpu or --dry-run here" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
mkdir -p "$OUT"

# -- install (vllm's CUDA wheel brings its CUDA torch; the project packages editable on top) -------------
PACKAGES=(-e "$ROOT/packages/flashtts-core" -e "$ROOT/packages/flashtts-backends[torch,vllm]"
  -e "$ROOT/packages/flashtts-spark" -e "$ROOT/packages/flashtts-orpheus" -e "$ROOT/packages/flashtts-mega"
  -e "$ROOT/packages/flashtts-server" httpx soundfile)
if [ "$MODE" = gpu ]; then
  say "install: ${PYTHON:-python3} -m venv $VENV; pip install vllm, then the project packages"
  [ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV"
  pip_install -U pip
  pip_install vllm
  pip_install "${PACKAGES[@]}"
  "$PY" -c 'import torch, vllm; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "vllm", vllm.__version__)'
elif [ "$MODE" = dry ]; then
  say "install (skipped in the dry run): python -m venv $VENV; pip install vllm; pip install ${PACKAGES[*]}"
  PY="${PYTHON:-python3}"
  E2E[0]="$PY"
fi

# -- check: every bench/e2e.py flag used below exists (its CLI is all this script relies on) ----------
HELP="$("$PY" "$ROOT/bench/e2e.py" --help)"
for flag in --size --cache --load-timeout --models --backends --durations --concurrency --torch-dtype --server-args \
  --json --orpheus-durations --orpheus-concurrency --mega-concurrency --mega-dtype; do
  grep -q -- "$flag" <<<"$HELP" || { echo "bench/e2e.py has no $flag any more: update bench/gpu.sh" >&2; exit 1; }
done
SGLANG=no
grep -q 'sglang' <<<"$(sed -n '/--backends/,/--durations/p' <<<"$HELP")" && SGLANG=yes
say "bench/e2e.py accepts every flag used here; sglang entry in --backends: $SGLANG"

# -- the runs ------------------------------------------------------------------------------------
GPU_FLAGS=("${DEVICE[@]}" --torch_dtype bfloat16)
run "spark-vllm" "${E2E[@]}" --models spark --backends vllm --durations 5 --concurrency "$CONC" \
  --server-args "${GPU_FLAGS[*]} --llm_gpu_memory_utilization 0.5" --json "$OUT/spark-vllm.json"
run "spark-torch" "${E2E[@]}" --models spark --backends torch --torch-dtype bfloat16 --durations 5 \
  --concurrency "$CONC" --server-args "${GPU_FLAGS[*]} --cache_implementation static" --json "$OUT/spark-torch.json"
if [ "$SGLANG" = yes ]; then
  if [ "$MODE" = gpu ]; then  # its own venv: sglang pins a torch of its own
    say "install sglang (time-boxed; skipped if it does not install)"
    if timeout 240 bash -c "'${PYTHON:-python3}' -m venv '$VENV-sglang' && VENV='$VENV-sglang' && \
        '$VENV-sglang/bin/pip' install -q 'sglang[all]' ${PACKAGES[*]}"; then
      run "spark-sglang" "$VENV-sglang/bin/python" "${E2E[@]:1}" --models spark --backends sglang --durations 5 \
        --concurrency "$CONC" --server-args "${GPU_FLAGS[*]} --llm_gpu_memory_utilization 0.5" \
        --json "$OUT/spark-sglang.json"
    else
      echo "[gpu.sh] sglang did not install: skipped" >&2
    fi
  else
    run "spark-sglang" "${E2E[@]}" --models spark --backends sglang --durations 5 --concurrency "$CONC" \
      --server-args "${GPU_FLAGS[*]}" --json "$OUT/spark-sglang.json"
  fi
else
  say "spark-sglang: skipped (bench/e2e.py lists no sglang backend yet; this step runs once it does)"
fi
run "orpheus-torch" "${E2E[@]}" --models orpheus --backends torch --torch-dtype bfloat16 --orpheus-durations 5 \
  --orpheus-concurrency "$CONC" --server-args "${GPU_FLAGS[*]}" --json "$OUT/orpheus-torch.json"
run "mega-torch" "${E2E[@]}" --models mega --backends torch --mega-dtype bfloat16 --mega-concurrency "$CONC" \
  --server-args "${DEVICE[*]}" --json "$OUT/mega-torch.json"

# -- the summary ---------------------------------------------------------------------------------
say "summary (from $OUT/*.json)"
[ "$MODE" = dry ] && { echo "(dry run: nothing measured; every step above would run)"; exit 0; }
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

def cell(value, spec=".2f"):
    return "-" if value is None else format(value, spec)

rows = []
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    report = json.loads(path.read_text())
    for section in ("results", "orpheus", "mega"):
        results = report.get(section) or []
        if isinstance(results, dict):
            results = results.get("results", [])
        for r in results:
            rtf = r.get("rtf") or {}
            rows.append((path.stem, r.get("status", "?"), rtf, r.get("first_audio_s"), r.get("aggregate") or {}))
concurrency = sorted({int(c) for *_, agg in rows for c in agg})
print(f"{'run':16s}{'RTF (c=1)':>22s}{'1st audio s':>13s}" + "".join(f"{'x RT c=' + str(c):>12s}" for c in concurrency))
for name, status, rtf, first, agg in rows:
    rtf_text = " ".join(f"{k}:{v:.3f}" for k, v in rtf.items()) or "-"
    line = f"{name:16s}{rtf_text:>22s}{cell(first):>13s}" + "".join(f"{cell(agg.get(str(c))):>12s}" for c in concurrency)
    print(line + ("" if status == "ok" else f"  {status[:120]}"))
print("RTF: wall / audio seconds (Spark/Orpheus: per seconds of audio; Mega: per route); x RT: audio s per wall s")
EOF
say "done in $((SECONDS - START)) s"
