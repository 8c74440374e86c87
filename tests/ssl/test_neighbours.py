"""Support sets: the ring-buffer queue update and the nearest-neighbour lookup (NNCLR, MoCo)."""

import torch

from vipr.ssl.neighbours import nearest_neighbour, ring_enqueue


def test_nnclr_nearest_neighbour_on_a_hand_made_support_set():
    support = torch.tensor([[10.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0]])
    queries = torch.tensor([
        [1.0, 0.1],  # cosine picks [10, 0]; Euclidean distance on raw vectors would pick [1, 1]
        [0.0, 9.0],  # straight up: [0, 1]
        [-3.0, -2.0],  # [-1, -1]
        [2.0, 1.8],  # [1, 1]
        [-1.0, 0.2],  # cos 0.55 to [-1, -1] beats cos 0.20 to [0, 1]
    ])
    expected = torch.tensor([[10.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    assert torch.equal(nearest_neighbour(queries, support), expected)  # rows as stored, not normalised


def test_nnclr_nearest_neighbour_finds_each_support_row_itself():
    torch.manual_seed(0)
    support = torch.randn(50, 8)
    perm = torch.randperm(50)
    assert torch.equal(nearest_neighbour(3 * support[perm], support), support[perm])
    assert nearest_neighbour(torch.randn(4, 8, requires_grad=True), support).grad_fn is None


def test_nnclr_support_queue_is_a_ring_buffer():
    queue, ptr = torch.zeros(5, 2), torch.tensor(3)
    ring_enqueue(queue, ptr, torch.tensor([[1.0, 1], [2, 2], [3, 3], [4, 4]]))
    assert queue[:, 0].tolist() == [3, 4, 0, 1, 2] and int(ptr) == 2  # rows 3, 4, then wrap to 0, 1
    ring_enqueue(queue, ptr, torch.arange(14.0).view(7, 2))  # more rows than the queue: the last 5 stay
    assert queue[:, 0].tolist() == [10, 12, 4, 6, 8] and int(ptr) == 2  # rows 4..12 from position 2 on
