"""Context parallelism: the W ranks of a group share one sample and split its video along time.

The data-parallel degree is world / W: groups are consecutive ranks [g*W, (g+1)*W), and every rank of a group
gets the same sample. `ContextParallel.shard` cuts the sample's visual stream into W contiguous slices at
temporal-patch boundaries (`vamba.modeling.video_slice.plan_slices`), keeps only this rank's pixels (sliced on the
CPU, before they reach the GPU) and hands the model a `SliceContext`; the model calls back `gather` to exchange
conv halos, Mamba-2 states and cross-attention partials (see `vamba.modeling.video_slice`).

Gradients. `gather` is an all-gather that autograd differentiates: its backward sums, over the group, the
gradients every rank computed for each gathered piece. Since the text path is replicated (every rank computes the
same loss), each rank ends up with W times its share of every gradient, and the group's gradients sum to W times
the single-device gradient. Data-parallel averaging over all world ranks (DDP, DeepSpeed ZeRO-3) therefore yields
exactly the single-device mean over the world / W samples: no rescaling, no engine of our own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from ..modeling.video_slice import SliceContext, plan_slices
from ..modeling.video_stream import stream_items

_PIXELS = {"image": ("pixel_values", "image_grid_thw"), "video": ("pixel_values_videos", "video_grid_thw")}


def context_parallel_groups(size: int) -> tuple[Any, int, int]:
    """(this rank's group, its index in the group, the group's index) for groups of `size` consecutive ranks.

    Every rank creates every group (torch.distributed requires it), in the same order.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    if size < 1 or world % size:
        raise ValueError(f"context_parallel={size} must divide the world size {world}")
    mine = None
    for g in range(world // size):
        group = dist.new_group(list(range(g * size, (g + 1) * size)))
        if g == rank // size:
            mine = group
    return mine, rank % size, rank // size


def _all_gather(tensor: torch.Tensor, group) -> torch.Tensor:
    """(W, *tensor.shape), differentiable (backward: the sum over the group of each piece's gradients)."""
    import torch.distributed._functional_collectives as fc

    gather = getattr(fc, "all_gather_single", None) or fc.all_gather_tensor_autograd
    out = gather(tensor.unsqueeze(0), 0, group)
    return fc.wait_tensor(out) if hasattr(fc, "wait_tensor") else out


class ContextParallel:
    """Context parallelism over groups of `size` ranks (the `SliceHooks` of `vamba.modeling.video_slice`)."""

    def __init__(self, size: int):
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("context parallel needs torch.distributed (launch with torchrun)")
        self.size = size
        self.group, self.rank, self.dp_rank = context_parallel_groups(size)
        self.dp_size = dist.get_world_size() // size

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The same-shaped `tensor` of every rank of the group, in rank order."""
        return list(_all_gather(tensor, self.group).unbind(0))

    def shard(self, batch: dict[str, Any], config) -> dict[str, Any]:
        """This rank's part of a batch (one packed row): pixels of its slice only, plus `context_parallel`.

        Grids stay whole (they describe the sample). A batch without pixels is returned unchanged.
        """
        if all(batch.get(p) is None for p, _ in _PIXELS.values()):
            return batch
        items = stream_items(config, batch["input_ids"], batch.get("mm_token_type_ids"), batch.get("image_grid_thw"),
                             batch.get("video_grid_thw"), batch.get("position_ids"))
        plan = plan_slices(items, config.vision_config.spatial_merge_size, self.size)
        pieces = [batch[_PIXELS[kind][0]][a:b] for kind, a, b in plan.pixel_rows(self.rank)]
        out = {k: v for k, v in batch.items() if k not in ("pixel_values", "pixel_values_videos")}
        out["context_parallel"] = SliceContext(self, plan, plan.sample_idx(), torch.cat(pieces))
        return out
