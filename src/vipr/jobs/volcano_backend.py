"""The Volcano backend of ``vipr job``: jobs as Volcano Jobs in one namespace of the kubeconfig's cluster.

``delete`` is ``cancel`` there (a cancelled Volcano Job is deleted: pods get SIGTERM). ``retry`` is
refused: Volcano retries an attempt itself, by the spec's retry policy; to run a finished job
again, delete it and submit its spec again.
"""

from __future__ import annotations

from vipr.errors import ViprError


def render_volcano(spec, namespace: str, image: str | None) -> dict:
    """The validated Volcano Job of ``spec`` (every manifest passes the offline checks before it leaves)."""
    from vipr.jobs.validate import validate_job
    from vipr.jobs.volcano import render_job

    manifest = render_job(spec, namespace=namespace, image=image)
    validate_job(manifest)
    return manifest


class VolcanoBackend:
    """Jobs as Volcano Jobs in one namespace of the current kubeconfig's cluster."""

    def __init__(self, args):
        from vipr.jobs.cluster import VolcanoCluster

        self.cluster, self.image = VolcanoCluster(args.namespace), getattr(args, "image", None)

    def submit(self, spec) -> dict:
        manifest = render_volcano(spec, self.cluster.namespace, self.image)
        self.cluster.submit(manifest)
        return {"name": spec.name, "namespace": self.cluster.namespace, "queue": spec.queue, "state": "queued",
                "pods": spec.resources.nodes, "processes_per_pod": spec.resources.processes_per_node}

    def list(self) -> list[dict]:
        return self.cluster.list()

    def show(self, name: str) -> dict:
        return self.cluster.show(name)

    def logs(self, name: str, follow: bool) -> None:
        self.cluster.logs(name, follow=follow)

    def cancel(self, name: str) -> dict:
        self.cluster.cancel(name)
        return {"name": name, "state": "cancelled"}

    delete = cancel  # a Volcano Job is stopped by deleting it

    def retry(self, name: str) -> dict:
        raise ViprError(f"retry is not supported on volcano: Volcano retries a job by its spec's retry policy; "
                        f"to run {name} again, `vipr job delete {name} --backend volcano` and submit its spec again")

    # --- text for the CLI ---------------------------------------------------------------------------------

    def submitted_line(self, done: dict) -> str:
        return (f"submitted job {done['name']} to queue {done['queue']} in namespace {done['namespace']}: "
                f"{done['pods']} pod(s) x {done['processes_per_pod']} process(es); follow it with `vipr job logs "
                f"{done['name']} --backend volcano --namespace {done['namespace']} --follow`")

    def table(self, jobs: list[dict]) -> tuple[list[str], list[list]]:
        return (["name", "state", "phase", "queue", "retries", "created"],
                [[j["name"], j["state"], j["phase"] or "-", j["queue"], j["retries"], j["created"] or "-"]
                 for j in jobs])

    def show_text(self, job: dict) -> str:
        pods = ", ".join(f"{count} {phase}" for phase, count in job["pods"].items() if count) or "none yet"
        text = (f"job {job['name']} (namespace {job['namespace']}, queue {job['queue']}): {job['state']} "
                f"(Volcano phase {job['phase'] or '-'}), {job['retries']} retries, pods: {pods}")
        return text + (f"\nmessage: {job['message']}" if job.get("message") else "")

    def cancelled_line(self, done: dict) -> str:
        return f"cancelled job {done['name']}: deleted, its pods are stopping (SIGTERM: vipr saves its checkpoint)"

    deleted_line = cancelled_line
