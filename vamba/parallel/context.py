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

    def __init__(self, size: int, allow_replicated: bool = False):
        """`allow_replicated`: a batch with fewer temporal patches than ranks (an image) is computed whole on every
        rank of the group instead of failing; its gradients then also sum to W times the single-device ones."""
        self.allow_replicated = allow_replicated
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
        mixer = getattr(config.get_text_config(), "mixer_type", "none")
        check_context_parallel(self.size, self.size, mixer, [], 1)
        items = stream_items(config, batch["input_ids"], batch.get("mm_token_type_ids"), batch.get("image_grid_thw"),
                             batch.get("video_grid_thw"), batch.get("position_ids"))
        if sum(t for _, _, (t, _, _), _ in items) < self.size:
            if not self.allow_replicated:
                raise ValueError(f"context parallel over {self.size} ranks needs at least {self.size} temporal "
                                 f"patches of video in a sample; this one has fewer")
            return batch  # e.g. a single image: every rank of the group computes it whole (exact, see module doc)
        plan = plan_slices(items, config.vision_config.spatial_merge_size, self.size)
        pieces = [batch[_PIXELS[kind][0]][a:b] for kind, a, b in plan.pixel_rows(self.rank)]
        out = {k: v for k, v in batch.items() if k not in ("pixel_values", "pixel_values_videos")}
        out["context_parallel"] = SliceContext(self, plan, plan.sample_idx(), torch.cat(pieces))
        return out


def check_context_parallel(size: int, world: int, mixer_type: str, min_video_frames: list[int],
                           temporal_patch: int) -> None:
    """Start-up checks, before any compute: the group divides the world, the mixer can hand its state over, and
    every video source gives at least one temporal patch per rank (`min_video_frames`: each source's fixed count).

    Raises:
        ValueError: naming the setting and what is needed.
    """
    if size < 1 or world % size:
        raise ValueError(f"train.context_parallel={size} must divide the world size {world}")
    if size > 1 and mixer_type == "mamba1":
        raise ValueError("train.context_parallel needs a mixer that hands its state across slices: mixer_type "
                         "'mamba1' cannot (its scan has no chunked form here); use 'mamba2' or 'none'")
    for frames in min_video_frames:
        if size > 1 and frames < size * temporal_patch:
            raise ValueError(f"train.context_parallel={size}: a source samples {frames} frames, fewer than one "
                             f"temporal patch ({temporal_patch} frames) per rank; use at least {size * temporal_patch}")


def share_batches(dataloader, cp: ContextParallel) -> None:
    """Make an accelerate-prepared dataloader give every rank of a group the same batches (shard by the
    data-parallel rank, world / W ways, instead of by the global rank)."""
    sampler = getattr(dataloader, "batch_sampler", None)
    if sampler is None or not hasattr(sampler, "num_processes"):
        raise ValueError(f"context parallel: cannot reshard a {type(dataloader).__name__} (no BatchSamplerShard)")
    sampler.num_processes, sampler.process_index = cp.dp_size, cp.dp_rank
