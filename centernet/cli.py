"""`centernet train | check-data | eval | predict | serve | convert | convert-data | synth | models`: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

from . import __version__


def _input_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0 or any(p % 32 for p in parts):
        raise argparse.ArgumentTypeError(f"input size {text!r}: give N or H,W, multiples of 32 (e.g. 512 or 384,640)")
    return parts[0], parts[1]


_AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _at_least(low: int):
    """An argparse type: an integer of at least ``low`` (the error names the flag)."""
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return integer


def _number_in(low: float, high: float = float("inf"), low_open: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high] with ``low_open``)."""
    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low < value if low_open else low <= value) or not value <= high or value != value:
            bounds = f"{'above' if low_open else 'at least'} {low:g}" + ("" if high == float("inf") else f" and at most {high:g}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    return number


def _device(text: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:N, auto)."""
    from .engine.predict import select_device

    try:
        select_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _data_split(data_dir: str | None, split: str, convert_dir: Path | None = None) -> tuple[str | None, str | None]:
    """``DIR/<split>/images`` and ``DIR/<split>/annotations.json`` (the layout `centernet synth` writes);
    with ``convert_dir``, a VOC or YOLO folder's split converted to COCO json there."""
    if not data_dir:
        return None, None
    root = Path(data_dir) / split
    if convert_dir is not None and not (root / "annotations.json").is_file():
        from .data.convert import coco_split

        converted = coco_split(data_dir, split, convert_dir)
        if converted:
            return converted
    return str(root / "images"), str(root / "annotations.json")


# The settings `centernet train` flags give: config key -> (the args attribute, the flag).
_TRAIN_FLAGS = {
    "model.name": ("model", "--model"), "model.head_planes": ("head_planes", "--head-planes"),
    "model.pretrained": ("pretrained", "--pretrained"),
    "model.pretrained_backbone": ("pretrained_backbone", "--pretrained-backbone"),
    "data.input_size": ("input_size", "--input-size"), "data.workers": ("workers", "--workers"),
    "data.eval_keep_res": ("eval_keep_res", "--eval-keep-res"), "data.check": ("check_data", "--check-data"),
    "train.epochs": ("epochs", "--epochs"), "train.batch_size": ("batch_size", "--batch-size"),
    "train.lr": ("lr", "--lr"), "train.seed": ("seed", "--seed"), "train.device": ("device", "--device"),
    "train.eval_interval": ("eval_interval", "--eval-interval"), "train.grad_clip": ("grad_clip", "--grad-clip"),
    "train.accumulate": ("accumulate", "--accumulate"), "train.sync_bn": ("sync_bn", "--sync-bn"),
    "train.checkpoint_interval": ("checkpoint_interval", "--checkpoint-interval"),
    "train.tensorboard": ("tensorboard", "--tensorboard"),
    "train.schedule": ("schedule", "--schedule"), "train.warmup_epochs": ("warmup_epochs", "--warmup-epochs"),
}


def _given_train_settings(args: argparse.Namespace, run_dir: str) -> dict[str, tuple[object, str]]:
    """The settings the command line gives: ``{"train.lr": (0.001, "--lr")}``, flags left out
    excluded (so that a resumed run can tell what was asked of it)."""
    given = {key: (getattr(args, attribute), flag) for key, (attribute, flag) in _TRAIN_FLAGS.items()}
    given.update({"data.skip_bad": (args.skip_bad_data or None, "--skip-bad-data"),
                  "train.ema": (args.ema or None, "--ema"), "train.amp": (bool(args.amp) or None, "--amp"),
                  "train.amp_dtype": (_AMP_DTYPES.get(args.amp), "--amp")})
    for split in ("train", "val"):
        images, ann = _data_split(args.data, split, Path(run_dir) / "data")
        for kind, from_data in (("images", images), ("ann", ann)):
            flag_value = getattr(args, f"{split}_{kind}")
            given[f"data.{split}_{kind}"] = ((flag_value, f"--{split}-{kind}") if flag_value
                                             else (from_data, "--data"))
    return {key: value for key, value in given.items() if value[0] is not None}


def _apply(config, given: dict[str, tuple[object, str]]) -> None:
    for key, (value, flag) in given.items():
        section, name = key.split(".")
        config.override(section, source=flag, **{name: value})


def _new_run_config(args: argparse.Namespace):
    """The configuration of a new run: --config (or the defaults), then the flags."""
    from .config import Config, load_config

    from .builder import pretrained_files

    config = load_config(args.config) if args.config else Config()
    run_dir = args.run_dir or str(Path("runs") / (args.model or config.model.name))
    _apply(config, _given_train_settings(args, run_dir))
    # the published files (True: --pretrained or --pretrained-backbone without a path, or a config's
    # `true`) are fetched now, so that a missing one stops the command before any data is read
    pretrained_files(config.model.name, config.model.pretrained, config.model.pretrained_backbone,
                     progress=not args.quiet)
    return config, run_dir


def _resumed_run_config(args: argparse.Namespace):
    """The configuration a run continues with under --resume: the one in its last.pt, with the
    changes ``engine.resume`` allows among the settings given by flags or --config."""
    import yaml

    from .config import Config, load_config
    from .engine.resume import load_resume_point, resumed_config

    for flag, value in (("--pretrained", args.pretrained), ("--pretrained-backbone", args.pretrained_backbone)):
        if value is not None:
            raise ValueError(f"{flag}: a resumed run continues from the weights in its last.pt; leave {flag} out")
    run_dir = args.run_dir or str(Path("runs") / (args.model or Config().model.name))
    path = Path(run_dir) / "last.pt"
    _, stored, epochs_done = load_resume_point(path)
    given_config = load_config(args.config) if args.config else Config()
    labels = {}
    if args.config:  # every setting the file names counts as given
        sections = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        labels = {f"{section}.{key}": f"{section}.{key} in {args.config}"
                  for section, values in sections.items() for key in (values or {})}
    given = _given_train_settings(args, run_dir)
    _apply(given_config, given)
    labels.update({key: flag for key, (_, flag) in given.items()})
    return resumed_config(path, stored, epochs_done, given_config, labels), run_dir


def _stopped_run(run_dir: str, why: str, epochs: int | None) -> str:
    """One line: why training stopped, and how the run continues (or that nothing was saved);
    ``epochs``: a length given with --epochs, repeated in the command (last.pt may predate it)."""
    last = Path(run_dir) / "last.pt"
    if last.is_file():
        again = f" --epochs {epochs}" if epochs else ""
        return (f"{why}; the run continues from {last} (its last checkpoint) with: "
                f"centernet train --run-dir {run_dir} --resume{again}")
    return f"{why}; no checkpoint was written yet in {run_dir}, so run the command again to start over"


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.trainer import train
    from .io import OutputError

    if args.pretrained is not None and args.pretrained_backbone is not None:
        raise ValueError("--pretrained sets the whole model and --pretrained-backbone only its backbone: give one")
    config, run_dir = _resumed_run_config(args) if args.resume else _new_run_config(args)
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise ValueError(f"--run-dir {run_dir}: is a file, not a folder")
    try:
        summary = train(config, run_dir, resume=args.resume, progress=not args.quiet)
    except ModuleNotFoundError as error:
        if error.name != "tensorboard":
            raise
        raise SystemExit(f"centernet train: error: {error}") from None
    except KeyboardInterrupt:
        after_bar = "" if args.quiet else "\n"  # (a progress bar may hold the line)
        print(f"{after_bar}centernet train: interrupted: {_stopped_run(run_dir, 'stopped by Ctrl-C', args.epochs)}",
              file=sys.stderr)
        return 130
    except OutputError as error:
        print(f"centernet train: error: {_stopped_run(run_dir, str(error), args.epochs)}", file=sys.stderr)
        return 1
    if summary["is_main"]:  # under torchrun, rank 0 reports
        written = [name for name in ("best.pt", "last.pt", "metrics.csv", "losses.png", "map.png")
                   if (Path(summary["run_dir"]) / name).is_file()]
        print(f"run folder: {summary['run_dir']} ({', '.join(written)})")
        if summary["best_ap"] >= 0:
            print(f"best val AP: {100 * summary['best_ap']:.2f}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .data.check import check_split, find_splits

    failed = False
    for image_dir, ann_file in find_splits(args.data, args.images):
        report = check_split(image_dir, ann_file, workers=args.workers)
        for issue in report.issues:
            if issue.level != "info" or args.verbose:
                print(issue)
        infos = len(report.of_level("info"))
        if infos and not args.verbose:
            print(f"info    {ann_file}: {infos} images without annotations (--verbose lists them)")
        print(report.summary())
        failed |= not report.ok
    return 1 if failed else 0


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        scales = ()
    if not scales or not all(0 < scale < float("inf") for scale in scales):
        raise argparse.ArgumentTypeError(f"scales {text!r}: give positive numbers separated by commas "
                                         f"(e.g. 0.5,0.75,1,1.25,1.5)")
    return scales


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """eval / predict: which model and weights."""
    p.add_argument("--weights", help="checkpoint (best.pt / last.pt); with --model, a .pdparams or .pth file")
    p.add_argument("--model", help="zoo model name (see `centernet models`), with --pretrained or --weights")
    p.add_argument("--pretrained", action="store_true",
                   help="with --model: PaddleDetection's published COCO weights (80 classes), downloaded "
                        "once to ~/.cache/centernet or $CENTERNET_HOME")


def _add_backend_flag(p: argparse.ArgumentParser) -> None:
    """eval / predict / serve: PyTorch, or onnxruntime running an exported graph (float or INT8)."""
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: --weights is a file from `centernet export` (float or --quantize int8), "
                        "run by onnxruntime")


def _add_test_flags(p: argparse.ArgumentParser) -> None:
    """eval / predict: test-time augmentation, size, batch and device."""
    p.add_argument("--flip", action="store_true", help="flip test")
    p.add_argument("--scales", type=_scales, default=(1.0,), metavar="S1,S2,...",
                   help="multi-scale test: run each image resized by each scale and merge (e.g. 0.5,0.75,1,1.25,1.5)")
    p.add_argument("--merge", choices=["soft-nms", "nms"], default="soft-nms",
                   help="how detections of several --scales are merged per class (default soft-nms)")
    p.add_argument("--input-size", type=_input_size)
    p.add_argument("--batch-size", type=_at_least(1), default=4)
    p.add_argument("--device", type=_device)


def _detector(args: argparse.Namespace, **options):
    """The ``Detector`` of ``--weights CHECKPOINT``, or of ``--model NAME`` with ``--pretrained`` (the
    published COCO weights) or ``--weights FILE`` (.pdparams / .pth)."""
    from .engine.predict import Detector

    options.update(device=args.device, flip=args.flip, scales=args.scales, merge=args.merge)
    if args.input_size:
        options["input_size"] = args.input_size
    if args.model:
        if args.pretrained == bool(args.weights):
            raise ValueError(f"--model {args.model}: give --pretrained (the published COCO weights) or "
                             f"--weights FILE (.pdparams / .pth), one of the two")
        return Detector.from_pretrained(args.model, weights=args.weights, **options)
    if args.pretrained:
        raise ValueError("--pretrained: name the model with --model NAME (see `centernet models`)")
    if not args.weights:
        raise ValueError("give --weights CHECKPOINT, or --model NAME with --pretrained or --weights FILE")
    return Detector.from_checkpoint(args.weights, **options)


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``name`` beside the checkpoint, or in ``runs/<model>`` for a model by name."""
    if args.out:
        return Path(args.out)
    return (Path("runs") / args.model if args.model else Path(args.weights).parent) / name


def cmd_eval(args: argparse.Namespace) -> int:
    from .data.coco import CocoDetection
    from .engine.evaluate import evaluate, format_metrics, save_metrics

    detector = _backend_detector(args, score_threshold=0.0)
    images, ann = _data_split(args.data, args.split)
    images, ann = args.images or images, args.ann or ann
    if not images or not ann:
        raise SystemExit("centernet eval: give --data DIR (with DIR/val/images and DIR/val/annotations.json) "
                         "or --images and --ann")
    dataset = CocoDetection(images, ann, detector.transform)
    if dataset.class_names != detector.class_names:
        print(f"warning: {ann} names its classes {dataset.class_names}, the model "
              f"{detector.class_names}", file=sys.stderr)
    metrics, detections = evaluate(detector, dataset, batch_size=args.batch_size)
    print(format_metrics(metrics))
    out_dir = _out_dir(args, "eval")
    path = save_metrics(metrics, detections, out_dir)
    print(f"metrics: {path}  detections: {out_dir / 'detections.json'}")
    if args.analysis:
        from .engine.analysis import ANALYSIS_FILES, analyze

        print(analyze(dataset.coco, detections, out_dir))
        print(f"analysis in {out_dir}: {', '.join(ANALYSIS_FILES)}")
    return 0


def _backend_detector(args: argparse.Namespace, score_threshold: float):
    """eval / predict / serve: ``_detector``'s, or with ``--backend onnx`` the exported graph given as ``--weights``."""
    if args.backend == "onnx":
        from .export import OnnxDetector

        for flag, used in (("--flip", args.flip), ("--scales", args.scales != (1.0,)), ("--model", args.model),
                           ("--heatmap", getattr(args, "heatmap", False))):  # (eval has no --heatmap)
            if used:
                raise ValueError(f"{flag}: the ONNX backend runs the exported graph alone; use --backend torch")
        if not args.weights:
            raise ValueError("--backend onnx: give the exported file as --weights")
        size = {"input_size": args.input_size} if args.input_size else {}
        return OnnxDetector(args.weights, score_threshold=score_threshold, **size)
    return _detector(args, score_threshold=score_threshold)


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine.predict import predict
    from .engine.video import is_video, video_predictions

    detector = _backend_detector(args, args.score_threshold)
    out_dir = _out_dir(args, "predictions")
    if args.camera is not None or (args.source and is_video(args.source)):
        source = args.camera if args.camera is not None else args.source
        video, records = video_predictions(detector, source, out_dir, batch_size=args.batch_size,
                                           progress=not args.quiet)
        total = sum(len(r["detections"]) for r in records)
        print(f"{len(records)} frame(s), {total} detection(s) above {args.score_threshold}: "
              f"{video} and {video.with_suffix('.json')}")
        return 0
    if not args.source:
        raise ValueError("give an image, a folder or a video to predict on, or --camera N")
    records = predict(detector, args.source, out_dir, batch_size=args.batch_size, heatmap=args.heatmap)
    total = sum(len(r["detections"]) for r in records)
    print(f"{len(records)} image(s), {total} detection(s) above {args.score_threshold}: "
          f"drawn images and predictions.json in {out_dir}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serve import ServeOptions, serve
    except ModuleNotFoundError as error:
        raise SystemExit(f"centernet serve: error: {error.name} is missing; install the serve extra: "
                         f"pip install 'centernet[serve]'") from None

    options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                           max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, timeout_s=args.timeout_s,
                           score_threshold=args.score_threshold)
    detector = _backend_detector(args, score_threshold=0.0)
    if args.fuse and args.backend == "torch":
        from .allocator import keep_freed_memory
        from .models.fuse import optimize_for_inference

        detector.model = optimize_for_inference(detector.model)  # exact: the same boxes, sooner
        if detector.device.type == "cpu":
            keep_freed_memory()
    print(f"centernet serve: the page at http://{args.host}:{args.port}/, the API at POST /predict "
          f"(GET /model, GET /health); Ctrl-C or SIGTERM stops it after the requests in flight", flush=True)
    serve(detector, options, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    calibration = _calibration(args)  # before the export: a bad folder stops at once
    class_names, validated = None, None
    if args.model:
        from .builder import create_model

        model = create_model(args.model, num_classes=args.num_classes, weights=args.weights)
    elif args.weights:
        from .engine.predict import Detector

        detector = Detector.from_checkpoint(args.weights, device="cpu")
        model, class_names = detector.model, detector.class_names
        validated = detector.transform  # the input size and eval mode the checkpoint was validated with
        args.model = Path(args.weights).stem
    else:
        raise ValueError("give --model NAME (with optional --weights) or --weights CHECKPOINT")
    size, keep_res, dynamic = _export_form(args, validated)
    out = Path(args.out or f"{args.model}{'_int8' if calibration else ''}.onnx")
    with tempfile.TemporaryDirectory(prefix="centernet-export-") as folder:
        graph = Path(folder) / "fp32.onnx" if calibration else out  # the float graph, then quantized
        export_onnx(model, graph, input_size=size, dynamic_size=dynamic, max_detections=args.max_detections,
                    class_names=class_names, model_name=args.model, deform_conv=args.deform_conv,
                    opset_version=args.opset, keep_res=keep_res)
        if calibration:
            from .export import quantize_onnx

            quantize_onnx(graph, out, calibration, calibration_count=len(calibration),
                          calibration_method=args.calibration_method)
    shape = "any HxW (multiples of 32)" if dynamic else "x".join(map(str, size))
    mode = ("each image at its own resolution" if keep_res else
            f"images resized to {size[0]}x{size[1]}")
    form = (f"INT8 (int8 weights per channel, activations calibrated on {len(calibration)} image(s) by "
            f"{args.calibration_method}; the decode in float), " if calibration else "")
    print(f"{out}: {form}images [B, 3, {shape}] -> boxes [B, {args.max_detections}, 4] (input pixels), "
          f"scores, labels; checked with onnx.checker; OnnxDetector's default: {mode}")
    return 0


def _calibration(args: argparse.Namespace) -> list[Path] | None:
    """export --quantize int8: the calibration images (``--calibration``, ``--calibration-count``),
    checked readable; None for a float export. Errors name the flag."""
    from .export import calibration_images

    if not args.quantize:
        if args.calibration:
            raise ValueError("--calibration: the images calibrate an INT8 export; add --quantize int8")
        return None
    if not args.calibration:
        raise ValueError(f"--quantize {args.quantize} needs --calibration IMAGES_DIR: a folder of images like "
                         "those the model will see, to calibrate the activations' ranges")
    try:
        return calibration_images(args.calibration, args.calibration_count)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"--calibration {error}") from None


def _export_form(args: argparse.Namespace, validated) -> tuple[tuple[int, int], bool, bool]:
    """(input size, keep_res, dynamic) of an export: what the flags say, else what the checkpoint
    was validated with (``validated``: its EvalTransform; None for a model by name), said aloud."""
    if validated is None:
        dynamic = bool(args.dynamic)
        return tuple(args.input_size or (512, 512)), dynamic, dynamic
    size = tuple(args.input_size or validated.input_size)
    dynamic = validated.keep_res if args.dynamic is None else args.dynamic
    keep_res = validated.keep_res and dynamic
    told = [f"input size {size[0]}x{size[1]}" + (" (--input-size)" if args.input_size else " (the checkpoint's)"),
            ("each image at its own resolution" if keep_res else "resized to the input size")
            + (" (as the checkpoint was validated)" if keep_res == validated.keep_res else
               " (the checkpoint was validated at each image's own resolution, which needs --dynamic)")]
    if args.input_size and tuple(args.input_size) != tuple(validated.input_size):
        told.append(f"note: the checkpoint was validated at {validated.input_size[0]}x{validated.input_size[1]}")
    print(f"export of {args.weights}: " + "; ".join(told))
    return size, keep_res, dynamic


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .engine.benchmark import run_benchmark

    run_benchmark(args.model, input_size=args.input_size, batch_sizes=args.batch_sizes,
                  threads=args.threads, repeat=args.repeat, backends=args.backends,
                  pipeline=not args.no_pipeline, device=args.device)
    return 0


def cmd_convert_data(args: argparse.Namespace) -> int:
    from .data.convert import convert_to_coco

    image_dir = convert_to_coco(args.source, args.out, format=args.format, split=args.split, class_names=args.names)
    print(f"COCO annotations: {args.out} (file names relative to {image_dir})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .weights.convert import convert_weights

    print(convert_weights(args.source, args.out, model=args.model, num_classes=args.num_classes))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_dataset

    generate_dataset(args.out, num_train=args.train, num_val=args.val, seed=args.seed, preset=args.preset)
    print(f"synthetic COCO data set in {args.out} (train/ and val/, images/ + annotations.json)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import build_model, list_models

    print(f"{'model':<28} {'parameters':>12}")
    for name in list_models():
        model = build_model(name, num_classes=args.num_classes)
        count = sum(p.numel() for p in model.parameters())
        print(f"{name:<28} {count:>12,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .export import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
    from .engine.benchmark import BACKENDS

    parser = argparse.ArgumentParser(prog="centernet", description="CenterNet (Objects as Points) in PyTorch")
    parser.add_argument("--version", action="version", version=f"centernet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train a model on a COCO-format data set")
    p.add_argument("--config", help="YAML config (configs/*.yml); flags override it")
    p.add_argument("--model", help="model name (see `centernet models`)")
    p.add_argument("--head-planes", type=_at_least(1),
                   help="channels of the head's 3x3 convs (default: the zoo row's 256)")
    p.add_argument("--data", help="folder with train/ and val/, each images/ + annotations.json; or a VOC folder "
                                  "(ImageSets/Main/train.txt, val.txt) or a YOLO folder (images/train, images/val)")
    p.add_argument("--train-images")
    p.add_argument("--train-ann")
    p.add_argument("--val-images")
    p.add_argument("--val-ann")
    p.add_argument("--input-size", type=_input_size, help="N or H,W (multiples of 32)")
    p.add_argument("--eval-keep-res", action=argparse.BooleanOptionalAction, default=None,
                   help="validate at each image's own resolution (PaddleDetection's default) or, with "
                        "--no-eval-keep-res, resized to --input-size like training")
    p.add_argument("--epochs", type=_at_least(1),
                   help="with --resume: a new length (the learning-rate drops stay where the run's schedule put them)")
    p.add_argument("--batch-size", type=_at_least(1))
    p.add_argument("--lr", type=_number_in(0, low_open=True))
    p.add_argument("--schedule", choices=["step", "cosine"],
                   help="step: lr x0.1 at PaddleDetection's milestones (default); cosine: the short-run recipe "
                        "(see README, Training from scratch in a few thousand images)")
    p.add_argument("--warmup-epochs", type=_number_in(0), help="linear lr warm-up over these epochs (default 0)")
    p.add_argument("--workers", type=_at_least(0), help="data loading processes")
    p.add_argument("--seed", type=_at_least(0))
    p.add_argument("--eval-interval", type=_at_least(0), help="epochs between validations (0: only at the end)")
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights (used for eval and best.pt)")
    p.add_argument("--amp", nargs="?", const="bf16", choices=sorted(_AMP_DTYPES),
                   help="mixed precision: bf16 (default) or fp16 autocast (fp16 with a gradient scaler)")
    p.add_argument("--grad-clip", type=_number_in(0, low_open=True), help="clip the gradients' global norm to this value")
    p.add_argument("--accumulate", type=_at_least(1), help="micro-batches of --batch-size per optimizer step")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="synchronise BatchNorm statistics across torchrun processes")
    p.add_argument("--checkpoint-interval", type=_at_least(0),
                   help="also save last.pt every N optimizer steps (0: at epoch ends only)")
    p.add_argument("--check-data", action=argparse.BooleanOptionalAction, default=None,
                   help="check annotations and decode every image before training (default on)")
    p.add_argument("--skip-bad-data", action="store_true",
                   help="leave out images and boxes with data errors (counted) instead of stopping")
    p.add_argument("--pretrained", nargs="?", const=True,
                   help="initial weights (.pdparams, .pth or a centernet checkpoint); without a path, the "
                        "model's published COCO weights (downloaded once to ~/.cache/centernet or $CENTERNET_HOME). "
                        "Another class count keeps all but the heatmap classifier")
    p.add_argument("--pretrained-backbone", nargs="?", const=True,
                   help="ImageNet weights for the backbone alone (PaddleDetection's pretrain_weights file, a "
                        ".pdparams / .pth / .safetensors); without a path, the file PaddleDetection trains the "
                        "model from (downloaded once to the cache). Neck and head start from their initialisation")
    p.add_argument("--device", type=_device, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--run-dir", help="output folder (default runs/<model>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from last.pt, with the settings stored there (other flags "
                        "may only repeat them, or change --workers, --device, --epochs, --eval-interval, "
                        "--checkpoint-interval, --check-data, --tensorboard)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="log losses, lr, val metrics and drawn val images to <run-dir>/tensorboard "
                        "(default: on when tensorboard is installed)")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("check-data", help="check a COCO-format data set: every problem, with file and id")
    p.add_argument("data", help="annotation .json, a split folder (images/ + annotations.json) or a folder of splits")
    p.add_argument("--images", help="image folder of an annotation .json (default: images/ beside it)")
    p.add_argument("--workers", type=_at_least(0), default=4, help="threads decoding images")
    p.add_argument("--verbose", action="store_true", help="also list each image without annotations")
    p.set_defaults(func=cmd_check_data)

    p = commands.add_parser("eval", help="COCO mAP of a checkpoint or a zoo model on a COCO-format split")
    _add_model_flags(p)
    p.add_argument("--data", help="folder with <split>/images and <split>/annotations.json")
    p.add_argument("--split", default="val")
    p.add_argument("--images")
    p.add_argument("--ann")
    _add_test_flags(p)
    _add_backend_flag(p)
    p.add_argument("--out", help="output folder (default: eval/ beside the weights, runs/<model>/eval with --model)")
    p.add_argument("--analysis", action="store_true",
                   help="also per_class_ap.csv, pr_curves.png and confusion_matrix.png/.csv in --out")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("predict", help="detect objects in images, a folder, a video or a camera and draw them")
    p.add_argument("source", nargs="?", help="image file, folder or video (.mp4, .avi, .mov, .mkv)")
    p.add_argument("--camera", type=_at_least(0), metavar="N", help="read camera N (0: the first) until Ctrl-C")
    p.add_argument("--heatmap", action="store_true",
                   help="also save <name>_heatmap.jpg: the class heatmaps (what the model sees) over each image")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_flags(p)
    p.add_argument("--out", help="output folder (default: predictions/ beside the weights, "
                                 "runs/<model>/predictions with --model)")
    p.add_argument("--score-threshold", type=_number_in(0, 1), default=0.3, help="0 to 1 (default 0.3)")
    _add_test_flags(p)
    _add_backend_flag(p)
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser("serve", help="an HTTP detection server with a web page (needs the serve extra)")
    _add_model_flags(p)
    _add_backend_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="images in one forward pass at most")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="under concurrent load, how long a batch waits for more requests to join it "
                        "(a lone client never waits)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for the model at most (more: 503)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="an upload's size at most (more: 413)")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="an image's width x height at most, read from its header (more: 413)")
    p.add_argument("--timeout-s", type=float, default=30.0,
                   help="a request waiting longer for the model gets 503 and leaves the queue")
    p.add_argument("--score-threshold", type=float, default=0.3, help="POST /predict's default score_threshold")
    p.add_argument("--input-size", type=_input_size)
    p.add_argument("--flip", action="store_true", help="flip test")
    p.add_argument("--device")
    p.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                   help="torch backend: run the fastest exact form (BatchNorm folded, channels-last; "
                        "see centernet.models.fuse)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve, scales=(1.0,), merge="soft-nms")

    p = commands.add_parser("export", help="ONNX graph with the decode inside: images -> boxes, scores, labels")
    p.add_argument("--model", help="model name (see `centernet models`); or leave out and give a checkpoint")
    p.add_argument("--weights", help=".pdparams, original CenterNet .pth, or a checkpoint (best.pt)")
    p.add_argument("--num-classes", type=_at_least(1), default=80, help="with --model")
    p.add_argument("--input-size", type=_input_size,
                   help="N or H,W (multiples of 32); default: a checkpoint's own input size, else 512")
    p.add_argument("--dynamic", action=argparse.BooleanOptionalAction, default=None,
                   help="any height and width (the batch is always dynamic); default: as a checkpoint was "
                        "validated (dynamic when at each image's own resolution), else fixed")
    p.add_argument("--max-detections", type=_at_least(1), default=100, help="K, detections per image")
    p.add_argument("--deform-conv", choices=["onnx", "gather"], default="onnx",
                   help="DCNv2 as ONNX DeformConv (opset 19) or as an exact Gather+MatMul decomposition")
    p.add_argument("--opset", type=_at_least(7), help="ONNX opset (default: 19 with DeformConv, 17 with gather)")
    p.add_argument("--quantize", choices=["int8"],
                   help="int8: static quantization of the network (the decode stays float); needs --calibration")
    p.add_argument("--calibration", metavar="IMAGES_DIR",
                   help="--quantize: a folder of images like those the model will see (or one image)")
    p.add_argument("--calibration-count", type=_at_least(1), default=100, metavar="N",
                   help="--quantize: calibrate on N images of the folder, spread over it (default 100)")
    p.add_argument("--calibration-method", choices=list(CALIBRATION_METHODS), default=DEFAULT_CALIBRATION_METHOD,
                   help=f"--quantize: how activation ranges are set (default {DEFAULT_CALIBRATION_METHOD}, "
                        "the most accurate one measured; see centernet.export)")
    p.add_argument("--out", help="output file (default <model>.onnx, <model>_int8.onnx with --quantize)")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("benchmark", help="inference latency (eager, fastest, onnxruntime fp32 and INT8), data pipeline, training step")
    p.add_argument("--model", default="centernet_dla34")
    p.add_argument("--input-size", type=_input_size, default=(512, 512))
    p.add_argument("--batch-sizes", type=_at_least(1), nargs="+", default=[1, 8])
    p.add_argument("--backends", nargs="+", choices=BACKENDS,
                   help="default: all (on a GPU all but onnxruntime-int8, a CPU format)")
    p.add_argument("--threads", type=_at_least(1), help="CPU threads (default: torch's)")
    p.add_argument("--repeat", type=_at_least(1), default=10, help="timed runs per measurement")
    p.add_argument("--no-pipeline", action="store_true", help="skip the data pipeline and training step")
    p.add_argument("--device", type=_device, default="cpu", help="cpu or cuda (fp16 on cuda)")
    p.set_defaults(func=cmd_benchmark)

    p = commands.add_parser("convert-data", help="write a Pascal VOC XML or YOLO txt folder as COCO json")
    p.add_argument("source", help="VOC folder (Annotations/, JPEGImages/) or YOLO folder (images/, labels/)")
    p.add_argument("--format", choices=("voc", "yolo"), help="default: detected from the folders")
    p.add_argument("--split", help="VOC: ImageSets/Main/<split>.txt; YOLO: images/<split>/ (default: all)")
    p.add_argument("--names", help="class names file, one per line (default: labels.txt / classes.txt / data.yaml)")
    p.add_argument("--out", required=True, help="COCO json to write")
    p.set_defaults(func=cmd_convert_data)

    p = commands.add_parser("convert", help="write a .pdparams / .pth / checkpoint as .safetensors (loads without pickle)")
    p.add_argument("source", help=".pdparams, original CenterNet .pth, a centernet checkpoint or .safetensors")
    p.add_argument("out", help="the .safetensors file to write (atomically)")
    p.add_argument("--model", help="check that the weights fit this model strictly before writing (see `centernet models`)")
    p.add_argument("--num-classes", type=_at_least(1), default=80, help="with --model")
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser("synth", help="generate the synthetic COCO-format data set")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=_at_least(1), default=1000, help="training images")
    p.add_argument("--val", type=_at_least(1), default=200, help="validation images")
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--preset", choices=["hard", "demo"], default="hard",
                   help="hard: tiny to large objects, occlusion, clutter (the benchmark); demo: fewer, larger, "
                        "whole objects on quieter backgrounds (what `make demo` trains on)")
    p.set_defaults(func=cmd_synth)

    p = commands.add_parser("models", help="list the model names with their parameter counts")
    p.add_argument("--num-classes", type=_at_least(1), default=80)
    p.set_defaults(func=cmd_models)
    return parser


def _one_line(error: BaseException) -> str:
    """An error's message on one line (a library's may span several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    """Run a command. A user's mistake or a fault ends in one line on stderr naming the file or
    the flag and the problem, with exit code 2 (bad input) or 1 (the machine: disk full, no
    permission); warnings are one line each, too."""
    args = build_parser().parse_args(argv)
    formatting = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"centernet {args.command}: warning: {message}\n"
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, FileExistsError, FloatingPointError, IsADirectoryError,
            NotADirectoryError) as error:
        print(f"centernet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # the disk or the file system: centernet.io.OutputError names the file
        print(f"centernet {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (train says more: where last.pt is)
        print(f"centernet {args.command}: interrupted by Ctrl-C", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatting


if __name__ == "__main__":
    sys.exit(main())
