"""Training: ZeRO-3 under torchrun (2 CPU processes, gloo), resume after SIGKILL, export, distillation, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_torchrun
from safetensors.torch import load_file

from vamba import VambaForConditionalGeneration, from_qwen2vl
from vamba.modeling.tiny import tiny_qwen2vl_config
from vamba.train.distill import TeacherLogits, TeacherLogitsWriter, topk_kl

TINY_BASE = dict(vision={"patch_size": 14})


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "log_history.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _overrides(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "experiment=synthetic_cpu",
        f"output_dir={out}",
        "run_name=test",
        "dataloader_workers=0",
        f"data.sources.0.annotation={data}/train.json",
        f"data.sources.0.root={data}",
        f"data.sources.1.annotation={data}/captions.jsonl",
        f"data.sources.1.root={data}",
        "data.sources.0.frames.count=8",
        "train.per_device_batch_size=2",
        "train.global_batch_size=4",
        *(() if any(e.startswith("eval_after=") for e in extra) else ("eval_after=null",)),
        *extra,
    ]


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny Vamba initialisation (converted from a random tiny Qwen2-VL), shared by the ZeRO-3 runs."""
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("init")
    qwen = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(**TINY_BASE))
    from_qwen2vl(qwen, mixer_config={"d_state": 16, "headdim": 16, "chunk_size": 64}).save_pretrained(out)
    from vamba.data.processor import VambaProcessor

    VambaProcessor.tiny(patch_size=14).save_pretrained(out)
    return out


# 1. ZeRO-3, two processes: loss goes down, frozen weights bit-identical -----------------------------------------
@pytest.mark.multiprocess
def test_zero3_stage1_trains_and_keeps_frozen_weights(synthetic_data, init_checkpoint, tmp_path):
    out = tmp_path / "run"
    run_torchrun(
        [
            "-m",
            "vamba",
            "train",
            *_overrides(
                synthetic_data,
                out,
                f"model.path={init_checkpoint}",
                "model.flavor=null",
                "model.processor=null",
                "deepspeed=zero3",
                "train.max_steps=16",
                "train.learning_rate=3e-3",
                "save_steps=100",
                "data.sources.1.weight=0",  # video QA only: a fixed small dataset (8 videos x 2 questions)
            ),
        ]
    )
    losses = _losses(out)
    first, last = [losses[s] for s in (1, 2, 3, 4)], [losses[s] for s in (13, 14, 15, 16)]
    assert sum(last) / 4 < sum(first) / 4 - 0.3, losses
    before = VambaForConditionalGeneration.from_pretrained(init_checkpoint).state_dict()
    after = VambaForConditionalGeneration.from_pretrained(out / "final").state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = (".cross_attn.", ".vision_mixer.", ".alpha")
    assert all(any(t in n for t in trainable) for n in changed), sorted(changed)[:5]  # frozen: bit-identical
    assert any(".cross_attn." in n for n in changed) and any(".vision_mixer." in n for n in changed)
    config = (out / "config.yaml").read_text()
    assert config.startswith("# git_sha: ") and "deepspeed:" in config


# 2. Kill after step k, resume: same losses as an uninterrupted run ----------------------------------------------
@pytest.mark.multiprocess
def test_resume_after_sigkill_continues_the_same_loss_curve(synthetic_data, init_checkpoint, tmp_path):
    common = [
        f"model.path={init_checkpoint}",
        "model.flavor=null",
        "model.processor=null",
        "deepspeed=zero3",
        "train.max_steps=6",
        "save_steps=3",
        "train.learning_rate=3e-3",
    ]
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_torchrun(["-m", "vamba", "train", *_overrides(synthetic_data, full, *common)])
    proc = run_torchrun(
        ["-m", "vamba", "train", *_overrides(synthetic_data, killed, *common, "debug_kill_at_step=3")], check=False
    )
    assert proc.returncode != 0 and not (killed / "final").exists()
    assert (killed / "checkpoint-3").is_dir()
    run_torchrun(["-m", "vamba", "train", *_overrides(synthetic_data, killed, *common)])  # resume=auto
    a, b = _losses(full), _losses(killed)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    # Same data order, RNG, optimizer and scheduler state: deterministic CPU kernels give the same numbers; the
    # logged losses are rounded by the Trainer's logging to 4 significant digits, hence the tolerance.
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-3), (step, a, b)


