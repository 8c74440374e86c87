"""Markdown sections of docs/benchmarks.md, one function per benchmark's JSON record."""

from __future__ import annotations


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def quickstart_section(r: dict, load) -> str:
    gain = r["pre-trained_knn_top1"] - r["random_knn_top1"]
    return "\n".join([
        "## Pre-training helps: `vipr quickstart`\n",
        f"MoCo v2, backbone `{r.get('backbone')}`, {r.get('epochs')} epochs on {r.get('data', 'builtin:shapes')} "
        "(5,000 train / 1,000 test images, 32 px); top-1 on the test split (%).\n",
        _row("backbone", "kNN top-1 (k=200)", "linear top-1"), _row("---", "---:", "---:"),
        _row("random init", f"{r['random_knn_top1']:.1f}", f"{r['random_linear_top1']:.1f}"),
        _row("pre-trained", f"{r['pre-trained_knn_top1']:.1f}", f"{r['pre-trained_linear_top1']:.1f}"),
        f"\nkNN gain from pre-training: **{gain:+.1f} points** (target: at least +10).",
    ])


def pretrain_section(r: dict, load) -> str:
    lines = [
        "## MoCo v2 pre-training throughput\n",
        f"{r['backbone']}, {r['image_size']} px, batch {r['batch_size']}, {r['method']}; "
        f"{r['steps']} timed steps after {r['warmup']} warm-up steps. A step is the whole pipeline: "
        "reading the batch, augmenting two views, forward, backward and the update.\n",
        _row("pipeline", "images/s"), _row("---", "---:"),
        _row("vipr, bf16 + channels-last (precision=auto)", f"{r['vipr_bf16_images_per_s']:.1f}"),
        _row("vipr, fp32", f"{r['vipr_fp32_images_per_s']:.1f}"),
    ]
    if "lightly_fp32_images_per_s" in r:
        lines += [
            _row("lightly 1.6.0 MoCo example, fp32 (as shipped), 2 DataLoader workers", f"{r['lightly_fp32_images_per_s']:.1f}"),
            _row("lightly 1.6.0, bf16 autocast + channels-last added", f"{r['lightly_bf16_images_per_s']:.1f}"),
            f"\nSpeed-up of vipr (bf16) over lightly: {r['speedup_vs_lightly_fp32']:.2f}x against lightly as "
            f"shipped, **{r['speedup_vs_lightly_bf16']:.2f}x** against lightly with bf16 and channels-last added "
            "(target: 1.15x). At 32 px per-image augmentation is cheap, so with bf16 added lightly's step is the same "
            "model step as vipr's; the gain is the augmentation batched on the training device and both cores left "
            "to the model instead of to DataLoader workers.",
        ]
    lines += [
        f"\nCompute bound: the measured bf16 matmul rate is {r['matmul_tflops_bf16']:.3f} TFLOP/s "
        f"(fp32: {r['matmul_tflops_fp32']:.3f}); one training step costs {r['gflops_per_image']:.2f} GFLOP "
        "per image (torch.utils.flop_counter over a real step: query forward + backward, key forward), "
        f"so the bound is {r['bound_images_per_s']:.1f} images/s and vipr runs at "
        f"**{100 * r['vipr_fraction_of_bound']:.0f}%** of it (target: at least 80%).",
    ]
    if "step_breakdown" in r:
        b = r["step_breakdown"]
        share = {k: 100 * b[f"{k}_ms_per_image"] / b["ms_per_image"] for k in ("conv", "elementwise", "other")}
        lines += [
            "\nWhere vipr's bf16 step goes (torch.profiler, ms per image):\n",
            _row("part", "ms per image", "share"), _row("---", "---:", "---:"),
            _row("convolutions, forward and backward (oneDNN)", f"{b['conv_ms_per_image']:.2f}", f"{share['conv']:.0f}%"),
            _row("BatchNorm, ReLU and residual adds, forward and backward", f"{b['elementwise_ms_per_image']:.2f}",
                 f"{share['elementwise']:.0f}%"),
            _row("the rest (augmentation, loss, queue, optimizer, casts)", f"{b['other_ms_per_image']:.2f}",
                 f"{share['other']:.0f}%"),
            f"\nThe convolutions carry nearly all of the step's FLOPs and reach {r['conv_tflops_bf16']:.2f} TFLOP/s, "
            f"{100 * r['conv_tflops_bf16'] / r['matmul_tflops_bf16']:.0f}% of the matmul rate: with every other "
            f"part free, a step would run at {r['conv_bound_images_per_s']:.0f} images/s, "
            f"{100 * r['conv_bound_images_per_s'] / r['bound_images_per_s']:.0f}% of the bound. The 80% target "
            "therefore asks for faster convolution kernels than oneDNN's on this CPU, and for the memory-bound "
            "passes to be fused into them.",
        ]
    return "\n".join(lines)


def augment_section(r: dict, load) -> str:
    lines = ["## Two-view augmentation throughput\n",
             f"Recipe {r.get('recipe', 'moco_v2')}; images per second, each image yielding two views "
             "(median of 3 timed runs).\n"]
    for key, rates in r.items():
        if not isinstance(rates, dict) or "vipr_batched_cpu" not in rates:
            continue
        lines += [f"\n**{key.replace('_', ', ')}**\n", _row("pipeline", "images/s"), _row("---", "---:")]
        lines += [_row(name.replace("_", " "), f"{value:,.0f}" if value > 10 else f"{value:.2f}")
                  for name, value in rates.items() if name != "speedup_vs_dataloader"]
        fused = " (its ops compiled, as `vipr pretrain` runs views from 128 px)" if "vipr_fused_cpu" in rates else ""
        lines.append(f"\nvipr's batched pipeline{fused}: **{rates['speedup_vs_dataloader']:.1f}x** torchvision's "
                     "per-image pipeline in 2 DataLoader workers.")
    return "\n".join(lines)


