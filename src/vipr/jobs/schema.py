"""The fields a Volcano Job and Queue may hold, as plain data, and a walker that reports the rest.

Kubernetes prunes fields a CRD's schema does not know without an error, so a misspelt
``minAvaliable`` would vanish on the way in and the job would run ungated: every level
vipr renders is a whitelist here (from the ``batch.volcano.sh/v1alpha1`` schema in
platform-facts.md, and the PodTemplateSpec fields of Kubernetes' core API). Kubernetes
types vipr never renders (affinity, probes, security contexts) are ``ANY``: accepted whole.

A schema is a dict (an object: field -> schema), a one-item list (a list of that), ``MapOf``
(free keys such as labels or resource names), or a leaf: int, str, bool, QUANTITY, ANY.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from vipr.jobs.kube import is_quantity

ANY, QUANTITY = "any", "quantity"


class MapOf:
    def __init__(self, value: Any):
        self.value = value


METADATA = {"name": str, "namespace": str, "generateName": str, "labels": MapOf(str), "annotations": MapOf(str)}
POLICY = {"event": str, "events": [str], "action": str, "exitCode": int, "timeout": str}
RESOURCE_LIST = MapOf(QUANTITY)
ENV_VAR = {"name": str, "value": str, "valueFrom": ANY}
MOUNT = {"name": str, "mountPath": str, "readOnly": bool, "subPath": str, "subPathExpr": str,
         "mountPropagation": str, "recursiveReadOnly": str}
PORT = {"name": str, "containerPort": int, "protocol": str, "hostPort": int, "hostIP": str}
CONTAINER = {
    "name": str, "image": str, "command": [str], "args": [str], "workingDir": str, "env": [ENV_VAR], "envFrom": ANY,
    "resources": {"requests": RESOURCE_LIST, "limits": RESOURCE_LIST, "claims": ANY}, "volumeMounts": [MOUNT],
    "volumeDevices": ANY, "ports": [PORT], "imagePullPolicy": str, "securityContext": ANY, "livenessProbe": ANY,
    "readinessProbe": ANY, "startupProbe": ANY, "lifecycle": ANY, "stdin": bool, "stdinOnce": bool, "tty": bool,
    "terminationMessagePath": str, "terminationMessagePolicy": str, "resizePolicy": ANY, "restartPolicy": str}
VOLUME = {"name": str, "emptyDir": {"medium": str, "sizeLimit": QUANTITY},
          "persistentVolumeClaim": {"claimName": str, "readOnly": bool}, "configMap": ANY, "secret": ANY,
          "hostPath": ANY, "nfs": ANY, "projected": ANY, "downwardAPI": ANY, "csi": ANY, "ephemeral": ANY,
          "image": ANY}
POD_SPEC = {
    "containers": [CONTAINER], "initContainers": [CONTAINER], "ephemeralContainers": ANY, "restartPolicy": str,
    "activeDeadlineSeconds": int, "terminationGracePeriodSeconds": int, "volumes": [VOLUME],
    "nodeSelector": MapOf(str), "nodeName": str, "affinity": ANY, "tolerations": ANY,
    "topologySpreadConstraints": ANY, "serviceAccountName": str, "serviceAccount": str,
    "automountServiceAccountToken": bool, "securityContext": ANY, "imagePullSecrets": ANY, "hostNetwork": bool,
    "hostPID": bool, "hostIPC": bool, "hostUsers": bool, "shareProcessNamespace": bool, "dnsPolicy": str,
    "dnsConfig": ANY, "hostname": str, "subdomain": str, "setHostnameAsFQDN": bool, "hostAliases": ANY,
    "schedulerName": str, "priorityClassName": str, "priority": int, "preemptionPolicy": str,
    "runtimeClassName": str, "enableServiceLinks": bool, "overhead": ANY, "readinessGates": ANY, "os": ANY,
    "schedulingGates": ANY, "resourceClaims": ANY}
TASK = {"name": str, "replicas": int, "minAvailable": int, "maxRetry": int, "policies": [POLICY],
        "topologyPolicy": str, "dependsOn": {"name": [str], "iteration": str},
        "template": {"metadata": METADATA, "spec": POD_SPEC}}
JOB = {"apiVersion": str, "kind": str, "metadata": METADATA, "spec": {
    "minAvailable": int, "minSuccess": int, "maxRetry": int, "ttlSecondsAfterFinished": int, "runningEstimate": str,
    "queue": str, "schedulerName": str, "priorityClassName": str, "plugins": MapOf([str]), "policies": [POLICY],
    "volumes": [{"mountPath": str, "volumeClaimName": str, "volumeClaim": ANY}],
    "networkTopology": {"mode": str, "highestTierAllowed": int}, "tasks": [TASK]}}
QUEUE = {"apiVersion": str, "kind": str, "metadata": METADATA, "spec": {
    "weight": int, "capability": RESOURCE_LIST, "deserved": RESOURCE_LIST, "guarantee": {"resource": RESOURCE_LIST},
    "reclaimable": bool, "parent": str}}

_LEAF_NAMES = {int: "an integer", str: "a string", bool: "true or false", QUANTITY: "a quantity (e.g. 8Gi, 500m, 2)"}


def schema_problems(value: Any, schema: Any, path: str = "") -> list[str]:
    """One message per unknown field or value of the wrong kind, each naming its path (``spec.tasks[0].name``)."""
    problems: list[str] = []
    _walk(value, schema, path, problems)
    return problems


def _walk(value: Any, schema: Any, path: str, problems: list[str]) -> None:
    where = path or "the manifest"
    if schema is ANY:
        return
    if isinstance(schema, dict):
        if not isinstance(value, Mapping):
            problems.append(f"{where} must be a mapping, got {value!r}")
            return
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key in schema:
                _walk(item, schema[key], child, problems)
                continue
            close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{child}: unknown field{hint}; Kubernetes would drop it without an error")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            problems.append(f"{where} must be a list, got {value!r}")
            return
        for i, item in enumerate(value):
            _walk(item, schema[0], f"{path}[{i}]", problems)
    elif isinstance(schema, MapOf):
        if not isinstance(value, Mapping):
            problems.append(f"{where} must be a mapping, got {value!r}")
            return
        for key, item in value.items():
            _walk(item, schema.value, f"{path}.{key}", problems)
    elif not _leaf_ok(value, schema):
        problems.append(f"{where} must be {_LEAF_NAMES[schema]}, got {value!r}")


def _leaf_ok(value: Any, kind: Any) -> bool:
    if kind is QUANTITY:
        return is_quantity(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
