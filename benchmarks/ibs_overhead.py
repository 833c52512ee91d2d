"""IBS overhead: training-step time and peak memory with vs without IBS, same batches, one run.

For each model (Panoptic FCN, Mask2Former; on the CPU scale also transformers' Mask2Former
and EoMT, ``--models hf_m2f hf_eomt``) the preset's crop+IBS configuration is run twice
on identical batches (paired crops), once with ``ibs.enabled=false``; the two variants
alternate step by step (which goes first alternates too) so that machine load affects both
alike; the overhead is reported from the medians and from the per-step paired differences.
CPU time of the process (``time.process_time``, all its threads) is recorded beside the wall
clock: on a machine shared with other work it counts what the step computes, not the waiting.
The IBS term is also timed alone (forward and backward to the model outputs it reads, on the
same batches), which a loaded machine disturbs far less than the whole step. Peak memory: CUDA's
``max_memory_allocated`` on a GPU; on a CPU each variant also runs alone in a subprocess
and reports its peak RSS growth during the timed steps.

    python benchmarks/ibs_overhead.py                       # tiny CPU models, CPU-scale crops
    python benchmarks/ibs_overhead.py --scale paper --device cuda   # ResNet-50, 512x1024 crops
    python benchmarks/ibs_overhead.py --scale paper --device cuda --set train.float32_matmul_precision=high
    python benchmarks/ibs_overhead.py --profile 15          # plus the IBS term's 15 costliest operators
    python benchmarks/ibs_overhead.py --models hf_m2f --set ibs.weight=50   # transformers' Mask2Former, tiny
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from ibs_study.config import load_preset
from ibs_study.data.synthetic import generate_dataset
from ibs_study.engine.data import open_split
from ibs_study.engine.optim import build_optimizer
from ibs_study.engine.train import (
    set_matmul_precision,
    step_generator,
    step_partner_index,
    train_loader,
    train_step,
)
from ibs_study.losses import weighted_ibs_loss
from ibs_study.models.build import build_model

PRESETS = {
    ("cpu", "pfcn"): "synthetic_pfcn_crop_ibs",
    ("cpu", "m2f"): "synthetic_m2f_crop_ibs",
    ("cpu", "hf_m2f"): "synthetic_hf_m2f_crop_ibs",
    ("cpu", "hf_eomt"): "synthetic_hf_eomt_crop_ibs",
    ("paper", "pfcn"): "synthetic_gpu_pfcn_crop_ibs",
    ("paper", "m2f"): "synthetic_gpu_m2f_crop_ibs",
}


def _setup(preset: str, device: str, batch: int | None, overrides: list[str]):
    cfg = load_preset(
        preset, [f"train.device={device}", *overrides] + ([f"train.batch_size={batch}"] if batch else [])
    )
    set_matmul_precision(cfg, torch.device(device))
    dataset = open_split(cfg, cfg.data.train_split, prepare=False)
    return cfg, dataset, train_loader(cfg, dataset)


def _variant(cfg, enabled: bool):
    return replace(cfg, ibs=replace(cfg.ibs, enabled=enabled))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _ibs_term_inputs(cfg, model, batch, step: int, device: torch.device):
    """The model's output on ``batch`` with its features and embeddings as fresh leaves, the
    step's partner index and generator, and whether the step runs under autocast."""
    amp = cfg.train.amp and device.type == "cuda"  # as train_step: the model and the IBS term under autocast
    generator = step_generator(0, 0, step)
    partner_index = step_partner_index(len(batch), cfg, generator)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        output = model(batch.images, batch.targets)
    leaves = replace(
        output,
        features=output.features.detach().requires_grad_(),
        embeddings=[[e.detach().requires_grad_() for e in layer] for layer in output.embeddings],
    )
    return leaves, partner_index, generator, amp


