"""Turn pytest-benchmark JSON files into a markdown report (module table, goals, op table) and
a PNG chart of the modules' speedups.

    python benchmarks/report.py results.json [more.json ...] --out DIR [--title TEXT]
                                [--stat median|min]

Several files (e.g. the GPU check's one per benchmark group) are read as one run.

Per (module, batch, dtype, layout): the median (or minimum) time of each provider, the fused
providers' speedup over eager and over torch.compile, their time as a multiple of the
convolution floor, GFLOP/s; the CPU peers (peers.py: ONNX Runtime, OpenVINO, torch.compile with
freezing) in a table of their own, fused against the best of them, as a share of the machine's
GEMM ceiling where the run measured it (the "gemm" rows of test_bench_ops.py); then the
project's speed goals for that device, each marked met or missed with the rows that miss.
Rows "tv-…" are torchvision's GoogLeNet (its blocks and the network).
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

ORDER = ["eager", "compile", "compile-max-autotune", "fused-triton", "fused-native", "conv-floor"]
PEERS = ["compile-freeze", "onnxruntime", "openvino"]
SEED_ORDER = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b", "network"]
MODULE_ORDER = SEED_ORDER + [f"tv-{name}" for name in SEED_ORDER]


def _rows(names, batches, dtypes):
    return lambda key: key[0] in names and key[1] in batches and key[2] in dtypes


MODULES, NETWORK, TV_NETWORK = SEED_ORDER[:-1], ["network"], ["tv-network"]
# The goals of the benchmark issue: (what, which rows, baseline provider, least baseline/fused).
GOALS = {
    "cpu": [
        ("fused >= 4x eager per module, batch 16, fp32", _rows(MODULES, [16], ["fp32"]),
         "eager", 4.0),
        ("fused >= 1.5x torch.compile per module, batch 16, fp32",
         _rows(MODULES, [16], ["fp32"]), "compile", 1.5),
        ("fused <= 1.25x the convolution floor per module, batch 16, fp32",
         _rows(MODULES, [16], ["fp32"]), "conv-floor", 1 / 1.25),
        ("whole network >= 3x eager, batch 8, fp32", _rows(NETWORK, [8], ["fp32"]), "eager", 3.0),
        ("network >= 1.0x the best peer, batch 1 and 8, fp32", _rows(NETWORK, [1, 8], ["fp32"]),
         "best peer", 1.0),
        ("network >= 1.1x OpenVINO, batch 8, bf16", _rows(NETWORK, [8], ["bf16"]), "openvino",
         1.1),
        ("network >= 1.2x OpenVINO, batch 1, bf16", _rows(NETWORK, [1], ["bf16"]), "openvino",
         1.2),
        ("network >= 1.3x torch.compile, batch 1 and 8, fp32", _rows(NETWORK, [1, 8], ["fp32"]),
         "compile", 1.3),
        ("network >= 1.3x torch.compile with freezing, batch 1 and 8, fp32",
         _rows(NETWORK, [1, 8], ["fp32"]), "compile-freeze", 1.3),
        ("torchvision's network >= 1.0x the faster of OpenVINO and compile with freezing, batch "
         "1 and 8, fp32", _rows(TV_NETWORK, [1, 8], ["fp32"]), "best peer", 1.0),
        ("torchvision's network >= 1.2x the best peer, batch 1 and 8, bf16",
         _rows(TV_NETWORK, [1, 8], ["bf16"]), "best peer", 1.2),
    ],
    "gpu": [
        ("fused >= 3x eager, fp16/bf16, batch 32 and 256, modules and network",
         _rows(MODULE_ORDER, [32, 256], ["fp16", "bf16"]), "eager", 3.0),
        ("fused >= 1.3x torch.compile max-autotune, fp16/bf16, batch 32 and 256, modules and "
         "network", _rows(MODULE_ORDER, [32, 256], ["fp16", "bf16"]), "compile-max-autotune",
         1.3),
    ],
}


def load(paths, stat="median"):
    """Rows keyed (module, batch, dtype, layout) -> {provider: {"seconds", "gflops"}},
    and the run's device and versions, from one JSON file or a list of them. ``stat`` picks
    which of pytest-benchmark's statistics stands for a provider's time ("min" on a shared CPU,
    where noise only ever adds time)."""
    benchmarks = []
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        with open(path) as f:
            benchmarks += json.load(f)["benchmarks"]
    groups = defaultdict(dict)
    meta = {}
    for bench in benchmarks:
        info = bench["extra_info"]
        if not bench.get("stats"):
            continue
        key = (info["module"], info["batch"], info["dtype"], info["layout"])
        seconds = bench["stats"][stat]
        gflops = info.get("gflops") and info["gflops"] * bench["stats"]["median"] / seconds
        groups[key][info["provider"]] = dict(seconds=seconds, gflops=gflops,
                                             saved_mb=info.get("saved_mb"))
        meta = {k: info.get(k) for k in ("device_name", "torch", "triton", "cuda", "cpu_threads")}
    return groups, meta


def best_peer(row):
    """(name, entry) of the fastest CPU peer in ``row``, or (None, None)."""
    found = {p: v for p, v in row.items() if p in PEERS}
    return min(found.items(), key=lambda kv: kv[1]["seconds"]) if found else (None, None)


def baseline_seconds(row, baseline):
    """A baseline provider's time in ``row`` ("best peer": the fastest peer's), or None."""
    if baseline == "best peer":
        return (best_peer(row)[1] or {}).get("seconds")
    return row[baseline]["seconds"] if baseline in row else None


def best_fused(row):
    fused = {p: v for p, v in row.items() if p.startswith("fused-")}
    return min(fused.items(), key=lambda kv: kv[1]["seconds"]) if fused else (None, None)


def markdown(groups, meta, title, stat="median"):
    lines = [f"# {title}", "",
             f"Device: {meta.get('device_name')}; torch {meta.get('torch')}, triton "
             f"{meta.get('triton')}, CUDA {meta.get('cuda')}, {meta.get('cpu_threads')} CPU threads.",
             f"Times are the {stat} over rounds, in ms; speedups are eager / fused and compile / "
             "fused, taken side by side in one run; 'x floor' is fused time over the "
             "convolutions-alone time, and 'ceiling' is eager over that time: the most any fusion "
             "that keeps these convolutions can gain over eager.", "",
             "| module | batch | dtype | layout | eager | compile | max-autotune | fused (best) "
             "| vs eager | vs compile | vs max-autotune | x floor | ceiling | fused GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def ms(row, p):
        return f"{1e3 * row[p]['seconds']:.3f}" if p in row else "-"

    def ratio(row, p, t):
        return f"{row[p]['seconds'] / t:.2f}x" if p in row else "-"

    for key in sorted(module_rows(groups), key=lambda k: (MODULE_ORDER.index(k[0]), *k[1:])):
        row = groups[key]
        name, best = best_fused(row)
        if best is None:
            continue
        t = best["seconds"]
        floor = f"{t / row['conv-floor']['seconds']:.2f}" if "conv-floor" in row else "-"
        ceiling = (ratio(row, "eager", row["conv-floor"]["seconds"])
                   if "conv-floor" in row else "-")
        gf = f"{best['gflops']:.0f}" if best.get("gflops") else "-"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {ms(row, 'eager')} | "
                     f"{ms(row, 'compile')} | {ms(row, 'compile-max-autotune')} | "
                     f"{1e3 * t:.3f} ({name[6:]}) | {ratio(row, 'eager', t)} | "
                     f"{ratio(row, 'compile', t)} | {ratio(row, 'compile-max-autotune', t)} | "
                     f"{floor} | {ceiling} | {gf} |")
    if not module_rows(groups):
        lines = lines[:-3]  # no module rows: only the op table below
    return "\n".join(lines + peers_table(groups) + goals(groups, meta) + training_table(groups)
                     + op_table(groups)) + "\n"


def module_rows(groups):
    """Keys of the inception-module and network rows (the rest are single-op benchmarks)."""
    return [k for k in groups if k[0] in MODULE_ORDER]


def ceilings(groups):
    """{dtype: GFLOP/s} of the machine's GEMM ceiling, where the run measured it."""
    found = {}
    for k, v in groups.items():
        rates = [e["gflops"] for e in v.values() if e.get("gflops")] if k[0] == "gemm" else []
        if rates:  # the faster of torch.mm and oneDNN's GEMM
            found[k[2]] = max(rates)
    return found


