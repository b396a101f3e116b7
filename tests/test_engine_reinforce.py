"""Reward (Eq. 2) and the REINFORCE policy gradient (Eq. 3) against hand computations and an
exact expectation over every decision vector."""
import itertools
import math

import pytest
import torch

from videored.engine.reinforce import (leave_one_out_advantage, log_likelihood, policy_loss, reward,
                                      self_critical_advantage)


def test_reward_by_hand():
    correct = torch.tensor([True, True, False, True])
    kept = torch.tensor([0.5, 0.2, 0.1, 1.0])
    assert torch.allclose(reward(correct, kept, tau=1.5), torch.tensor([0.75, 0.96, -1.5, 0.0]))
    assert torch.allclose(reward(correct, kept, tau=0.5, squared=False), torch.tensor([0.5, 0.8, -0.5, 0.0]))


def test_self_critical_advantage_by_hand():
    # sampled: correct with 30% kept -> 0.91; greedy: wrong -> -1   => A = 1.91
    # sampled: wrong -> -1; greedy: correct with 50% kept -> 0.75  => A = -1.75
    adv = self_critical_advantage(torch.tensor([True, False]), torch.tensor([0.3, 0.9]),
                                  torch.tensor([False, True]), torch.tensor([0.4, 0.5]), tau=1.0)
    assert torch.allclose(adv, torch.tensor([1.91, -1.75]))


def test_leave_one_out_advantage_by_hand():
    # baselines: mean of the others = (0 - 1)/2, (1 - 1)/2, (1 + 0)/2
    adv = leave_one_out_advantage(torch.tensor([1.0, 0.0, -1.0]))
    assert torch.allclose(adv, torch.tensor([1.5, 0.0, -1.5]))


def test_leave_one_out_advantage_per_clip():
    # (B=2 clips, K=3 samples): each sample against the other samples of its own clip
    adv = leave_one_out_advantage(torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]))
    assert torch.allclose(adv, torch.tensor([[1.5, 0.0, -1.5], [-0.75, -0.75, 1.5]]))
    assert torch.allclose(adv.sum(1), torch.zeros(2))  # K * mean(R) - sum of K baselines = 0
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantage(torch.tensor([[1.0], [0.0]]))


def test_policy_loss_and_gradient_by_hand():
    scores = torch.tensor([[0.8, 0.3, 0.0], [0.6, 0.9, 0.5]], requires_grad=True)
    sampled = torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool)  # third token of row 0: dropped earlier
    adv = torch.tensor([2.0, -1.0])
    loss = policy_loss(scores, sampled, adv)
    ll0 = math.log(0.8) + math.log(0.7) + math.log(1.0)
    ll1 = math.log(0.4) + math.log(0.9) + math.log(0.5)
    assert math.isclose(loss.item(), -(2.0 * ll0 - 1.0 * ll1) / 2, rel_tol=1e-6)
    loss.backward()
    # d/dI of -(A/B) log(I) is -A/(B I) for kept tokens; of -(A/B) log(1-I) is A/(B (1-I)) for dropped
    expected = torch.tensor([[-2.0 / 2 / 0.8, 2.0 / 2 / 0.7, 2.0 / 2 / 1.0],
                             [-1.0 / 2 / 0.4, 1.0 / 2 / 0.9, 1.0 / 2 / 0.5]])
    assert torch.allclose(scores.grad, expected, atol=1e-6)


def test_policy_gradient_is_unbiased_for_expected_reward():
    """E_u[-grad policy_loss] == grad E_u[R(u)], computed exactly over all 2^N decision vectors,
    for any constant baseline (the score function has zero mean)."""
    torch.manual_seed(0)
    N = 4
    logits = torch.randn(N, requires_grad=True)

    def R(u):  # correct iff tokens 0 and 2 are kept; then 1 - k^2
        return reward(torch.tensor([bool(u[0] and u[2])]), torch.tensor([u.float().mean()]), tau=1.5)[0]

    configs = [torch.tensor(c, dtype=torch.bool) for c in itertools.product([0, 1], repeat=N)]
    I = torch.sigmoid(logits)
    J = sum(torch.exp(log_likelihood(I[None], u[None]))[0] * R(u) for u in configs)
    exact = torch.autograd.grad(J, logits)[0]

    baseline = 0.37
    estimate = torch.zeros(N)
    for u in configs:
        I = torch.sigmoid(logits)
        prob = torch.exp(log_likelihood(I[None], u[None]))[0].detach()
        loss = policy_loss(I[None], u[None], torch.tensor([R(u) - baseline]))
        estimate += prob * -torch.autograd.grad(loss, logits)[0]
    assert torch.allclose(estimate, exact, atol=1e-6)
    assert exact[0] > 0 and exact[2] > 0 and exact[1] < 0 and exact[3] < 0  # keep 0, 2; drop 1, 3
