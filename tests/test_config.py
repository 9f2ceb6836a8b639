import csv
import dataclasses
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml

from centernet.cli import main
from centernet.config import Config, DataConfig, ModelConfig, TrainConfig, load_config, save_config
from centernet.engine.trainer import Trainer
from centernet.weights import hub
from conftest import ZOO, imagenet_file, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def test_yaml_round_trip(tmp_path):
    config = Config()
    config.model.name = "centernet_mbv3_small"
    config.data.input_size = (384, 640)
    config.train.milestones = (9, 12)
    save_config(config, tmp_path / "c.yaml")
    loaded = load_config(tmp_path / "c.yaml")
    assert loaded == config
    assert loaded.data.input_size == (384, 640)


def test_unknown_option_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yml.*unknown train option.*epoch"):
        load_config(path)


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yml"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yml"):
        load_config(tmp_path / "nope.yml")


@pytest.mark.parametrize("epochs, expected", [(140, [90, 120]), (14, [9, 12]), (7, [4, 6]), (2, [1])])
def test_schedule_scales_with_run_length(epochs, expected):
    # PaddleDetection drops the lr x0.1 at epochs 90 and 120 of 140; shorter runs keep the proportions.
    assert TrainConfig(epochs=epochs).scaled_milestones() == expected


def test_override_ignores_none_and_rejects_unknown():
    config = Config()
    config.override("train", epochs=None, lr=0.01)
    assert config.train.epochs == 140 and config.train.lr == 0.01
    with pytest.raises(ValueError, match="unknown train option"):
        config.override("train", nonsense=1)


# --- types: every value is checked as it comes in, and named when wrong ------------------------------

def test_yaml_number_without_a_dot_is_a_number(tmp_path):
    """PyYAML reads ``5e-4`` (YAML 1.1 wants ``5.0e-4``) as the string '5e-4'."""
    path = tmp_path / "c.yml"
    path.write_text("train:\n  lr: 5e-4\n  grad_clip: 1e1\n  warmup_epochs: 1\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "5e-4"
    train = load_config(path).train
    assert train.lr == 0.0005 and type(train.lr) is float
    assert train.grad_clip == 10.0 and train.warmup_epochs == 1.0 and type(train.warmup_epochs) is float


def test_a_yaml_lr_of_5e_4_trains_with_0_0005(tmp_path, data_dir):
    path = tmp_path / "c.yml"
    config = tiny_config(data_dir, epochs=1)
    save_config(config, path)
    path.write_text(path.read_text().replace("lr: 0.001", "lr: 5e-4"))
    trainer = Trainer(load_config(path), tmp_path / "run", progress=False)
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [0.0005]
    trainer.fit()
    with open(tmp_path / "run" / "metrics.csv") as handle:
        assert float(next(csv.DictReader(handle))["lr"]) == 0.0005


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "lr", "fast", "a number"),
    ("train", "lr", ".nan", "a number"),
    ("train", "epochs", "1.5", "a whole number"),
    ("train", "epochs", "true", "a whole number"),
    ("train", "ema", "1", "true or false"),
    ("train", "milestones", "90", "a list of whole numbers"),
    ("train", "grad_clip", "[1]", "a number or null"),
    ("data", "input_size", "512", "a list of 2 whole numbers"),
    ("data", "input_size", "[512, 512, 3]", "a list of 2 whole numbers"),
    ("data", "train_images", "7", "a string or null"),
    ("model", "name", "[centernet_dla34]", "a string"),
    ("model", "pretrained_backbone", "3", "a string, true or false, or null"),
])
def test_a_wrong_type_names_the_file_and_the_key(section, key, value, expected, tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ValueError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {section}.{key}: expected {expected}, got ")
    assert "\n" not in str(caught.value)


def test_every_field_is_type_checked():
    """A mapping fits no field's type: each one refuses it, naming itself."""
    for section, kind in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        for field in dataclasses.fields(kind):
            with pytest.raises(ValueError, match=rf"^<dict>: {section}\.{field.name}: expected "):
                Config.from_dict({section: {field.name: {"a": 1}}})


def test_flags_are_type_checked_as_files_are():
    config = Config()
    config.override("train", source="--lr", lr="2e-3")
    assert config.train.lr == 0.002
    with pytest.raises(ValueError, match=r"^--epochs: train\.epochs: expected a whole number, got 'x'$"):
        config.override("train", source="--epochs", epochs="x")


# --- the zoo configs: PaddleDetection's full recipe, the ImageNet backbone included -----------------

ZOO_CONFIGS = sorted((ROOT / "configs").glob("*.yml"))


def test_there_is_a_config_per_zoo_row():
    assert [load_config(path).model.name for path in ZOO_CONFIGS] == sorted(ZOO)
    assert [path.stem for path in ZOO_CONFIGS] == sorted(f"{name}_140e_coco" for name in ZOO)


@pytest.mark.parametrize("path", ZOO_CONFIGS, ids=lambda path: path.stem)
def test_a_zoo_config_is_the_full_recipe(path):
    config = load_config(path)
    assert config.model.pretrained_backbone is True and config.model.name in hub.BACKBONE_URLS
    assert config.model.num_classes == 80 and config.data.input_size == (512, 512)
    assert (config.train.epochs, config.train.lr, config.train.milestones) == (140, 0.0005, (90, 120))
    assert config.train.batch_size == (16 if config.model.name in ("centernet_dla34", "centernet_r50") else 32)


def test_a_zoo_config_trains_from_the_imagenet_backbone_in_the_cache(cache, data_dir, tmp_path, capsys):
    name = "centernet_mbv3_small"
    config = load_config(ROOT / "configs" / f"{name}_140e_coco.yml")
    cached = cache / hub.BACKBONE_URLS[name].rsplit("/", 1)[-1]
    cache.mkdir()
    state = imagenet_file(cached, name)  # as PaddleDetection publishes it, put where the hub keeps it
    tiny = tiny_config(data_dir, epochs=1)
    config.data, config.model.num_classes = tiny.data, None  # the recipe's model, on the tiny data
    config.train.batch_size, config.train.device = 4, "cpu"
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert f"{cached}: loaded " in capsys.readouterr().out
    for key, value in trainer.model.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    assert load_config(tmp_path / "run" / "config.yaml").model.pretrained_backbone is True


def test_a_zoo_config_offline_without_the_file_stops_in_one_line(cache, data_dir, tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    path = ROOT / "configs" / "centernet_r50_140e_coco.yml"
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--data", str(data_dir), "--run-dir", str(run), "--quiet"]) == 2
    error = capsys.readouterr().err
    url = hub.BACKBONE_URLS["centernet_r50"]
    assert error.count("\n") == 1 and url in error and str(cache / url.rsplit("/", 1)[-1]) in error
    assert not run.exists()
