"""Offline checks of Volcano manifests: the schema's fields, and the rules only the admission webhook enforces.

No API server can run here, so every manifest vipr renders passes these before it is
submitted (and in the tests). Each violated rule is one message naming the field path:

- fields: every level a whitelist (vipr.jobs.schema): an unknown field is an error, because
  Kubernetes drops it silently; values of the wrong kind (``replicas: "2"``) too
- apiVersion and kind; ``metadata.name`` a DNS-1123 label (pods are ``<job>-<task>-<index>``)
- ``spec.queue`` a DNS-1123 subdomain of at most 253 characters, not ``root``
- ``minAvailable``, ``maxRetry``, ``ttlSecondsAfterFinished``, task ``replicas`` / ``minAvailable``
  / ``maxRetry`` >= 0; ``minSuccess`` >= 1
- at least one task; task names DNS-1123 labels, unique
- each task's ``minAvailable`` <= its ``replicas``; the job's <= the sum of replicas
- plugin names known (pytorch, tensorflow, mpi, svc, env, ssh)
- policies (job and task): a known action; event(s) or exitCode, not both, not neither;
  exitCode != 0; events known, none repeated, ``*`` only alone
- ``dependsOn`` names existing tasks and forms no cycle; ``iteration`` any | all
- ``topologyPolicy`` and ``networkTopology.mode`` from their sets
- job volumes: a mountPath and one of volumeClaimName / volumeClaim
- pod templates: a container, names unique, an image; mounts name a pod volume; requests
  <= limits; GPUs (extended resources) requested equal to their limits

The webhook's other rules need the cluster (the queue exists, is Open, is no parent
queue) or an existing job (what may change after creation): vipr.jobs.cluster asks the
cluster for the queue before it submits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vipr.errors import ConfigError
from vipr.jobs.kube import is_dns_label, is_dns_subdomain, parse_quantity
from vipr.jobs.schema import JOB, QUEUE, schema_problems

PLUGINS = ("pytorch", "tensorflow", "mpi", "svc", "env", "ssh")
EVENTS = ("*", "PodPending", "PodRunning", "PodFailed", "PodEvicted", "Unknown", "TaskCompleted", "OutOfSync",
          "CommandIssued", "JobUpdated", "TaskFailed")
ACTIONS = ("AbortJob", "RestartJob", "RestartTask", "RestartPod", "TerminateJob", "CompleteJob", "ResumeJob",
           "SyncJob", "EnqueueJob", "SyncQueue", "OpenQueue", "CloseQueue")
TOPOLOGY_POLICIES = ("none", "best-effort", "restricted", "single-numa-node")
RESTART_POLICIES = ("Never", "OnFailure", "Always")
CORE_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods", "storage")  # the rest are extended: request = limit


def job_problems(manifest: Any) -> list[str]:
    """Every violated rule of a Volcano Job manifest, one message each (empty: valid)."""
    problems = schema_problems(manifest, JOB)
    if not isinstance(manifest, Mapping):
        return problems
    problems += _header(manifest, "batch.volcano.sh/v1alpha1", "Job", namespaced=True)
    spec = _mapping(manifest.get("spec"))
    listed = spec.get("tasks") if isinstance(spec.get("tasks"), list) else []
    tasks = [t for t in listed if isinstance(t, Mapping)]
    queue = spec.get("queue", "default")
    if not is_dns_subdomain(queue) or queue == "root":
        problems.append(f"spec.queue: {queue!r} must be a DNS-1123 subdomain (at most 253 characters) other than root")
    for key, low in (("minAvailable", 0), ("maxRetry", 0), ("ttlSecondsAfterFinished", 0), ("minSuccess", 1)):
        problems += _at_least(spec.get(key), low, f"spec.{key}")
    problems += _tasks(tasks, spec.get("minAvailable"))
    for name in spec.get("plugins") or {}:
        if name not in PLUGINS:
            problems.append(f"spec.plugins.{name}: unknown plugin; known: {', '.join(PLUGINS)}")
    problems += _policies(spec.get("policies"), "spec.policies")
    problems += _depends(tasks)
    mode = _mapping(spec.get("networkTopology")).get("mode")
    if mode is not None and mode not in ("hard", "soft"):
        problems.append(f"spec.networkTopology.mode: {mode!r} must be hard or soft")
    for i, volume in enumerate(v for v in spec.get("volumes") or [] if isinstance(v, Mapping)):
        if not volume.get("mountPath"):
            problems.append(f"spec.volumes[{i}]: no mountPath")
        if ("volumeClaimName" in volume) == ("volumeClaim" in volume):
            problems.append(f"spec.volumes[{i}]: give one of volumeClaimName (an existing claim) or volumeClaim")
    return problems


def queue_problems(manifest: Any) -> list[str]:
    """Every violated rule of a Volcano Queue manifest (cluster-scoped: no namespace)."""
    problems = schema_problems(manifest, QUEUE)
    if not isinstance(manifest, Mapping):
        return problems
    problems += _header(manifest, "scheduling.volcano.sh/v1beta1", "Queue", namespaced=False)
    name = _mapping(manifest.get("metadata")).get("name")
    if name == "root":
        problems.append("metadata.name: root is Volcano's own root queue; pick another name")
    problems += _at_least(_mapping(manifest.get("spec")).get("weight"), 1, "spec.weight")
    return problems


def validate_job(manifest: Any) -> None:
    """ConfigError listing every problem of a Job manifest, on one line."""
    _raise("Job", manifest, job_problems(manifest))


def validate_queue(manifest: Any) -> None:
    _raise("Queue", manifest, queue_problems(manifest))


def _raise(kind: str, manifest: Any, problems: list[str]) -> None:
    if problems:
        name = _mapping(_mapping(manifest).get("metadata")).get("name", "?")
        raise ConfigError(f"invalid Volcano {kind} {name}: {'; '.join(problems)}")


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _header(manifest: Mapping, api: str, kind: str, namespaced: bool) -> list[str]:
    problems = []
    if manifest.get("apiVersion") != api:
        problems.append(f"apiVersion: {manifest.get('apiVersion')!r} must be {api}")
    if manifest.get("kind") != kind:
        problems.append(f"kind: {manifest.get('kind')!r} must be {kind}")
    metadata = _mapping(manifest.get("metadata"))
    name, check = metadata.get("name"), (is_dns_label if namespaced else is_dns_subdomain)
    if not check(name):
        what = "label (at most 63 characters)" if namespaced else "subdomain"
        problems.append(f"metadata.name: {name!r} must be a DNS-1123 {what}")
    if namespaced and "namespace" in metadata and not is_dns_label(metadata["namespace"]):
        problems.append(f"metadata.namespace: {metadata['namespace']!r} must be a DNS-1123 label")
    if not namespaced and "namespace" in metadata:
        problems.append(f"metadata.namespace: a {kind} is cluster-scoped; drop the namespace")
    return problems


def _at_least(value: Any, low: int, path: str) -> list[str]:
    if isinstance(value, int) and not isinstance(value, bool) and value < low:
        return [f"{path}: {value} must be >= {low}"]
    return []


def _count(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _tasks(tasks: list[Mapping], min_available: Any) -> list[str]:
    if not tasks:
        return ["spec.tasks: a job needs at least one task"]
    problems, seen = [], set()
    for i, task in enumerate(tasks):
        path, name = f"spec.tasks[{i}]", task.get("name")
        if not is_dns_label(name):
            problems.append(f"{path}.name: {name!r} must be a DNS-1123 label (at most 63 characters)")
        elif name in seen:
            problems.append(f"{path}.name: task name {name!r} is used twice; task names must be unique")
        seen.add(name)
        for key in ("replicas", "minAvailable", "maxRetry"):
            problems += _at_least(task.get(key), 0, f"{path}.{key}")
        replicas = _count(task.get("replicas"), 1)
        if _count(task.get("minAvailable"), replicas) > replicas:  # absent: Volcano takes the replicas
            problems.append(f"{path}.minAvailable: {task['minAvailable']} is more than the task's {replicas} replicas")
        problems += _policies(task.get("policies"), f"{path}.policies")
        policy = task.get("topologyPolicy")
        if policy is not None and policy not in TOPOLOGY_POLICIES:
            problems.append(f"{path}.topologyPolicy: {policy!r} must be one of {', '.join(TOPOLOGY_POLICIES)}")
        problems += _pod(_mapping(_mapping(task.get("template")).get("spec")), f"{path}.template.spec")
    total = sum(_count(t.get("replicas"), 1) for t in tasks)
    if _count(min_available, 0) > total:
        problems.append(f"spec.minAvailable: {min_available} is more than the {total} replicas of all tasks; "
                        f"the gang could never start")
    return problems


def _policies(policies: Any, path: str) -> list[str]:
    problems, seen = [], set()
    for i, policy in enumerate(p for p in policies or [] if isinstance(p, Mapping)):
        where = f"{path}[{i}]"
        events = ([policy["event"]] if "event" in policy else []) + list(policy.get("events") or [])
        if policy.get("action") not in ACTIONS:
            problems.append(f"{where}.action: {policy.get('action')!r} must be one of {', '.join(ACTIONS)}")
        if events and "exitCode" in policy:
            problems.append(f"{where}: give event(s) or exitCode, not both")
        if not events and "exitCode" not in policy:
            problems.append(f"{where}: give event(s) or an exitCode to act on")
        if policy.get("exitCode") == 0:
            problems.append(f"{where}.exitCode: 0 is success, not an error code; use a non-zero code")
        for event in events:
            if event not in EVENTS:
                problems.append(f"{where}: unknown event {event!r}; known: {', '.join(EVENTS)}")
            elif event in seen:
                problems.append(f"{where}: event {event} is handled twice in {path}; keep one policy for it")
            seen.add(event)
    if "*" in seen and len(seen) > 1:
        problems.append(f"{path}: event * (any event) must be the only event of its policies")
    return problems


def _depends(tasks: list[Mapping]) -> list[str]:
    graph = {t.get("name"): list(_mapping(t.get("dependsOn")).get("name") or []) for t in tasks}
    problems = []
    for i, task in enumerate(tasks):
        depends = _mapping(task.get("dependsOn"))
        for name in depends.get("name") or []:
            if name not in graph:
                problems.append(f"spec.tasks[{i}].dependsOn.name: no task named {name!r}")
        if depends.get("iteration", "any") not in ("any", "all"):
            problems.append(f"spec.tasks[{i}].dependsOn.iteration: {depends['iteration']!r} must be any or all")
    visiting, done = set(), set()

    def cyclic(name: Any) -> bool:
        if name in done or name not in graph:
            return False
        if name in visiting:
            return True
        visiting.add(name)
        found = any(cyclic(n) for n in graph[name])
        visiting.discard(name)
        done.add(name)
        return found

    if any(cyclic(name) for name in graph):
        problems.append("spec.tasks: dependsOn forms a cycle; no task of it could ever start")
    return problems


def _pod(pod: Mapping, path: str) -> list[str]:
    containers = [c for c in pod.get("containers") or [] if isinstance(c, Mapping)]
    if not containers:
        return [f"{path}.containers: a pod needs at least one container"]
    problems = []
    if pod.get("restartPolicy", "Never") not in RESTART_POLICIES:
        problems.append(f"{path}.restartPolicy: {pod['restartPolicy']!r} must be one of {', '.join(RESTART_POLICIES)}")
    volumes = {v.get("name") for v in pod.get("volumes") or [] if isinstance(v, Mapping)}
    names = [c.get("name") for c in containers]
    for i, container in enumerate(containers):
        where = f"{path}.containers[{i}]"
        if not is_dns_label(container.get("name")) or names.count(container.get("name")) > 1:
            problems.append(f"{where}.name: {container.get('name')!r} must be a unique DNS-1123 label")
        if not container.get("image"):
            problems.append(f"{where}.image: no image; name one with vipr installed")
        for j, mount in enumerate(m for m in container.get("volumeMounts") or [] if isinstance(m, Mapping)):
            if mount.get("name") not in volumes:
                problems.append(f"{where}.volumeMounts[{j}].name: no pod volume named {mount.get('name')!r}")
        problems += _resources(_mapping(container.get("resources")), f"{where}.resources")
    return problems


def _resources(resources: Mapping, path: str) -> list[str]:
    requests, limits = _mapping(resources.get("requests")), _mapping(resources.get("limits"))
    problems = []
    for name, request in requests.items():
        try:
            asked, limit = parse_quantity(request), parse_quantity(limits[name]) if name in limits else None
        except ValueError:
            continue  # the schema walk reported the bad quantity
        if name not in CORE_RESOURCES and (limit is None or limit != asked):
            problems.append(f"{path}.requests.{name}: an extended resource needs limits.{name} equal to the request")
        elif limit is not None and asked > limit:
            problems.append(f"{path}.requests.{name}: {request} is more than limits.{name} {limits[name]}")
    return problems