def peers_table(groups):
    """Markdown lines: fused against the CPU runtimes a user would pick instead, per row, as a
    share of the GEMM ceiling where it was measured."""
    keys = sorted((k for k in module_rows(groups) if best_peer(groups[k])[0]
                   and best_fused(groups[k])[0]),
                  key=lambda k: (MODULE_ORDER.index(k[0]), *k[1:]))
    if not keys:
        return []
    ceiling = ceilings(groups)
    lines = ["", "## Against the CPU peers (ONNX Runtime, OpenVINO, torch.compile with "
                 "freezing)", "",
             "Each peer's output is checked against the reference before it is timed; peers run "
             "NCHW arrays (their channels_last rows would be the same). 'of ceiling' is GFLOP/s "
             "over the measured GEMM ceiling of that dtype.", "",
             "| model | batch | dtype | layout | compile-freeze | ONNX Runtime | OpenVINO | fused "
             "| fused vs best peer | fused of ceiling | best peer of ceiling |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        row = groups[key]
        name, best = best_fused(row)
        peer, peer_best = best_peer(row)

        def ms(p):
            return f"{1e3 * row[p]['seconds']:.2f}" if p in row else "-"

        def share(entry):
            c = ceiling.get(key[2])
            return f"{100 * entry['gflops'] / c:.0f} %" if c and entry.get("gflops") else "-"

        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {ms('compile-freeze')} | "
                     f"{ms('onnxruntime')} | {ms('openvino')} | {1e3 * best['seconds']:.2f} "
                     f"({name[6:]}) | {peer_best['seconds'] / best['seconds']:.2f}x ({peer}) | "
                     f"{share(best)} | {share(peer_best)} |")
    return lines


