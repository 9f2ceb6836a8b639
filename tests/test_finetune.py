"""Fine-tuning from weights of another class count: all but the heatmap classifier kept, it re-initialised."""

import json

import pytest
import torch

from centernet import create_model
from centernet.config import Config
from centernet.data.synthetic import generate_dataset
from centernet.engine.checkpoint import save_checkpoint
from centernet.engine.trainer import Trainer
from centernet.weights import WeightsMismatchError, load_weights

MODEL = "centernet_mbv3_small"
CLASSIFIER = ("head.heatmap.2.conv.weight", "head.heatmap.2.conv.bias")


@pytest.fixture(scope="module")
def coco80_checkpoint(tmp_path_factory):
    """An 80-class model with non-default weights everywhere, saved as a checkpoint."""
    torch.manual_seed(1)
    model = create_model(MODEL, num_classes=80)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
    path = tmp_path_factory.mktemp("weights") / "coco80.pt"
    save_checkpoint({"model": model.state_dict()}, path)
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_another_class_count_is_refused_by_default(coco80_checkpoint):
    path, _ = coco80_checkpoint
    with pytest.raises(WeightsMismatchError, match="head.heatmap.2.conv.weight"):
        load_weights(create_model(MODEL, num_classes=3), path)


def test_reinit_keeps_everything_but_the_heatmap_classifier(coco80_checkpoint):
    path, source = coco80_checkpoint
    model = create_model(MODEL, num_classes=3)
    report = load_weights(model, path, num_classes_mismatch="reinit")
    assert sorted(report.reinitialized) == sorted(CLASSIFIER)
    line = str(report)
    assert "re-initialised" in line and "80" in line and "model 3" in line and "\n" not in line

    state = model.state_dict()
    for key, value in state.items():
        if key not in CLASSIFIER:
            assert torch.equal(value, source[key]), key  # backbone, neck, size and offset heads kept
    assert state[CLASSIFIER[0]].shape == (3, 256, 1, 1)
    assert torch.all(state[CLASSIFIER[1]] == torch.tensor(-2.19))
    assert state[CLASSIFIER[0]].abs().max() <= 1 / 256 ** 0.5  # the head's uniform(+-1/sqrt(fan_in))


def test_finetune_from_80_to_3_classes_trains(coco80_checkpoint, tmp_path, capsys):
    path, source = coco80_checkpoint
    paths = generate_dataset(tmp_path / "data", num_train=4, num_val=0, seed=0, min_side=64, max_side=96,
                             max_objects=3)
    data = json.loads(paths["train_ann"].read_text())  # keep 3 of the 7 shape classes
    data["categories"] = data["categories"][:3]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] <= 3]
    ann_file = tmp_path / "three.json"
    ann_file.write_text(json.dumps(data))

    config = Config()
    config.model.name, config.model.pretrained = MODEL, str(path)
    config.data.train_images, config.data.train_ann = str(paths["train_images"]), str(ann_file)
    config.data.input_size, config.data.workers, config.data.check = (64, 64), 0, False
    config.train.epochs, config.train.batch_size, config.train.device = 1, 2, "cpu"
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert "re-initialised" in capsys.readouterr().out
    assert trainer.model.num_classes == 3
    backbone = trainer.model.backbone.state_dict()
    assert all(torch.equal(value, source[f"backbone.{key}"]) for key, value in backbone.items())  # step 0

    trainer.fit()
    assert (tmp_path / "run" / "last.pt").is_file()
    moved = [key for key, value in trainer.model.backbone.state_dict().items()
             if value.is_floating_point() and not torch.equal(value, source[f"backbone.{key}"])]
    assert moved, "training updated the backbone"
