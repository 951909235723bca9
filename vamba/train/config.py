"""Structured schema of a training run (Hydra): model, data mixture, stage, DeepSpeed, and the run itself.

`configs/train.yaml` composes one of each group; every group's YAML is validated against these dataclasses
(registered with Hydra's ConfigStore on import; the data group by `vamba.data.mixture`), so an unknown key fails
before any GPU time is spent. The resolved config is saved with the run, next to its git SHA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from ..data.mixture import MixtureConfig


@dataclass
class ModelConfig:
    """Which model to train and how to build it.

    kind: `vamba`, or `qwen2_vl` to train the baseline (the CPU quickstart trains a tiny one as its base).
    path: a checkpoint directory — a Vamba checkpoint, or a Qwen2-VL one when `from_qwen2vl` is true (converted at
        load, cross-attention copied from self-attention with gathered ZeRO-3 parameters).
    flavor: when `path` is null, build this size of `vamba.modeling.flavors` in code (tiny, quickstart, small, 7b),
        with random weights (CPU runs); `flavor_overrides` changes its text-config fields (`vision: {...}` its
        vision-config fields), e.g. `+model.flavor_overrides.num_hidden_layers=4`.
    vamba: Vamba config fields overriding the checkpoint's or flavor's (mixer_type, cross_attn_init, ...); a
        `mixer_config` here updates the saved or flavor's mixer key by key.
    processor: processor directory; null means `path`; "tiny" means the offline tiny processor.
    tokenizer_merges: with `processor: tiny`, BPE merges learned from the project's prompts (0 = bytes only). A
        flavor built in code with the tiny tokenizer's ids gets a vocabulary that fits the tokenizer unless
        `flavor_overrides.vocab_size` is given.
    """

    kind: str = "vamba"
    path: str | None = None
    from_qwen2vl: bool = False
    flavor: str | None = None
    flavor_overrides: dict[str, Any] = field(default_factory=dict)
    vamba: dict[str, Any] = field(default_factory=dict)
    processor: str | None = None
    tokenizer_merges: int = 0
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class DistillConfig:
    """Stage-level distillation: loss = LM + coeff * KL(teacher || student) over stored top-k teacher logits."""

    coeff: float = 0.0
    logits: str | None = None  # directory written by `vamba distill-teacher`
    temperature: float = 1.0


@dataclass
class StageConfig:
    """One training stage; defaults are the paper's (AdamW, cosine, warmup 3%, wd 0.01, global batch 128)."""

    name: str = "pretrain"
    trainable: list[str] = field(default_factory=lambda: ["cross_attn.", "vision_mixer.", ".alpha"])
    freeze_vision: bool = False
    freeze_vision_blocks: int = 0
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    num_train_epochs: float = 1.0
    max_steps: int = -1
    global_batch_size: int = 128
    per_device_batch_size: int = 1
    gradient_checkpointing: bool = True
    max_grad_norm: float = 1.0
    # Ranks per sample: each of the W ranks of a group takes a time slice of the sample's video (vamba.parallel);
    # W divides the world size, and the data-parallel degree is world / W.
    context_parallel: int = 1
    lora: LoraConfig = field(default_factory=LoraConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class DeepSpeedConfig:
    """ZeRO settings turned into a DeepSpeed config dict by `vamba.train.deepspeed`."""

    enabled: bool = True
    stage: int = 3
    offload_optimizer: bool = False
    offload_param: bool = False


@dataclass
class TrainConfig:
    run_name: str = "???"
    output_dir: str = "outputs/runs/${run_name}"
    seed: int = 42
    save_steps: int = 500
    save_total_limit: int = 3
    logging_steps: int = 1
    resume: str = "auto"  # auto (latest checkpoint in output_dir, if any) | none | <checkpoint dir>
    report_to: list[str] = field(default_factory=lambda: ["wandb"])
    wandb_project: str = "vamba"
    wandb_mode: str = "offline"
    dataloader_workers: int = 2
    device: str = "auto"  # auto | cpu
    debug_kill_at_step: int | None = None  # tests only: SIGKILL self right after this step's checkpoint
    eval_after: dict[str, Any] | None = None  # `vamba eval` overrides: `vamba train` scores the export with them
    model: ModelConfig = field(default_factory=ModelConfig)
    data: MixtureConfig = field(default_factory=MixtureConfig)
    train: StageConfig = field(default_factory=StageConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


def _register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="train", name="stage_schema", node=StageConfig)
    cs.store(group="deepspeed", name="deepspeed_schema", node=DeepSpeedConfig)


_register()
