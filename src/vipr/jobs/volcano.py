"""A JobSpec as a Volcano Job (``batch.volcano.sh/v1alpha1``), and Volcano Queues.

One pod per node: a ``master`` task (1 replica) and, for more than one node, a ``worker``
task (nodes - 1 replicas). All pods are one gang (``minAvailable`` = every replica), so a
job never holds half its nodes while it waits for the rest.

Launch: the ``pytorch`` plugin plus ``svc``, with torchrun's static rendezvous::

    torchrun --nnodes N --nproc-per-node P --node-rank "$RANK" --master-addr "$MASTER_ADDR"
             --master-port "$MASTER_PORT" -m vipr.cli.main pretrain ...

chosen over torchx's ``svc`` + ``env`` + c10d rendezvous because the plugin fixes the node
ranks: the master pod is node rank 0, so global rank 0 -- where vipr prints its result,
writes metrics and the checkpoint, and tracks the run -- is in the pod whose logs ``vipr job
logs`` streams and whose completion (TaskCompleted -> CompleteJob) ends the job. With c10d,
rank 0 may land on any pod. c10d's elastic membership buys nothing here: a failure restarts
the whole gang (RestartJob), which resumes the checkpoint. ``svc`` gives the headless
service that resolves the plugin's MASTER_ADDR (``<job>-master-0.<job>``). torchrun
overwrites the plugin's pod-level RANK / WORLD_SIZE with per-process values. One node with
several processes runs ``torchrun --standalone``; one process runs plain ``vipr``, and then
no plugin is set (nothing to rendezvous).

Timeout: Volcano's Job has no deadline field (platform-facts.md), but each task's template
is a full PodTemplateSpec, so ``timeout`` becomes every pod's ``activeDeadlineSeconds``
(per attempt: a restarted pod starts a new clock). Kubernetes reports a pod past its
deadline as failed, so on Volcano ``retry.on`` cannot tell ``timeout`` from ``failed``.

Retries: PodEvicted / PodFailed -> RestartJob when ``retry.on`` names them and
``max_retries`` > 0, else TerminateJob (stop every pod now rather than leave the other ranks
hanging on a dead peer). A resumable command is given ``--resume`` when its run folder
already holds ``checkpoint.pt``, so a restarted attempt continues instead of refusing the
folder. The run folder survives attempts only on the workspace volume.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import warnings
from typing import Any

import yaml

from vipr.errors import ConfigError
from vipr.jobs.kube import cpu_text, is_dns_subdomain, is_quantity
from vipr.jobs.spec import JobSpec, resumable

JOB_API, QUEUE_API = "batch.volcano.sh/v1alpha1", "scheduling.volcano.sh/v1beta1"
MASTER, WORKER, CONTAINER = "master", "worker", "vipr"
PORT = 23456  # the pytorch plugin's default rendezvous port
DATA_MOUNT, WORKSPACE_MOUNT, SHM_MOUNT = "/data", "/workspace", "/dev/shm"
LABELS = {"app.kubernetes.io/managed-by": "vipr"}  # lets `kubectl get vj -l ...` find vipr's jobs
LOCAL_STORES = ("sqlite:", "file:")  # tracking URIs naming this machine's disk, out of a pod's reach


class _Var(str):
    """A shell variable the pod sets (the pytorch plugin's RANK, MASTER_ADDR): expanded, never user text."""


def render_job(spec: JobSpec, namespace: str = "default", image: str | None = None) -> dict:
    """The Volcano Job manifest of ``spec`` (a plain dict; ``to_yaml`` prints it)."""
    image = image or spec.image
    if not image:
        raise ConfigError("no container image for the job: set 'image' in the spec or pass --image "
                          "(an image with this vipr installed)")
    _check_paths(spec)
    _warn(spec)
    nodes = spec.resources.nodes
    tasks = [_task(spec, MASTER, 1, image, master=True)]
    if nodes > 1:
        tasks.append(_task(spec, WORKER, nodes - 1, image, master=False))
    job: dict[str, Any] = {"schedulerName": "volcano", "queue": spec.queue, "minAvailable": nodes,
                           "maxRetry": spec.retry.max_retries}
    if spec.priority_class:
        job["priorityClassName"] = spec.priority_class
    if nodes > 1:
        job["plugins"] = {"pytorch": [f"--master={MASTER}", f"--worker={WORKER}", f"--port={PORT}"], "svc": []}
    job["policies"] = _policies(spec)
    job["tasks"] = tasks
    return {"apiVersion": JOB_API, "kind": "Job",
            "metadata": {"name": spec.name, "namespace": namespace, "labels": dict(LABELS)}, "spec": job}


def _policies(spec: JobSpec) -> list[dict]:
    retry = spec.retry

    def action(*reasons: str) -> str:
        return "RestartJob" if retry.max_retries > 0 and any(r in retry.on for r in reasons) else "TerminateJob"

    return [{"event": "PodEvicted", "action": action("evicted")},
            {"event": "PodFailed", "action": action("failed", "timeout")}]


def _task(spec: JobSpec, name: str, replicas: int, image: str, master: bool) -> dict:
    pod: dict[str, Any] = {"restartPolicy": "Never"}  # Volcano restarts the gang; a lone pod restart cannot rejoin
    if spec.timeout:
        pod["activeDeadlineSeconds"] = spec.timeout
    pod["containers"] = [_container(spec, image, master)]
    pod["volumes"] = _volumes(spec)
    task: dict[str, Any] = {"name": name, "replicas": replicas}
    if master:
        task["policies"] = [{"event": "TaskCompleted", "action": "CompleteJob"}]
    task["template"] = {"metadata": {"labels": dict(LABELS)}, "spec": pod}
    return task


def _container(spec: JobSpec, image: str, master: bool) -> dict:
    r = spec.resources
    amounts = {"cpu": cpu_text(r.cpu * r.processes_per_node), "memory": r.memory}
    if r.gpu:
        amounts["nvidia.com/gpu"] = str(r.gpu * r.processes_per_node)
    container: dict[str, Any] = {"name": CONTAINER, "image": image,
                                 "command": ["sh", "-c", container_script(spec, master)]}
    if spec.volumes.workspace_pvc:
        container["workingDir"] = WORKSPACE_MOUNT  # relative run folders land on the workspace volume
    container["env"] = [{"name": k, "value": v} for k, v in job_env(spec).items()]
    container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}  # equal: Guaranteed QoS
    container["volumeMounts"] = _mounts(spec)
    return container


