#!/usr/bin/env bash
# Cloud TPU VM lifecycle for vidrd_jax: create (TPU VM or queued resource), install, run the same command on every
# worker (detached; worker 0's log streamed), follow logs, delete.  --dry-run prints the commands instead.
#
#   launch/tpu_vm.sh --name vidrd --zone us-east5-a --type v5p-128 create install
#   launch/tpu_vm.sh --name vidrd --zone us-east5-a run -- python -m vidrd_jax.train \
#       --config configs/tpu_pod.py:init_from=gs://bucket/ckpt/sd21_video --workdir gs://bucket/vidrd_pod
#   launch/tpu_vm.sh --name vidrd --zone us-east5-a logs          # re-attach to worker 0's log (Ctrl-C detaches)
#   launch/tpu_vm.sh --name vidrd --zone us-east5-a delete
set -euo pipefail

NAME="" ZONE="" TYPE="v5p-8" VERSION="v2-alpha-tpuv5" PROJECT="" SPOT=0 QUEUED=0 DRY=0 WORKER=0
REPO="" REF="main" JAX_VERSION="0.10.2"
REMOTE_DIR="vidrd_jax" LOG="vidrd_train.log" PIDFILE="vidrd_train.pid"
ACTIONS=() COMMAND=()

usage() {
  cat <<USAGE
usage: $0 --name NAME --zone ZONE [options] ACTION... [-- COMMAND...]
actions: create | install | run | logs | stop | delete   (several run in order, e.g. "create install")
options:
  --type TYPE        accelerator type (default $TYPE)        --version V   runtime version (default $VERSION)
  --project P        GCP project (default: gcloud's)          --spot        spot / preemptible capacity
  --queued           create through a queued resource (waits until ACTIVE)
  --repo URL --ref R git repository and ref to install (install needs --repo; ref default $REF)
  --jax V            jax version (default $JAX_VERSION)
  --worker N         worker whose log 'logs' follows (default 0)
  --dry-run          print the commands, run nothing
USAGE
  exit "${1:-0}"
}

while (($#)); do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --repo) REPO="$2"; shift 2 ;;
    --ref) REF="$2"; shift 2 ;;
    --jax) JAX_VERSION="$2"; shift 2 ;;
    --worker) WORKER="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; COMMAND=("$@"); break ;;
    create|install|run|logs|stop|delete) ACTIONS+=("$1"); shift ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ -n "$NAME" && -n "$ZONE" ]] || { echo "--name and --zone are required" >&2; usage 2; }
((${#ACTIONS[@]})) || { echo "no action given" >&2; usage 2; }

GCLOUD=(gcloud compute tpus)
COMMON=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project "$PROJECT")

run() {  # prints (dry run) or executes one command
  if ((DRY)); then printf '%q ' "$@"; echo; else "$@"; fi
}

ssh_all() {  # the same shell command on every worker
  run "${GCLOUD[@]}" tpu-vm ssh "$NAME" "${COMMON[@]}" --worker=all --command "$1"
}

create() {
  local capacity=()
  ((SPOT)) && capacity=(--spot)
  if ((QUEUED)); then
    run "${GCLOUD[@]}" queued-resources create "$NAME-qr" "${COMMON[@]}" --node-id "$NAME" \
      --accelerator-type "$TYPE" --runtime-version "$VERSION" "${capacity[@]}"
    if ((DRY)); then
      echo "# then poll until ACTIVE:"; run "${GCLOUD[@]}" queued-resources describe "$NAME-qr" "${COMMON[@]}" \
        --format='value(state.state)'
    else
      until [[ "$("${GCLOUD[@]}" queued-resources describe "$NAME-qr" "${COMMON[@]}" \
                  --format='value(state.state)')" == ACTIVE ]]; do sleep 30; done
    fi
  else
    run "${GCLOUD[@]}" tpu-vm create "$NAME" "${COMMON[@]}" --accelerator-type "$TYPE" --version "$VERSION" \
      "${capacity[@]}"
  fi
}

install() {
  [[ -n "$REPO" ]] || { echo "install: give --repo URL (the git repository holding vidrd_jax)" >&2; exit 2; }
  ssh_all "set -e; [ -d $REMOTE_DIR ] || git clone -q $REPO $REMOTE_DIR; git -C $REMOTE_DIR fetch -q origin $REF; \
git -C $REMOTE_DIR checkout -q FETCH_HEAD; cd $REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate && \
pip install -q -U pip && pip install -q -e . 'jax[tpu]==$JAX_VERSION' && \
python -c 'import jax; print(jax.process_index(), jax.device_count())'"
}

start() {  # detached on every worker, so a dropped ssh session does not stop training; then follow the log
  ((${#COMMAND[@]})) || { echo "run: give the command after --" >&2; exit 2; }
  local cmd
  cmd="$(printf '%q ' "${COMMAND[@]}")"
  ssh_all "cd $REMOTE_DIR && . .venv/bin/activate && (nohup $cmd > ~/$LOG 2>&1 < /dev/null & echo \$! > ~/$PIDFILE)"
  logs
}

logs() {
  run "${GCLOUD[@]}" tpu-vm ssh "$NAME" "${COMMON[@]}" --worker="$WORKER" --command "tail -n 200 -F ~/$LOG"
}

stop() {  # SIGTERM: the trainer saves a checkpoint at an agreed step and exits with status 75 ('run' again resumes)
  ssh_all "kill -TERM \$(cat ~/$PIDFILE)"
}

delete() {
  if ((QUEUED)); then
    run "${GCLOUD[@]}" queued-resources delete "$NAME-qr" "${COMMON[@]}" --force --quiet
  else
    run "${GCLOUD[@]}" tpu-vm delete "$NAME" "${COMMON[@]}" --quiet
  fi
}

for action in "${ACTIONS[@]}"; do
  case "$action" in
    create) create ;;
    install) install ;;
    run) start ;;
    logs) logs ;;
    stop) stop ;;
    delete) delete ;;
  esac
done
