"""Run configuration: three small dataclasses (model, data, train) read from and written to YAML.

Every zoo row has a YAML under ``configs/`` named as PaddleDetection names it: its full recipe, the
ImageNet backbone included. A config file holds only what differs from the defaults below; the
CLI's flags override the file.

Every value is checked against its field's type as it comes in (from a file, a dict or a flag) and
coerced where the meaning is unambiguous: an int where a float is wanted, a list where a tuple is,
and a number written as a string (PyYAML reads ``lr: 5e-4`` as the string ``'5e-4'``, following
YAML 1.1, which wants ``5.0e-4``). Anything else raises ``ValueError`` naming the file and the key:
``c.yml: train.lr: expected a number, got 'fast'``. The ranges are the trainer's to check.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .io import write_text


@dataclass
class ModelConfig:
    name: str = "centernet_dla34"
    num_classes: int | None = None  # None: taken from the training data's categories
    head_planes: int | None = None  # None: the zoo row's (256); 64 is the original CenterNet's ResNet head
    # full-model weights (.pdparams, .pth or our checkpoint); true: the row's published COCO weights
    pretrained: str | bool | None = None
    # ImageNet backbone weights; true: the file PaddleDetection trains the row from, through the
    # download cache ($CENTERNET_HOME, else ~/.cache/centernet; see centernet.weights.hub)
    pretrained_backbone: str | bool | None = None


@dataclass
class DataConfig:
    train_images: str | None = None
    train_ann: str | None = None
    val_images: str | None = None
    val_ann: str | None = None
    input_size: tuple[int, int] = (512, 512)  # (height, width) of the training input
    eval_keep_res: bool = True  # evaluate at the image's own resolution (padded), as PaddleDetection
    workers: int = 2
    corrected_radius: bool = False  # True: CornerNet's radius without the original's quirk
    check: bool = True  # before training, check annotations and decode every image (centernet check-data)
    skip_bad: bool = False  # leave out the images and boxes with data errors instead of stopping


@dataclass
class TrainConfig:
    epochs: int = 140
    batch_size: int = 16  # per process (per GPU), as PaddleDetection's configs give it
    lr: float = 5e-4  # Adam, PaddleDetection's base_lr (optimizer_140e.yml; batch 16 per GPU)
    milestones: tuple[int, ...] = (90, 120)  # lr x gamma at these epochs of a `schedule_epochs` run
    schedule_epochs: int = 140  # the milestones scale with epochs / schedule_epochs
    gamma: float = 0.1
    schedule: str = "step"  # "step": x gamma at the milestones (Paddle's); "cosine": the short-run recipe
    warmup_epochs: float = 0.0  # linear warm-up from warmup_start x lr over these (fractional) epochs
    warmup_start: float = 0.01
    final_lr_ratio: float = 0.01  # cosine: the last step's rate over lr
    weight_decay: float = 0.0
    ema: bool = False
    ema_decay: float = 0.9998
    sync_bn: bool = False  # synchronise BatchNorm statistics across processes (torchrun)
    amp: bool = False  # autocast the forward pass to amp_dtype
    amp_dtype: str = "bfloat16"  # or "float16" (with a gradient scaler)
    grad_clip: float | None = None  # max global gradient norm
    accumulate: int = 1  # micro-batches of batch_size per optimizer step (per process)
    checkpoint_interval: int = 0  # optimizer steps between mid-epoch last.pt saves (0: epoch ends only)
    seed: int = 0
    eval_interval: int = 1  # epochs between validations (0: only at the end)
    flip_test: bool = False
    device: str = "auto"
    tensorboard: bool | None = None  # log to <run>/tensorboard; None: when tensorboard is installed

    def scaled_milestones(self) -> list[int]:
        """The lr-drop epochs for this run's length (PaddleDetection's 90/120 of 140 for 140)."""
        scale = self.epochs / self.schedule_epochs
        return sorted({max(1, round(m * scale)) for m in self.milestones if round(m * scale) < self.epochs})


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_kwargs(self) -> dict[str, Any]:
        """What ``build_model`` takes besides the name (for the trainer and checkpoint loading)."""
        kwargs = {"num_classes": self.model.num_classes}
        if self.model.head_planes is not None:
            kwargs["head_planes"] = self.model.head_planes
        return kwargs

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> "Config":
        unknown = set(values) - {"model", "data", "train"}
        if unknown:
            raise ValueError(f"{source}: unknown config section(s) {sorted(unknown)}; "
                             "expected model, data, train")
        return cls(model=_build(ModelConfig, values.get("model"), source, "model"),
                   data=_build(DataConfig, values.get("data"), source, "data"),
                   train=_build(TrainConfig, values.get("train"), source, "train"))

    def override(self, section: str, source: str = "override", **values: Any) -> None:
        """Set the non-None ``values`` on one section (used for command-line flags), type-checked
        as a file's are (``source`` names them in an error)."""
        target = getattr(self, section)
        for key, value in values.items():
            if value is not None:
                if not hasattr(target, key):
                    raise ValueError(f"unknown {section} option {key!r}")
                setattr(target, key, _typed(type(target), section, key, value, source))


