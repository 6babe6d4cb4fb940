import torch

from srdd.scan.rows import ValidRows


def test_runs_of_right_and_left_padded_batches():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert ValidRows.from_mask(right).runs == ((0, 3), (4, 9))
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert ValidRows.from_mask(left).runs == ((2, 4), (5, 8))
    assert ValidRows.from_mask(torch.ones(2, 5)).runs == ((0, 10),)


def test_views_select_exactly_the_valid_rows_without_copying():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    rows = ValidRows.from_mask(mask)
    hidden = torch.randn(2, 3, 4)
    parts = rows.views(hidden)
    flat = hidden.reshape(-1, 4)
    assert torch.equal(torch.cat(parts), flat[mask.reshape(-1).bool()])
    assert all(p.untyped_storage().data_ptr() == hidden.untyped_storage().data_ptr() for p in parts)
    gathered = rows.gather(hidden)
    hidden.zero_()
    assert gathered.abs().sum() > 0  # a copy: later in-place changes cannot reach it


def test_tensors_of_another_shape_are_taken_whole():
    rows = ValidRows.from_mask(torch.tensor([[1, 0]]))
    other = torch.randn(5, 8)
    (whole,) = rows.views(other)
    assert whole.shape == (5, 8)
