import pytest

from rin_train.schedule import SigmaSchedule
from srdd.errors import SrddError


def test_exponential_decays_geometrically_over_equal_stages():
    s = SigmaSchedule("exponential", 0.05, 0.0005, 10)
    sig = s.stage_sigmas()
    assert sig[0] == 0.05 and sig[-1] == pytest.approx(0.0005)
    assert all(b / a == pytest.approx(0.01 ** (1 / 9)) for a, b in zip(sig, sig[1:]))
    assert s.sigma_at(0, 29) == 0.05 and s.sigma_at(28, 29) == pytest.approx(0.0005)
    assert s.sigma_at(3, 29) == sig[1]  # stage = floor(3 * 10 / 29) = 1


def test_one_stage_means_constant_not_no_noise():
    assert SigmaSchedule("exponential", 0.05, 0.0005, 1).stage_sigmas() == [0.05]


def test_linear_and_constant_and_warmup():
    assert SigmaSchedule("linear", 0.04, 0.01, 4).stage_sigmas() == pytest.approx([0.04, 0.03, 0.02, 0.01])
    assert SigmaSchedule("constant", 0.03, 0.03, 3).stage_sigmas() == [0.03] * 3
    assert SigmaSchedule("exponential", 0.05, 0.0005, 2, warmup_stage=True).stage_sigmas() == [0.0, 0.05]
    three = SigmaSchedule("exponential", 0.05, 0.0005, 3, warmup_stage=True).stage_sigmas()
    assert three == pytest.approx([0.0, 0.05, 0.0005])
    with pytest.raises(SrddError, match="warmup_stage needs num_stages >= 2"):
        SigmaSchedule("exponential", 0.05, 0.0005, 1, warmup_stage=True)


def test_unknown_schedule():
    with pytest.raises(SrddError, match="noise.schedule must be one of"):
        SigmaSchedule("cosine")
