"""The offline validator: each rule caught on a good manifest mutated to break it, the message naming the field."""

import copy

import pytest

from vipr.errors import ConfigError
from vipr.jobs.spec import parse_spec
from vipr.jobs.validate import job_problems, queue_problems, validate_job, validate_queue
from vipr.jobs.volcano import render_job, render_queue

GOOD = render_job(parse_spec({"name": "pretrain-2x2", "command": ["vipr", "pretrain"], "image": "vipr:1",
                              "resources": {"nodes": 3, "gpu": 1}, "volumes": {"workspace_pvc": "ws"}}))


def task(job, i=0):
    return job["spec"]["tasks"][i]


def container(job, i=0):
    return task(job, i)["template"]["spec"]["containers"][0]


def set_(path, value):
    def mutate(job):
        node = job
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


MUTATIONS = [  # (how to break it, a part of the message it must give)
    (set_(["spec", "minAvaliable"], 1), "spec.minAvaliable: unknown field (did you mean minAvailable?); Kubernetes "
                                         "would drop it"),
    (lambda j: task(j).update(replica=2), "spec.tasks[0].replica: unknown field (did you mean replicas?)"),
    (lambda j: container(j).update(envs=[]), "spec.tasks[0].template.spec.containers[0].envs: unknown field"),
    (set_(["status"], {}), "status: unknown field"),
    (lambda j: task(j).update(replicas="1"), "spec.tasks[0].replicas must be an integer, got '1'"),
    (lambda j: container(j)["resources"]["limits"].update(memory="lots"),
     "spec.tasks[0].template.spec.containers[0].resources.limits.memory must be a quantity"),
    (set_(["apiVersion"], "batch.volcano.sh/v1"),
     "apiVersion: 'batch.volcano.sh/v1' must be batch.volcano.sh/v1alpha1"),
    (set_(["kind"], "VolcanoJob"), "kind: 'VolcanoJob' must be Job"),
    (set_(["metadata", "name"], "Pretrain"), "metadata.name: 'Pretrain' must be a DNS-1123 label"),
    (set_(["metadata", "namespace"], "ML"), "metadata.namespace: 'ML' must be a DNS-1123 label"),
    (set_(["spec", "queue"], "Team A"), "spec.queue: 'Team A' must be a DNS-1123 subdomain"),
    (set_(["spec", "queue"], "q" * 254), "must be a DNS-1123 subdomain (at most 253 characters)"),
    (set_(["spec", "queue"], "root"), "spec.queue: 'root' must be a DNS-1123 subdomain (at most 253 characters) "
                                      "other than root"),
    (set_(["spec", "minAvailable"], -1), "spec.minAvailable: -1 must be >= 0"),
    (set_(["spec", "maxRetry"], -1), "spec.maxRetry: -1 must be >= 0"),
    (set_(["spec", "minSuccess"], 0), "spec.minSuccess: 0 must be >= 1"),
    (set_(["spec", "ttlSecondsAfterFinished"], -5), "spec.ttlSecondsAfterFinished: -5 must be >= 0"),
    (lambda j: task(j).update(replicas=-1), "spec.tasks[0].replicas: -1 must be >= 0"),
    (set_(["spec", "tasks"], []), "spec.tasks: a job needs at least one task"),
    (lambda j: task(j, 1).update(name="master"), "spec.tasks[1].name: task name 'master' is used twice"),
    (lambda j: task(j, 1).update(name="Worker_1"), "spec.tasks[1].name: 'Worker_1' must be a DNS-1123 label"),
    (lambda j: task(j, 1).update(minAvailable=3), "spec.tasks[1].minAvailable: 3 is more than the task's 2 replicas"),
    (set_(["spec", "minAvailable"], 4), "spec.minAvailable: 4 is more than the 3 replicas of all tasks"),
    (lambda j: j["spec"]["plugins"].update(horovod=[]), "spec.plugins.horovod: unknown plugin; known: pytorch"),
    (lambda j: j["spec"]["plugins"].update(svc="--publish"), "spec.plugins.svc must be a list"),
    (lambda j: j["spec"]["policies"][0].update(action="Restart"), "spec.policies[0].action: 'Restart' must be one of "
                                                                  "AbortJob, RestartJob"),
    (lambda j: j["spec"]["policies"][0].update(exitCode=3), "spec.policies[0]: give event(s) or exitCode, not both"),
    (lambda j: j["spec"]["policies"].append({"action": "RestartJob"}),
     "spec.policies[2]: give event(s) or an exitCode"),
    (lambda j: j["spec"]["policies"].append({"exitCode": 0, "action": "AbortJob"}),
     "spec.policies[2].exitCode: 0 is success"),
    (lambda j: j["spec"]["policies"][0].update(event="PodGone"), "spec.policies[0]: unknown event 'PodGone'"),
    (lambda j: j["spec"]["policies"][1].update(event="PodEvicted"), "spec.policies[1]: event PodEvicted is handled "
                                                                    "twice in spec.policies"),
    (lambda j: j["spec"]["policies"][1].update(event="*"), "spec.policies: event * (any event) must be the only event"),
    (lambda j: task(j).update(policies=[{"events": ["TaskCompleted", "TaskCompleted"], "action": "CompleteJob"}]),
     "spec.tasks[0].policies[0]: event TaskCompleted is handled twice"),
    (lambda j: task(j, 1).update(dependsOn={"name": ["ps"]}), "spec.tasks[1].dependsOn.name: no task named 'ps'"),
    (lambda j: (task(j, 0).update(dependsOn={"name": ["worker"]}), task(j, 1).update(dependsOn={"name": ["master"]})),
     "spec.tasks: dependsOn forms a cycle"),
    (lambda j: task(j).update(dependsOn={"name": ["worker"], "iteration": "each"}),
     "spec.tasks[0].dependsOn.iteration: 'each' must be any or all"),
    (lambda j: task(j).update(topologyPolicy="numa"), "spec.tasks[0].topologyPolicy: 'numa' must be one of none"),
    (set_(["spec", "networkTopology"], {"mode": "strict"}), "spec.networkTopology.mode: 'strict' must be hard or soft"),
    (set_(["spec", "volumes"], [{"mountPath": "/x"}]), "spec.volumes[0]: give one of volumeClaimName"),
    (set_(["spec", "volumes"], [{"volumeClaimName": "c"}]), "spec.volumes[0]: no mountPath"),
    (lambda j: task(j)["template"]["spec"].update(containers=[]),
     "spec.tasks[0].template.spec.containers: a pod needs"),
    (lambda j: task(j)["template"]["spec"].update(restartPolicy="Sometimes"),
     "spec.tasks[0].template.spec.restartPolicy: 'Sometimes' must be one of Never"),
    (lambda j: container(j).update(image=""), "spec.tasks[0].template.spec.containers[0].image: no image"),
    (lambda j: container(j).update(name="Main"), "spec.tasks[0].template.spec.containers[0].name: 'Main' must be a "
                                                 "unique DNS-1123 label"),
    (lambda j: container(j)["volumeMounts"].append({"name": "cache", "mountPath": "/c"}),
     "spec.tasks[0].template.spec.containers[0].volumeMounts[2].name: no pod volume named 'cache'"),
    (lambda j: container(j)["resources"]["requests"].update(memory="64Gi"),
     "spec.tasks[0].template.spec.containers[0].resources.requests.memory: 64Gi is more than limits.memory 4Gi"),
    (lambda j: container(j)["resources"]["limits"].pop("nvidia.com/gpu"),
     "resources.requests.nvidia.com/gpu: an extended resource needs limits.nvidia.com/gpu equal to the request"),
]


