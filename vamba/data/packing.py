"""Batching processed samples: padded batches, or packed rows under text and visual token budgets.

Packing follows the model's convention (DESIGN.md section 2, "Packed sequences"): samples are concatenated in a
row and their `position_ids` restart at 0 at each sample, which is how the model finds sample boundaries (the
same rule transformers uses for packed self-attention). From that the model derives block-diagonal causal
self-attention, block-diagonal cross-attention and the mixer's `seq_idx`. Visual items are concatenated in row
order and, within a row, in text order — the order in which the model assigns them to `<|vision_start|>` markers.
The release packed rows to about 124k text / 120k visual tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .processor import IGNORE_INDEX

PIXEL_KEYS = (("pixel_values_videos", "video_grid_thw"), ("pixel_values", "image_grid_thw"))


def pack_indices(sizes: Sequence[tuple[int, int]], max_text_tokens: int, max_visual_tokens: int) -> list[list[int]]:
    """Group samples into rows without exceeding either budget (first fit, order kept inside rows).

    Args:
        sizes: (text tokens, visual tokens) per sample.

    Returns:
        Rows as lists of sample indices. A sample larger than a budget on its own gets a row to itself.
    """
    rows: list[list[int]] = []
    used: list[tuple[int, int]] = []
    for i, (text, visual) in enumerate(sizes):
        for r, (t, v) in enumerate(used):
            if t + text <= max_text_tokens and v + visual <= max_visual_tokens:
                rows[r].append(i)
                used[r] = (t + text, v + visual)
                break
        else:
            rows.append([i])
            used.append((text, visual))
    return rows


def _cat_pixels(samples: Sequence[dict[str, torch.Tensor]], out: dict[str, torch.Tensor]) -> None:
    for pixels, grid in PIXEL_KEYS:
        have = [s for s in samples if pixels in s]
        if have:
            out[pixels] = torch.cat([s[pixels] for s in have])
            out[grid] = torch.cat([s[grid] for s in have])


def collate_padded(samples: Sequence[dict[str, torch.Tensor] | None], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One sample per row, right-padded; bad samples (None) are dropped.

    Returns:
        input_ids, attention_mask, labels (B, N_max) and the pixel tensors of all samples in row order.
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        return {}
    width = max(s["input_ids"].shape[-1] for s in samples)
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids) if "mm_token_type_ids" in samples[0] else None
    for i, s in enumerate(samples):
        n = s["input_ids"].shape[-1]
        ids[i, :n], labels[i, :n], mask[i, :n] = s["input_ids"][0], s["labels"][0], 1
        if types is not None:
            types[i, :n] = s["mm_token_type_ids"][0]
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if types is not None:
        out["mm_token_type_ids"] = types
    _cat_pixels(samples, out)
    if any("sample_key" in s for s in samples):
        out["sample_keys"] = [s.get("sample_key") for s in samples]
    return out


def collate_packed(
    samples: Sequence[dict[str, torch.Tensor] | None],
    pad_token_id: int,
    max_text_tokens: int,
    max_visual_tokens: int,
) -> dict[str, torch.Tensor]:
    """Pack samples into rows (see module docstring); rows are right-padded with a trailing pad "sample".

    Returns:
        input_ids, position_ids, labels (R, L) and pixel tensors; no attention_mask (boundaries are in the
        positions).
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        return {}
    if any(_inline_layout(s) for s in samples):
        raise ValueError("packing is for Vamba's layout; Qwen2-VL's inline layout trains with padded batches")
    sizes = [(s["input_ids"].shape[-1], int(s.get("visual_tokens", 0))) for s in samples]
    rows = pack_indices(sizes, max_text_tokens, max_visual_tokens)
    width = max(sum(sizes[i][0] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    positions = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    ordered = []
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            n = sizes[i][0]
            ids[r, offset : offset + n] = samples[i]["input_ids"][0]
            labels[r, offset : offset + n] = samples[i]["labels"][0]
            if "mm_token_type_ids" in samples[i]:
                types[r, offset : offset + n] = samples[i]["mm_token_type_ids"][0]
            positions[r, offset : offset + n] = torch.arange(n)
            offset += n
            ordered.append(samples[i])
        positions[r, offset:] = torch.arange(width - offset)  # padding forms its own trailing sample
    out = {"input_ids": ids, "position_ids": positions, "labels": labels, "mm_token_type_ids": types}
    _cat_pixels(ordered, out)
    return out


def _inline_layout(sample: dict[str, torch.Tensor]) -> bool:
    """Whether a sample is in Qwen2-VL's inline layout (typed visual tokens) rather than Vamba's (one typed marker
    token per visual item)."""
    types = sample.get("mm_token_type_ids")
    if types is None:
        return False
    items = sum(len(sample[grid]) for _, grid in PIXEL_KEYS if grid in sample)
    return int((types != 0).sum()) > items