# 3. Export loads with from_pretrained and gives the trained model's logits (single process, wandb offline) -------
def test_export_matches_trained_model_and_wandb_offline(synthetic_data, tmp_path, monkeypatch):
    from vamba.cli import run_training
    from vamba.config import compose

    monkeypatch.setenv("WANDB_MODE", "offline")  # scripts/test.sh disables wandb for every other test
    monkeypatch.delenv("WANDB_DIR", raising=False)
    out = tmp_path / "run"
    cfg = compose(
        "train",
        _overrides(
            synthetic_data,
            out,
            "train.max_steps=2",
            "report_to=[wandb]",
            "wandb_mode=offline",
            "train=sft",
            "train.learning_rate=1e-3",
            f"eval_after={{benchmark:synthetic,data_dir:'{synthetic_data}',frames.count:8,max_new_tokens:2}}",
        ),
    )
    trainer, final = run_training(cfg)  # what `vamba train` runs: train, then score the export (eval_after)
    loaded = VambaForConditionalGeneration.from_pretrained(final).eval()
    model = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    batch = {k: v for k, v in batch.items() if k not in ("labels", "sample_keys")}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    assert (final / "tokenizer_config.json").is_file() and (final / "preprocessor_config.json").is_file()
    assert list((out / "wandb").glob("offline-run-*")), "wandb offline run directory missing"
    from vamba.train.sweep import markdown_table, sweep_rows

    rows = sweep_rows(tmp_path)  # eval_after scored the export; the sweep table picks it up
    assert len(rows) == 1 and rows[0]["score"] is not None and rows[0]["final_loss"] is not None
    assert "| test | mamba2 | self_attn |" in markdown_table(rows)


# 4. Cross-attention initialised under ZeRO-3 equals the non-ZeRO initialisation ----------------------------------
@pytest.mark.multiprocess
def test_cross_attention_copy_under_zero3_matches_plain(tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    base = tmp_path / "qwen"
    Qwen2VLForConditionalGeneration(tiny_qwen2vl_config()).save_pretrained(base)
    out = tmp_path / "gathered.safetensors"
    run_torchrun([str(REPO / "tests" / "zero3_convert_worker.py"), str(base), str(out)])
    zero3 = load_file(out)
    plain = dict(from_qwen2vl(base).named_parameters())
    assert len(zero3) == 2 * 7 * 2  # 2 layers x 7 tensors x (self, cross)
    for name, value in zero3.items():
        assert torch.equal(value, plain[name].detach()), name
        if ".cross_attn." in name:
            assert torch.equal(value, zero3[name.replace(".cross_attn.", ".self_attn.")])


# 5. Distillation loss -----------------------------------------------------------------------------------------------
def test_topk_kl_is_zero_when_student_matches_teacher_and_has_correct_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 30, dtype=torch.float64)
    values, indices = torch.topk(logits + 3.0, k=4, dim=-1)  # a constant shift does not change the distribution
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert topk_kl(logits, values, indices, mask).abs() < 1e-12
    student = torch.randn(2, 5, 30, dtype=torch.float64, requires_grad=True)
    assert topk_kl(student, values, indices, mask) > 0
    torch.autograd.gradcheck(lambda s: topk_kl(s, values, indices, mask, temperature=2.0), (student,))
    mask[:, 2:] = False
    partial = topk_kl(student, values, indices, mask)
    torch.testing.assert_close(partial, topk_kl(student[:, :2], values[:, :2], indices[:, :2], mask[:, :2]))