def test_a_rendered_manifest_is_valid():
    assert job_problems(GOOD) == []
    validate_job(GOOD)


@pytest.mark.parametrize("mutate, message", MUTATIONS, ids=[m for _, m in MUTATIONS])
def test_each_rule_is_caught_with_its_field_path(mutate, message):
    broken = copy.deepcopy(GOOD)
    mutate(broken)
    problems = job_problems(broken)
    assert any(message in p for p in problems), problems
    with pytest.raises(ConfigError, match="^invalid Volcano Job "):
        validate_job(broken)


def test_every_problem_is_reported_at_once_on_one_line():
    broken = copy.deepcopy(GOOD)
    broken["spec"]["minAvaliable"] = 1
    broken["spec"]["tasks"][1]["name"] = "master"
    with pytest.raises(ConfigError) as err:
        validate_job(broken)
    assert "\n" not in str(err.value) and str(err.value).count("; ") >= 1
    assert "spec.minAvaliable" in str(err.value) and "spec.tasks[1].name" in str(err.value)


def test_not_a_mapping():
    assert job_problems(["kind: Job"]) == ["the manifest must be a mapping, got ['kind: Job']"]


@pytest.mark.parametrize("mutate, message", [
    (set_(["spec", "weigth"], 2), "spec.weigth: unknown field (did you mean weight?)"),
    (set_(["spec", "weight"], 0), "spec.weight: 0 must be >= 1"),
    (set_(["spec", "capability"], {"cpu": "many"}), "spec.capability.cpu must be a quantity"),
    (set_(["metadata", "namespace"], "ml"), "metadata.namespace: a Queue is cluster-scoped; drop the namespace"),
    (set_(["metadata", "name"], "root"), "metadata.name: root is Volcano's own root queue"),
    (set_(["metadata", "name"], "Team A"), "metadata.name: 'Team A' must be a DNS-1123 subdomain"),
    (set_(["kind"], "Job"), "kind: 'Job' must be Queue"),
    (set_(["spec", "reclaimable"], "yes"), "spec.reclaimable must be true or false"),
])
def test_queue_rules(mutate, message):
    queue = render_queue("team-a", 2, {"cpu": "8"})
    validate_queue(queue)
    mutate(queue)
    problems = queue_problems(queue)
    assert any(message in p for p in problems), problems
