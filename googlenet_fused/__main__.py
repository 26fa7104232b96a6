"""Command line: ``python -m googlenet_fused [run|summary] ...``.

``run`` (the default) is the main job: GoogLeNet on a seeded synthetic batch, reference vs fused,
with errors, top-1 agreement, times and speedup. ``summary`` prints parameters and MACs per stage.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


def _timeit(fn, device, repeats):
    fn()  # warm-up (kernel autotuning, oneDNN primitive creation)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class UsageError(Exception):
    """A mistake in the command line: reported in one line, without a traceback."""


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda are supported")
    return device


def _reference_dtype(reference, x, dtype):
    """The dtype the reference runs in: ``dtype`` when PyTorch has its kernels on this device,
    else float32 (ATen's CPU LocalResponseNorm has no float16 / bfloat16 kernel)."""
    try:
        with torch.no_grad():
            reference.to(dtype)(x[:1].to(dtype))
        return dtype
    except (RuntimeError, NotImplementedError):
        return torch.float32


def run(args) -> int:
    from . import FusedGoogLeNet, GoogLeNet
    from .backends import select
    from .reference import check_input

    device = _device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    shape = (3, args.image_size, args.image_size)
    try:
        reference = GoogLeNet(shape, n_classes=1000)
    except ValueError as exc:
        raise UsageError(f"--image-size {args.image_size}: {exc}") from None
    fused = FusedGoogLeNet(shape, n_classes=1000, backend=args.backend)
    fused.load_state_dict(reference.state_dict())
    reference.to(device).eval()
    fused.to(device, dtype).eval()
    x = torch.randn(args.batch, *shape, device=device).to(dtype)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    check_input(x, 3, "GoogLeNet")
    try:
        backend = select(args.backend, x)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    ref_dtype = _reference_dtype(reference, x, dtype)
    reference.to(ref_dtype)
    # Errors are judged against the reference in float32 (float64 for a float64 run): a
    # low-precision fused model is compared with full precision, not with itself.
    exact_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    exact = reference
    if ref_dtype != exact_dtype:
        exact = GoogLeNet(shape, n_classes=1000).to(device, exact_dtype).eval()
        exact.load_state_dict(reference.state_dict())
    with torch.no_grad():
        ref_out = exact(x.to(exact_dtype)).double()
        fused_out = fused(x).double()
        x_ref = x.to(ref_dtype)
        t_ref = _timeit(lambda: reference(x_ref), device, args.repeats)
        t_fused = _timeit(lambda: fused(x), device, args.repeats)
        err = (fused_out - ref_out).abs().max().item()
        rel = err / max(ref_out.abs().max().item(), 1e-30)
        agree = (fused_out.argmax(1) == ref_out.argmax(1)).float().mean().item()
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"GoogLeNet {args.image_size}x{args.image_size}, batch {args.batch}, {args.dtype}, "
              f"{'channels_last' if args.channels_last else 'NCHW'} input")
        print(f"device        {device_name} ({device}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads")
        print(f"backend       {args.backend} -> {backend}")
        print(f"max abs error {err:.3e}   max rel error {rel:.3e}   top-1 agreement "
              f"{100 * agree:.1f}%   (vs the reference in {str(exact_dtype)[6:]})")
        note = "" if ref_dtype == dtype else (f"   (in {str(ref_dtype)[6:]}: PyTorch has no "
                                              f"{args.dtype} LRN on {device.type})")
        print(f"reference     {1e3 * t_ref:9.2f} ms/batch{note}")
        print(f"fused         {1e3 * t_fused:9.2f} ms/batch   speedup {t_ref / t_fused:.2f}x")
        if args.per_module or args.plot:
            rows = per_module_times(reference, fused, x, ref_dtype, device, args.repeats)
            print(f"\n{'module':<7} {'reference ms':>13} {'fused ms':>10} {'speedup':>8}")
            for name, tr, tf in rows:
                print(f"{name:<7} {1e3 * tr:>13.3f} {1e3 * tf:>10.3f} {tr / tf:>7.2f}x")
            if args.plot:
                plot_modules(rows, args.plot, f"{device_name}, {args.dtype}, batch {args.batch}")
                print(f"\nchart written to {args.plot}")
    ok = err == err and (dtype != torch.float32 or agree == 1.0)
    return 0 if ok else 1


def per_module_times(reference, fused, x, ref_dtype, device, repeats):
    """(name, reference s, fused s) of each inception module on its real input (the reference
    timed in ``ref_dtype``)."""
    inputs = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0]))
             for n, m in fused.inception_modules().items()]
    fused(x)
    for h in hooks:
        h.remove()
    ref_modules, fused_modules = reference.inception_modules(), fused.inception_modules()
    return [(name, _timeit(lambda: ref_modules[name](inp.to(ref_dtype)), device, repeats),
             _timeit(lambda: fused_modules[name](inp), device, repeats))
            for name, inp in inputs.items()]


def plot_modules(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(rows))
    ax.bar([i - 0.2 for i in xs], [1e3 * r[1] for r in rows], 0.4, label="reference")
    ax.bar([i + 0.2 for i in xs], [1e3 * r[2] for r in rows], 0.4, label="fused")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("ms per batch")
    ax.set_title(f"Inception modules: {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m googlenet_fused", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser("run", help="fused vs reference GoogLeNet on a synthetic batch "
                                       "(the default command)")
    p_run.add_argument("--batch", type=_positive, default=8, help="batch size (default 8)")
    p_run.add_argument("--image-size", type=_positive, default=224,
                       help="height = width (default 224; at least 7)")
    p_run.add_argument("--dtype", choices=DTYPES, default="float32")
    p_run.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p_run.add_argument("--backend", choices=["auto", "triton", "native", "reference"],
                       default="auto")
    p_run.add_argument("--channels-last", action="store_true", help="channels_last input")
    p_run.add_argument("--repeats", type=_positive, default=5, help="timed runs, median reported")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--per-module", action="store_true", help="time each inception module")
    p_run.add_argument("--plot", metavar="FILE.png", help="bar chart of the per-module times")
    p_sum = sub.add_parser("summary", help="parameters and MACs of the stem and the nine "
                                           "inception modules")
    p_sum.add_argument("--image-size", type=_positive, default=224,
                       help="height = width (default 224; at least 7)")
    p_sum.add_argument("--classes", type=_positive, default=1000, help="classifier outputs")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    try:
        if args.command == "summary":
            from .summary import format_summary

            try:
                print(format_summary(args.image_size, args.classes))
            except ValueError as exc:
                raise UsageError(f"--image-size {args.image_size}: {exc}") from None
            return 0
        return run(args)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
