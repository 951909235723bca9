"""What context parallelism buys at 7B: a per-rank training-step memory account, the frames that fit, the traffic.

One sample of M visual tokens (m = M / W on each of the W ranks of a group) and N text tokens, under ZeRO-3 over G
GPUs with gradient checkpointing of every decoder layer and ViT block; the terms are derived in
docs/context_parallel.md ("What it buys at 7B") and docs/efficiency.md. `scripts/bench_context_parallel.py`
measures the 1/W law at small size on CPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..modeling.errors import ArgParser
from .memory import GB, Profile, get_profile, profile_geometry, sizes

PAPER_TRAIN_GB = {16: 44.4, 64: 46.5, 128: 52.8, 256: 65.8, 512: 76.5}  # DESIGN.md section 5, Vamba, 1 sample/GPU


@dataclass
class TrainAccount:
    """Per-rank memory of one training step (GB) and the bytes each rank sends for context parallelism."""

    frames: int
    cp: int
    gpus: int
    local_tokens: int
    states_gb: float
    checkpoints_gb: float
    recompute_gb: float
    comm_gb: float

    @property
    def total_gb(self) -> float:
        return self.states_gb + self.checkpoints_gb + self.recompute_gb


def train_account(profile: Profile, frames: int, cp: int = 1, gpus: int = 8, train_vision: bool = True,
                  text_tokens: int = 512) -> TrainAccount:
    """Model states (2 bytes per frozen, 16 per trained parameter over G ranks, plus ZeRO-3's two gathered
    layers), checkpoints (every layer's (N + m) d b inputs, every ViT block's 4 m E b) and the worst recompute
    (one layer's or one ViT block's forward with autograd, doubled for its backward), at bf16."""
    s, b, f = sizes(profile, 2), 2, 4
    m, n = -(-profile_geometry(profile, frames).tokens // cp), text_tokens
    total = profile.parameters["vamba"]
    v = profile.vamba.vision_config
    vit = v.depth * (4 * v.embed_dim**2 + 2 * v.embed_dim * int(v.embed_dim * v.mlp_ratio)) + 4 * v.embed_dim**2
    trained = total if train_vision else total - vit
    states = (2 * (total - trained) + 16 * trained) / gpus + 2 * (total - s.V * s.d * 2) / s.L * b
    checkpoints = s.L * (n + m) * s.d * b + (v.depth * 4 * m * s.E * b if train_vision else 0)
    layer_token = b * (2 * s.d + s.D_in + 2 * s.C + 3 * s.D_i + 2 * s.K) + f * 2 * s.D_i
    vit_patch = b * (7 * s.E + 2 * s.I_v) + f * 2 * s.E
    text_layer = n * (b * (6 * s.d + 3 * s.I) + f * s.V / s.L)  # the text path's layer (and logits): small
    recompute = 2 * max(m * layer_token, (4 * m * vit_patch if train_vision else 0)) + text_layer
    return TrainAccount(frames, cp, gpus, m, states / GB, checkpoints / GB, recompute / GB,
                        comm_per_step(profile, cp, n) / GB)


def comm_per_step(profile: Profile, cp: int, text_tokens: int) -> float:
    """Bytes one rank sends per step: per layer the conv halo ((k-1) C b), the SSM state (fp32) and the
    cross-attention partial (N heads (head_dim b + f)), to W - 1 ranks, three times (forward, recompute, backward)."""
    if cp == 1:
        return 0.0
    s, t = sizes(profile, 2), profile.vamba.text_config
    mixer = ((t.mixer_config or {}).get("d_conv", 4) - 1) * s.C * 2 + (s.heads * s.headdim * s.state + s.heads) * 4
    attention = text_tokens * t.num_attention_heads * (s.head_dim * 2 + 4)
    return 3 * s.L * ((mixer if s.has_mixer else 0) + attention) * (cp - 1)


def max_frames(profile: Profile, cp: int, gpus: int = 8, budget_gb: float = 80.0, train_vision: bool = True,
               step: int = 64) -> int:
    """The largest multiple of `step` frames whose per-rank account fits `budget_gb`."""
    frames = 0
    while frames <= 1_000_000 and train_account(profile, frames + step, cp, gpus, train_vision).total_gb <= budget_gb:
        frames += step
    return frames


def account_table(gpus: int = 8, budget_gb: float = 80.0) -> str:
    """Markdown: the per-rank account at 7B for W = 1, 2, 4, 8 and the frames that fit on `gpus` x `budget_gb`."""
    p = get_profile("7b")
    lines = ["| W | ViT | frames that fit | GB at 512 frames (states + checkpoints + recompute) | CP traffic/step |",
             "|---|---|---|---|---|"]
    for train_vision in (True, False):
        for cp in (1, 2, 4, 8):
            a = train_account(p, 512, cp, gpus, train_vision)
            lines.append(f"| {cp} | {'trained' if train_vision else 'frozen'} | "
                         f"{max_frames(p, cp, gpus, budget_gb, train_vision):,} | {a.total_gb:.1f} "
                         f"({a.states_gb:.1f} + {a.checkpoints_gb:.1f} + {a.recompute_gb:.1f}) | "
                         f"{a.comm_gb * 1e3:.0f} MB |")
    total = p.parameters["vamba"]
    paper = ", ".join(f"{k}: {v}" for k, v in PAPER_TRAIN_GB.items())
    ours = ", ".join(f"{k}: {train_account(p, k, 1, gpus).total_gb:.1f}" for k in PAPER_TRAIN_GB)
    return "\n".join(lines + [
        "", "For scale, ZeRO-3's own traffic per step and rank is about 3 x 2 bytes x "
        f"{total / 1e9:.1f}B parameters x (G-1)/G = {3 * 2 * total * (gpus - 1) / gpus / GB:.0f} GB "
        "(weights gathered for forward, recompute and backward); gradients add 2 bytes x parameters.",
        "", f"W = 1 against the paper's measured GB (frames: GB): paper {paper}; account {ours}."])


def main(argv: list[str] | None = None) -> int:
    """`vamba bench --context-parallel`: print the table, write context_parallel_account.json under --out."""
    parser = ArgParser(prog="vamba bench --context-parallel",
                                     description="Context parallel at 7B: per-rank training memory, frames, traffic.")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--budget-gb", type=float, default=80.0)
    parser.add_argument("--out", default="outputs/bench", help="writes context_parallel_account.json here")
    args = parser.parse_args(argv)
    print(f"## Context parallel at 7B, {args.gpus} x {args.budget_gb:.0f} GB, ZeRO-3, gradient checkpointing\n")
    print(account_table(args.gpus, args.budget_gb))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "context_parallel_account.json").write_text(json.dumps(
        [asdict(train_account(get_profile("7b"), 512, w, args.gpus)) for w in (1, 2, 4, 8)], indent=2))
    return 0