def _ibs_term(cfg, leaves, partner_index, generator, amp: bool, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        term = weighted_ibs_loss(leaves, partner_index, cfg.ibs, generator)["loss_ibs"]
    term.backward()


def time_ibs_term(cfg, model, batches, device: torch.device, warmup: int) -> list[float]:
    """Seconds of the IBS term alone per batch: forward and backward to the features and
    embeddings it reads (detached copies of the model's outputs, so the backbone's backward
    is not counted)."""
    seconds = []
    for step, batch in enumerate(batches):
        inputs = _ibs_term_inputs(cfg, model, batch, step, device)
        _synchronize(device)
        start = time.perf_counter()
        _ibs_term(cfg, *inputs, device)
        _synchronize(device)
        if step >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def profile_ibs_term(cfg, model, batches, device: torch.device, warmup: int, rows: int) -> str:
    """torch.profiler's table of the IBS term alone over the timed batches: the ``rows``
    operators with the most self time on the device (CUDA kernels on a GPU, else CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    inputs = [_ibs_term_inputs(cfg, model, batch, step, device) for step, batch in enumerate(batches)]
    for args in inputs[:warmup]:
        _ibs_term(cfg, *args, device)
    _synchronize(device)
    with profile(activities=activities) as prof:
        for args in inputs[warmup:]:
            _ibs_term(cfg, *args, device)
        _synchronize(device)
    sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows)


def measure(
    preset: str,
    device: str,
    steps: int,
    warmup: int,
    batch: int | None,
    overrides: list[str],
    only=None,
    profile_rows: int = 0,
):
    """Median step seconds (and CUDA peak MB) per variant; ``only`` runs one variant;
    ``profile_rows`` > 0 adds the profiler table of the IBS term alone (``"ibs_term_profile"``)."""
    torch.manual_seed(0)
    cfg, dataset, loader = _setup(preset, device, batch, overrides)
    dev = torch.device(device)
    batches = [b.to(dev) for _, b in zip(range(steps + warmup), loader)]
    variants = {"with_ibs": _variant(cfg, True), "without_ibs": _variant(cfg, False)}
    if only:
        variants = {only: variants[only]}
    models = {}
    for name, variant in variants.items():
        torch.manual_seed(0)
        model = build_model(variant.model, dataset.meta).to(dev).train()
        scaler = torch.amp.GradScaler("cuda") if variant.train.amp and dev.type == "cuda" else None
        models[name] = (variant, model, build_optimizer(model, variant.optimizer), scaler)
    times = {name: [] for name in variants}
    cpu_times = {name: [] for name in variants}  # this process's CPU seconds: what other load leaves alone
    peaks = {}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    names = list(models)
    for step, batch_ in enumerate(batches):
        # alternate which variant goes first (ABBA...), so neither always follows the other
        for name in names if step % 2 == 0 else names[::-1]:
            variant, model, optimizer, scaler = models[name]
            _synchronize(dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start, cpu_start = time.perf_counter(), time.process_time()
            train_step(model, batch_, variant, optimizer, scaler, step, step_generator(0, 0, step))
            if dev.type == "cuda":
                torch.cuda.synchronize()
                peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)
            if step >= warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
    result = {
        name: {
            "median_s": statistics.median(t),
            "median_cpu_s": statistics.median(cpu_times[name]),
            "steps": len(t),
        }
        for name, t in times.items()
    }
    if len(times) == 2:  # the same batch and step, one right after the other: paired differences
        differences = sorted(a - b for a, b in zip(times["with_ibs"], times["without_ibs"]))
        quarter = len(differences) // 4
        result["paired_difference_s"] = {
            "median": statistics.median(differences),
            "quartiles": (differences[quarter], differences[-1 - quarter]),
        }
        cpu_differences = sorted(a - b for a, b in zip(cpu_times["with_ibs"], cpu_times["without_ibs"]))
        result["paired_cpu_difference_s"] = {
            "median": statistics.median(cpu_differences),
            "quartiles": (cpu_differences[quarter], cpu_differences[-1 - quarter]),
        }
        variant, model = models["with_ibs"][:2]
        alone = sorted(time_ibs_term(variant, model, batches, dev, warmup))
        result["ibs_term_alone_s"] = {
            "median": statistics.median(alone),
            "quartiles": (alone[len(alone) // 4], alone[-1 - len(alone) // 4]),
        }
        if profile_rows:
            result["ibs_term_profile"] = profile_ibs_term(variant, model, batches, dev, warmup, profile_rows)
    for name in result:
        if name in peaks:
            result[name]["peak_mb"] = peaks[name]
    if only:
        result[only]["peak_rss_growth_mb"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        ) / 1024
    return result, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["cpu", "paper"], default="cpu")
    parser.add_argument(
        "--models", nargs="+", default=["pfcn", "m2f"], choices=sorted({model for _, model in PRESETS})
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="crops per step (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument(
        "--data", help="synthetic dataset folder (generated with --num-train images if absent)"
    )
    parser.add_argument("--num-train", type=int, default=32, help="images generated into --data")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="also print the ROWS operators of the IBS term alone with the most device time (torch.profiler)",
    )
    parser.add_argument("--only", choices=["with_ibs", "without_ibs"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data:
        if not Path(args.data).exists():
            generate_dataset(args.data, scale=args.scale, num_train=args.num_train, num_val=1)
        args.overrides = [f"data.root={args.data}", *args.overrides]

    if args.only:  # child process: one variant, report JSON
        result, _ = measure(
            PRESETS[(args.scale, args.models[0])],
            args.device,
            args.steps,
            args.warmup,
            args.batch,
            args.overrides,
            only=args.only,
        )
        print(json.dumps(result))
        return

    print(
        f"device: {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
        f"threads: {torch.get_num_threads()}"
    )
    for model in args.models:
        preset = PRESETS[(args.scale, model)]
        result, cfg = measure(
            preset,
            args.device,
            args.steps,
            args.warmup,
            args.batch,
            args.overrides,
            profile_rows=args.profile,
        )
        crop = cfg.data.crop_size
        with_s, without_s = result["with_ibs"]["median_s"], result["without_ibs"]["median_s"]
        print(
            f"\n{model} ({preset}): batch {cfg.train.batch_size} crops of {crop[0]}x{crop[1]}, "
            f"{result['with_ibs']['steps']} timed steps each, interleaved"
            + (
                f"; AMP {'on' if cfg.train.amp else 'off'}, float32 matmul precision "
                f"{cfg.train.float32_matmul_precision}"
                if args.device.startswith("cuda")
                else ""
            )
        )
        paired = result["paired_difference_s"]
        low, high = paired["quartiles"]
        print(
            f"  step time without IBS: {without_s:.4f} s   with IBS: {with_s:.4f} s   "
            f"overhead: {100 * (with_s / without_s - 1):+.1f} %"
        )
        print(
            f"  per-step paired difference (with - without, same batch): median {1000 * paired['median']:.1f} ms "
            f"= {100 * paired['median'] / without_s:+.1f} % of the step (quartiles {1000 * low:.1f} .. "
            f"{1000 * high:.1f} ms)"
        )
        if not args.device.startswith("cuda"):  # on a GPU the host time says little
            without_cpu = result["without_ibs"]["median_cpu_s"]
            cpu = result["paired_cpu_difference_s"]
            low, high = cpu["quartiles"]
            print(
                f"  CPU time of this process per step: without IBS {without_cpu:.4f} s   with IBS "
                f"{result['with_ibs']['median_cpu_s']:.4f} s   paired difference median {1000 * cpu['median']:.1f} ms "
                f"= {100 * cpu['median'] / without_cpu:+.1f} % (quartiles {1000 * low:.1f} .. {1000 * high:.1f} ms)"
            )
        alone = result["ibs_term_alone_s"]
        low, high = alone["quartiles"]
        print(
            f"  IBS term alone (forward + backward to the outputs it reads): median {1000 * alone['median']:.1f} ms "
            f"= {100 * alone['median'] / without_s:+.1f} % of the step without IBS (quartiles {1000 * low:.1f} .. "
            f"{1000 * high:.1f} ms)"
        )
        if "ibs_term_profile" in result:
            print("  IBS term alone, by operator (torch.profiler, the timed batches):")
            print(result["ibs_term_profile"])
        if "peak_mb" in result["with_ibs"]:
            a, b = result["without_ibs"]["peak_mb"], result["with_ibs"]["peak_mb"]
            print(
                f"  peak CUDA memory without IBS: {a:.0f} MB   with IBS: {b:.0f} MB   ({100 * (b / a - 1):+.1f} %)"
            )
        else:
            rss = {}
            for variant in ("without_ibs", "with_ibs"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--scale",
                        args.scale,
                        "--models",
                        model,
                        "--device",
                        args.device,
                        "--steps",
                        "4",
                        "--warmup",
                        "1",
                        "--only",
                        variant,
                    ]
                    + (["--batch", str(args.batch)] if args.batch else [])
                    + [x for o in args.overrides for x in ("--set", o)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rss[variant] = json.loads(out.stdout.strip().splitlines()[-1])[variant]["peak_rss_growth_mb"]
            print(
                f"  peak RSS growth over training steps (separate processes): without IBS "
                f"{rss['without_ibs']:.0f} MB, with IBS {rss['with_ibs']:.0f} MB"
            )


if __name__ == "__main__":
    main()