def job_env(spec: JobSpec) -> dict[str, str]:
    """vipr's variables, then the spec's ``env`` (which wins)."""
    env = {"PYTHONUNBUFFERED": "1",  # log lines reach `vipr job logs` as they are printed
           "OMP_NUM_THREADS": str(max(1, int(spec.resources.cpu)))}  # the cores of one process: no thrashing
    if spec.volumes.workspace_pvc:
        env["VIPR_HOME"] = posixpath.join(WORKSPACE_MOUNT, ".vipr")
    uri = os.environ.get("VIPR_TRACKING_URI")
    if uri and ("://" not in uri or uri.startswith(LOCAL_STORES)):
        warnings.warn(f"VIPR_TRACKING_URI {uri} is a store on this machine, which the job's pods cannot reach: "
                      f"not passed on (use a tracking server's URI, or the workspace volume's VIPR_HOME)")
    elif uri:
        env["VIPR_TRACKING_URI"] = uri
    return {**env, **spec.env}


def launch_words(spec: JobSpec) -> list[str]:
    """The command each pod runs: plain vipr (1 process), torchrun --standalone (1 node), or a torchrun node."""
    r, args = spec.resources, list(spec.command[1:])
    if r.nodes == 1 and r.processes_per_node == 1:
        return ["vipr", *args]
    head = ["torchrun", "--nnodes", str(r.nodes), "--nproc-per-node", str(r.processes_per_node)]
    if r.nodes == 1:
        head.append("--standalone")
    else:
        head += ["--node-rank", _Var("RANK"), "--master-addr", _Var("MASTER_ADDR"), "--master-port",
                 _Var("MASTER_PORT")]
    return [*head, "-m", "vipr.cli.main", *args]


def container_script(spec: JobSpec, master: bool) -> str:
    """``sh -c`` text: --resume for a run folder with a checkpoint, the launch, the master's registration."""
    launch = " ".join(f'"${w}"' if isinstance(w, _Var) else shlex.quote(w) for w in launch_words(spec)) + ' "$@"'
    run_dir = spec.outputs.run_dir
    lines = []
    if resumable(spec) and spec.retry.max_retries > 0:
        lines.append(f"if [ -f {shlex.quote(posixpath.join(run_dir, 'checkpoint.pt'))} ]; then set -- --resume; fi")
    register = spec.outputs.register
    if not (master and register):
        return "\n".join([*lines, f"exec {launch}"])  # exec: SIGTERM reaches vipr, which saves its checkpoint
    words = ["vipr", "model", "register", run_dir, "--name", register.name]
    words += ["--alias", register.alias] if register.alias else []
    lines += ["trap 'kill -TERM \"$pid\"; wait \"$pid\"; exit 143' TERM  # pass a pod's stop on to vipr",
              f"{launch} &", "pid=$!", 'wait "$pid" || exit $?', f"exec {shlex.join(words)}"]
    return "\n".join(lines)


