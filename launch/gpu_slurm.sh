#!/usr/bin/env bash
# Multi-node GPU training with SLURM: one process per node driving all of its GPUs; jax.distributed.initialize()
# reads the SLURM environment (coordinator = first node). Writes an sbatch script and submits it; --dry-run prints the
# script and the commands instead.
#
#   launch/gpu_slurm.sh --nodes 4 --gpus-per-node 8 --partition a100 --venv ~/vidrd_jax/.venv -- \
#       python -m vidrd_jax.train --config configs/sd21_256.py:init_from=/ckpt/sd21_video --workdir /shared/vidrd_256
#
# Pre-emption / time limit: SLURM sends SIGTERM 5 minutes before the limit (--signal) and on pre-emption; JAX's
# pre-emption sync point makes every process save the same step and exit with status 75; the job then requeues
# itself (--requeue) and the next run resumes from that checkpoint. Any other non-zero status fails the job.
set -euo pipefail

NODES=1 GPUS=8 CPUS=32 TIME="24:00:00" PARTITION="" ACCOUNT="" JOB="vidrd" VENV=".venv" LOGDIR="slurm_logs" DRY=0
WORKDIR_REPO="$(cd "$(dirname "$0")/.." && pwd)"
COMMAND=()

usage() {
  cat <<USAGE
usage: $0 [options] -- COMMAND...
  --nodes N (default $NODES)   --gpus-per-node G (default $GPUS)   --cpus-per-task C (default $CPUS)
  --time HH:MM:SS (default $TIME)   --partition P   --account A   --job-name NAME (default $JOB)
  --venv DIR  virtualenv to activate on the nodes (default $VENV, relative to the repository)
  --logdir DIR  where SLURM writes the job logs (default $LOGDIR)
  --dry-run   print the sbatch script and command, submit nothing
USAGE
  exit "${1:-0}"
}

while (($#)); do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --gpus-per-node) GPUS="$2"; shift 2 ;;
    --cpus-per-task) CPUS="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --account) ACCOUNT="$2"; shift 2 ;;
    --job-name) JOB="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --logdir) LOGDIR="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; COMMAND=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
((${#COMMAND[@]})) || { echo "give the training command after --" >&2; usage 2; }

optional=""
[[ -n "$PARTITION" ]] && optional+="#SBATCH --partition=$PARTITION"$'\n'
[[ -n "$ACCOUNT" ]] && optional+="#SBATCH --account=$ACCOUNT"$'\n'
cmd="$(printf '%q ' "${COMMAND[@]}")"

script="#!/usr/bin/env bash
#SBATCH --job-name=$JOB
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --cpus-per-task=$CPUS
#SBATCH --time=$TIME
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --output=$LOGDIR/%x-%j.out
${optional}set -euo pipefail
cd $(printf '%q' "$WORKDIR_REPO")
. $(printf '%q' "$VENV")/bin/activate
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
# One task per node; JAX detects SLURM (coordinator on the first node, process id = task rank).
status=0
srun --kill-on-bad-exit=1 $cmd --config.distributed.mode=on || status=\$?
if [[ \$status -eq 75 ]]; then  # stopped by SIGTERM after saving a checkpoint: run again to resume
  echo \"pre-empted: checkpoint saved; requeueing job \$SLURM_JOB_ID\"
  scontrol requeue \"\$SLURM_JOB_ID\" || true
  exit 0
fi
exit \$status
"

file="$LOGDIR/$JOB.sbatch"
if ((DRY)); then
  echo "# $file:"
  echo "$script"
  printf '%q ' mkdir -p "$LOGDIR"; echo
  printf '%q ' sbatch "$file"; echo
else
  mkdir -p "$LOGDIR"
  echo "$script" > "$file"
  sbatch "$file"
fi
