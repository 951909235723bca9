"""The visual stream: where each visual token lives, and which text tokens may see it (DESIGN.md section 2).

The video never sits inside the text sequence. The text only holds a marker `<|vision_start|>...` per visual
item (image or video); the items' tokens form a separate stream V of shape (B, M, d). This module builds V from
the vision tower's per-item outputs and records, once per forward, everything the layers need:

- `sample_idx` (B, M): the packed sample each visual token belongs to (-1 for padding). Cross-attention is
  block-diagonal: text token n sees video token m iff they belong to the same sample.
- `seq_idx` (B, M) int32, nondecreasing: the Mamba mixer restarts its state where it changes. Padding is given
  its own trailing id so it can never leak into a real sample (it sits after all real tokens anyway). None when
  each row is one sample without padding: the mixers then take their cheaper path without boundaries.
- `grid_positions` (3, B, M): the (t, h, w) coordinates of each token in its item's merged grid, used only when
  cross-attention applies M-RoPE.

Building these once here (not per layer, not with `.item()` loops in the layer) keeps the layers free of
bookkeeping, unlike the original release.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence


@dataclass
class VisualItem:
    """One image or video as the vision tower returned it: `embeds` (tokens, d) on a merged (t, h, w) grid."""

    embeds: torch.Tensor
    grid_thw: tuple[int, int, int]
    positions: torch.Tensor | None = None  # (3, tokens) when tokens were dropped; else derived from grid_thw

    def grid_positions(self, device) -> torch.Tensor:
        return self.positions.to(device) if self.positions is not None else grid_positions(self.grid_thw, device)

    def keep_fraction(self, keep: float) -> VisualItem:
        """Keep `keep` of the tokens, uniformly spaced over the item (the paper's Vamba-TR drops 50%)."""
        n = self.embeds.shape[0]
        k = max(1, round(n * keep))
        if k >= n:
            return self
        idx = torch.linspace(0, n - 1, k, device=self.embeds.device).round().long().unique()
        positions = grid_positions(self.grid_thw, self.embeds.device)[:, idx]
        return VisualItem(self.embeds[idx], self.grid_thw, positions)


@dataclass
class VideoStream:
    """The visual stream of a batch. Shapes: states (B, M, d); sample_idx, seq_idx (B, M); grid_positions (3, B, M)."""

    states: torch.Tensor
    sample_idx: torch.Tensor
    seq_idx: torch.Tensor | None
    grid_positions: torch.Tensor


def packed_sample_index(position_ids: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """Sample index of each text token (B, N): positions restarting (a step other than +1) start a new sample.

    This is the rule transformers' `find_packed_sequence_indices` uses for packed self-attention, so the text
    self-attention mask and the cross-attention mask always agree on where samples begin.
    """
    if position_ids is None:
        return torch.zeros(batch, length, dtype=torch.long, device=device)
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1).expand(batch, -1)


def grid_positions(grid_thw: tuple[int, int, int], device) -> torch.Tensor:
    """(3, t*h*w) temporal/row/column index of each token of one item, in the vision tower's output order."""
    t, h, w = grid_thw
    tt, hh, ww = torch.meshgrid(
        torch.arange(t, device=device), torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    return torch.stack([tt, hh, ww]).reshape(3, -1)


def assemble_video_stream(
    items_per_row: list[list[tuple[int, VisualItem]]],
    hidden_size: int,
    dtype: torch.dtype,
    device: torch.device,
) -> VideoStream:
    """Concatenate each row's visual items (in marker order) into one padded stream.

    Args:
        items_per_row: for each batch row, (sample index of the item's marker, item) in text order.
        hidden_size: d, used for rows without any visual item.

    Returns:
        The padded `VideoStream`; rows are padded at the end to the longest row.
    """
    states, samples, grids = [], [], []
    for row in items_per_row:
        if row:
            states.append(torch.cat([item.embeds for _, item in row]).to(device=device, dtype=dtype))
            samples.append(
                torch.cat([torch.full((item.embeds.shape[0],), s, dtype=torch.long, device=device) for s, item in row])
            )
            grids.append(torch.cat([item.grid_positions(device) for _, item in row], dim=1).T)
        else:
            states.append(torch.zeros(0, hidden_size, dtype=dtype, device=device))
            samples.append(torch.zeros(0, dtype=torch.long, device=device))
            grids.append(torch.zeros(0, 3, dtype=torch.long, device=device))
    states_t = pad_sequence(states, batch_first=True)
    sample_idx = pad_sequence(samples, batch_first=True, padding_value=-1)
    grid = pad_sequence(grids, batch_first=True).permute(2, 0, 1)
    # Mixer ids: the sample index, with padding after the last real sample of its row.
    pad_id = sample_idx.max(dim=1, keepdim=True).values.clamp(min=0) + 1
    seq_idx = torch.where(sample_idx >= 0, sample_idx, pad_id).to(torch.int32)
    if len({len(s) for s in samples}) == 1 and all(len({s for s, _ in row}) <= 1 for row in items_per_row):
        seq_idx = None  # one sample per row, no padding: no boundary
    return VideoStream(states=states_t, sample_idx=sample_idx, seq_idx=seq_idx, grid_positions=grid)


def marker_kinds(
    config, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor | None, n_images: int, n_videos: int
) -> torch.Tensor:
    """(B, N): 1 (image) or 2 (video) at each `<|vision_start|>` marker, 0 elsewhere.

    The release marks images and videos alike, so a marker's kind comes from `mm_token_type_ids` when given,
    else from the single kind of items present. Our earlier image layout (`<|vision_start|><|image_pad|>
    <|vision_end|>`) still reads as an image, so checkpoints and data made with it keep working.
    """
    is_marker = input_ids == config.vision_start_token_id
    if mm_token_type_ids is not None:
        kinds = torch.where(is_marker, mm_token_type_ids.to(input_ids.device), 0)
        if bool((is_marker & (kinds != 1) & (kinds != 2)).any()):
            raise ValueError("mm_token_type_ids must be 1 (image) or 2 (video) at every <|vision_start|> marker")
        return kinds
    next_tok = torch.nn.functional.pad(input_ids[:, 1:], (0, 1), value=-1)
    old_image = is_marker & (next_tok == config.image_token_id)
    kinds = torch.where(old_image, 1, 0)
    rest = is_marker & ~old_image
    if bool(rest.any()):
        if n_images == int(old_image.sum()):
            kinds = torch.where(rest, 2, kinds)
        elif n_videos == 0:
            kinds = torch.where(rest, 1, kinds)
        else:
            raise ValueError(
                "input_ids mark images and videos alike (<|vision_start|><|vision_end|>, the release layout) and "
                "both were given: pass mm_token_type_ids (1 for an image, 2 for a video at each <|vision_start|>), "
                "as VambaProcessor does"
            )
    return kinds


def stream_items(
    config,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    video_grid_thw: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
) -> list[tuple[str, int, tuple[int, int, int], int]]:
    """The visual items of ONE row in stream (marker) order: (kind, index within its kind, (t, h, w) patch grid,
    packed sample of its marker). input_ids: (1, N); position_ids restart at packed sample boundaries."""
    if input_ids.shape[0] != 1:
        raise ValueError(f"one row expected (pack samples into one row), got {input_ids.shape[0]}")
    grids = {"image": [] if image_grid_thw is None else image_grid_thw.tolist(),
             "video": [] if video_grid_thw is None else video_grid_thw.tolist()}
    kinds = marker_kinds(config, input_ids, mm_token_type_ids, len(grids["image"]), len(grids["video"]))[0]
    if position_ids is not None and position_ids.ndim == 3:
        position_ids = position_ids[-1]
    samples = packed_sample_index(position_ids, 1, input_ids.shape[1], input_ids.device)[0]
    used = {"image": 0, "video": 0}
    out = []
    for pos in (kinds != 0).nonzero().flatten().tolist():
        kind = "image" if int(kinds[pos]) == 1 else "video"
        if used[kind] >= len(grids[kind]):
            raise ValueError(f"input_ids hold more {kind} markers than the {len(grids[kind])} {kind}(s) given")
        out.append((kind, used[kind], tuple(int(x) for x in grids[kind][used[kind]]), int(samples[pos])))
        used[kind] += 1
    for kind, n in used.items():
        if n != len(grids[kind]):
            raise ValueError(f"input_ids hold {n} {kind} marker(s) but {len(grids[kind])} {kind}(s) were given")
    return out


def check_pixels(
    visual, pixels: torch.Tensor | None, grid_thw: torch.Tensor | None, pixels_name: str, grid_name: str
) -> bool:
    """Validate one kind's pixels against its grid; False when that kind is absent."""
    if pixels is None:
        if grid_thw is not None and len(grid_thw):
            raise ValueError(f"{grid_name} was given but {pixels_name} is missing")
        return False
    if grid_thw is None:
        raise ValueError(f"{pixels_name} was given without {grid_name}")
    if not torch.is_floating_point(pixels):
        raise ValueError(f"{pixels_name} must be a floating-point tensor, got dtype {pixels.dtype}")
    device = visual.get_device()
    if pixels.device != device:
        raise ValueError(f"{pixels_name} is on {pixels.device} but the model is on {device}")
    if grid_thw.ndim != 2 or grid_thw.shape[-1] != 3:
        raise ValueError(f"{grid_name} must have shape (items, 3), got {tuple(grid_thw.shape)}")
    merge = visual.spatial_merge_size
    patches = int(grid_thw.prod(-1).sum())
    if patches != pixels.shape[0]:
        raise ValueError(
            f"{grid_name} describes {patches} patches ({grid_thw.tolist()}) but {pixels_name} has "
            f"{pixels.shape[0]} rows"
        )
    if bool(((grid_thw[:, 1:] % merge) != 0).any()):
        raise ValueError(f"{grid_name} heights/widths must be multiples of spatial_merge_size={merge}")
    return True
