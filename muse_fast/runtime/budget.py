"""Memory a batch of tiles takes, so that an absurd ``--batch-size`` is refused before it runs.

The figure per tile was measured with ``ru_maxrss`` for the shipped ``muse_vit_t16`` on CPU at 224 px (activations,
dense maps and decoding: about 9 MiB per tile); it scales with the tile's area. Larger encoders take more, so treat
it as a floor.
"""

from __future__ import annotations

import os

from ..errors import ConfigError

TILE_BYTES_224 = 10 * 2**20  # working memory per 224-px tile in the network
REFUSE_SHARE = 0.5  # a batch needing more than this share of the memory is refused
WARN_SHARE = 0.125  # above this share the run says what the batch will use


def batch_bytes(batch_size: int, tile_size: int) -> int:
    return int(batch_size * TILE_BYTES_224 * (tile_size / 224) ** 2)


def memory_bytes(device: str) -> int:
    """Total memory of the device the network runs on (the GPU's for CUDA, else this machine's RAM)."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def check_batch_size(batch_size: int, tile_size: int, device: str, total: int | None = None) -> str | None:
    """Raise :class:`ConfigError` when a batch needs over half the memory; for a large one, a line saying its use."""
    total = memory_bytes(device) if total is None else total
    need = batch_bytes(batch_size, tile_size)
    where = "GPU memory" if device == "cuda" else "RAM"
    if need > REFUSE_SHARE * total:
        most = max(1, int(REFUSE_SHARE * total // batch_bytes(1, tile_size)))
        raise ConfigError(
            f"--batch-size {batch_size} needs about {_gb(need)} for the network, but this machine has {_gb(total)} of "
            f"{where}; use --batch-size {min(most, 1024)} or less (the default is 16)"
        )
    if need > WARN_SHARE * total:
        return f"--batch-size {batch_size} will use about {_gb(need)} of {_gb(total)} {where} for the network"
    return None