def training_table(groups):
    """Markdown lines: training steps (rows named "<module>-train"), with the activation memory
    each provider's step saves for backward."""
    keys = sorted(k for k in groups if k[0].endswith("-train") and best_fused(groups[k])[0])
    if not keys:
        return []
    lines = ["", "## Training steps (zero_grad, forward, loss, backward)", "",
             "| model | batch | dtype | eager ms | compile ms | fused ms | vs eager | vs compile "
             "| saved MB eager | saved MB fused |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        row = groups[key]
        name, best = best_fused(row)
        t = best["seconds"]

        def cell(p, what):
            if p not in row:
                return "-"
            if what == "ms":
                return f"{1e3 * row[p]['seconds']:.1f}"
            if what == "ratio":
                return f"{row[p]['seconds'] / t:.2f}x"
            return f"{row[p]['saved_mb']:.0f}" if row[p].get("saved_mb") is not None else "-"

        lines.append(f"| {key[0][:-6]} | {key[1]} | {key[2]} | {cell('eager', 'ms')} | "
                     f"{cell('compile', 'ms')} | {1e3 * t:.1f} ({name[6:]}) | "
                     f"{cell('eager', 'ratio')} | {cell('compile', 'ratio')} | "
                     f"{cell('eager', 'mb')} | {cell(name, 'mb')} |")
    return lines


def op_table(groups):
    """Markdown lines: each fused op (module names like "4a-lrn") against the ATen ops it
    replaces, in a table of its own."""
    keys = sorted(k for k in groups if k[0] not in MODULE_ORDER and not k[0].endswith("-train")
                  and best_fused(groups[k])[0])
    if not keys:
        return []
    lines = ["", "## Fused ops vs the ATen ops they replace", "",
             "| op | batch | dtype | layout | eager | compile | fused | vs eager | vs compile |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        row = groups[key]
        name, best = best_fused(row)
        t = best["seconds"]
        cell = {p: (f"{1e3 * row[p]['seconds']:.3f}", f"{row[p]['seconds'] / t:.2f}x")
                if p in row else ("-", "-") for p in ("eager", "compile")}
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {cell['eager'][0]} | "
                     f"{cell['compile'][0]} | {1e3 * t:.3f} ({name[6:]}) | {cell['eager'][1]} | "
                     f"{cell['compile'][1]} |")
    return lines


def goals(groups, meta):
    """Markdown lines: each goal of this device met or missed, with the rows that miss it."""
    device = "gpu" if meta.get("cuda") else "cpu"
    if not any(selects(key) for _, selects, _, _ in GOALS[device] for key in groups):
        return []  # e.g. the op benchmarks: no row any goal speaks of
    lines = ["", f"## Goals ({device.upper()})", ""]
    for what, selects, baseline, least in GOALS[device]:
        rows = []
        for key in sorted(module_rows(groups), key=lambda k: (MODULE_ORDER.index(k[0]), *k[1:])):
            _, best = best_fused(groups[key])
            base = baseline_seconds(groups[key], baseline)
            if selects(key) and best is not None and base is not None:
                rows.append((key, base / best["seconds"]))
        if not rows:
            lines.append(f"- NOT MEASURED: {what}")
            continue
        missed = [(k, r) for k, r in rows if r < least]
        fmt = (lambda r: f"{1 / r:.2f}x floor") if baseline == "conv-floor" else (
            lambda r: f"{r:.2f}x")
        if not missed:
            lines.append(f"- MET: {what} (all {len(rows)} rows; worst "
                         f"{fmt(min(r for _, r in rows))})")
        else:
            detail = ", ".join(f"{k[0]} b{k[1]} {k[2]} {k[3]}: {fmt(r)}" for k, r in missed)
            lines.append(f"- MISSED: {what} ({len(missed)} of {len(rows)} rows: {detail})")
    return lines


def chart(groups, path, title):
    """Speedup of the best fused provider over each baseline: one panel per (batch, dtype,
    layout), modules (and the network) along x, a line at 1x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = ("eager", "compile", "compile-max-autotune", "best peer")
    # rows with any baseline (bf16 on CPU has no eager seed network: ATen lacks its LRN)
    keys = [k for k in module_rows(groups) if best_fused(groups[k])[0]
            and any(baseline_seconds(groups[k], p) for p in candidates)]
    if not keys:
        return
    panels = sorted({k[1:] for k in keys})
    baselines = [p for p in candidates if any(baseline_seconds(groups[k], p) for k in keys)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.8 * len(panels)), squeeze=False)
    width = 0.8 / len(baselines)
    for ax, panel in zip(axes[:, 0], panels):
        row_keys = sorted((k for k in keys if k[1:] == panel), key=lambda k: MODULE_ORDER.index(k[0]))
        for i, base in enumerate(baselines):
            # A baseline that was not measured for a row gets no bar (not a 0.0 one).
            xs = [j + i * width for j, k in enumerate(row_keys)
                  if baseline_seconds(groups[k], base)]
            ys = [baseline_seconds(groups[k], base) / best_fused(groups[k])[1]["seconds"]
                  for k in row_keys if baseline_seconds(groups[k], base)]
            bars = ax.bar(xs, ys, width, label=f"fused vs {base}")
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(-0.5, max(len(row_keys), 6) - 0.5)  # a lone network row keeps thin bars
        ax.set_xticks([j + width * (len(baselines) - 1) / 2 for j in range(len(row_keys))],
                      [k[0] for k in row_keys])
        ax.set_ylabel("speedup (x)")
        ax.set_title(f"batch {panel[0]}, {panel[1]}, {panel[2]}", fontsize=10)
        ax.margins(y=0.15)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_files", nargs="+", metavar="json_file")
    parser.add_argument("--out", default=".", help="folder for report.md and speedup.png")
    parser.add_argument("--title", default="googlenet-fused benchmarks")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="which statistic of the rounds is a provider's time")
    args = parser.parse_args(argv)
    groups, meta = load(args.json_files, args.stat)
    os.makedirs(args.out, exist_ok=True)
    md = markdown(groups, meta, args.title, args.stat)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(md)
    chart(groups, os.path.join(args.out, "speedup.png"), f"{args.title} ({meta.get('device_name')})")
    print(md)


if __name__ == "__main__":
    main()
