"""Command line: ``ibs-study <command>`` or ``python -m ibs_study <command>``.

Each command is a thin wrapper: it parses arguments and calls one library function.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import typing
from collections.abc import Callable, Sequence

__all__ = ["main", "build_parser"]

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# command name -> (help text, function adding its arguments, function running it)
COMMANDS: dict[str, tuple[str, AddArguments, Run]] = {}


def register(name: str, help_text: str, add_arguments: AddArguments, run: Run) -> None:
    COMMANDS[name] = (help_text, add_arguments, run)


def _bounded_int(low: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= low``; anything else is argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    return parse


def _finite_float(text: str) -> float:
    """An argparse ``type`` for finite numbers (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _device(text: str) -> str:
    """An argparse ``type`` for a device name (:func:`ibs_study.config.check_device`)."""
    from ibs_study.config import ConfigError, check_device

    try:
        return check_device("device", text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _non_empty(text: str) -> str:
    """An argparse ``type`` for a name or path that may not be empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("may not be empty")
    return text


def _folder(text: str) -> str:
    """An argparse ``type`` for an output folder: new, or an existing folder (not a file)."""
    if os.path.exists(_non_empty(text)) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder; give a folder")
    return text


_POSITIVE_INT = _bounded_int(1)
_NON_NEGATIVE_INT = _bounded_int(0)


# ---------------------------------------------------------------------------- synth


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    from ibs_study.data.synthetic import SYNTHETIC_SCALES

    parser.add_argument("--out", type=_folder, required=True, help="output folder (COCO-panoptic layout)")
    parser.add_argument("--scale", choices=sorted(SYNTHETIC_SCALES), default="cpu", help="size preset")
    parser.add_argument(
        "--num-train", type=_NON_NEGATIVE_INT, default=None, help="training images (default: from --scale)"
    )
    parser.add_argument(
        "--num-val", type=_NON_NEGATIVE_INT, default=None, help="validation images (default: from --scale)"
    )
    parser.add_argument(
        "--height", type=_POSITIVE_INT, default=None, help="image height (default: from --scale)"
    )
    parser.add_argument(
        "--width", type=_POSITIVE_INT, default=None, help="image width (default: from --scale)"
    )
    parser.add_argument("--seed", type=_NON_NEGATIVE_INT, default=0)
    parser.add_argument(
        "--colour-jitter",
        type=_finite_float,
        default=None,
        help="per-instance body-colour offset, uniform in +-this many RGB levels per channel (default: 0)",
    )
    parser.add_argument(
        "--colour-classes",
        action="store_true",
        help="one thing class per (shape, body colour): 24 thing classes instead of 4",
    )
    parser.add_argument("--workers", type=_POSITIVE_INT, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")


def _synth(args: argparse.Namespace) -> int:
    from ibs_study.data.statistics import dataset_statistics, format_statistics
    from ibs_study.data.synthetic import generate_dataset
    from ibs_study.errors import DataError

    try:
        root = generate_dataset(
            args.out,
            scale=args.scale,
            num_train=args.num_train,
            num_val=args.num_val,
            height=args.height,
            width=args.width,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            colour_jitter=args.colour_jitter,
            colour_classes=args.colour_classes,
        )
    except FileExistsError as err:  # --out holds something else; the message says what to do
        raise DataError(str(err)) from err
    print(format_statistics(dataset_statistics(root)))
    return 0


register("synth", "generate the synthetic high-resolution street-scene dataset", _synth_arguments, _synth)


# ---------------------------------------------------------------------------- stats


def _stats_arguments(parser: argparse.ArgumentParser) -> None:
    from ibs_study.data.datasets import DATASET_KINDS

    parser.add_argument("root", help="dataset root")
    parser.add_argument(
        "--kind",
        choices=sorted(DATASET_KINDS),
        default="synthetic",
        help="synthetic | cityscapes | mapillary_vistas | coco_panoptic (the layout `synth` writes: "
        "annotations/panoptic_SPLIT.json, panoptic_SPLIT/, images/SPLIT/)",
    )
    parser.add_argument("--split", action="append", help="split(s) to describe (default: train and val)")
    parser.add_argument(
        "--crop", type=_POSITIVE_INT, nargs=2, metavar=("H", "W"), default=None, help="crop size"
    )


def _stats(args: argparse.Namespace) -> int:
    from ibs_study.data.statistics import dataset_statistics, format_statistics

    stats = dataset_statistics(args.root, kind=args.kind, splits=args.split, crop_size=args.crop)
    print(format_statistics(stats))
    return 0


register(
    "stats",
    "print statistics of a panoptic dataset (instances per image and per crop, per class)",
    _stats_arguments,
    _stats,
)


# ---------------------------------------------------------------------------- score


def _worker_count(text: str) -> int:
    """argparse type of ``score --workers``: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def _score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-json", required=True, help="ground-truth COCO-panoptic JSON")
    parser.add_argument("--gt-dir", required=True, help="folder of ground-truth id PNGs")
    parser.add_argument("--pred-json", required=True, help="prediction JSON (COCO-panoptic annotations)")
    parser.add_argument("--pred-dir", required=True, help="folder of predicted id PNGs")
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help="threads that decode and count image pairs (default: one per CPU core)",
    )
    parser.add_argument("--json", default=None, help="write the metrics (fractions in [0, 1]) to this JSON")
    parser.add_argument("--curve-csv", default=None, help="write the confusion curve to this CSV")
    parser.add_argument(
        "--allow-missing", action="store_true", help="score images without prediction as all false negatives"
    )


def _score(args: argparse.Namespace) -> int:
    import json

    from ibs_study.metrics.panoptic import evaluate_panoptic_folders, format_results, write_confusion_csv

    # bad predictions raise a DataError, which main() reports as one line
    results, _ = evaluate_panoptic_folders(
        args.gt_json,
        args.gt_dir,
        args.pred_json,
        args.pred_dir,
        workers=args.workers,
        allow_missing=args.allow_missing,
        progress=sys.stderr.isatty(),
        keep_records=False,  # the metrics are printed and written, the records are not
    )
    print(format_results(results))
    timing = results["timing"]
    print(
        f"\n{results['num_images']} images in {timing['total_s']:.2f} s "
        f"({1000 * timing['per_image_s']:.1f} ms per image, {timing['workers']} worker(s))"
    )
    if results["num_missing"]:
        print(f"{results['num_missing']} image(s) had no prediction and count as all false negatives")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.curve_csv:
        write_confusion_csv(results, args.curve_csv)
    return 0


register(
    "score",
    "score COCO-panoptic predictions: PQ/SQ/RQ, Acc^th/Prec^th and the confusion curve",
    _score_arguments,
    _score,
)


# ---------------------------------------------------------------------------- train


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("experiment")
    choice = source.add_mutually_exclusive_group(required=True)
    choice.add_argument("--preset", help="bundled preset name (see `ibs-study presets`)")
    choice.add_argument("--config", help="a config YAML (may start with `_base_: <preset>`)")
    source.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=200 (repeatable)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", type=_folder, required=True, help="run directory (new, or existing with --resume)"
    )
    run.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint"
    )
    run.add_argument(
        "--force", action="store_true", help="resume even if the config differs from the recorded one"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train(args: argparse.Namespace) -> int:
    from ibs_study.config import resolve_config
    from ibs_study.engine.train import train

    cfg = resolve_config(preset=args.preset, path=args.config, overrides=args.overrides)
    result = train(cfg, args.out, resume=args.resume, force=args.force, progress=not args.no_progress)
    if result.is_main:
        print(f"trained {result.steps} steps in {result.seconds:.0f} s; checkpoint: {result.last_checkpoint}")
    return 0


register("train", "train a preset or config (one process; several with torchrun)", _train_arguments, _train)


# ---------------------------------------------------------------------------- evaluate


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by `ibs-study train`")
    parser.add_argument("--checkpoint", help="checkpoint file (default: the newest in RUN_DIR/checkpoints)")
    parser.add_argument("--data", type=_non_empty, help="dataset root (default: the run config's data.root)")
    parser.add_argument("--split", type=_non_empty, help="split (default: the run config's data.val_split)")
    parser.add_argument("--out", type=_folder, help="output folder (default: RUN_DIR/eval_<split>)")
    parser.add_argument("--max-images", type=_POSITIVE_INT, help="evaluate only the first N images")
    parser.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _evaluate_command_arguments(parser: argparse.ArgumentParser) -> None:
    _evaluate_arguments(parser)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inference setting (repeatable; keys under model.panoptic_fcn., model.mask2former., eval.), "
        "e.g. model.panoptic_fcn.thing_score_threshold=0.1; needs --out",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="no inference: score the predictions already in the output folder again with the current "
        "metrics code and rewrite its metrics.json (adds metrics introduced after the evaluation); "
        "refused if an earlier value would change, unless --force",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace RUN_DIR/eval_<split> with an evaluation of another --checkpoint, --data or --split "
        "than the run's own; with --rescore: replace the metrics even if earlier values change",
    )