def serve_section(r: dict, load) -> str:
    lines = [
        "## Online serving: `vipr serve` under load\n",
        f"{r['model']}, {r['runtime']} runtime (bf16 where the CPU runs it fast); {r['clients']} concurrent "
        "closed-loop clients on loopback posting pre-encoded JPEGs to `/v1/models/{name}/classify` "
        f"(decode, resize, batch, model, top-k); max delay {r['max_delay_ms']} ms. The client process "
        "shares the machine's two cores with the server.\n",
        _row("case", "images/s", "p50 ms", "p95 ms", "p99 ms", "5xx", "model calls by batch size"),
        _row("---", "---:", "---:", "---:", "---:", "---:", "---"),
    ]
    for key, label in (("dynamic_batching", f"dynamic batching (max {r['dynamic_batching']['max_batch_size']})"),
                       ("no_batching", "no batching (max 1)")):
        c = r[key]
        hist = ", ".join(f"{k}: {v}" for k, v in c["batch_size_histogram"].items())
        lines.append(_row(label, f"{c['images_per_s']:.1f}", f"{c['p50_ms']:.0f}", f"{c['p95_ms']:.0f}",
                          f"{c['p99_ms']:.0f}", c["errors_5xx"], hist))
    raw = ", ".join(f"batch {k}: {v:.1f}" for k, v in r["raw_images_per_s_by_batch"].items())
    client = r["dynamic_batching"].get("client_cores_used")
    if client is not None:
        lines.append(f"\nThe load generator itself used {client:.2f} of the 2 cores during the batched run.")
    lines += [f"\nThe model called directly (images/s): {raw}. The service reaches "
              f"**{100 * r['fraction_of_raw']:.0f}%** of the best direct rate (target: at least 70%, zero 5xx)."]
    return "\n".join(lines)


def nas_section(r: dict, load) -> str:
    setting, reference = r["setting"], r.get("reference") or {}
    measured = bool(reference)  # the authors' figures exist only as measured in the same run
    authors_note = ("*Authors' code* (quark0/darts for darts_1st / darts_2nd, yuhuixu1993/PC-DARTS with its K = 4 "
                    "for pcdarts) was measured side by side in the same run, at the same setting, data, warm-up and "
                    "median, each case in its own fresh process: their `Architect.step` and their train_search.py "
                    "weight update (forward, backward, `clip_grad_norm_(.., 5)`, SGD step), fp32, contiguous tensors."
                    if measured else "*Authors' code*: not measured in this run (pass `--darts-repo` / "
                    "`--pcdarts-repo` to measure it side by side).")
    lines = ["## Architecture search: seconds per step and peak memory\n",
             f"`python benchmarks/nas.py`: C = {setting['channels']}, {setting['layers']} cells, batch {setting['batch']}, "
             f"{setting['image_size']} px, random data; median of {setting['steps']} steps after {setting['warmup']} "
             f"warm-up; peak RSS of a fresh process per strategy. {authors_note} P-DARTS is timed in its first stage "
             "(5 cells); GOLD-NAS updates alpha and weights in one step.\n",
             _row("strategy", "arch step (s)", "weight step (s)", "peak RSS (GB)", "authors' code (s, s, GB)",
                  "vipr / authors (arch, weight, memory)"),
             "|---|---:|---:|---:|---|---|"]
    for name, res in r["results"].items():
        if "error" in res:
            lines.append(_row(name, "failed", "–", "–", "–", f"`{res['error']}`"))
            continue
        ref = reference.get(name)
        arch = "–" if res["arch_s"] is None else f"{res['arch_s']:.2f}"
        authors = f"{ref['arch_s']:.2f}, {ref['weight_s']:.2f}, {ref['peak_rss_gb']:.2f}" if ref else \
            ("not measured" if name in ("darts_1st", "darts_2nd", "pcdarts") else "–")
        ratio = res.get("vs_reference")
        ratios = f"{ratio['arch_s']:.2f}x, {ratio['weight_s']:.2f}x, {ratio['peak_rss_gb']:.2f}x" if ratio else "–"
        lines.append(_row(name, arch, f"{res['weight_s']:.2f}", f"{res['peak_rss_gb']:.2f}", authors, ratios))
    if reference:
        limits = {"arch_s": 0.4, "weight_s": 0.4, "peak_rss_gb": 0.7}
        labels = {"arch_s": "arch", "weight_s": "weight", "peak_rss_gb": "memory"}
        missed = [f"{name} {labels[k]} {v:.3f}x" for name, res in r["results"].items()
                  for k, v in (res.get("vs_reference") or {}).items() if v > limits[k]]
        lines.append("\nTarget: vipr / authors at most 0.4x for the arch and weight steps of DARTS and PC-DARTS, "
                     "peak memory at most 0.7x. " + (f"Missed in this run: {', '.join(missed)}." if missed
                                                     else "Met in this run by every case."))
    for name, error in (r.get("reference_errors") or {}).items():
        lines.append(f"\nThe authors' {name} failed: `{error}`.")
    pc_over = r.get("pcdarts_over_darts_peak_rss")
    pc_line = f"PC-DARTS (K = 4) peak memory / DARTS': {pc_over:.3f} (target <= 0.4). " if pc_over else ""
    lines.append(f"\n{pc_line}Importing torch alone takes {r['torch_import_rss_gb']:.2f} GB of the RSS.")
    if r.get("reference_source"):
        lines.append(f"\nAuthors' figures {r['reference_source']}; patched at import, and nothing else: "
                     + "; ".join(f"`{patch.split(' (')[0]}`" for patch in r.get("authors_patches", [])) + ".")
    return "\n".join(lines)