"""What each training stage trains (DESIGN.md section 3).

Stage 1 ("pretrain") freezes every pretrained weight and trains cross-attention, mixers and alpha; stage 2
("sft") trains everything, optionally freezing the vision encoder or its first K blocks. Freezing is done by
`requires_grad`, before the optimizer is built, so frozen weights are not in the optimizer at all and stay
bit-identical (no weight decay, no update).
"""

from __future__ import annotations

import logging
import re

from torch import nn

from ..modeling.errors import UsageError

logger = logging.getLogger(__name__)

ALL = "all"


def apply_stage(
    model: nn.Module, trainable: list[str], freeze_vision: bool = False, freeze_vision_blocks: int = 0
) -> dict[str, int]:
    """Set `requires_grad` by name patterns (substrings; `all` trains everything) and vision freezing.

    Returns:
        counts of trainable and frozen parameters (numbers of elements; under ZeRO-3 `ds_numel` is used).

    Raises:
        ValueError: if the patterns match no parameter at all (a typo would otherwise silently freeze everything);
            a single unmatched pattern is only logged (an ablation may lack that module).
    """
    matched = {p: False for p in trainable}
    counts = {"trainable": 0, "frozen": 0}
    block_re = re.compile(r"(?:^|\.)visual\.blocks\.(\d+)\.")
    for name, param in model.named_parameters():
        train = ALL in trainable
        for pattern in trainable:
            if pattern != ALL and pattern in name:
                matched[pattern] = train = True
        if "visual." in name and (freeze_vision or _in_frozen_block(block_re, name, freeze_vision_blocks)):
            train = False
        param.requires_grad_(train)
        counts["trainable" if train else "frozen"] += int(getattr(param, "ds_numel", param.numel()))
    unmatched = [p for p, hit in matched.items() if not hit and p != ALL]
    if unmatched and counts["trainable"] == 0:
        raise UsageError(f"trainable pattern(s) {unmatched} match no parameter of {type(model).__name__}")
    if unmatched:  # e.g. `vision_mixer.` in the mixer-less ablation rows
        logger.warning("trainable pattern(s) %s match no parameter of %s", unmatched, type(model).__name__)
    return counts


def _in_frozen_block(block_re: re.Pattern, name: str, k: int) -> bool:
    m = block_re.search(name)
    return bool(m) and int(m.group(1)) < k or (k > 0 and ".patch_embed." in name)
