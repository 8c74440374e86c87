"""Volcano jobs on a Kubernetes cluster, through the official ``kubernetes`` client (the ``cluster`` extra).

Credentials: ``load_incluster_config()`` inside a pod (``$KUBERNETES_SERVICE_HOST`` set), else
``load_kube_config()`` (``$KUBECONFIG`` or ``~/.kube/config``); the namespace, when not
given, is the current context's (in a pod: its service account's), else ``default``.

Jobs are the namespaced custom objects ``batch.volcano.sh/v1alpha1`` ``jobs``; queues the
cluster-scoped ``scheduling.volcano.sh/v1beta1`` ``queues``. Cancel deletes the Job (pods
get SIGTERM, so vipr saves its checkpoint; Volcano removes them with their owner). Logs
are the master pod's: pods carry the label ``volcano.sh/job-name=<job>`` and are named
``<job>-<task>-<index>``.

Volcano's phase -> vipr's state (``STATES``):
  Pending -> queued; Running, Restarting, Completing -> running (Completing: the master
  finished, the other pods are stopping); Completed -> succeeded; Failed, Terminating,
  Terminated -> failed (vipr's policies terminate a job on a failure it may not retry, and
  vipr cancels by deleting, never by a terminate command); Aborting, Aborted -> cancelled
  (someone suspended it, e.g. ``vcctl job suspend``). No status yet -> queued.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from vipr.errors import ViprError
from vipr.jobs.volcano import CONTAINER, MASTER

JOB_GROUP, JOB_VERSION, JOB_PLURAL = "batch.volcano.sh", "v1alpha1", "jobs"
QUEUE_GROUP, QUEUE_VERSION, QUEUE_PLURAL = "scheduling.volcano.sh", "v1beta1", "queues"
JOB_LABEL = "volcano.sh/job-name"  # set by Volcano on every pod of a job (platform-facts.md)
INSTALL = "pip install 'vipr[cluster]'"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STATES = {"Pending": "queued", "Running": "running", "Restarting": "running", "Completing": "running",
          "Completed": "succeeded", "Failed": "failed", "Terminating": "failed", "Terminated": "failed",
          "Aborting": "cancelled", "Aborted": "cancelled"}
JOBS_RESOURCE, QUEUES_RESOURCE = f"{JOB_PLURAL}.{JOB_GROUP}", f"{QUEUE_PLURAL}.{QUEUE_GROUP}"


def vipr_state(phase: str | None) -> str:
    """queued | running | succeeded | failed | cancelled (unknown for a phase newer than this table)."""
    return STATES.get(phase, "unknown") if phase else "queued"


def load_client():
    """The ``kubernetes`` package, imported only here: vipr runs without it unless it talks to a cluster."""
    try:
        import kubernetes
    except ImportError:
        raise ViprError(f"talking to a cluster needs the kubernetes client, which is not installed; "
                        f"{INSTALL}") from None
    return kubernetes


def summary(job: dict) -> dict:
    """name, namespace, queue, state (vipr's), phase (Volcano's), retries, pods by phase, created, message."""
    meta, spec = job.get("metadata") or {}, job.get("spec") or {}
    status = job.get("status") or {}
    state = status.get("state") or {}
    return {"name": meta.get("name"), "namespace": meta.get("namespace"), "queue": spec.get("queue", "default"),
            "state": vipr_state(state.get("phase")), "phase": state.get("phase"),
            "retries": status.get("retryCount", 0),
            "pods": {key: status.get(key, 0) for key in ("pending", "running", "succeeded", "failed")},
            "created": meta.get("creationTimestamp"), "message": state.get("message")}


class VolcanoCluster:
    """One namespace of one cluster: submit, list, show, logs, cancel jobs; create queues."""

    def __init__(self, namespace: str | None = None):
        self.k8s = load_client()
        self._connect()
        self.namespace = namespace or self._default_namespace()
        self.custom = self.k8s.client.CustomObjectsApi()
        self.core = self.k8s.client.CoreV1Api()

    def _connect(self) -> None:
        config = self.k8s.config
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
            else:
                config.load_kube_config()
        except config.ConfigException as err:
            raise ViprError(f"no Kubernetes credentials ({err}); set KUBECONFIG (or ~/.kube/config), "
                            f"or run inside a pod with a service account") from None

    def _default_namespace(self) -> str:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_NAMESPACE.is_file():
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        try:
            _, active = self.k8s.config.list_kube_config_contexts()
        except Exception:  # no kubeconfig contexts (in-cluster, or a file without any): the API's own default
            return "default"
        return (active or {}).get("context", {}).get("namespace") or "default"

    def _jobs(self, **kwargs) -> dict:
        return dict(group=JOB_GROUP, version=JOB_VERSION, namespace=self.namespace, plural=JOB_PLURAL, **kwargs)

    def submit(self, manifest: dict) -> dict:
        """Create the Job (its queue checked first); the created object."""
        name = manifest["metadata"]["name"]
        self.check_queue(manifest["spec"].get("queue", "default"))
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        return self._call(lambda: self.custom.create_namespaced_custom_object(**self._jobs(body=body)),
                          verb="create", resource=JOBS_RESOURCE, name=name)

    def check_queue(self, queue: str) -> None:
        """ViprError unless the queue exists and is Open; skipped where the user may not read queues."""
        ApiException = self.k8s.client.exceptions.ApiException
        try:
            found = self.custom.get_cluster_custom_object(group=QUEUE_GROUP, version=QUEUE_VERSION,
                                                          plural=QUEUE_PLURAL, name=queue)
        except ApiException as err:
            if err.status == 403:
                return  # many users may not read cluster-scoped queues; the webhook still checks
            if err.status == 404 and _names_object(err):
                raise ViprError(f"queue {queue} does not exist; create it with `vipr job queue create {queue} "
                                f"--weight 1 --capability cpu=8,memory=32Gi` or pick another queue") from None
            raise describe_error(err, verb="get", resource=QUEUES_RESOURCE, name=queue, namespace=None) from None
        state = ((found or {}).get("status") or {}).get("state")
        if state and state != "Open":
            raise ViprError(f"queue {queue} is {state}, so it takes no jobs; open it (vcctl queue operate "
                            f"--name {queue} --action open) or pick another queue")

    def get(self, name: str) -> dict:
        return self._call(lambda: self.custom.get_namespaced_custom_object(**self._jobs(name=name)),
                          verb="get", resource=JOBS_RESOURCE, name=name)

    def show(self, name: str) -> dict:
        return summary(self.get(name))

    def list(self) -> list[dict]:
        found = self._call(lambda: self.custom.list_namespaced_custom_object(**self._jobs()),
                           verb="list", resource=JOBS_RESOURCE, name="")
        return [summary(job) for job in (found or {}).get("items", [])]

    def cancel(self, name: str) -> None:
        self._call(lambda: self.custom.delete_namespaced_custom_object(**self._jobs(name=name)),
                   verb="delete", resource=JOBS_RESOURCE, name=name)

    def create_queue(self, manifest: dict) -> dict:
        name = manifest["metadata"]["name"]
        return self._call(lambda: self.custom.create_cluster_custom_object(
            group=QUEUE_GROUP, version=QUEUE_VERSION, plural=QUEUE_PLURAL, body=manifest),
            verb="create", resource=QUEUES_RESOURCE, name=name, namespace=None)

    def master_pod(self, name: str) -> str:
        """The name of the job's master pod (``<job>-master-0``); ViprError while there is none."""
        pods = self._call(lambda: self.core.list_namespaced_pod(namespace=self.namespace,
                                                                label_selector=f"{JOB_LABEL}={name}"),
                          verb="list", resource="pods", name=name)
        masters = sorted(p.metadata.name for p in pods.items if p.metadata.name.startswith(f"{name}-{MASTER}-"))
        if not masters:
            state = self.show(name)["state"]  # also: a 404 naming the job when it does not exist
            raise ViprError(f"job {name} has no master pod yet (state {state}); try again once `vipr job show {name} "
                            f"--backend volcano` says running")
        return masters[0]

    def logs(self, name: str, follow: bool = False, out: TextIO | None = None) -> None:
        """Copy the master pod's log to ``out`` (stdout), to its end or, with ``follow``, until the pod stops."""
        out, pod = out or sys.stdout, self.master_pod(name)
        stream = self._call(lambda: self.core.read_namespaced_pod_log(
            name=pod, namespace=self.namespace, container=CONTAINER, follow=follow, _preload_content=False),
            verb="get", resource="pods/log", name=name)
        try:
            for chunk in stream.stream():
                out.write(chunk.decode("utf-8", errors="replace"))
                out.flush()
        finally:
            stream.release_conn()

    def _call(self, fn: Callable[[], Any], *, verb: str, resource: str, name: str, **where) -> Any:
        import urllib3

        namespace = where.get("namespace", self.namespace)
        try:
            return fn()
        except self.k8s.client.exceptions.ApiException as err:
            raise describe_error(err, verb=verb, resource=resource, name=name, namespace=namespace) from None
        except urllib3.exceptions.HTTPError as err:
            raise ViprError(f"cannot reach the Kubernetes API server ({err}); check `kubectl config "
                            f"current-context` and the network") from None


