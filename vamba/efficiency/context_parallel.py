"""What context parallelism buys: a training-step memory account per rank, the frames that fit, and traffic.

The account (derivation in docs/efficiency.md, "Context parallel") follows what one training step holds on one
rank of a context-parallel group of W ranks, for one sample of M visual tokens (m = M / W of them local) and N
text tokens, under DeepSpeed ZeRO-3 over G GPUs and gradient checkpointing of every decoder layer and ViT block:

- model states, partitioned over G ranks: 2 bytes per frozen parameter (bf16 weights), 16 per trained one
  (bf16 weights and gradients, fp32 master copy and two Adam moments), plus ZeRO-3's gathered working set
  (two layers' bf16 weights: the one running and the one prefetched);
- checkpoints: every decoder layer's inputs, text and this rank's video slice ((N + m) d b per layer), and, when
  the vision tower trains, every ViT block's input over the local patches (4 m E b per block);
- the worst recompute: one layer's forward with autograd plus its backward, per local video token
  b(2d + D_in + 2C + 3D_i + 2K) + f 2D_i saved and as much again in gradients (the Mamba-2 mixer and the
  cross-attention keys/values), or one ViT block's (per patch b(7E + 2I_v) + f 2E, doubled likewise).

Everything video-sized is divided by W; the text is replicated. `scripts/bench_context_parallel.py` measures the
real thing at small size on CPU (peak RSS increase of one forward+backward per rank), to check the 1/W law.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .configs import Profile, get_profile_config
from .memory import GB, _parameter_count, _sizes, profile_geometry

PAPER_TRAIN_GB = {16: 44.4, 64: 46.5, 128: 52.8, 256: 65.8, 512: 76.5}  # DESIGN.md section 5, Vamba, 1 sample/GPU


@dataclass
class TrainAccount:
    """Per-rank memory of one training step (GB, 10^9 bytes) and the context-parallel traffic per step."""

    frames: int
    cp: int
    gpus: int
    local_tokens: int
    states_gb: float
    checkpoints_gb: float
    recompute_gb: float
    comm_gb: float  # bytes each rank sends for the context-parallel exchanges in one step (fwd, recompute, bwd)

    @property
    def total_gb(self) -> float:
        return self.states_gb + self.checkpoints_gb + self.recompute_gb


def _trained_params(profile: Profile, train_vision: bool) -> tuple[int, int]:
    """(all parameters, trained ones) of the profile's Vamba, stage 2 (everything, or all but the ViT)."""
    total = _parameter_count(profile.name, "vamba")
    if train_vision:
        return total, total
    v = profile.vamba.vision_config
    vit = v.depth * (4 * v.embed_dim**2 + 2 * v.embed_dim * int(v.embed_dim * v.mlp_ratio)) + 4 * v.embed_dim**2
    return total, total - vit


