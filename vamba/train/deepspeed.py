"""DeepSpeed config built from the Hydra `deepspeed` group (ZeRO-3 by default, ZeRO-3 + CPU offload, ZeRO-2).

Batch sizes, learning rate, clipping and precision are left as "auto" so transformers' Trainer fills them from the
stage config: one source of truth. On CPU (the tests) DeepSpeed's fused Adam is unavailable, so torch's AdamW is
requested; on GPU DeepSpeed picks its fused implementation.
"""

from __future__ import annotations

from typing import Any

from ..modeling.errors import UsageError
from .config import DeepSpeedConfig


def build_deepspeed_config(cfg: DeepSpeedConfig, on_cpu: bool, bf16: bool) -> dict[str, Any] | None:
    """The dict passed as `TrainingArguments(deepspeed=...)`, or None when DeepSpeed is disabled."""
    if not cfg.enabled:
        return None
    if cfg.stage not in (2, 3):
        raise UsageError(f"deepspeed.stage must be 2 or 3, got {cfg.stage}")
    zero: dict[str, Any] = {
        "stage": cfg.stage,
        "overlap_comm": not on_cpu,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if cfg.stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=True,  # consolidated safetensors at save time
        )
        if cfg.offload_param:
            zero["offload_param"] = {"device": "cpu", "pin_memory": not on_cpu}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not on_cpu}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto" if bf16 else False},
        "fp16": {"enabled": False},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto", "torch_adam": on_cpu},
        },
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
