"""Can a tiny model learn this synthetic task? A fast probe behind the quickstart's task design.

Trains a stock transformers tiny Qwen2-VL (2 layers, width 128, 2-block ViT; the quickstart's base) with a plain
AdamW loop on data from `vamba.data.synthetic`, all samples decoded once into memory, and prints held-out accuracy
(argmax over the four letter logits after the LVBench prompt) every few steps. About 30 steps/s on 2 CPU cores, so
a setting is judged in a minute instead of a whole quickstart. The numbers in docs/synthetic_data.md
("Learnability log") were measured with it, e.g.:

    python scripts/probe_synthetic.py --frames 8 --steps 600             # word merges, ~93 tokens: 100% at 400
    python scripts/probe_synthetic.py --frames 8 --steps 600 --merges 0  # bytes, ~310 tokens: peak 79%, 2.5x slower
    python scripts/probe_synthetic.py --frames 16 --schedule 4,8,16 --train-videos 1200 --eval-videos 64 --steps 800
    python scripts/probe_synthetic.py --frames 8 --option-order random --steps 1000   # stays at chance
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2VLForConditionalGeneration

from vamba.data.dataset import SampleBuilder
from vamba.data.frames import FrameSpec
from vamba.data.packing import collate_padded
from vamba.data.processor import VambaProcessor
from vamba.data.synthetic import SyntheticConfig, generate
from vamba.data.video import load_video
from vamba.evals.benchmarks.synthetic import BENCHMARK
from vamba.modeling.flavors import qwen2vl_config
from vamba.modeling.tiny import PAD, tiny_vocab_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="outputs/probe/data", help="generated here (reused if the config is equal)")
    p.add_argument("--frames", type=int, default=8, help="frames per video, and frames sampled")
    p.add_argument("--schedule", default="", help="train curriculum, e.g. 4,8,16 (SyntheticConfig)")
    p.add_argument("--size", type=int, default=28, help="frame side in pixels")
    p.add_argument("--train-videos", type=int, default=200)
    p.add_argument("--eval-videos", type=int, default=24)
    p.add_argument("--tasks", default="needle_color")
    p.add_argument("--colors", default="red,green,blue,yellow")
    p.add_argument("--option-order", default="fixed", choices=("fixed", "random"))
    p.add_argument("--max-needles", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="other SyntheticConfig fields")
    p.add_argument("--merges", type=int, default=256, help="tiny tokenizer BPE merges (0 = bytes only)")
    p.add_argument("--no-system", action="store_true", help="drop the system prompt")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    random.seed(a.seed)

    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    config = SyntheticConfig(
        train_videos=a.train_videos, eval_videos=a.eval_videos, questions_per_video=1, num_frames=a.frames,
        train_frames_schedule=tuple(int(x) for x in a.schedule.split(",") if x), width=a.size, height=a.size,
        tasks=tuple(a.tasks.split(",")), colors=tuple(a.colors.split(",")), option_order=a.option_order,
        max_needles=a.max_needles, num_images=0, **extra)
    data = Path(a.data)
    print(generate(data, config).summary())

    proc = VambaProcessor.tiny(layout="qwen2_vl", merges=a.merges)
    if a.no_system:
        proc.system_prompt = None
    builder = SampleBuilder(proc, "llava", root=data, frames=FrameSpec(count=a.frames))
    train = [proc(builder.messages(r)) for r in json.loads((data / "train.json").read_text())]
    evals = []
    for q in BENCHMARK.load(data):
        spec = FrameSpec(count=a.frames, min_pixels=proc.vision.min_pixels, max_pixels=proc.vision.max_pixels)
        frames = load_video(data / q.video, spec).frames
        msgs = [{"role": "user", "content": [{"type": "video", "video": frames},
                                             {"type": "text", "text": BENCHMARK.prompt(q)}]}]
        evals.append((proc(msgs, add_generation_prompt=True), "ABCD".index(q.answer)))
    print(f"{len(train)} train samples ({train[0]['input_ids'].shape[1]} tokens each), {len(evals)} eval questions")

    letters = [proc.tokenizer.convert_tokens_to_ids(c) for c in "ABCD"]
    model = Qwen2VLForConditionalGeneration(qwen2vl_config("quickstart",
                                                           vocab_size=tiny_vocab_size(len(proc.tokenizer))))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / a.steps))

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            ok = sum(int(model(**{k: v for k, v in s.items() if k != "labels"}).logits[0, -1, letters].argmax()) == y
                     for s, y in evals)
        model.train()
        return ok / len(evals)

    started, losses = time.perf_counter(), []
    for step in range(1, a.steps + 1):
        batch = collate_padded(random.sample(train, a.batch), PAD)
        batch.pop("visual_tokens", None)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step % a.eval_every == 0 or step == a.steps:
            print(f"step {step} loss {np.mean(losses[-a.eval_every:]):.3f} eval accuracy {accuracy():.3f} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
