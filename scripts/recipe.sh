#!/usr/bin/env bash
# Run a recipe as `make recipe` does (in .venv, or in the recipe's pinned image) and exit with ftkit's own code.
#
#   scripts/recipe.sh NAME=llama8b-qlora-dpo PROFILE=smoke [SET='sft.max_steps=4 report_to=none'] [ALLOW_PII=1]
#                     [FORCE=1] [IMAGE=1 | LOCAL=1] [RESUME=runs/<recipe>/<run>] [RUNS_DIR=runs] [VERBOSE=1]
#                     [NODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 [MASTER_PORT=29400] [RDZV_ID=run1]
#                      CHECKPOINT_DIR=/shared/ckpt/run1]   (one node of a multi-node run: docs/multi-node.md)
#
# `make recipe` runs this script, but GNU make exits 2 whenever a command fails (0, 1 for `make -q`, 2 are its only
# statuses); it names the command's status in its error line instead: "make: *** [Makefile:NN: recipe] Error 6".
# Call this script where the exit status itself must be ftkit's. Either way the last line says the code, what it
# means and the next command, and the code is written to RUNS_DIR/last-exit-code and <run dir>/exit-code.
#
# Codes (ftkit's): 0 passed, 1 a bound of expected-metrics.yaml failed, 2 bad arguments or recipe files,
# 3 invalid data (training did not start), 4 the engine failed, 5 this machine cannot run it,
# 6 stopped at a checkpoint (RESUME=<run dir> continues it). It runs in the checkout's root, as make does: relative
# RESUME and RUNS_DIR paths are relative to it.
set -uo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/recipe.sh NAME=<recipe> [PROFILE=smoke|full] [SET='k=v …'] [ALLOW_PII=1] [FORCE=1] \
[IMAGE=1|LOCAL=1] [RESUME=<run dir>] [RUNS_DIR=runs] [VERBOSE=1] [NODES=N NODE_RANK=R MASTER_ADDR=A \
[MASTER_PORT=P] [RDZV_ID=ID] CHECKPOINT_DIR=<shared dir>]"
for arg in "$@"; do
  case $arg in
    NAME=*|PROFILE=*|SET=*|ALLOW_PII=*|FORCE=*|IMAGE=*|LOCAL=*|RESUME=*|RUNS_DIR=*|VERBOSE=*|NODES=*|NODE_RANK=*|\
    MASTER_ADDR=*|MASTER_PORT=*|RDZV_ID=*|CHECKPOINT_DIR=*) export "${arg%%=*}=${arg#*=}" ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; echo "exit 2: bad arguments ('$arg')" >&2; exit 2 ;;
  esac
done
NAME=${NAME:-} PROFILE=${PROFILE:-} SET=${SET:-} ALLOW_PII=${ALLOW_PII:-} FORCE=${FORCE:-}
IMAGE=${IMAGE:-} LOCAL=${LOCAL:-} RESUME=${RESUME:-} RUNS_DIR=${RUNS_DIR:-runs} VERBOSE=${VERBOSE:-}
NODES=${NODES:-} NODE_RANK=${NODE_RANK:-} MASTER_ADDR=${MASTER_ADDR:-} MASTER_PORT=${MASTER_PORT:-} RDZV_ID=${RDZV_ID:-}
CHECKPOINT_DIR=${CHECKPOINT_DIR:-}
PYTHON=${PYTHON:-python3} FTKIT=${FTKIT:-.venv/bin/ftkit}
RECIPES=${FTKIT_RECIPES:-$PWD/recipes}
front=${RECIPE_FRONT:-scripts/recipe.sh}  # how the next command starts: `make recipe` sets RECIPE_FRONT
run_dir=""

meaning() {
  case $1 in
    0) echo "passed: every bound of expected-metrics.yaml held" ;;
    1) echo "a bound of expected-metrics.yaml failed (the table above)" ;;
    2) echo "bad arguments or recipe files (the problem is named above)" ;;
    3) echo "invalid data: training did not start (the rows are named above)" ;;
    4) echo "the training engine failed (its error is above)" ;;
    5) echo "this machine cannot run it" ;;
    6) echo "stopped at a checkpoint: the run can be resumed" ;;
    130|143) echo "stopped by a signal before a checkpoint was saved" ;;
    *) echo "unexpected (not one of ftkit's codes; the output above says more)" ;;
  esac
}

