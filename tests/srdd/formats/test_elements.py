import torch

from srdd.formats.elements import E2M1, E2M3, E3M2, E4M3, E5M2, _round_by_quantum, round_normal, round_to_element

from .reference import round_element


def test_e2m1_ties_round_to_even():
    v = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    assert round_to_element(v, E2M1).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    assert round_to_element(-v, E2M1).tolist() == [-0.0, -1.0, -1.0, -2.0, -2.0, -4.0, -4.0]


def test_e2m1_saturates_and_keeps_negative_zero():
    v = torch.tensor([6.5, 7.0, 1e30, float("inf"), -0.0, -1e-40])
    q = round_to_element(v, E2M1)
    assert q[:4].tolist() == [6.0, 6.0, 6.0, 6.0]
    assert torch.signbit(q[4]) and torch.signbit(q[5]) and q[4] == 0 and q[5] == 0


def test_e2m1_fast_path_equals_generic_and_reference_on_dense_grid():
    v = torch.arange(-8 * 512, 8 * 512 + 1, dtype=torch.float32) / 512
    fast = round_to_element(v, E2M1)
    assert torch.equal(fast.view(torch.int32), _round_by_quantum(v, E2M1).view(torch.int32))
    ref = torch.tensor([round_element(float(a), "e2m1") for a in v])
    assert torch.equal(fast.view(torch.int32), ref.view(torch.int32))


def test_minifloats_match_reference_grids():
    g = torch.Generator().manual_seed(1)
    for spec in (E2M3, E3M2, E4M3, E5M2):
        v = torch.randn(3000, generator=g) * spec.max_value / 3
        q = round_to_element(v, spec)
        ref = torch.tensor([round_element(float(a), spec.name) for a in v])
        assert torch.equal(q, ref), spec.name


def test_e4m3_and_e5m2_match_torch_float8_casts_in_range():
    g = torch.Generator().manual_seed(2)
    for spec, dtype in ((E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)):
        v = (torch.randn(20000, generator=g) * 50).clamp(-spec.max_value, spec.max_value)
        assert torch.equal(round_to_element(v, spec), v.to(dtype).to(torch.float32))


def test_round_normal_matches_generic_inside_the_normal_range():
    g = torch.Generator().manual_seed(3)
    s = torch.exp(torch.empty(5000).uniform_(-4.1, 6.1, generator=g)).clamp(2.0**-6, 448)
    assert torch.equal(round_normal(s, E4M3), round_to_element(s, E4M3))