def _typed(kind: type, section: str, key: str, value: Any, source: str) -> Any:
    """``value`` as field ``key`` of dataclass ``kind`` wants it, or ``ValueError`` naming the key."""
    wanted = typing.get_type_hints(kind)[key]
    try:
        return _as_type(wanted, value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {section}.{key}: expected {_describe(wanted)}, got {value!r}") from None


def _as_type(wanted: Any, value: Any) -> Any:
    """``value`` coerced to the type ``wanted`` (bool, int, float, str, tuple[...], or a union of
    them with None), or ``TypeError``."""
    origin, args = typing.get_origin(wanted), typing.get_args(wanted)
    if origin in (Union, types.UnionType):
        for option in sorted(args, key=_ORDER.index):  # None and exact types before coercions
            try:
                return _as_type(option, value)
            except (TypeError, ValueError):
                continue
        raise TypeError(value)
    if wanted is type(None):
        if value is None:
            return None
    elif wanted is bool:
        if isinstance(value, bool):
            return value
    elif wanted is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif wanted is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif wanted is str:
        if isinstance(value, str):
            return value
    elif origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_as_type(args[0], item) for item in value)
        if len(value) == len(args):
            return tuple(_as_type(arg, item) for arg, item in zip(args, value))
    raise TypeError(value)


_ORDER = [type(None), bool, int, str, float]  # the order a union's members are tried in


def _describe(wanted: Any) -> str:
    """The type ``wanted`` in words: ``a number or null``."""
    if typing.get_origin(wanted) in (Union, types.UnionType):  # "a number or null"
        words = [_describe(option) for option in sorted(typing.get_args(wanted), key=_ORDER[::-1].index)]
        return " or ".join(words) if len(words) == 2 else ", ".join(words[:-1]) + ", or " + words[-1]
    if typing.get_origin(wanted) is tuple:
        args = typing.get_args(wanted)
        return ("a list of whole numbers" if args[-1] is Ellipsis
                else f"a list of {len(args)} whole numbers")
    return {type(None): "null", bool: "true or false", int: "a whole number", float: "a number",
            str: "a string"}[wanted]


def _build(kind: type, values: dict[str, Any] | None, source: str, section: str):
    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{source}: unknown {section} option(s) {sorted(unknown)}; "
                         f"known: {sorted(names)}")
    return kind(**{k: _typed(kind, section, k, v, source) for k, v in values.items()})


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping with sections model, data, train")
    return Config.from_dict(values, source=str(path))


def save_config(config: Config, path: str | Path) -> None:
    data = config.to_dict()
    data["data"]["input_size"] = list(data["data"]["input_size"])
    data["train"]["milestones"] = list(data["train"]["milestones"])
    write_text(path, yaml.safe_dump(data, sort_keys=False))
