import math

import pytest
import torch

from histoblur.diffusion.schedule import ScheduleConfig
from histoblur.diffusion.scheduler import Scheduler
from histoblur.errors import ParameterError
from histoblur.models.unit_ddpm import UnitDDPMConfig

SCHEDULE = ScheduleConfig(timesteps=50)


def test_respacing_keeps_both_ends_ascending_with_decreasing_alpha_bar():
    scheduler = Scheduler(SCHEDULE.alpha_bar())
    ts = scheduler.set_timesteps(10)
    assert len(ts) == 10 and int(ts[0]) == 0 and int(ts[-1]) == 49
    assert bool((ts[1:] > ts[:-1]).all())
    alphas = [scheduler.alpha(i) for i in range(len(ts))]
    assert all(b < a for a, b in zip(alphas, alphas[1:], strict=False))
    assert scheduler.alpha(-1) == 1.0
    assert len(scheduler.set_timesteps(None)) == 50 and len(scheduler.set_timesteps(1)) == 2


def test_strength_keeps_the_first_timesteps_up_to_its_share_of_the_schedule():
    scheduler = Scheduler(SCHEDULE.alpha_bar())
    ts = scheduler.set_timesteps(None, strength=0.5)
    assert int(ts[0]) == 0 and int(ts[-1]) == round(0.5 * 49)
    assert len(scheduler.set_timesteps(10, strength=1e-6)) == 1  # the first one always stays


def test_unit_ddpm_and_the_regional_restorer_share_one_schedule_rule():
    config = UnitDDPMConfig(timesteps=50, beta_start=4e-4, beta_end=0.08)
    assert torch.equal(config.schedule().alpha_bar(), SCHEDULE.alpha_bar())
    with pytest.raises(ValueError, match="beta_end"):
        UnitDDPMConfig(beta_start=0.05, beta_end=0.01)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_clean_estimate_inverts_the_training_target(prediction):
    scheduler = Scheduler(SCHEDULE.alpha_bar(), prediction)
    scheduler.set_timesteps(5)
    ab = scheduler.alpha(2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 5, 5, generator=g) * 1.8 - 0.9
    noise = torch.randn(1, 3, 5, 5, generator=g)
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
    target = noise if prediction == "epsilon" else math.sqrt(ab) * noise - math.sqrt(1 - ab) * x0
    assert torch.allclose(scheduler.clean(x_t, target, 2), x0, atol=1e-5)


def test_ddim_step_with_the_true_noise_lands_on_the_forward_process():
    scheduler = Scheduler(SCHEDULE.alpha_bar())
    scheduler.set_timesteps(5)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(1, 3, 4, 4, generator=g) * 1.8 - 0.9
    eps = torch.randn(1, 3, 4, 4, generator=g)
    a3, a1 = scheduler.alpha(3), scheduler.alpha(1)
    x_t = math.sqrt(a3) * x0 + math.sqrt(1 - a3) * eps
    expected = math.sqrt(a1) * x0 + math.sqrt(1 - a1) * eps
    out = scheduler.step(eps, 3, x_t, eta=0.0, noise=torch.randn(1, 3, 4, 4), to=1)
    assert torch.allclose(out, expected, atol=1e-5)
    last = scheduler.step(
        eps,
        0,
        math.sqrt(scheduler.alpha(0)) * x0 + math.sqrt(1 - scheduler.alpha(0)) * eps,
        eta=1.0,
        noise=torch.randn(1, 3, 4, 4),
    )
    assert torch.allclose(last, x0, atol=1e-5)  # to the clean image no noise is added


def test_ancestral_steps_add_the_posterior_variance():
    scheduler = Scheduler(SCHEDULE.alpha_bar())
    scheduler.set_timesteps(None)
    g = torch.Generator().manual_seed(2)
    x_t = torch.zeros(20000, 1, 1, 1)
    out = scheduler.step(torch.zeros_like(x_t), 30, x_t, 1.0, torch.randn(x_t.shape, generator=g))
    ab_t, ab_prev = scheduler.alpha(30), scheduler.alpha(29)
    beta = 1 - ab_t / ab_prev
    assert float(out.var()) == pytest.approx((1 - ab_prev) / (1 - ab_t) * beta, rel=0.05)


def test_renoise_then_ddim_back_is_consistent_with_the_forward_process():
    scheduler = Scheduler(SCHEDULE.alpha_bar())
    scheduler.set_timesteps(10)
    x = torch.full((40000, 1, 1, 1), 0.5)
    up = scheduler.renoise(
        x, 2, 4, torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    )
    ratio = scheduler.alpha(4) / scheduler.alpha(2)
    assert float(up.mean()) == pytest.approx(0.5 * math.sqrt(ratio), abs=0.01)
    assert float(up.var()) == pytest.approx(1 - ratio, rel=0.05)


def test_unknown_prediction_is_refused():
    with pytest.raises(ParameterError, match="prediction"):
        Scheduler(SCHEDULE.alpha_bar(), "x0")
