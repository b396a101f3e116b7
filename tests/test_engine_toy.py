"""The interpreter learns, from reward alone, to keep exactly the informative tokens of a toy task
whose answer is known (PatchCodeDataset: only patches 1 and 6 carry the label, one bit each)."""
import pytest
import torch

from _engine_utils import PatchCodeDataset, tiny_config, weights
from videored.engine.builders import build_model
from videored.engine.trainer import train


@pytest.mark.slow
def test_interpreter_learns_the_informative_patches(tmp_path):
    cfg = tiny_config("data.kind=tensor_file", "data.root=unused", "data.batch_size=16",
                      "model.groups=1", "schedule.stages=[supervised, interpreter]",
                      "schedule.supervised_epochs=8", "schedule.interpreter_epochs=16",
                      "optim.name=adam", "optim.lr=3e-3", "optim.interpreter_lr=2e-2",
                      "reinforce.tau=1.0", "run.log_every=8", "run.ckpt_every_steps=0")
    val = PatchCodeDataset(128, fixed_seed=1)
    summary = train(cfg, tmp_path, train_set=PatchCodeDataset(512), val_set=val)
    supervised, interpreter = summary["stages"]
    assert supervised["val"]["acc"] >= 0.95  # the backbone reads the two patches

    model = build_model(cfg)
    model.load_state_dict(weights(tmp_path / "model.pt"))
    model.eval()
    x = torch.stack([val[i]["video"] for i in range(len(val))])
    y = torch.tensor([val[i]["label"] for i in range(len(val))])
    informative = torch.zeros(model.num_patches, dtype=torch.bool)
    informative[list(PatchCodeDataset.INFORMATIVE)] = True
    with torch.no_grad():
        out = model(x)  # greedy: keep token i iff I_i >= 0.5
        keep = out.keep[0]  # (B, N)
        assert keep[:, informative].float().mean() >= 0.99  # the label patches are kept ...
        assert keep[:, ~informative].float().mean() <= 0.05  # ... the noise is dropped
        assert (keep == informative).all(1).float().mean() >= 0.85  # exactly {1, 6} for most clips
        acc = (out.logits.argmax(1) == y).float().mean()
        assert acc >= 0.95 and interpreter["val"]["kept"] <= 0.3
        # Reference: the same backbone keeping as many tokens at random drops far more accuracy.
        ratio = keep.float().mean().item()
        rand = model(x, selector="random", keep_ratio=ratio)
        assert (rand.logits.argmax(1) == y).float().mean() <= acc - 0.3
