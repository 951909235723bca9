"""Run under torchrun (2 CPU processes, gloo): convert a Qwen2-VL checkpoint to Vamba inside ZeRO-3 and write the
gathered cross-attention/self-attention weights of every layer (rank 0) so the test can compare them."""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from vamba.modeling.convert import from_qwen2vl
from vamba.modeling.zero import gathered
from vamba.parallel import launch
from vamba.train.config import DeepSpeedConfig, TrainConfig
from vamba.train.trainer import training_arguments


def main(base_dir: str, out_file: str) -> None:
    cfg = TrainConfig(run_name="zero3-convert", output_dir=out_file + ".run", device="cpu", report_to=["none"],
                      deepspeed=DeepSpeedConfig(enabled=True, stage=3))
    cfg.train.global_batch_size = 2
    _args = training_arguments(cfg, cpu=True)  # while it lives, ZeRO-3 construction is on (joins the group too)
    model = from_qwen2vl(base_dir)
    params = dict(model.named_parameters())
    assert all(hasattr(p, "ds_id") for p in params.values()), "parameters are not ZeRO-3 partitioned"
    assert params["model.language_model.layers.0.cross_attn.q_proj.weight"].numel() == 0  # partitioned away
    wanted = {n: p for n, p in params.items() if ".cross_attn." in n or ".self_attn." in n}
    with gathered(wanted.values(), modifier_rank=None):
        full = {n: p.detach().clone() for n, p in wanted.items()}
    if torch.distributed.get_rank() == 0:
        save_file(full, out_file)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except BaseException:
        launch.abort(1)
    launch.finish()
