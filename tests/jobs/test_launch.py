"""The rendered pods' scripts, run for real: two "pods" as two local shells, torchrun's static rendezvous
on 127.0.0.1 standing in for the pytorch plugin's MASTER_ADDR, gloo on the CPU (`slow`: about 80 s for
its two attempts on one core; benchmarks/run_slow.sh runs it).

It proves the launch line of a two-node Volcano Job trains (rank 0 on the master), the master
registers the model afterwards, and a second attempt on the same run folder resumes."""

import os
import socket
import subprocess

import pytest

from vipr.jobs.spec import parse_spec
from vipr.jobs.volcano import container_script

pytestmark = pytest.mark.slow

COMMAND = ["vipr", "pretrain", "--data", "builtin:shapes?train=100&test=20&size=16", "--backbone", "tiny",
           "--image-size", "16", "--epochs", "1", "--batch-size", "20", "--no-progress",
           "--set", "method.queue_size=40", "method.proj_hidden_dim=16", "method.proj_dim=8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def attempt(spec, cwd) -> tuple[str, str]:
    """One attempt of the job: the worker's and the master's shells side by side; (master log, worker log)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "VIPR_HOME": str(cwd / ".vipr"),
           "VIPR_TRACKING": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(["sh", "-c", container_script(spec, master=False)], cwd=cwd, env={**env, "RANK": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    master = subprocess.run(["sh", "-c", container_script(spec, master=True)], cwd=cwd, env={**env, "RANK": "0"},
                            capture_output=True, text=True, timeout=600)
    worker_log = worker.communicate(timeout=120)[0]
    assert master.returncode == 0 and worker.returncode == 0, master.stdout + master.stderr + worker_log
    return master.stdout + master.stderr, worker_log


def test_two_pods_train_register_and_a_retry_resumes(tmp_path):
    spec = parse_spec({"name": "smoke-2n", "command": COMMAND, "image": "vipr:dev",
                       "outputs": {"register": {"name": "smoke", "alias": "candidate"}},
                       "resources": {"nodes": 2, "memory": "2Gi"}, "retry": {"max_retries": 1, "on": ["failed"]},
                       "volumes": {"workspace_pvc": "ws"}})
    master, worker = attempt(spec, tmp_path)
    assert "pre-trained tiny with moco_v2: checkpoint runs/smoke-2n/checkpoint.pt" in master
    assert "registered smoke version 1 (@candidate) from runs/smoke-2n" in master
    assert "pre-trained" not in worker  # rank 0, where vipr reports, is the master pod
    master, _ = attempt(spec, tmp_path)  # as after a RestartJob: the same run folder, --resume added
    assert "already finished: runs/smoke-2n holds all" in master and "registered smoke version 2" in master
