"""`data.decoder` picks the reader; the old key `data.backend` still works and warns once."""
import warnings

import pytest

from videored.engine import config as config_module
from videored.engine.config import ConfigError, load_config

ROOT = ["data.root=somewhere"]


def test_decoder_default_and_values():
    assert load_config(None, ROOT).data.decoder == "auto"
    assert load_config(None, [*ROOT, "data.decoder=torchcodec"]).data.decoder == "torchcodec"
    with pytest.raises(ConfigError, match="data.decoder"):
        load_config(None, [*ROOT, "data.decoder=opencv"])


def test_old_backend_key_is_read_and_warns_once(monkeypatch):
    monkeypatch.setattr(config_module, "_warned", set())
    with pytest.warns(FutureWarning, match="data.backend"):
        cfg = load_config(None, [*ROOT, "data.backend=pyav"])
    assert cfg.data.decoder == "pyav" and cfg.data.backend is None  # saved configs carry the new key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(None, [*ROOT, "data.backend=decord"]).data.decoder == "decord"  # no second warning
    stored = {"data": {"root": "x", "backend": "decord"}}  # a run config saved before the rename
    assert config_module.config_from_dict(stored).data.decoder == "decord"
