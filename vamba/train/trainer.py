"""Two-stage training on transformers' `Trainer` with its DeepSpeed integration (DESIGN.md section 3).

What Vamba adds to the stock Trainer: building/converting the model after the DeepSpeed config is live (so ZeRO-3
partitions it at construction), the stage's freeze policy, optional top-k distillation, and logging of text/visual
tokens per second, peak memory and skipped samples. Alpha needs no projection: the forward clamps it to [0, 1].
Checkpointing, resuming (model, optimizer, scheduler, RNG and position in the data stream), gradient
accumulation, clipping and the consolidated final save are the Trainer's own.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import Qwen2VLForConditionalGeneration, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..data.frames import as_spec
from ..data.mixture import build_mixture
from ..data.packing import collate_packed, collate_padded
from ..data.processor import IGNORE_INDEX, VambaProcessor
from ..modeling import VambaConfig, VambaForConditionalGeneration
from ..modeling.compat import LOAD_DEFAULTS
from ..modeling.convert import copy_self_attention_to_cross_attention, from_qwen2vl
from ..modeling.errors import UsageError, check_checkpoint
from ..modeling.flavors import TINY_IDS, get_flavor, qwen2vl_config, vamba_config
from ..modeling.tiny import tiny_vocab_size
from ..modeling.zero import gathered
from ..parallel import ContextParallel, check_context_parallel, launch, share_batches
from .config import ModelConfig, TrainConfig
from .deepspeed import build_deepspeed_config
from .distill import TeacherLogits, topk_kl
from .stages import apply_stage

logger = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def use_cpu(cfg: TrainConfig) -> bool:
    return cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())


# -- building ----------
def _flavor_sizes(cfg: ModelConfig) -> dict[str, Any]:
    return dict(OmegaConf.to_container(cfg.flavor_overrides) if OmegaConf.is_config(cfg.flavor_overrides)
                else cfg.flavor_overrides)


def build_processor(cfg: ModelConfig) -> VambaProcessor:
    layout = "qwen2_vl" if cfg.kind == "qwen2_vl" else "vamba"
    source = cfg.processor or cfg.path
    if source is None or source == "tiny":
        patch = qwen2vl_config(cfg.flavor, **_flavor_sizes(cfg)).vision_config.patch_size if cfg.flavor else 14
        return VambaProcessor.tiny(patch_size=patch, layout=layout, merges=cfg.tokenizer_merges)
    return VambaProcessor.from_pretrained(source, layout=layout)


def build_model(cfg: ModelConfig, dtype: torch.dtype, vocab_size: int | None = None) -> torch.nn.Module:
    """Build or load the model; call after `TrainingArguments` exists so ZeRO-3 partitions it at construction.

    With `path` null the model is `cfg.flavor` built in code; ``vocab_size`` (the processor's tokenizer length)
    then sizes a flavor with the tiny tokenizer's ids, rounded up to a multiple of 8, unless the overrides set it.
    """
    if cfg.kind not in ("vamba", "qwen2_vl"):
        raise UsageError(f"model.kind must be 'vamba' or 'qwen2_vl', got {cfg.kind!r}")
    overrides = OmegaConf.to_container(cfg.vamba) if OmegaConf.is_config(cfg.vamba) else dict(cfg.vamba)
    if cfg.path is None:
        if cfg.flavor is None:
            raise UsageError("model.path and model.flavor are both null: nothing to build")
        sizes = _flavor_sizes(cfg)
        if vocab_size is not None and "vocab_size" not in sizes and get_flavor(cfg.flavor).ids == TINY_IDS:
            sizes["vocab_size"] = tiny_vocab_size(vocab_size)
        base = qwen2vl_config(cfg.flavor, **sizes)
        base._attn_implementation = cfg.attn_implementation
        if cfg.kind == "qwen2_vl":
            return Qwen2VLForConditionalGeneration._from_config(base, dtype=dtype)
        model = VambaForConditionalGeneration._from_config(vamba_config(cfg.flavor, base, **overrides), dtype=dtype)
        if model.config.text_config.cross_attn_init == "self_attn":
            copy_self_attention_to_cross_attention(model)
        return model
    check_checkpoint(cfg.path, "model.path")
    kwargs = dict(dtype=dtype, attn_implementation=cfg.attn_implementation, **LOAD_DEFAULTS)
    if cfg.kind == "qwen2_vl":
        return Qwen2VLForConditionalGeneration.from_pretrained(cfg.path, **kwargs)
    if cfg.from_qwen2vl:
        return from_qwen2vl(cfg.path, **overrides).to(dtype)
    if overrides:  # rebuilt, not patched, so the Vamba fields are validated and normalised again
        saved = VambaConfig.from_pretrained(cfg.path)
        if isinstance(overrides.get("mixer_config"), dict):  # key by key onto the saved mixer, as onto a flavor's
            overrides["mixer_config"] = {**(saved.text_config.mixer_config or {}), **overrides["mixer_config"]}
        kwargs["config"] = VambaConfig.from_qwen2vl_config(saved, **overrides)
    return VambaForConditionalGeneration.from_pretrained(cfg.path, **kwargs)


# -- the trainer ----------
class VambaTrainer(Trainer):
    """`Trainer` + distillation + token/memory/skip logging."""

    def __init__(
        self,
        *args,
        distill_coeff: float = 0.0,
        teacher: TeacherLogits | None = None,
        distill_temperature: float = 1.0,
        merge_size: int = 2,
        context_parallel: ContextParallel | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.context_parallel = context_parallel
        self.distill_coeff = distill_coeff
        self.teacher = teacher
        self.distill_temperature = distill_temperature
        self.merge = merge_size**2
        self._tokens = {"text": 0, "visual": 0}
        self._last_log_time = time.time()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keys = inputs.pop("sample_keys", None)
        self._count_tokens(inputs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self.distill_coeff > 0:
            loss = loss + self.distill_coeff * self._distill_loss(outputs.logits, inputs["labels"], keys)
        return (loss, outputs) if return_outputs else loss

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if self.context_parallel is not None:  # the W ranks of a group train on the same samples
            share_batches(loader, self.context_parallel)
        return loader

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self.context_parallel is not None:  # keep this rank's slice of the pixels, before they reach the device
            inputs = self.context_parallel.shard(inputs, self.accelerator.unwrap_model(self.model).config)
        return super()._prepare_inputs(inputs)

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        text = int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        visual = sum(int(inputs[g].prod(-1).sum()) // self.merge for g in ("video_grid_thw", "image_grid_thw")
                     if g in inputs)
        share = self.context_parallel.size if self.context_parallel is not None else 1  # a group shares its sample
        self._tokens["text"] += text / share
        self._tokens["visual"] += visual / share

    def _distill_loss(self, logits: torch.Tensor, labels: torch.Tensor, keys: list[str] | None) -> torch.Tensor:
        if self.teacher is None or keys is None:
            raise UsageError("distillation needs stored teacher logits (train.distill.logits) and sample keys")
        batch, length, _ = logits.shape
        k = None
        values = indices = None
        for b, key in enumerate(keys):
            v, i = self.teacher.get(key)
            if k is None:
                k = v.shape[-1]
                values = torch.zeros(batch, length, k, device=logits.device)
                indices = torch.zeros(batch, length, k, dtype=torch.long, device=logits.device)
            n = min(v.shape[0], length)
            values[b, :n], indices[b, :n] = v[:n].to(logits.device).float(), i[:n].to(logits.device).long()
        # Position t predicts label t+1: count positions whose next label is trained.
        mask = torch.zeros(batch, length, dtype=torch.bool, device=logits.device)
        mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        return topk_kl(logits, values, indices, mask, self.distill_temperature)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            now = time.time()
            elapsed = max(now - self._last_log_time, 1e-9)
            counts = torch.tensor([self._tokens["text"], self._tokens["visual"]], dtype=torch.float64)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(counts)
            logs["text_tokens_per_s"] = round(counts[0].item() / elapsed, 1)
            logs["visual_tokens_per_s"] = round(counts[1].item() / elapsed, 1)
            logs["peak_mem_gb"] = round(_peak_memory_gb(), 3)
            skipped = getattr(self.train_dataset, "skipped", None)
            if skipped is not None:
                logs["skipped_samples"] = sum(skipped.values())
            self._tokens = {"text": 0, "visual": 0}
            self._last_log_time = now
        super().log(logs, start_time)


def _peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class KillAtStep(TrainerCallback):
    """Test hook: SIGKILL this process right after the checkpoint of step `k` is written (no clean shutdown)."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()
            os.kill(os.getpid(), signal.SIGKILL)


# -- the run ----------
def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def snapshot_config(cfg: Any, out_dir: Path) -> None:
    """Save the resolved config with the git SHA (rank 0 only; atomic)."""
    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    text = f"# git_sha: {_git_sha()}\n" + OmegaConf.to_yaml(cfg, resolve=True)
    tmp = out_dir / ".config.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, out_dir / "config.yaml")


def training_arguments(cfg: TrainConfig, cpu: bool) -> TrainingArguments:
    stage = cfg.train
    if stage.context_parallel < 1 or world_size() % stage.context_parallel:
        raise UsageError(f"train.context_parallel={stage.context_parallel} must divide the world size {world_size()}")
    per_step = stage.per_device_batch_size * world_size() // stage.context_parallel  # samples per step
    if stage.global_batch_size % per_step:
        raise UsageError(
            f"train.global_batch_size={stage.global_batch_size} is not a multiple of per_device_batch_size "
            f"({stage.per_device_batch_size}) x data-parallel degree ({world_size() // stage.context_parallel})"
        )
    bf16 = not cpu and cfg.model.dtype == "bfloat16"
    ds = build_deepspeed_config(cfg.deepspeed, on_cpu=cpu, bf16=bf16)
    if ds is not None and cpu and world_size() > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo", timeout=launch.timeout())
    report_to = [r for r in cfg.report_to if r != "none"]
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_MODE", cfg.wandb_mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.wandb_project)
        os.environ.setdefault("WANDB_DIR", str(Path(cfg.output_dir)))
    return TrainingArguments(
        output_dir=cfg.output_dir,
        run_name=cfg.run_name,
        ddp_timeout=int(launch.timeout().total_seconds()),
        seed=cfg.seed,
        per_device_train_batch_size=stage.per_device_batch_size,
        gradient_accumulation_steps=stage.global_batch_size // per_step,
        learning_rate=stage.learning_rate,
        weight_decay=stage.weight_decay,
        warmup_steps=stage.warmup_ratio,
        lr_scheduler_type=stage.lr_scheduler_type,
        num_train_epochs=stage.num_train_epochs,
        max_steps=stage.max_steps,
        max_grad_norm=stage.max_grad_norm,
        bf16=bf16,
        activation_checkpointing=stage.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=report_to or "none",
        deepspeed=ds,
        use_cpu=cpu,
        ddp_backend="gloo" if cpu and world_size() > 1 else None,
        remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_workers,
        dataloader_persistent_workers=False,
        disable_tqdm=not is_main_process(),
    )


def run(cfg: TrainConfig | Any) -> Path:
    """Train one stage end to end; returns the exported Hugging Face checkpoint directory (`<output_dir>/final`)."""
    return train(cfg)[1]


def train(cfg: TrainConfig | Any) -> tuple[VambaTrainer, Path]:
    """`run`, also returning the trainer (its `model` is the trained model)."""
    out = Path(cfg.output_dir)
    snapshot_config(cfg, out)
    cpu = use_cpu(cfg)
    args = training_arguments(cfg, cpu)  # must exist before the model: it switches on ZeRO-3 construction
    dtype = torch.float32 if cpu or cfg.model.dtype == "float32" else getattr(torch, cfg.model.dtype)
    set_seed(cfg.seed)  # the same initialisation on every rank and every run
    processor = build_processor(cfg.model)
    model = build_model(cfg.model, dtype, vocab_size=len(processor.tokenizer))
    stage = cfg.train
    counts = apply_stage(model, list(stage.trainable), stage.freeze_vision, stage.freeze_vision_blocks)
    if stage.lora.enabled:
        model = _wrap_lora(model, stage.lora)
    logger.info("stage %s: %s", stage.name, counts)

    cp = _context_parallel(cfg, model, args)
    dataset = build_mixture(cfg.data, processor, skip_log=out / "skipped_samples.jsonl")
    pad = processor.tokenizer.pad_token_id
    if cfg.data.packing.enabled:
        if stage.distill.coeff > 0:
            raise UsageError("distillation with packed rows is not supported; set data.packing.enabled=false")
        p = cfg.data.packing
        collator = lambda batch: collate_packed(batch, pad, p.max_text_tokens, p.max_visual_tokens)  # noqa: E731
    else:
        collator = lambda batch: collate_padded(batch, pad)  # noqa: E731

    callbacks = [KillAtStep(cfg.debug_kill_at_step)] if cfg.debug_kill_at_step is not None else []
    teacher = TeacherLogits(stage.distill.logits) if stage.distill.coeff > 0 else None
    trainer = VambaTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=callbacks,
        distill_coeff=stage.distill.coeff,
        teacher=teacher,
        distill_temperature=stage.distill.temperature,
        merge_size=processor.vision.merge_size,
        context_parallel=cp,
    )
    resume = None
    if cfg.resume == "auto":
        resume = get_last_checkpoint(str(out)) if out.is_dir() else None
    elif cfg.resume not in ("none", None):
        resume = cfg.resume
    if resume:
        logger.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)

    final = out / "final"
    if stage.lora.enabled and cfg.deepspeed.enabled and cfg.deepspeed.stage == 3:
        trainer.save_model(str(final))  # adapters only: merging needs the whole weights on one process
    else:
        if stage.lora.enabled:
            trainer.model = trainer.model.merge_and_unload()
        trainer.save_model(str(final))
    if is_main_process():
        processor.save_pretrained(final)
        history = out / "log_history.jsonl"
        history.write_text("".join(json.dumps(h) + "\n" for h in trainer.state.log_history))
    return trainer, final