def _volumes(spec: JobSpec) -> list[dict]:
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]  # DataLoader workers' shared memory
    if spec.volumes.data_pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": spec.volumes.data_pvc,
                                                                  "readOnly": True}})
    if spec.volumes.workspace_pvc:
        volumes.append({"name": "workspace", "persistentVolumeClaim": {"claimName": spec.volumes.workspace_pvc}})
    return volumes


def _mounts(spec: JobSpec) -> list[dict]:
    mounts: list[dict] = [{"name": "dshm", "mountPath": SHM_MOUNT}]
    if spec.volumes.data_pvc:
        mounts.append({"name": "data", "mountPath": DATA_MOUNT, "readOnly": True})
    if spec.volumes.workspace_pvc:
        mounts.append({"name": "workspace", "mountPath": WORKSPACE_MOUNT})
    return mounts


def _under(path: str, root: str) -> bool:
    return posixpath.normpath(path) == root or posixpath.normpath(path).startswith(root + "/")


def _check_paths(spec: JobSpec) -> None:
    """Every input mount on a volume the job has; an absolute run folder on the workspace volume."""
    roots = {DATA_MOUNT: spec.volumes.data_pvc, WORKSPACE_MOUNT: spec.volumes.workspace_pvc}
    for i, item in enumerate(spec.inputs):
        if item.mount is None:
            continue
        root = next((r for r in roots if _under(item.mount, r)), None)
        if root is None or not roots[root]:
            raise ConfigError(f"inputs[{i}].mount {item.mount} is on no volume of the job; put it under {DATA_MOUNT} "
                              f"(volumes.data_pvc) or {WORKSPACE_MOUNT} (volumes.workspace_pvc), and set that volume")
    run_dir = spec.outputs.run_dir
    if spec.volumes.workspace_pvc and posixpath.isabs(run_dir) and not _under(run_dir, WORKSPACE_MOUNT):
        raise ConfigError(f"outputs.run_dir {run_dir} is outside the workspace volume; make it relative or put it "
                          f"under {WORKSPACE_MOUNT}")


def _warn(spec: JobSpec) -> None:
    if not spec.volumes.workspace_pvc:
        warnings.warn(f"no volumes.workspace_pvc: the run folder {spec.outputs.run_dir} lives in the pod and is lost "
                      f"when the job ends; set volumes.workspace_pvc to a PersistentVolumeClaim")
    if spec.priority:
        warnings.warn(f"priority {spec.priority} orders the local queue only; Volcano orders jobs by priority_class "
                      f"(a PriorityClass name)")
    if spec.timeout and spec.retry.max_retries and len({"failed", "timeout"} & set(spec.retry.on)) == 1:
        warnings.warn("on Volcano a pod past its timeout is reported as failed: retry.on retries failed and timed-out "
                      "attempts alike")


def render_queue(name: str, weight: int = 1, capability: dict[str, Any] | None = None) -> dict:
    """A cluster-scoped Volcano Queue: its share ``weight`` and its resource ``capability`` (a ceiling)."""
    if not is_dns_subdomain(name) or name == "root":
        raise ConfigError(f"queue name {name!r} must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.') "
                          f"other than root")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ConfigError(f"--weight must be an integer >= 1, got {weight!r}")
    resources = {}
    for key, value in (capability or {}).items():
        if not is_quantity(value):
            raise ConfigError(f"capability {key}={value} is not a quantity (e.g. cpu=8, memory=32Gi, nvidia.com/gpu=2)")
        resources[key] = str(value)
    spec: dict[str, Any] = {"weight": weight}
    if resources:
        spec["capability"] = resources
    return {"apiVersion": QUEUE_API, "kind": "Queue", "metadata": {"name": name}, "spec": spec}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the container scripts) as YAML block literals, readable in a dry run."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def to_yaml(manifest: dict) -> str:
    # width: long lines (the launch commands) stay whole instead of folded at 80 characters
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=float("inf"))