def _trained_run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``evaluate_run`` / ``oracle_confusion_run`` from the options of
    :func:`_evaluate_arguments`."""
    return {
        "checkpoint": args.checkpoint,
        "data_root": args.data,
        "split": args.split,
        "out_dir": args.out,
        "max_images": args.max_images,
        "device": args.device,
        "progress": not args.no_progress,
    }


def _evaluate(args: argparse.Namespace) -> int:
    from ibs_study.engine.evaluate import changed_metrics, evaluate_run, format_metrics, rescore_run

    if not args.rescore:
        metrics = evaluate_run(
            args.run_dir, overrides=args.set, force=args.force, **_trained_run_options(args)
        )
        print(format_metrics(metrics))
        return 0
    for option in ("checkpoint", "max_images", "set"):
        if getattr(args, option):
            print(
                f"ibs-study evaluate: error: --{option.replace('_', '-')} has no effect with --rescore "
                "(no inference: the stored predictions are scored as they are)",
                file=sys.stderr,
            )
            return 2
    metrics, previous = rescore_run(
        args.run_dir,
        data_root=args.data,
        split=args.split,
        out_dir=args.out,
        force=args.force,
        progress=not args.no_progress,
    )
    print(format_metrics(metrics))
    changed = changed_metrics(metrics, previous)
    print(
        f"values changed by rescoring: {', '.join(changed[:20])}{' ...' if len(changed) > 20 else ''}"
        if changed
        else "rescoring changed none of the earlier values"
    )
    return 0


register(
    "evaluate", "full-image inference of a trained run + metrics", _evaluate_command_arguments, _evaluate
)


def _oracle_arguments(parser: argparse.ArgumentParser) -> None:
    _evaluate_arguments(parser)
    parser.add_argument(
        "--logits",
        action="store_true",
        help="also the mean logits of the GT things' embeddings on their own thing, their nearest "
        "same-class look-alike and the background, the embedding bias's part and |E| "
        "(Panoptic FCN; written to oracle_logits.json)",
    )


def _oracle(args: argparse.Namespace) -> int:
    from ibs_study.study.oracle import LOGIT_METRICS, oracle_confusion_run, oracle_logits_run

    if args.logits:
        logits = oracle_logits_run(args.run_dir, **_trained_run_options(args))
        value = {name: logits.get(name, math.nan) for name in LOGIT_METRICS}
        print(
            f"oracle logits of {logits['num_gt_things']} GT things ({logits['num_with_lookalike']} with a "
            f"look-alike): own {value['logit_own']:+.2f}, look-alike {value['logit_lookalike']:+.2f}, "
            f"background {value['logit_background']:+.2f}, bias part on own {value['logit_bias_own']:+.2f}, "
            f"|E| {value['embedding_norm']:.2f}"
        )
    result = oracle_confusion_run(args.run_dir, **_trained_run_options(args))
    ratio = dict(zip(result["thresholds"], result["ratio"], strict=True))
    print(
        f"oracle masks of {result['num_gt_things']} GT things ({result['num_embeddings']} embeddings, "
        f"{result['num_images']} images): leak {100 * result['leak']:.1f}%, own coverage "
        f"{100 * result['own_coverage']:.1f}%, confused at T=0.1/0.3/0.5: "
        + "/".join(f"{100 * ratio.get(t, float('nan')):.1f}%" for t in (0.1, 0.3, 0.5))
    )
    return 0


register(
    "oracle",
    "confusion of the masks a trained run's embeddings give the GT things (detection left out)",
    _oracle_arguments,
    _oracle,
)


def _operating_curve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory written by `ibs-study train`")
    parser.add_argument(
        "--key",
        default="model.panoptic_fcn.thing_score_threshold",
        help="the inference setting to sweep (default: Panoptic FCN's thing score threshold)",
    )
    parser.add_argument(
        "--values", type=_finite_float, nargs="+", required=True, help="its values, one evaluation each"
    )
    parser.add_argument(
        "--out", type=_folder, help="output folder (default: RUN_DIR/eval_<split>_operating/<key>)"
    )
    parser.add_argument("--data", type=_non_empty, help="dataset root (default: the run config's data.root)")
    parser.add_argument("--split", type=_non_empty, help="split (default: the run config's data.val_split)")
    parser.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _operating_curve(args: argparse.Namespace) -> int:
    from ibs_study.study.operating import operating_curve
    from ibs_study.study.tables import METRIC_LABELS

    curve = operating_curve(
        args.run_dir,
        args.key,
        args.values,
        out_dir=args.out,
        data_root=args.data,
        split=args.split,
        device=args.device,
        progress=not args.no_progress,
    )
    names = [
        n
        for n in ("pq_th", "ap", "acc_th", "prec_th", "pred_th_other_instance")
        if n in curve["points"][0]["metrics"]
    ]
    print(f"{args.key.split('.')[-1]:>24s}" + "".join(f"{METRIC_LABELS[n]:>20s}" for n in names))
    for point in curve["points"]:
        print(f"{point['value']:24g}" + "".join(f"{100 * point['metrics'][n]:20.1f}" for n in names))
    return 0


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", help="run-directory prefix of the baseline, e.g. runs/study/pfcn_crop")
    parser.add_argument(
        "other", help="run-directory prefix compared with it, e.g. runs/exp_thingcrop/pfcn_crop"
    )
    parser.add_argument(
        "--seeds",
        type=_NON_NEGATIVE_INT,
        nargs="+",
        required=True,
        help="seeds: runs PREFIX_s<seed> under both prefixes",
    )
    parser.add_argument("--metrics", nargs="+", help="study metric names (default: all both sets have)")


def _compare(args: argparse.Namespace) -> int:
    from ibs_study.study.analysis import run_differences
    from ibs_study.study.claims import format_difference
    from ibs_study.study.oracle import LOGIT_METRICS
    from ibs_study.study.tables import METRIC_LABELS

    differences = run_differences(args.baseline, args.other, args.seeds, args.metrics)
    print(
        f"other - baseline, paired by seed (seeds {args.seeds}), percent (logits as they are): "
        f"{args.other} - {args.baseline}"
    )
    print(f"{'metric':40s}{'baseline':>10s}{'other':>10s}{'difference [95 % CI]':>28s}{'seeds up':>10s}")
    for metric, d in differences.items():
        # the thing-pixel shares carry the same labels on both sides: name the side
        side = "GT thing px: " if metric.startswith("gt_th_") else ""
        side = "pred. thing px: " if metric.startswith("pred_th_") else side
        label = side + METRIC_LABELS.get(metric, metric)
        scale = 1 if metric in LOGIT_METRICS else 100  # logits as they are, shares in percent
        label += " (logit)" if metric in LOGIT_METRICS else ""
        interval = format_difference(d, scale)
        up = sum(v > 0 for v in d["per_seed"])
        print(
            f"{label:40s}{scale * d['baseline']:10.1f}{scale * d['other']:10.1f}{interval:>28s}{up:>6d} / {len(d['per_seed'])}"
        )
    return 0


register(
    "compare",
    "seed-paired differences between two sets of evaluated runs (any folders), mean and 95 % interval",
    _compare_arguments,
    _compare,
)


def _followup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", help="the follow-up (ibs_study.study.followups.FOLLOWUPS), e.g. signed_features"
    )
    parser.add_argument(
        "--root",
        default="runs/study",
        help="folder of the run directories; the study's folder reuses its runs (default: runs/study)",
    )
    parser.add_argument("--out", help="results, tables and figures (default: runs/followups/NAME)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)), help="default: 0 to 7")
    parser.add_argument("--rows", nargs="+", help="only these row keys, e.g. pfcn_crop_ibs_signed_features")
    parser.add_argument("--steps", type=int, help="training steps per run (default: the presets')")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override of every run (repeatable)"
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs side by side (0: in this process)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--collect-only", action="store_true", help="train nothing; read the finished runs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _followup(args: argparse.Namespace) -> int:
    from ibs_study.study.followups import run_followup

    results = run_followup(
        args.name,
        root=args.root,
        out_dir=args.out,
        seeds=args.seeds,
        rows=args.rows,
        steps=args.steps,
        overrides=args.set,
        parallel=args.parallel,
        threads=args.threads,
        train=not args.collect_only,
        progress=not args.no_progress,
    )
    out = args.out or f"runs/followups/{args.name}"
    print(f"{len(results.rows)} rows x {len(args.seeds)} seeds: results, tables and figures in {out}")
    return 0


register(
    "followup",
    "train, evaluate and summarise a follow-up study: its rows x seeds, oracle confusion and logits, "
    "tables of seed-paired differences, figures",
    _followup_arguments,
    _followup,
)

register(
    "operating-curve",
    "evaluate a trained run at several values of one inference setting (Acc^th against Prec^th)",
    _operating_curve_arguments,
    _operating_curve,
)


# ---------------------------------------------------------------------------- presets


def _presets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="print this preset's resolved config as YAML")


def _presets(args: argparse.Namespace) -> int:
    import yaml

    from ibs_study.config import config_to_dict, list_presets, load_preset

    if args.name:
        print(yaml.safe_dump(config_to_dict(load_preset(args.name)), sort_keys=False), end="")
        return 0
    for name in list_presets():
        print(f"{name:36s} {load_preset(name).paper}")
    return 0


register("presets", "list the bundled presets, or print one resolved", _presets_arguments, _presets)


# ---------------------------------------------------------------------------- demo


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=_folder, default="runs/demo", help="folder of the runs and the plot")
    parser.add_argument(
        "--data", default="data/synthetic", help="synthetic dataset folder (generated if absent)"
    )
    parser.add_argument("--steps", type=_POSITIVE_INT, help="training steps per run (default: the presets')")
    parser.add_argument("--parallel", type=_POSITIVE_INT, default=2, help="runs trained side by side")
    parser.add_argument(
        "--train-full",
        action="store_true",
        help="train the full-image run too (default: its row is the study's stored seed-0 run)",
    )


def _demo(args: argparse.Namespace) -> int:
    from ibs_study.study.demo import run_demo

    print(run_demo(args.out, args.data, steps=args.steps, parallel=args.parallel, train_full=args.train_full))
    return 0


register(
    "demo",
    "the main job: synthetic data, crop / crop+IBS training on CPU, metrics against full-image training",
    _demo_arguments,
    _demo,
)


# ---------------------------------------------------------------------------- figures


def _figures_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results", default="paper_figures/synthetic_results.json", help="the study's results JSON"
    )
    parser.add_argument("--out", type=_folder, default="paper_figures", help="output folder")
    parser.add_argument(
        "--runs", default=None, help="folder of the study's run directories (qualitative figures need them)"
    )
    parser.add_argument(
        "--top-k", type=_POSITIVE_INT, default=4, help="images / predictions per qualitative figure"
    )
    parser.add_argument(
        "--shared-plotly-js",
        default=None,
        help="plotly.min.js to load, relative to --out (e.g. ../plotly.min.js), instead of writing one there",
    )


def _figures(args: argparse.Namespace) -> int:
    from ibs_study.study.paper_figures import build_all

    provenance = build_all(
        args.results, args.out, args.runs, top_k=args.top_k, shared_plotly_js=args.shared_plotly_js
    )
    for name in provenance["files"]:
        print(f"{args.out}/{name}")
    for what, why in provenance["skipped"].items():
        print(f"skipped {what}: {why}")
    return 0


register(
    "figures",
    "regenerate the paper's figures and tables (paper_figures/) from stored results",
    _figures_arguments,
    _figures,
)


# ---------------------------------------------------------------------------- entry point


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse reporting a bad argument as one line, ``PROG: error: MESSAGE``, with exit status 2
    (without the usage block, which ``PROG --help`` shows)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command``, only that command's parser gets its
    arguments (all a line running that command needs; adding them all imports the modules
    whose names give argument choices)."""
    parser = _OneLineErrorParser(
        prog="ibs-study",
        description="Intra-Batch Supervision study: synthetic data, training, full-image evaluation, "
        "confusion measures and the paper's figures.",
        epilog="`ibs-study COMMAND --help` describes one command; `python -m ibs_study` is the same.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        # argparse %-formats an action's help (not a description): "95 %" must read "95 %%" there
        command_parser = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        if command in (None, name):
            add_arguments(command_parser)
        command_parser.set_defaults(run=run, command_parser=command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in words if not word.startswith("-")), None)
    args, unknown = build_parser(command if command in COMMANDS else None).parse_known_args(argv)
    if unknown:  # reported by the command's parser, so the line names the command
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from ibs_study.errors import InputError, RunsFailedError  # torch-free: synth/stats/score stay light

    try:
        return int(args.run(args) or 0)
    except InputError as err:  # bad input: the message says what to do, no traceback
        if args.verbose:
            logging.getLogger("ibs_study").exception("input error")
        print(f"ibs-study {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunsFailedError as err:  # the runs' own logs hold their tracebacks
        print(f"ibs-study {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
