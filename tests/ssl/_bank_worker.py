"""Worker of the two-process gloo test in test_bank.py (a plain module so spawned children can import it)."""

import numpy as np
import torch
import torch.distributed as dist


def channel_means(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3) features that differ from image to image."""
    return x.mean(dim=(2, 3))


def compute_bank_on_rank(rank: int, world: int, port: int, images: np.ndarray, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from vipr.ssl.bank import compute_bank

        bank = compute_bank(channel_means, images, image_size=8, batch_size=2, progress=False)
        torch.save(bank.features, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
