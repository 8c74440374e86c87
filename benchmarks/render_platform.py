"""Sections of docs/benchmarks.md for the platform and data-at-scale scripts (make_docs.py calls them)."""

from __future__ import annotations


def job_overhead_section(r: dict, load) -> str:
    rows = [(f"no-op job (`{r['noop']['command']}`)", r["noop"]), ("cheapest torch job (a kNN probe of a random tiny "
                                                                      "backbone)", r["knn_probe"])]
    return "\n".join([
        "## Local job queue: overhead of a job", "",
        f"{r['runs']} jobs of each command one after another on one `vipr worker` with SQLite, each submitted by "
        "`vipr job submit` (its own process) and watched until its row says succeeded; medians in seconds.", "",
        "| job | submit -> succeeded | the `vipr job submit` process | queue wait (poll) | the command's run | "
        "queue overhead | slowest of the runs |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {label} | **{m['median_total_s']:.2f}** | {m['median_submit_s']:.2f} | {m['median_queue_wait_s']:.2f} | "
          f"{m['median_run_s']:.2f} | {m['median_overhead_s']:.2f} | {m['max_total_s']:.2f} |" for label, m in rows],
        "", "Target: a no-op job under 2 s from submit to succeeded. Queue overhead = submit -> succeeded minus the "
        "command's own run; a command that imports torch adds its import (the kNN probe's run) to every job.",
    ])


def job_sharing_section(r: dict, load) -> str:
    a, b = r["shared_images_per_s"]
    return "\n".join([
        "## Local job queue: two jobs sharing the machine", "",
        f"One `vipr worker --cpus 2`: a pre-training job with `resources.cpu=2` alone, then two identical jobs with "
        f"`resources.cpu=1` at once (each gets OMP_NUM_THREADS=1). Command: `{r['command']}`.", "",
        "| run | images/s |", "|---|---:|",
        f"| one 2-cpu job alone | {r['alone_images_per_s']:,.1f} |",
        f"| two 1-cpu jobs at once: a | {a:,.1f} |", f"| two 1-cpu jobs at once: b | {b:,.1f} |", "",
        f"Each shared job reaches **{r['shared_each_ratio']:.0%}** of the lone job's rate (target: at least 45%); "
        f"together {r['shared_total_ratio']:.2f}x."
        + (" Measured with `--quick` (the tiny backbone), not the ResNet-18 run the target names." if r.get("quick")
           else ""),
    ])


def job_soak_section(r: dict, load) -> str:
    states = ", ".join(f"{count} {state}" for state, count in sorted(r["states"].items()))
    return "\n".join([
        "## Local job queue: soak with kill -9", "",
        f"`python benchmarks/job_soak.py`: {r['jobs']} short pre-training jobs (a checkpoint every 5 steps) on two "
        f"`vipr worker --cpus 1` sharing one SQLite file; worker 0 got SIGKILL {r['kills']} times (of "
        f"{r['kills_asked']} asked) at random moments while it ran a job, and was started again at once.", "",
        "| jobs | final states | attempts | evicted and re-queued | jobs resumed from their checkpoint | jobs started over | "
        "resumed checkpoints that load | most attempts of one job alive at once | problems |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['jobs']} | {states} | {r['attempts']} | {r['evicted_retries']} | {r['resumed_runs']} | "
        f"{r['restarted_runs']} | {r['resumed_checkpoints_loaded']} | {r['max_attempts_alive_at_once']} "
        f"({r['monitor_samples']:,} samples of /proc) | {len(r['problems'])} |", "",
        f"Every job ended once, in a final state, in {r['seconds']:,.0f} s." if not r["problems"] else
        "Problems: " + "; ".join(r["problems"]),
    ])