def test_teacher_logits_store_roundtrip(tmp_path):
    writer = TeacherLogitsWriter(tmp_path, shard_size=2)
    for i in range(3):
        writer.add(f"s{i}", torch.full((4, 3), float(i)), torch.arange(12).view(4, 3))
    writer.flush()
    store = TeacherLogits(tmp_path)
    values, indices = store.get("s2")
    assert values.dtype == torch.float16 and values[0, 0] == 2 and indices[3, 2] == 11
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    assert not list(tmp_path.glob(".*tmp"))


# 6. Every shipped config composes and validates ---------------------------------------------------------------------
def _all_train_overrides() -> list[list[str]]:
    configs = REPO / "configs"
    out = [[]]
    out += [[f"experiment={p.stem}"] for p in sorted((configs / "experiment").glob("*.yaml"))]
    out += [
        [f"+sweep={p.stem}", "+ablation=row_a"] if "ablation" in p.stem else [f"+sweep={p.stem}"]
        for p in sorted((configs / "sweep").glob("*.yaml"))
    ]
    for group in ("model", "train", "deepspeed", "data"):
        out += [[f"{group}={p.stem}"] for p in sorted((configs / group).glob("*.yaml"))]
    out += [["+ablation=" + p.stem] for p in sorted((configs / "ablation").glob("*.yaml"))]
    return out


def test_training_does_not_load_the_evaluation_stack():
    """`vamba train` composes and trains without importing `vamba.evals` (eval_after runs from the CLI layer)."""
    import subprocess
    import sys

    code = ("import sys; from vamba.config import compose; import vamba.cli, vamba.train.trainer; "
            "cfg = compose('train', ['experiment=synthetic_cpu']); assert cfg.eval_after; "
            "print(sorted(m for m in sys.modules if m.startswith('vamba.evals')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("overrides", _all_train_overrides(), ids=lambda o: ",".join(o) or "defaults")
def test_every_config_composes_and_validates(overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vamba.config import CONFIG_DIR
    from vamba.modeling.configuration_vamba import VambaTextConfig
    from vamba.train.config import TrainConfig

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert OmegaConf.get_type(cfg) is TrainConfig
    assert cfg.train.global_batch_size % cfg.train.per_device_batch_size == 0
    VambaTextConfig(hidden_size=64, num_attention_heads=4, **OmegaConf.to_container(cfg.model.vamba))  # validates


def test_distill_teacher_store_aligns_with_student_and_adds_kl(synthetic_data, tmp_path):
    from hydra import compose, initialize_config_dir
    from transformers import Qwen2VLForConditionalGeneration

    from vamba.cli import main
    from vamba.config import CONFIG_DIR
    from vamba.data.mixture import build_mixture
    from vamba.data.processor import VambaProcessor
    from vamba.train.trainer import train

    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(**TINY_BASE)).save_pretrained(teacher)
    data = _overrides(synthetic_data, tmp_path / "unused", "data.sources.1.weight=0")[3:]
    data = [o for o in data if o.startswith("data.")] + ["experiment=synthetic_cpu"]
    store = tmp_path / "logits"
    assert (
        main(
            [
                "distill-teacher",
                "--teacher",
                str(teacher),
                "--out",
                str(store),
                "--processor",
                "tiny",
                "--top-k",
                "8",
                *data,
            ]
        )
        == 0
    )
    logits = TeacherLogits(store)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=data)
    student_data = build_mixture(cfg.data, VambaProcessor.tiny(patch_size=14))
    assert len(logits.index) == len(student_data) == 16
    sample = student_data[0]
    values, indices = logits.get(sample["sample_key"])
    assert values.shape == (sample["input_ids"].shape[1], 8)  # teacher positions = student text positions

    first_losses = {}
    for coeff in (0.0, 1.0):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=_overrides(
                    synthetic_data,
                    tmp_path / f"student{coeff}",
                    "data.sources.1.weight=0",
                    "train.max_steps=1",
                    f"train.distill.coeff={coeff}",
                    f"train.distill.logits={store}",
                ),
            )
        trainer, _ = train(cfg)
        first_losses[coeff] = _losses(tmp_path / f"student{coeff}")[1]
    assert first_losses[1.0] > first_losses[0.0] + 1e-3  # same LM loss, plus a positive KL term