def train_account(profile: Profile, frames: int, cp: int = 1, gpus: int = 8, train_vision: bool = True,
                  text_tokens: int = 512) -> TrainAccount:
    """The per-rank training-step account (see module docstring) at bf16 for `frames` 640x360 frames."""
    s = _sizes(profile, 2)
    b, f = 2, 4
    geom = profile_geometry(profile, frames)
    m = -(-geom.tokens // cp)
    n = text_tokens
    total, trained = _trained_params(profile, train_vision)
    layer_params = (total - s.V * s.d * 2) / s.L  # roughly: a decoder layer's share
    states = (2 * (total - trained) + 16 * trained) / gpus + 2 * layer_params * b
    v = profile.vamba.vision_config
    checkpoints = s.L * (n + m) * s.d * b + (v.depth * 4 * m * s.E * b if train_vision else 0)
    layer_token = b * (2 * s.d + s.D_in + 2 * s.C + 3 * s.D_i + 2 * s.K) + f * 2 * s.D_i
    vit_patch = b * (7 * s.E + 2 * s.I_v) + f * 2 * s.E
    text_layer = n * (b * (6 * s.d + 3 * s.I) + f * s.V / s.L)  # the text path's layer (and logits) — small
    recompute = 2 * max(m * layer_token, (4 * m * vit_patch if train_vision else 0)) + text_layer
    return TrainAccount(frames, cp, gpus, m, states / GB, checkpoints / GB, recompute / GB,
                        comm_per_step(profile, cp, n) / GB)


def comm_per_step(profile: Profile, cp: int, text_tokens: int) -> float:
    """Bytes one rank sends for context parallelism in one training step: per layer, the conv halo ((k-1) C b)
    and the SSM state (heads x headdim x d_state + heads, fp32) of the mixer, and the cross-attention partial
    (N x heads x (head_dim b + f)); each all-gather sends its piece to W - 1 ranks, and runs three times (forward,
    recompute, and its backward's all-to-all of the same size)."""
    if cp == 1:
        return 0.0
    s = _sizes(profile, 2)
    t = profile.vamba.text_config
    k = (t.mixer_config or {}).get("d_conv", 4) - 1
    mixer = k * s.C * 2 + (s.m_heads * s.m_headdim * s.m_state + s.m_heads) * 4
    attention = text_tokens * t.num_attention_heads * (s.head_dim * 2 + 4)
    per_layer = (mixer if s.has_mixer else 0) + attention
    return 3 * s.L * per_layer * (cp - 1)


def max_frames(profile: Profile, cp: int, gpus: int = 8, budget_gb: float = 80.0, train_vision: bool = True,
               step: int = 64) -> int:
    """The largest multiple of `step` frames whose per-rank account fits `budget_gb`."""
    frames = 0
    while train_account(profile, frames + step, cp, gpus, train_vision).total_gb <= budget_gb:
        frames += step
        if frames > 1_000_000:
            break
    return frames


def account_table(gpus: int = 8, budget_gb: float = 80.0) -> str:
    """Markdown: per-rank account at 7B for W = 1, 2, 4, 8 and the frames that fit on `gpus` x `budget_gb`."""
    p = get_profile_config("7b")
    lines = ["| W | ViT | frames that fit | GB at 512 frames (states + checkpoints + recompute) | CP traffic/step |",
             "|---|---|---|---|---|"]
    for train_vision in (True, False):
        for cp in (1, 2, 4, 8):
            a = train_account(p, 512, cp, gpus, train_vision)
            lines.append(f"| {cp} | {'trained' if train_vision else 'frozen'} | "
                         f"{max_frames(p, cp, gpus, budget_gb, train_vision):,} | {a.total_gb:.1f} "
                         f"({a.states_gb:.1f} + {a.checkpoints_gb:.1f} + {a.recompute_gb:.1f}) | "
                         f"{a.comm_gb * 1e3:.0f} MB |")
    total = _parameter_count(p.name, "vamba")
    lines += ["", "For scale, ZeRO-3's own traffic per step and rank is about 3 x 2 bytes x "
              f"{total / 1e9:.1f}B parameters x (G-1)/G = {3 * 2 * total * (gpus - 1) / gpus / GB:.0f} GB "
              "(weights gathered for forward, recompute and backward); gradients add 2 bytes x parameters."]
    paper = ", ".join(f"{k}: {v}" for k, v in PAPER_TRAIN_GB.items())
    ours = ", ".join(f"{k}: {train_account(p, k, 1, gpus).total_gb:.1f}" for k in PAPER_TRAIN_GB)
    lines += ["", f"W = 1 against the paper's measured GB (frames: GB): paper {paper}; account {ours}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vamba bench --context-parallel",
                                     description="Context parallel at 7B: per-rank training memory, frames, traffic.")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--budget-gb", type=float, default=80.0)
    parser.add_argument("--out", default="outputs/bench", help="writes context_parallel_account.json here")
    args = parser.parse_args(argv)
    print(f"## Context parallel at 7B, {args.gpus} x {args.budget_gb:.0f} GB, ZeRO-3, gradient checkpointing\n")
    print(account_table(args.gpus, args.budget_gb))
    profile = get_profile_config("7b")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "context_parallel_account.json").write_text(json.dumps(
        [asdict(train_account(profile, 512, w, args.gpus)) for w in (1, 2, 4, 8)], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