def _context_parallel(cfg: TrainConfig | Any, model: torch.nn.Module, args: TrainingArguments):
    """The run's `ContextParallel` (None for W = 1), after start-up checks that need no compute."""
    size = cfg.train.context_parallel
    if size == 1:
        return None
    config = model.config
    frames = [n for s in cfg.data.sources if (n := as_spec(s.frames).fixed_count()) is not None]
    check_context_parallel(size, world_size(), getattr(config.get_text_config(), "mixer_type", "none"), frames,
                           config.vision_config.temporal_patch_size)
    if cfg.train.per_device_batch_size != 1:
        raise UsageError("train.context_parallel needs per_device_batch_size=1 (pack samples into one row instead)")
    if cfg.train.distill.coeff > 0:
        raise UsageError("train.context_parallel with distillation is not supported")
    _ = args.device  # initialises torch.distributed under torchrun
    return ContextParallel(size, allow_replicated=True)


def _wrap_lora(model: torch.nn.Module, lora) -> torch.nn.Module:
    try:
        from peft import LoraConfig as PeftLora
        from peft import get_peft_model
    except ImportError as e:
        raise ImportError("train.lora.enabled needs peft: pip install 'vamba[peft]'") from e
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    peft_model = get_peft_model(
        model,
        PeftLora(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)),
    )
    # Keep the stage's own trainable weights (e.g. new Vamba layers) trainable next to the adapters.
    for name, p in peft_model.named_parameters():
        if name.removeprefix("base_model.model.") in trainable:
            p.requires_grad_(True)
    return peft_model


__all__ = ["VambaTrainer", "build_model", "build_processor", "gathered", "run", "train"]
