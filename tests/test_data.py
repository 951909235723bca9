"""Training data: annotation formats, bad-sample skipping, mixtures, packing and the configs that describe them."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from vamba.data.annotations import AnnotationError, read_annotations
from vamba.data.dataset import SampleBuilder, VambaDataset, llava_to_messages
from vamba.data.mixture import MixtureConfig, SourceConfig, build_mixture
from vamba.data.packing import collate_packed, collate_padded, pack_indices
from vamba.data.processor import IGNORE_INDEX, VambaProcessor
from vamba.modeling.tiny import PAD, VISION_START


@pytest.fixture(scope="module")
def proc() -> VambaProcessor:
    return VambaProcessor.tiny(patch_size=14)


def _png(path, colour=(200, 30, 30), size=56):
    Image.fromarray(np.full((size, size, 3), colour, dtype=np.uint8)).save(path)


@pytest.fixture()
def caption_dir(tmp_path):
    (tmp_path / "images").mkdir()
    for i, c in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        _png(tmp_path / "images" / f"{i}.png", c)
    lines = [
        {"image": f"images/{i}.png", "caption": f"a {name} square"} for i, name in enumerate(["red", "green", "blue"])
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return tmp_path


# Annotation formats ---------------------------------------------------------------------------------------------
def test_llava_json_and_jsonl(tmp_path):
    rec = {
        "id": "1",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}],
    }
    (tmp_path / "a.json").write_text(json.dumps([rec, rec]))
    (tmp_path / "a.jsonl").write_text(json.dumps(rec) + "\n\n" + json.dumps(rec) + "\n")
    assert len(read_annotations("llava", tmp_path / "a.json")) == 2
    assert len(read_annotations("llava", tmp_path / "a.jsonl")) == 2


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"id": 1, "conversations": []}\n{"id": 2, "conversations": [\n', r"a\.jsonl:2: invalid JSON"),
        ('{"id": 1, "conversations": [{"from": "bot", "value": "x"}]}\n', r"a\.jsonl:1: unknown speaker"),
        ('{"id": 1}\n', r"a\.jsonl:1: field 'conversations'"),
        ("[1, 2]", r"record 0 is int"),
    ],
)
def test_malformed_llava_fails_fast_with_file_and_line(tmp_path, content, match):
    (tmp_path / "a.jsonl").write_text(content)
    with pytest.raises(AnnotationError, match=match):
        read_annotations("llava", tmp_path / "a.jsonl")


def test_caption_parquet_and_webdataset(tmp_path, caption_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": ["images/0.png"], "caption": ["a red square"]}), tmp_path / "c.parquet")
    recs = read_annotations("caption", tmp_path / "c.parquet")
    assert recs[0]["caption"] == "a red square" and "c.parquet row 0" in recs[0]["_where"]
    pq.write_table(pa.table({"img": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(AnnotationError, match="lacks column"):
        read_annotations("caption", tmp_path / "bad.parquet")

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, text in (("000001", "a red square"), ("000002", "a green square")):
            for name, data in (
                (f"{key}.png", (caption_dir / "images" / "0.png").read_bytes()),
                (f"{key}.txt", text.encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    recs = read_annotations("webdataset", tmp_path)
    assert [r["caption"] for r in recs] == ["a red square", "a green square"]
    assert recs[0]["image"]["bytes"][:4] == b"\x89PNG" and "image_bytes" not in recs[0]


# Samples ----------------------------------------------------------------------------------------------------------
def test_llava_placeholders_become_media_items():
    rec = {
        "video": "v.mp4",
        "conversations": [{"from": "human", "value": "Look: <video>\nWhat happens?"}, {"from": "gpt", "value": "B"}],
    }
    messages, media = llava_to_messages(rec)
    assert media == [("video", "v.mp4")]
    assert messages[0]["content"] == [
        {"type": "text", "text": "Look: "},
        {"type": "video", "video": "v.mp4"},
        {"type": "text", "text": "What happens?"},
    ]
    no_placeholder = {
        "image": "a.png",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "x"}],
    }
    messages, _ = llava_to_messages(no_placeholder)
    assert messages[0]["content"][0] == {"type": "image", "image": "a.png"}


def test_bad_samples_are_skipped_counted_and_logged(proc, caption_dir, tmp_path):
    recs = read_annotations("caption", caption_dir / "captions.jsonl")
    recs[1]["image"] = "images/missing.png"
    recs.append({"image": "images/0.png", "caption": "  ", "_where": "x:9"})
    (caption_dir / "images" / "garbage.png").write_text("not an image")
    recs.append({"image": "images/garbage.png", "caption": "c", "_where": "x:10"})
    log = tmp_path / "skipped.jsonl"
    ds = VambaDataset(recs, SampleBuilder(proc, "caption", caption_dir), skip_log=log)
    out = [ds[i] for i in range(len(ds))]
    # Index 1 (missing image) is served by index 2; 3 and 4 are bad and wrap around to index 0.
    assert [o["labels"].shape == ds[0]["labels"].shape for o in out] == [True, False, False, True, True]
    assert torch.equal(out[1]["input_ids"], out[2]["input_ids"]) and torch.equal(
        out[3]["input_ids"], out[0]["input_ids"]
    )
    assert ds.skipped == {"unreadable image": 3, "empty caption": 1}  # item 4 was tried twice (via 3, and itself)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert logged[0]["reason"] == "unreadable image" and "missing.png" in logged[0]["detail"]
    batch = collate_padded(out, PAD)
    assert batch["input_ids"].shape[0] == 5 and batch["image_grid_thw"].shape == (5, 3)


def test_text_over_budget_is_skipped(proc, caption_dir):
    recs = read_annotations("caption", caption_dir / "captions.jsonl")
    recs[0]["caption"] = "very long " * 100
    ds = VambaDataset(recs, SampleBuilder(proc, "caption", caption_dir, max_text_tokens=200))
    assert torch.equal(ds[0]["input_ids"], ds[1]["input_ids"]) and ds.skipped == {"text over budget": 1}


def test_mixture_weights_caps_and_determinism(proc, caption_dir):
    cfg = MixtureConfig(
        sources=[
            SourceConfig(
                name="a",
                format="caption",
                annotation=str(caption_dir / "captions.jsonl"),
                root=str(caption_dir),
                weight=2.0,
            ),
            SourceConfig(
                name="b",
                format="caption",
                annotation=str(caption_dir / "captions.jsonl"),
                root=str(caption_dir),
                weight=1.0,
                max_samples=1,
            ),
        ],
        seed=3,
    )
    ds = build_mixture(cfg, proc)
    assert len(ds) == 7
    assert sorted(r["_source"] for r in ds.records).count("a") == 6
    again = build_mixture(cfg, proc)
    assert [r["_where"] for r in ds.records] == [r["_where"] for r in again.records]
    assert ds[0]["input_ids"].shape[0] == 1


# Packing ----------------------------------------------------------------------------------------------------------
def test_pack_indices_respects_both_budgets():
    sizes = [(50, 10), (60, 0), (30, 90), (40, 5), (200, 0)]
    rows = pack_indices(sizes, max_text_tokens=100, max_visual_tokens=100)
    assert sorted(i for r in rows for i in r) == list(range(5))
    for row in rows:
        if len(row) > 1:
            assert sum(sizes[i][0] for i in row) <= 100 and sum(sizes[i][1] for i in row) <= 100
    assert [4] in rows  # too long for any budget: a row of its own


def test_packed_batch_matches_separate_samples(proc):
    from transformers import Qwen2VLForConditionalGeneration

    from vamba import from_qwen2vl
    from vamba.modeling.tiny import tiny_qwen2vl_config

    torch.manual_seed(0)
    model = from_qwen2vl(
        Qwen2VLForConditionalGeneration(tiny_qwen2vl_config(vision={"patch_size": 14})),
        mixer_config={"d_state": 8, "headdim": 16, "chunk_size": 8},
    ).eval()
    rng = np.random.default_rng(0)
    samples = []
    for i, frames in enumerate([4, None, 6]):
        content = [{"type": "text", "text": f"question {i}"}]
        if frames:
            content.insert(0, {"type": "video", "video": rng.integers(0, 256, (frames, 56, 56, 3), dtype=np.uint8)})
        s = proc([{"role": "user", "content": content}, {"role": "assistant", "content": "ABC"[i]}])
        s["visual_tokens"] = torch.tensor(proc.visual_tokens(s))
        samples.append(s)
    packed = collate_packed(samples, PAD, max_text_tokens=10_000, max_visual_tokens=10_000)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [
        0,
        samples[0]["input_ids"].shape[1],
        samples[0]["input_ids"].shape[1] + samples[1]["input_ids"].shape[1],
    ]
    assert (packed["input_ids"] == VISION_START).sum() == 2 and packed["video_grid_thw"].shape == (2, 3)
    model_inputs = {k: v for k, v in packed.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**model_inputs, use_cache=False).logits[0]
        offset = 0
        for s in samples:
            n = s["input_ids"].shape[1]
            single = model(**{k: v for k, v in s.items() if k not in ("labels", "visual_tokens")}, use_cache=False)
            torch.testing.assert_close(logits[offset : offset + n], single.logits[0], atol=1e-4, rtol=1e-4)
            offset += n
    labels = packed["labels"][0]
    assert (labels != IGNORE_INDEX).sum() == sum(int((s["labels"] != IGNORE_INDEX).sum()) for s in samples)


# Configs ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["synthetic", "pretrain_paper", "sft_paper"])
def test_data_configs_compose_and_validate(name):
    from omegaconf import OmegaConf

    from vamba.config import compose

    cfg = compose(f"data/{name}").data
    assert cfg.sources and OmegaConf.select(cfg, "packing.max_text_tokens") > 0
    OmegaConf.resolve(cfg)
    for bad in ("data.bogus=1", "data.sources.0.bogus=1", "data.packing.enabled=maybe"):
        with pytest.raises(Exception, match="data"):
            compose(f"data/{name}", [bad])


def test_unknown_key_in_yaml_fails(tmp_path):
    from hydra import compose, initialize_config_dir

    import vamba.data.mixture  # noqa: F401  (registers the data schema)

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "typo.yaml").write_text(
        "defaults: [data_schema, _self_]\nsources:\n  - {name: a, annotation: x.json, wieght: 2}\n"
    )
    with pytest.raises(Exception, match="wieght"):
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            compose(config_name="data/typo")