def _body(err: Any) -> dict:
    try:
        body = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _names_object(err: Any) -> bool:
    """Whether a 404 is about one missing object (its name in the details), not a missing resource type."""
    return bool((_body(err).get("details") or {}).get("name"))


def describe_error(err: Any, *, verb: str, resource: str, name: str, namespace: str | None) -> ViprError:
    """A one-line ViprError for an ApiException: what the cluster said, and what to do."""
    status, message = err.status, _body(err).get("message") or err.reason or ""
    kind = "queue" if resource == QUEUES_RESOURCE else "job"
    where = f"in namespace {namespace}" if namespace else "(cluster-scoped)"
    if status == 409:
        fix = f"`vipr job delete {name}`" if kind == "job" else f"`kubectl delete queue {name}`"
        return ViprError(f"{kind} {name} already exists {where}; pick another name or {fix}")
    if status == 403:
        role = "a Role" if namespace else "a ClusterRole"
        return ViprError(f"forbidden: you may not {verb} {resource} {where}; ask a cluster admin for {role} "
                         f"granting the '{verb}' verb on {resource}{f' in {namespace}' if namespace else ''}")
    if status == 404 and _names_object(err):
        return ViprError(f"no {kind} {name} {where}; `vipr job list --backend volcano"
                         f"{f' --namespace {namespace}' if namespace else ''}` lists the jobs")
    if status == 404 and resource in (JOBS_RESOURCE, QUEUES_RESOURCE):
        group, version = (JOB_GROUP, JOB_VERSION) if kind == "job" else (QUEUE_GROUP, QUEUE_VERSION)
        return ViprError(f"Volcano is not installed in this cluster (no {group}/{version} {resource.split('.')[0]})")
    if status == 401:
        return ViprError("the cluster rejected your credentials (401 Unauthorized); refresh them, "
                         "then check with `kubectl get pods`")
    if status == 400 and resource == "pods/log":
        return ViprError(f"the master pod of job {name} has no log yet ({message}); try again once it runs")
    if status in (400, 422):
        return ViprError(f"the cluster refused {kind} {name}: {message}")
    return ViprError(f"Kubernetes API error {status} ({err.reason}) on {verb} {resource} {name}: {message}")
