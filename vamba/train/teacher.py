"""`vamba distill-teacher`: run a Qwen2-VL teacher over a training mixture and store its top-k logits per sample.

The teacher reads each sample in its own layout (video tokens inline); its logits at the inline visual positions
are dropped, which leaves exactly the student's text positions (see `distill.py`). Keys are the dataset's sample
keys, so the same `data=` config gives the student the matching logits. Resumable: samples already in the store
are skipped; shards are written atomically.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from tqdm import tqdm

from ..modeling.errors import ArgParser, check_checkpoint
from .distill import TeacherLogitsWriter, text_positions


def build_parser() -> ArgParser:
    parser = ArgParser(prog="vamba distill-teacher", description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="Qwen2-VL checkpoint directory (the teacher)")
    parser.add_argument("--out", required=True, help="directory for the safetensors shards + index.json")
    parser.add_argument("--processor", default=None, help="processor directory (default: the teacher's); 'tiny'")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of configs/train.yaml, e.g. data=sft_paper")
    return parser


def write_teacher_logits(cfg: Any, args: argparse.Namespace) -> int:
    """Store the teacher's top-k logits for every sample of `cfg.data` (a composed train config; `args` from
    `build_parser`)."""
    from transformers import Qwen2VLForConditionalGeneration

    from ..data.mixture import build_mixture
    from ..data.processor import VambaProcessor
    from ..modeling.compat import LOAD_DEFAULTS

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    check_checkpoint(args.teacher, "--teacher")
    teacher = Qwen2VLForConditionalGeneration.from_pretrained(args.teacher, dtype=dtype, **LOAD_DEFAULTS)
    teacher = teacher.to(device).eval()
    source = args.processor or args.teacher
    if source == "tiny":
        processor = VambaProcessor.tiny(patch_size=teacher.config.vision_config.patch_size, layout="qwen2_vl")
    else:
        processor = VambaProcessor.from_pretrained(source, layout="qwen2_vl")
    dataset = build_mixture(cfg.data, processor)
    writer = TeacherLogitsWriter(args.out)
    n = len(dataset) if args.max_samples is None else min(len(dataset), args.max_samples)
    for i in tqdm(range(n), desc="teacher logits", unit="sample"):
        sample = dataset[i]
        key = sample.pop("sample_key")
        if key in writer:
            continue
        inputs = {k: v.to(device) for k, v in sample.items() if k not in ("labels", "visual_tokens")}
        with torch.no_grad():
            logits = teacher(**inputs, use_cache=False).logits[0]
        keep = text_positions(
            inputs["input_ids"][0], inputs.get("mm_token_type_ids", None)[0] if "mm_token_type_ids" in inputs else None
        )
        values, indices = torch.topk(logits[keep].float(), k=min(args.top_k, logits.shape[-1]), dim=-1)
        writer.add(key, values.cpu(), indices.cpu())
    writer.flush()
    print(f"teacher top-{args.top_k} logits of {len(writer.index)} samples in {args.out}")
    return 0