# CODE [NEXT]: the code into the files, then the last line (code, meaning, run dir, next command), then exit CODE.
finish() {
  local code=$1 next=${2:-}
  { mkdir -p "$RUNS_DIR" && echo "$code" > "$RUNS_DIR/last-exit-code"; } 2>/dev/null
  if [ -n "$run_dir" ] && [ -d "$run_dir" ]; then echo "$code" > "$run_dir/exit-code" 2>/dev/null; fi
  echo "exit $code: $(meaning "$code")${run_dir:+ [$run_dir]}${next:+ -- next: $next}" >&2
  exit "$code"
}

# The same command with NAME/PROFILE/SET/IMAGE as given (for "fix it, then run it again").
again() {
  local cmd="$front NAME=$NAME PROFILE=$PROFILE" q="'" sq="'\\''"
  if [ -n "$SET" ]; then cmd+=" SET='${SET//$q/$sq}'"; fi
  if [ -n "$ALLOW_PII" ]; then cmd+=" ALLOW_PII=1"; fi
  if [ -n "$IMAGE" ]; then cmd+=" IMAGE=1"; fi
  echo "$cmd"
}

if [ -n "$RESUME" ]; then  # the run's own recipe and profile, from its metrics.json
  [ -f "$RESUME/metrics.json" ] || { echo "RESUME=$RESUME: no metrics.json there (a run dir under $RUNS_DIR/)" >&2
    finish 2 "$front RESUME=$RUNS_DIR/<recipe>/<run dir>"; }
  read -r r_name r_profile r_dir < <("$PYTHON" -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(m.get("recipe", ""), m.get("profile", ""), m.get("recipe_dir", ""))' "$RESUME/metrics.json")
  NAME=${NAME:-$r_name} PROFILE=${PROFILE:-$r_profile}
  if [[ ${r_dir:-} == /opt/ftkit/* ]] && [ -z "$LOCAL" ]; then IMAGE=1; fi  # it ran in the image: resume it there
fi
PROFILE=${PROFILE:-full}
if [ -z "$NAME" ]; then
  echo "$usage" >&2
  finish 2 "$front NAME=<one of: $(ls "$RECIPES" 2>/dev/null | grep -v README | paste -sd ' ')> PROFILE=smoke"
fi
if [ "$PROFILE" != "smoke" ] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "No NVIDIA GPU found: the '$PROFILE' profile of $NAME needs one." >&2
  echo "Run the CPU smoke profile instead (same engine config, small model, few steps)." >&2
  finish 5 "$front NAME=$NAME PROFILE=smoke"
fi
if [ -n "$IMAGE" ] && ! docker info >/dev/null 2>&1; then
  echo "IMAGE=1 runs the recipe in its image, but no Docker engine answers here." >&2
  finish 5 "make docker-engine, then $(again)"
fi

args=(recipe run "$NAME" --profile "$PROFILE")
for s in $SET; do args+=(--set "$s"); done
[ -n "$ALLOW_PII" ] && args+=(--allow-pii)
[ -n "$FORCE" ] && args+=(--force)
[ -n "$VERBOSE" ] && args+=(--verbose)  # the libraries' own messages on the terminal too (default: runner.log)
[ -n "$CHECKPOINT_DIR" ] && args+=(--checkpoint-dir "$CHECKPOINT_DIR")
if [ -n "$NODES" ]; then  # this machine's share of a multi-node run; ftkit checks the values (exit 2)
  args+=(--nodes "$NODES" --node-rank "${NODE_RANK:-0}")
  [ -n "$MASTER_ADDR" ] && args+=(--master-addr "$MASTER_ADDR")
  [ -n "$MASTER_PORT" ] && args+=(--master-port "$MASTER_PORT")
  [ -n "$RDZV_ID" ] && args+=(--rdzv-id "$RDZV_ID")
fi
mkdir -p "$RUNS_DIR"
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT

if [ -n "$IMAGE" ] || { [ -z "$LOCAL" ] && [ "$PROFILE" != "smoke" ] && docker info >/dev/null 2>&1; }; then
  if [ -n "$RESUME" ]; then  # the run dir as the container sees it: RUNS_DIR is mounted at /workspace/runs
    rel=$(realpath -m --relative-to="$RUNS_DIR" "$RESUME")
    [[ $rel == ../* ]] && { echo "RESUME=$RESUME is not under RUNS_DIR=$RUNS_DIR (mounted in the image)" >&2
      finish 2 "$front RESUME=$RUNS_DIR/<recipe>/<run dir> IMAGE=1"; }
    args+=(--resume "runs/$rel")
  fi
  image=$(PYTHONPATH=tools "$PYTHON" -m ftkit.image_refs "$RECIPES/$NAME/recipe.yaml") || finish 2 "$(again)"
  hf=${HF_HOME:-$HOME/.cache/huggingface}; mkdir -p "$hf"
  gpus=$(nvidia-smi -L >/dev/null 2>&1 && echo "--gpus all"); tty=$([ -t 1 ] && echo "-t")
  nodes=()  # a multi-node run: the host's network (the rendezvous and NCCL/gloo) and the shared checkpoint dir
  if [ -n "$NODES" ]; then nodes=(--network host -e NCCL_SOCKET_IFNAME -e GLOO_SOCKET_IFNAME); fi
  if [ -n "$CHECKPOINT_DIR" ]; then mkdir -p "$CHECKPOINT_DIR"; nodes+=(-v "$(realpath "$CHECKPOINT_DIR"):$(realpath "$CHECKPOINT_DIR")"); fi
  echo "running $NAME ($PROFILE) in $image (LOCAL=1 runs it in .venv instead)"
  # shellcheck disable=SC2086  # $gpus and $tty are zero or more words
  docker run --rm $gpus $tty "${nodes[@]}" --ipc=host --user "$(id -u):$(id -g)" -e HOME=/tmp -e HF_TOKEN \
    -e FTKIT_IMAGE_DIGEST="$(case $image in *@*) echo "${image##*@}";; esac)" \
    -e FTKIT_GIT_COMMIT="$(PYTHONPATH=tools "$PYTHON" -c 'from ftkit.envinfo import git_commit; print(git_commit())')" \
    -e HF_HOME=/cache/huggingface -v "$hf:/cache/huggingface" \
    -v "$(realpath "$RECIPES"):/opt/ftkit/recipes:ro" -v "$(realpath "$RUNS_DIR"):/workspace/runs" -w /workspace \
    --entrypoint ftkit "$image" "${args[@]}"
  code=$?
else
  if [ "$FTKIT" = .venv/bin/ftkit ]; then  # .venv from the hashed locks on first use, as every make target
    make -q .venv/.ftkit-installed 2>/dev/null || make --no-print-directory .venv/.ftkit-installed \
      || finish 5 "make setup, then $(again)"
  fi
  [ -n "$RESUME" ] && args+=(--resume "$RESUME")
  "$FTKIT" "${args[@]}" --runs-dir "$RUNS_DIR"
  code=$?
fi

# The run dir this command made (or resumed): ftkit names it runs/<recipe>/<time>-<profile>/.
if [ -n "$RESUME" ]; then
  run_dir=$RESUME
else
  run_dir=$(find "$RUNS_DIR/$(basename "$NAME")" -mindepth 1 -maxdepth 1 -type d -newer "$marker" 2>/dev/null \
    | sort | tail -n 1)
fi
case $code in
  0) finish 0 "${run_dir:+read $run_dir/report.md}" ;;
  1) finish 1 "${run_dir:+read $run_dir/report.md; the bounds are in $RECIPES/$NAME/expected-metrics.yaml}" ;;
  6) finish 6 "$front RESUME=$run_dir${IMAGE:+ IMAGE=1}" ;;
  *) finish "$code" "fix what is named above, then $(again)" ;;
esac