def encoded_pipeline_section(r: dict, load) -> str:
    return "\n".join([
        "## 224-px data pipeline from JPEG files: encoded store against ImageFolder", "",
        f"MoCo v2's two augmented 224-px views per image from {r['photo']} photos, batch {r['batch']}, "
        f"{r['cores_used']} cores: vipr's encoded store (crops cut at decode on threads, flips and colour batched) "
        "against torchvision's ImageFolder with transforms.v2 in one DataLoader worker per core.", "",
        "| pipeline | images/s |", "|---|---:|",
        f"| vipr encoded store | {r['vipr_img_s']:,.1f} |",
        *([f"| vipr encoded store, per-pixel ops uncompiled (`train.fused_augment=false`) | {r['vipr_eager_img_s']:,.1f} |"]
          if "vipr_eager_img_s" in r else []),
        f"| torchvision ImageFolder + DataLoader | {r['torchvision_img_s']:,.1f} |",
        "", f"Ratio **{r['ratio']:.2f}x** (target: 2x for the pipeline alone)"
        + (f"; {r['ratio_eager']:.2f}x uncompiled. The first row compiles the views' per-pixel ops as `vipr pretrain` "
           "does for 224-px views (`train.fused_augment`, vipr.data.fusion), the second does not." if "ratio_eager" in r else "."),
    ] + ([] if "step_img_s" not in r else [
        "", f"End to end the pipeline shares the cores with the training step: vipr's MoCo v2 step (ResNet-18, "
        f"224 px, batch 16, fp32, {r['cores_used']} cores) runs at {r['step_img_s']:.2f} images/s"
        + (f", its model alone (the step less drawing its views, timed on the same batches) at "
           f"{r['model_img_s']:.2f}" if "model_img_s" in r else "")
        + f", so even a data pipeline that cost nothing would make training at most **{r['end_to_end_bound']:.3f}x** "
        "as fast as with torchvision's (1 + model images/s / torchvision pipeline images/s; target 1.5x end to end)."]))


def stream_memory_section(r: dict, load) -> str:
    rows = [(f"{run['cache_gb']:g} GB" if run["cache_gb"] is not None else "none (every shard stays mapped)", run)
            for run in r["runs"]]
    bounded_growth, unbounded_growth = (run["rss_file_peak_mb"] - run["rss_file_start_mb"] for run in r["runs"])
    cache_gb, cores = r["runs"][0]["cache_gb"], r["cores_used"]
    return "\n".join([
        "## Resident memory of a streamed epoch: `data.cache_gb`", "",
        "One epoch of the loader `vipr pretrain` builds for "
        f"`data.store=encoded data.shuffle_buffer={r['shuffle_buffer']}` (batch {r['batch']}, MoCo v2's two "
        f"{r['side']}-px views cut at decode, {cores} core{'s' * (cores > 1)}) over an encoded store of {r['store_mb']:,.1f} MB: {r['images']:,} {r['photo']} files ({r['jpeg_kb']:.0f} KB each) in "
        f"{r['shards']} shards of {r['shard_mb']:g} MiB. RssFile (file pages mapped into the process: its libraries, "
        "and the shards' pages read through open maps) and RssAnon sampled from /proc/self/status at every step, in "
        "MB; maps opened: over the epoch, a shard read again after its map closed counted again.", "",
        "| bound on mapped shards | mapped at most (MB) | maps open at most | maps opened | RssFile start / peak / "
        "final | RssAnon start / peak / final | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {label} | {run['peak_mapped_mb']:,.1f} | {run['peak_open_maps']} | {run['maps_opened']:,} | "
          f"{run['rss_file_start_mb']:,.1f} / {run['rss_file_peak_mb']:,.1f} / {run['rss_file_final_mb']:,.1f} | "
          f"{run['rss_anon_start_mb']:,.1f} / {run['rss_anon_peak_mb']:,.1f} / {run['rss_anon_final_mb']:,.1f} | "
          f"{run['images_per_s']:,.1f} |" for label, run in rows],
        "", f"With `data.cache_gb={cache_gb:g}` ({cache_gb * 1e3 / r['store_mb']:.0%} of the store) RssFile grew by "
        f"**{bounded_growth:,.1f} MB** over the epoch; "
        f"with no bound by {unbounded_growth:,.1f} MB ({unbounded_growth / r['store_mb']:.0%} of the store). "
        "Target: streaming a store 10x larger than the cache budget keeps resident memory flat.",
    ])


SECTIONS = (("job_overhead", job_overhead_section), ("job_sharing", job_sharing_section),
            ("job_soak", job_soak_section),
            ("encoded_pipeline", encoded_pipeline_section), ("stream_memory", stream_memory_section))
