"""Distillation from a Qwen2-VL teacher over stored top-k logits (DESIGN.md section 3, "Optional distillation").

The teacher sees the video inline (its own layout), so its sequence has M extra visual-token positions; removing
them leaves exactly the student's text positions (the student has only the `<|vision_start|><|vision_end|>`
markers there). Per sample we store the teacher's top-k logit values and vocabulary indices at every text position
in safetensors shards (never pickles), with a JSON index from sample key to shard. Training adds
`coeff * KL(p_teacher || q_student)` where both distributions are renormalised over the stored top-k indices:
the loss is exactly zero when the student's logits equal the teacher's on those indices (up to a constant shift),
and `coeff = 0` skips loading and computing anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file


def topk_kl(
    student_logits: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_indices: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over masked positions of KL(teacher || student) on the teacher's top-k support.

    Args:
        student_logits: (B, N, V). teacher_values: (B, N, K) logits. teacher_indices: (B, N, K) vocabulary ids.
        mask: (B, N) bool, positions that count (those predicting a trained label).

    Returns:
        scalar, times temperature^2 so gradients keep their scale across temperatures (Hinton et al.).
    """
    t = temperature
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # bf16 logits: compute the KL in fp32
    student = student_logits.gather(-1, teacher_indices.long()).to(dtype) / t
    log_q = F.log_softmax(student, dim=-1)
    log_p = F.log_softmax(teacher_values.to(dtype) / t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1.0) * t * t


class TeacherLogitsWriter:
    """Append teacher top-k logits to a directory: safetensors shards + `index.json`, both written atomically."""

    def __init__(self, out_dir: str | Path, shard_size: int = 256):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.dir / "index.json"
        self.index: dict[str, str] = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        self.shard_size = shard_size
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_keys: list[str] = []

    def __contains__(self, key: str) -> bool:
        return key in self.index or key in self.pending_keys

    def add(self, key: str, values: torch.Tensor, indices: torch.Tensor) -> None:
        """values, indices: (N_text, K) for one sample."""
        self.pending[f"{key}::values"] = values.to(torch.float16).contiguous()
        self.pending[f"{key}::indices"] = indices.to(torch.int32).contiguous()
        self.pending_keys.append(key)
        if len(self.pending_keys) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending_keys:
            return
        name = f"shard-{len(set(self.index.values())):05d}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file(self.pending, str(tmp))
        os.replace(tmp, self.dir / name)
        self.index.update({k: name for k in self.pending_keys})
        tmp_index = self.dir / ".index.json.tmp"
        tmp_index.write_text(json.dumps(self.index))
        os.replace(tmp_index, self.index_path)
        self.pending, self.pending_keys = {}, []


class TeacherLogits:
    """Read stored teacher logits by sample key."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        index = self.dir / "index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{self.dir}: no index.json; run `vamba distill-teacher` first")
        self.index: dict[str, str] = json.loads(index.read_text())

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (N, K) float16, indices (N, K) int32) of one sample."""
        if key not in self.index:
            raise KeyError(f"{self.dir}: no teacher logits for sample {key!r}")
        with safe_open(str(self.dir / self.index[key]), framework="pt") as f:
            return f.get_tensor(f"{key}::values"), f.get_tensor(f"{key}::indices")


def text_positions(input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor | None) -> torch.Tensor:
    """(N,) bool: positions of a teacher (Qwen2-VL layout) sequence that are text, i.e. the student's positions."""
    if mm_token_type_ids is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    return mm_token_type_ids == 0
