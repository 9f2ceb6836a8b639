"""Run configuration: three small dataclasses (model, data, train) read from and written to YAML.

Every zoo row has a YAML under ``configs/`` named as PaddleDetection names it. A config file holds
only what differs from the defaults below; the CLI's flags override the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .io import write_text


@dataclass
class ModelConfig:
    name: str = "centernet_dla34"
    num_classes: int | None = None  # None: taken from the training data's categories
    head_planes: int | None = None  # None: the zoo row's (256); 64 is the original CenterNet's ResNet head
    pretrained: str | None = None  # full-model weights (.pdparams, .pth or our checkpoint)
    pretrained_backbone: str | None = None  # ImageNet backbone weights


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
        """What ``create_model`` takes besides the name (for the trainer and checkpoint loading)."""
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

    def override(self, section: str, **values: Any) -> None:
        """Set the non-None ``values`` on one section (used for command-line flags)."""
        target = getattr(self, section)
        for key, value in values.items():
            if value is not None:
                if not hasattr(target, key):
                    raise ValueError(f"unknown {section} option {key!r}")
                setattr(target, key, _coerce(type(target), key, value))


def _coerce(kind: type, key: str, value: Any) -> Any:
    default = getattr(kind(), key)
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def _build(kind: type, values: dict[str, Any] | None, source: str, section: str):
    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{source}: unknown {section} option(s) {sorted(unknown)}; "
                         f"known: {sorted(names)}")
    return kind(**{k: _coerce(kind, k, v) for k, v in values.items()})


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
