"""What a fresh machine gets: the installed torch/timm do what the code relies on, and a regular
(non-editable) wheel install finds everything a command reads at run time."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import Block

from videored.models import create_model
from videored.models.tokens import key_padding_mask

REPO = Path(__file__).resolve().parents[1]


def test_timm_block_takes_a_padding_mask():
    """videored removes tokens and pads batches with unequal counts; timm < 1.0.16 has no
    `attn_mask` argument (TypeError). A padded key must change nothing for the real tokens."""
    torch.manual_seed(0)
    block = Block(dim=16, num_heads=2).eval()
    real = torch.randn(1, 4, 16)  # cls + 3 tokens
    padded = torch.cat([real, 100 * torch.randn(1, 2, 16)], dim=1)  # 2 padding tokens
    valid = torch.tensor([[True, True, True, False, False]])  # patch tokens only (cls implied)
    with torch.no_grad():
        out = block(padded, attn_mask=key_padding_mask(valid))[:, :4]
        torch.testing.assert_close(out, block(real), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "timesformer_jointst_tiny_patch16_224"])
def test_every_layernorm_has_the_checkpoints_eps(name):
    """Every checkpoint the model loads was trained with eps 1e-6 (timm's default changed)."""
    model = create_model(name, img_size=32, depth=2, num_frames=2) if "timesformer" in name \
        else create_model(name, img_size=32, depth=3)
    backbone_norms = [m for n, m in model.named_modules()
                      if isinstance(m, torch.nn.LayerNorm) and not n.startswith("interpreters")]
    assert backbone_norms and {m.eps for m in backbone_norms} == {1e-6}


_PROBE = """
import json, sys
import videored
from videored.engine.config import load_config, packaged_configs, resolve_config_path
from videored.commands.quickstart import DEFAULT_CONFIG
quick = resolve_config_path(DEFAULT_CONFIG)
cfg = load_config(DEFAULT_CONFIG)
print(json.dumps({"package": videored.__file__, "quickstart": str(quick),
                  "model": cfg.model.name,
                  "shipped": sorted(str(p.relative_to(packaged_configs()))
                                    for p in packaged_configs().rglob("*.yaml"))}))
"""


@pytest.mark.slow
def test_wheel_install_finds_its_configs(tmp_path):
    """`pip install .` (not -e): the quickstart's config resolves inside the installed package,
    not in the checkout, from a working directory that has no configs/."""
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    target, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    # Build from a copy: an in-tree build leaves build/ and *.egg-info in the checkout, and a stale
    # build/ would hide a missing package_data entry.
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                   check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("videored-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(target)), found["package"]
    assert found["quickstart"].startswith(str(target)), found["quickstart"]
    assert found["model"] == "timesformer_jointst_tiny_patch16_224"
    in_checkout = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml"))
    assert found["shipped"] == in_checkout
