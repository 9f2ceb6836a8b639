import pytest

from centernet.config import Config, TrainConfig, load_config, save_config


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
