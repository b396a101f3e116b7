"""Typed config: base + override files, dotted overrides, errors that name the file and key."""
from pathlib import Path

import pytest

from videored.engine.config import ConfigError, config_from_dict, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_base_chain_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", "data:\n  root: /data\n  batch_size: 4\noptim:\n  lr: 0.1\n")
    (tmp_path / "sub").mkdir()
    exp = _write(tmp_path / "sub" / "exp.yaml", "_base_: ../base.yaml\noptim:\n  lr: 0.01\n")
    cfg = load_config(exp, ["data.batch_size=2", "schedule.stages=[supervised]"])
    assert cfg.data.root == "/data"  # from the base
    assert cfg.optim.lr == 0.01  # the file overrides the base
    assert cfg.data.batch_size == 2  # the command line overrides the file
    assert list(cfg.schedule.stages) == ["supervised"]
    assert cfg.optim.name == "sgd"  # dataclass default untouched
    assert config_from_dict(to_dict(cfg)) == cfg  # round trip through a checkpoint's dict


def test_unknown_key_names_file_and_key(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "data:\n  root: /d\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: key 'data\.batch_sise'"):
        load_config(exp)


def test_wrong_type_names_key(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "data:\n  root: /d\n")
    with pytest.raises(ConfigError, match=r"key 'optim\.lr'"):
        load_config(exp, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"key 'schedule\.interpreter_epochs'"):
        load_config(exp, ["schedule.interpreter_epochs=2.5"])


def test_invalid_values_and_missing_keys(tmp_path):
    exp = _write(tmp_path / "exp.yaml", "data:\n  root: /d\n")
    with pytest.raises(ConfigError, match="schedule.stages"):
        load_config(exp, ["schedule.stages=[interpreter, distill]"])
    with pytest.raises(ConfigError, match="schedule.groups"):
        load_config(exp, ["model.groups=1", "schedule.groups=[1]"])
    with pytest.raises(ConfigError, match="data.root"):
        load_config(_write(tmp_path / "empty.yaml", "run:\n  seed: 1\n"))
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(exp, ["optim.lr"])
    with pytest.raises(ConfigError, match=r"key 'data\.clips_per_video'.*divide data\.batch_size \(4 clips"):
        load_config(exp, ["data.batch_size=4", "data.clips_per_video=3"])
    with pytest.raises(ConfigError, match=r"key 'data\.clips_per_video'.*data\.kind video"):
        load_config(exp, ["data.kind=image", "data.batch_size=4", "data.clips_per_video=2"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    # the K400 / ImageNet recipes and the quickstart's SPViT / SViT ones require the weights to
    # start from (model.pretrained_path: ???); the other quickstart files train from scratch
    from_scratch = path.name == "base.yaml" or (
        "quickstart" in str(path) and "???" not in path.read_text())
    overrides = [] if from_scratch else ["model.pretrained_path=/ckpt.pth"]
    if path.name == "base.yaml":
        overrides.append("data.root=/data")
    cfg = load_config(path, overrides)
    assert cfg.model.name


def test_paper_numbers_in_shipped_configs():
    k400 = load_config(REPO / "configs/k400/jointst_b_8x224_iared2.yaml", ["model.pretrained_path=/c"])
    assert (k400.model.groups, k400.schedule.interpreter_epochs, k400.schedule.finetune_epochs) == (1, 5, 1)
    assert (k400.optim.name, k400.optim.lr, k400.data.batch_size) == ("sgd", 2.5e-3, 8)
    assert k400.model.num_frames * (k400.model.img_size // 16) ** 2 == 1568
    deit = load_config(REPO / "configs/imagenet/deit_s_iared2.yaml", ["model.pretrained_path=/c"])
    assert (deit.model.groups, deit.schedule.interpreter_epochs, deit.schedule.finetune_epochs) == (3, 10, 20)
    assert (deit.optim.name, deit.optim.lr, deit.data.batch_size) == ("adam", 4e-5, 32)
