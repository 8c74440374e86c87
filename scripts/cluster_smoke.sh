#!/usr/bin/env bash
# Smoke test on a REAL Kubernetes cluster with Volcano installed: submits a two-node vipr
# pre-training job (2 pods x 1 process, tiny backbone, one epoch of built-in shapes), waits
# for it to finish, prints the master pod's log, and deletes the job (KEEP=1 keeps it).
#
# It cannot run on vipr's development machines (no API server and no container engine
# there), so nothing in CI runs it: it is for users who have a cluster. It needs kubectl
# access (a kubeconfig), Volcano (the vcjob CRD and an Open queue), an image with this vipr
# installed, and `pip install 'vipr[cluster]'` here.
#
#   IMAGE=registry.example.com/vipr:0.1.0 [NAMESPACE=default] [QUEUE=default] \
#   [WORKSPACE_PVC=claim] [TIMEOUT_S=1800] scripts/cluster_smoke.sh
set -euo pipefail

: "${IMAGE:?set IMAGE to a container image with vipr installed}"
NAMESPACE=${NAMESPACE:-default}
QUEUE=${QUEUE:-default}
NAME=${NAME:-vipr-smoke-$(date +%m%d-%H%M%S)}
TIMEOUT_S=${TIMEOUT_S:-1800}  # seconds to wait for the job, image pulls and gang scheduling included

sets=(resources.nodes=2 resources.cpu=1 resources.memory=2Gi "queue=$QUEUE" timeout=20m retry.max_retries=0)
if [ -n "${WORKSPACE_PVC:-}" ]; then sets+=("volumes.workspace_pvc=$WORKSPACE_PVC"); fi
cmd=(vipr pretrain --data "builtin:shapes?train=200&test=50&size=16" --backbone tiny --image-size 16 --epochs 1
     --batch-size 20 --no-progress --set method.queue_size=40 method.proj_hidden_dim=16 method.proj_dim=8)
job=(--backend volcano --namespace "$NAMESPACE")

vipr job submit "${job[@]}" --image "$IMAGE" --name "$NAME" --set "${sets[@]}" -- "${cmd[@]}"
deadline=$((SECONDS + TIMEOUT_S))
state=queued
while :; do
  state=$(vipr job show "$NAME" "${job[@]}" --json | python -c 'import json, sys; print(json.load(sys.stdin)["state"])')
  case $state in succeeded|failed|cancelled) break ;; esac
  if [ "$SECONDS" -ge "$deadline" ]; then echo "cluster_smoke: gave up after ${TIMEOUT_S}s (state $state)" >&2; break; fi
  sleep 10
done
vipr job logs "$NAME" "${job[@]}" || true  # a job that never started has no log
echo "cluster_smoke: job $NAME in namespace $NAMESPACE: $state"
if [ -z "${KEEP:-}" ]; then vipr job delete "$NAME" "${job[@]}" > /dev/null; fi
[ "$state" = succeeded ]
