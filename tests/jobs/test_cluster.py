"""The cluster client against a patched ``kubernetes`` API: the calls it makes, the errors it turns into messages."""

import io
import json
import sys
from types import SimpleNamespace

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes.client import CoreV1Api, CustomObjectsApi  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from vipr.errors import ViprError  # noqa: E402
from vipr.jobs import cluster  # noqa: E402
from vipr.jobs.cluster import VolcanoCluster, vipr_state  # noqa: E402
from vipr.jobs.spec import parse_spec  # noqa: E402
from vipr.jobs.volcano import render_job  # noqa: E402

JOB = render_job(parse_spec({"name": "pretrain-a", "command": ["vipr", "pretrain"], "image": "vipr:1",
                             "queue": "team-a", "volumes": {"workspace_pvc": "ws"}}))


@pytest.fixture
def calls(monkeypatch):
    """Patched credentials and API methods; each call recorded as (method, kwargs)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda *a, **k: None)
    monkeypatch.setattr(kubernetes.config, "list_kube_config_contexts",
                        lambda *a, **k: ([], {"name": "dev", "context": {"namespace": "ml"}}))
    recorded = []

    def record(name, result=None):
        def method(self, *args, **kwargs):
            assert not args, f"{name} must be called with keyword arguments"
            recorded.append((name, kwargs))
            return result(kwargs) if callable(result) else result
        return method

    for name, result in (("create_namespaced_custom_object", lambda kw: kw["body"]),
                         ("get_cluster_custom_object", {"status": {"state": "Open"}}),
                         ("delete_namespaced_custom_object", {}),
                         ("create_cluster_custom_object", lambda kw: kw["body"]),
                         ("get_namespaced_custom_object", {"metadata": {"name": "pretrain-a", "namespace": "ml"},
                                                           "spec": {"queue": "team-a"},
                                                           "status": {"state": {"phase": "Running"}, "running": 1}}),
                         ("list_namespaced_custom_object", {"items": [{"metadata": {"name": "a"}, "status": {}}]})):
        monkeypatch.setattr(CustomObjectsApi, name, record(name, result))
    return recorded


def fail_with(monkeypatch, method, status, body=None, api=CustomObjectsApi):
    def raise_(self, **kwargs):
        err = ApiException(status=status, reason="Reason")
        err.body = json.dumps(body or {"message": "nope"})
        raise err
    monkeypatch.setattr(api, method, raise_)


def test_submit_checks_the_queue_then_creates_the_job_in_the_contexts_namespace(calls):
    VolcanoCluster().submit(JOB)
    assert [name for name, _ in calls] == ["get_cluster_custom_object", "create_namespaced_custom_object"]
    assert calls[0][1] == {"group": "scheduling.volcano.sh", "version": "v1beta1", "plural": "queues", "name": "team-a"}
    created = calls[1][1]
    assert (created["group"], created["version"], created["plural"], created["namespace"]) == (
        "batch.volcano.sh", "v1alpha1", "jobs", "ml")
    assert created["body"]["metadata"]["namespace"] == "ml" and created["body"]["spec"] == JOB["spec"]


def test_show_list_cancel_and_queue_create_call_the_custom_objects_api(calls):
    client = VolcanoCluster("research")
    shown = client.show("pretrain-a")
    assert (shown["state"], shown["phase"], shown["pods"]["running"]) == ("running", "Running", 1)
    assert [job["state"] for job in client.list()] == ["queued"]  # no status yet
    client.cancel("pretrain-a")
    client.create_queue({"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "Queue", "metadata": {"name": "q"},
                         "spec": {"weight": 1}})
    jobs = {"group": "batch.volcano.sh", "version": "v1alpha1", "plural": "jobs", "namespace": "research"}
    assert calls[0] == ("get_namespaced_custom_object", {**jobs, "name": "pretrain-a"})
    assert calls[1] == ("list_namespaced_custom_object", jobs)
    assert calls[2] == ("delete_namespaced_custom_object", {**jobs, "name": "pretrain-a"})
    assert calls[3][0] == "create_cluster_custom_object" and calls[3][1]["plural"] == "queues"
    assert calls[3][1]["group"] == "scheduling.volcano.sh" and calls[3][1]["version"] == "v1beta1"


@pytest.mark.parametrize("phase, state", [(None, "queued"), ("Pending", "queued"), ("Running", "running"),
                                          ("Restarting", "running"), ("Completing", "running"),
                                          ("Completed", "succeeded"), ("Failed", "failed"), ("Terminating", "failed"),
                                          ("Terminated", "failed"), ("Aborting", "cancelled"), ("Aborted", "cancelled"),
                                          ("Hibernating", "unknown")])
def test_phase_to_state(phase, state):
    assert vipr_state(phase) == state


def test_409_names_the_job_the_namespace_and_the_way_out(calls, monkeypatch):
    fail_with(monkeypatch, "create_namespaced_custom_object", 409, {"message": "jobs.batch.volcano.sh exists"})
    with pytest.raises(ViprError) as err:
        VolcanoCluster().submit(JOB)
    assert str(err.value) == ("job pretrain-a already exists in namespace ml; pick another name or "
                              "`vipr job delete pretrain-a`")


def test_403_names_the_namespace_and_the_rbac_verb(calls, monkeypatch):
    fail_with(monkeypatch, "create_namespaced_custom_object", 403)
    with pytest.raises(ViprError) as err:
        VolcanoCluster().submit(JOB)
    assert str(err.value) == ("forbidden: you may not create jobs.batch.volcano.sh in namespace ml; ask a cluster "
                              "admin for a Role granting the 'create' verb on jobs.batch.volcano.sh in ml")


def test_404_without_an_object_is_volcano_missing(calls, monkeypatch):
    fail_with(monkeypatch, "list_namespaced_custom_object", 404, {"message": "the server could not find the resource"})
    with pytest.raises(ViprError, match=r"^Volcano is not installed in this cluster \(no batch.volcano.sh/v1alpha1 "
                                        r"jobs\)$"):
        VolcanoCluster().list()


def test_404_naming_the_job_is_a_missing_job(calls, monkeypatch):
    fail_with(monkeypatch, "get_namespaced_custom_object", 404, {"details": {"name": "nope", "kind": "jobs"}})
    with pytest.raises(ViprError, match="^no job nope in namespace ml; `vipr job list --backend volcano --namespace"):
        VolcanoCluster().show("nope")


def test_the_queue_must_exist_and_be_open(calls, monkeypatch):
    fail_with(monkeypatch, "get_cluster_custom_object", 404, {"details": {"name": "team-a"}})
    with pytest.raises(ViprError, match="^queue team-a does not exist; create it with `vipr job queue create team-a"):
        VolcanoCluster().submit(JOB)
    closed = {"status": {"state": "Closed"}}
    monkeypatch.setattr(CustomObjectsApi, "get_cluster_custom_object", lambda self, **kw: closed)
    with pytest.raises(ViprError, match="^queue team-a is Closed, so it takes no jobs"):
        VolcanoCluster().submit(JOB)
    fail_with(monkeypatch, "get_cluster_custom_object", 403)  # may not read queues: submit anyway
    VolcanoCluster().submit(JOB)
    assert calls[-1][0] == "create_namespaced_custom_object"


def test_a_webhook_refusal_is_one_line(calls, monkeypatch):
    fail_with(monkeypatch, "create_namespaced_custom_object", 400,
              {"message": "admission webhook \"validatejob.volcano.sh\" denied the request: queue is closed"})
    with pytest.raises(ViprError, match="^the cluster refused job pretrain-a: admission webhook"):
        VolcanoCluster().submit(JOB)


def test_logs_stream_the_master_pod(calls, monkeypatch):
    pods = SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name=n))
                                  for n in ("pretrain-a-worker-0", "pretrain-a-master-0")])
    seen = {}

    def list_pods(self, **kwargs):
        seen["list"] = kwargs
        return pods

    def read_log(self, **kwargs):
        seen["log"] = kwargs
        return SimpleNamespace(stream=lambda: iter([b"epoch 1\n", b"epoch 2\n"]), release_conn=lambda: None)

    monkeypatch.setattr(CoreV1Api, "list_namespaced_pod", list_pods)
    monkeypatch.setattr(CoreV1Api, "read_namespaced_pod_log", read_log)
    out = io.StringIO()
    VolcanoCluster().logs("pretrain-a", follow=True, out=out)
    assert out.getvalue() == "epoch 1\nepoch 2\n"
    assert seen["list"] == {"namespace": "ml", "label_selector": "volcano.sh/job-name=pretrain-a"}
    assert seen["log"] == {"name": "pretrain-a-master-0", "namespace": "ml", "container": "vipr", "follow": True,
                           "_preload_content": False}


def test_without_the_client_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(ViprError, match=r"pip install 'vipr\[cluster\]'"):
        cluster.load_client()


def test_no_credentials_is_one_line(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def no_config(*args, **kwargs):
        raise kubernetes.config.ConfigException("Invalid kube-config file. No configuration found.")

    monkeypatch.setattr(kubernetes.config, "load_kube_config", no_config)
    with pytest.raises(ViprError, match=r"^no Kubernetes credentials \(Invalid kube-config file"):
        VolcanoCluster()
