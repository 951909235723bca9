"""Training data: annotation formats, bad-sample skipping, mixtures, packing and the configs that describe them.

The paper's datasets are tested through the shipped configs on records of their published layouts
(tests/fixtures/*/PROVENANCE.md) with tiny generated media.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vamba.data.annotations import AnnotationError, ParquetRecords, read_annotations
from vamba.data.dataset import SampleBuilder, SampleError, VambaDataset, llava_to_messages
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


# The paper's datasets as published (fixtures: tests/fixtures/*/PROVENANCE.md) --------------------------------------
FIXTURES = Path(__file__).parent / "fixtures"


def _image_bytes(rgb, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((56, 56, 3), rgb, dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory) -> Path:
    """VAMBA_DATA_ROOT with the fixture records in their published layouts: LLaVA-Video-178K JSON + mp4s,
    LLaVA-OneVision-Data parquet (images embedded, one row group per row), a CC12M shard, PixelProse parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vamba.data.mp4 import write_mp4

    root = tmp_path_factory.mktemp("paper_data")
    shutil.copytree(FIXTURES / "LLaVA-Video-178K", root / "LLaVA-Video-178K")
    for ann in (root / "LLaVA-Video-178K").glob("*/*.json"):
        for i, rec in enumerate(json.loads(ann.read_text())):
            frames = [np.full((56, 56, 3), 40 * i + 8 * t, dtype=np.uint8) for t in range(8)]
            write_mp4(ann.parent / rec["video"], frames, fps=8)
    for row in json.loads((FIXTURES / "LLaVA-OneVision-Data" / "rows.json").read_text()):
        image = row["image"] and {"bytes": _image_bytes(row["image"]["rgb"]), "path": row["image"]["path"]}
        out = root / "LLaVA-OneVision-Data" / row["data_source"] / "train-00000-of-00001.parquet"
        out.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist([{**row, "image": image}]), out)
    (root / "cc12m-wds").mkdir()
    with tarfile.open(root / "cc12m-wds" / "00000.tar", "w") as tar:
        for m in json.loads((FIXTURES / "cc12m-wds" / "members.json").read_text()):
            _add(tar, f"{m['key']}.jpg", _image_bytes(m["rgb"], "JPEG"))
            _add(tar, f"{m['key']}.txt", m["txt"].encode())
            _add(tar, f"{m['key']}.json", json.dumps(m["json"]).encode())
    (root / "pixelprose").mkdir()
    rows = json.loads((FIXTURES / "pixelprose" / "rows.json").read_text())
    pq.write_table(pa.Table.from_pylist(rows), root / "pixelprose" / "vlm_captions_cc12m_00.parquet")
    return root


def _kind(sample) -> str:
    return "video" if "video_grid_thw" in sample else "image" if "image_grid_thw" in sample else "text"


def test_placeholders_attach_by_kind():
    def items(rec):
        return [(i["type"], i[i["type"]]) for m in llava_to_messages(rec)[0] if isinstance(m["content"], list)
                for i in m["content"] if i["type"] != "text"]

    def conv(*humans):
        return [t for h in humans for t in ({"from": "human", "value": h}, {"from": "gpt", "value": "ok"})]

    # LLaVA-Video-178K writes <image> for its one video; a lone image may be tagged <video> likewise.
    assert items({"video": "v.mp4", "conversations": conv("<image>\nWhat happens?")}) == [("video", "v.mp4")]
    assert items({"image": "a.png", "conversations": conv("<video>\nWhat?")}) == [("image", "a.png")]
    assert items({"video": ["a.mp4", "b.mp4"], "conversations": conv("<image> then <image>")}) == [
        ("video", "a.mp4"), ("video", "b.mp4")]
    mixed = {"image": "a.png", "video": ["v1.mp4", "v2.mp4"], "conversations": conv("<video><video>", "<image>")}
    assert items(mixed) == [("video", "v1.mp4"), ("video", "v2.mp4"), ("image", "a.png")]
    with pytest.raises(SampleError, match="ambiguous placeholder: tag 2 is <image>"):
        llava_to_messages({**mixed, "conversations": conv("<image><image>"), "_where": "f:1"})
    with pytest.raises(SampleError, match="more tags than media: 2 placeholders, 1 media"):
        llava_to_messages({"video": "v.mp4", "conversations": conv("<image>", "<image>")})
    with pytest.raises(SampleError, match="bad conversation.*unknown speaker 'bot'"):
        llava_to_messages({"conversations": [{"from": "bot", "value": "x"}]})


def test_sft_paper_serves_llava_video_as_video_and_onevision_parquet(proc, paper_data, monkeypatch):
    from vamba.config import compose

    monkeypatch.setenv("VAMBA_DATA_ROOT", str(paper_data))
    cfg = compose("data/sft_paper", ["data.sources.1.frames.count=4"]).data
    ds = build_mixture(cfg, proc)
    served = Counter((ds.records[i]["_source"], _kind(ds[i])) for i in range(len(ds)))
    assert ds.skipped == {}
    assert served == {("llava_video_178k", "video"): 4, ("llava_onevision", "image"): 2, ("llava_onevision", "text"): 1}
    again = build_mixture(cfg, proc)
    assert [r["_where"] for r in ds.records] == [r["_where"] for r in again.records]


def test_onevision_parquet_reads_lazily_with_the_labels_of_its_json_form(proc, paper_data, tmp_path):
    parquet = read_annotations("llava", paper_data / "LLaVA-OneVision-Data")
    assert isinstance(parquet, ParquetRecords) and len(parquet) == 3 and parquet._cache is None
    records = []
    for row in json.loads((FIXTURES / "LLaVA-OneVision-Data" / "rows.json").read_text()):
        if row["image"]:
            (tmp_path / row["image"]["path"]).write_bytes(_image_bytes(row["image"]["rgb"]))
        records.append({**row, "image": row["image"] and row["image"]["path"]})
    (tmp_path / "onevision.json").write_text(json.dumps(records))
    as_json = {r["id"]: r for r in read_annotations("llava", tmp_path / "onevision.json")}
    builder = SampleBuilder(proc, "llava")
    for i in range(len(parquet)):
        row = parquet[i]
        assert parquet._cache[1].num_rows == 1  # one row group in memory, not the file
        a, b = builder(row), builder(as_json[row["id"]])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unreadable_annotation_files_name_the_file(tmp_path, paper_data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(AnnotationError, match=r"broken\.parquet: not a readable parquet file"):
        read_annotations("llava", tmp_path / "broken.parquet")
    (tmp_path / "binary.json").write_bytes(b"\x89\xff\xfe binary")
    with pytest.raises(AnnotationError, match=r"binary\.json: cannot read annotation file as UTF-8"):
        read_annotations("llava", tmp_path / "binary.json")
    pq.write_table(pa.table({"id": ["1"]}), tmp_path / "noconv.parquet")
    with pytest.raises(AnnotationError, match=r"noconv\.parquet: parquet lacks column\(s\) \['conversations'\]"):
        read_annotations("llava", tmp_path / "noconv.parquet")
    with pytest.raises(AnnotationError, match="no match"):
        read_annotations("llava", tmp_path / "nothing" / "*.json")
    with pytest.raises(AnnotationError, match="not fields of format 'caption'"):
        read_annotations("caption", tmp_path / "noconv.parquet", {"text": "vlm_caption"})


def test_caption_formats_map_columns(tmp_path, caption_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["images/0.png"], "vlm_caption": ["a red square"]}), tmp_path / "c.parquet")
    recs = read_annotations("caption", tmp_path / "c.parquet", {"image": "path", "caption": "vlm_caption"})
    assert (recs[0]["image"], recs[0]["caption"]) == ("images/0.png", "a red square")
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "images/1.png", "vlm_caption": "a green square"}) + "\n")
    recs = read_annotations("caption", tmp_path / "c.jsonl", {"caption": "vlm_caption"})
    assert recs[0]["caption"] == "a green square"


def test_a_source_without_usable_samples_or_its_kind_stops_at_start_up(proc, paper_data, tmp_path):
    videos = tmp_path / "LLaVA-Video-178K"
    shutil.copytree(FIXTURES / "LLaVA-Video-178K", videos)  # the annotation files, no videos
    missing = SourceConfig(name="llava_video_178k", kind="video", annotation=f"{videos}/*/*_processed.json")
    with pytest.raises(ValueError, match=r"'llava_video_178k'.*no usable sample among the 4 probed of 4 records; "
                                         r"reasons: \{'unreadable video': 4\}"):
        build_mixture(MixtureConfig(sources=[missing]), proc)
    wrong = SourceConfig(name="onevision", kind="video", annotation=str(paper_data / "LLaVA-OneVision-Data"))
    with pytest.raises(ValueError, match=r"'onevision'.*declares kind 'video' but none of 3 probed records carries "
                                         r"one: \{'image': 2, 'text': 1\}"):
        build_mixture(MixtureConfig(sources=[wrong]), proc)


def test_pixelprose_join_feeds_pretrain_paper_with_release_prompts(proc, paper_data, tmp_path, monkeypatch, capsys):
    from vamba.config import compose
    from vamba.data import prepare
    from vamba.data.prompts import CAPTION_PROMPT, RELEASE_CAPTION_PROMPTS

    out = tmp_path / "cc12m_pixelprose" / "shards"
    argv = ["pixelprose", "--parquet", str(paper_data / "pixelprose"), "--shards", str(paper_data / "cc12m-wds"),
            "--out", str(out)]
    assert prepare.main(argv) == 0
    assert "2 of 3 images matched (66.7%), 1 without a PixelProse caption dropped; 3 PixelProse rows" in \
        capsys.readouterr().out
    report = json.loads((out / prepare.REPORT).read_text())
    assert report == {"pixelprose_rows": 3, "matched": 2, "unmatched": 1,
                      "shards": {"00000.tar": {"matched": 2, "unmatched": 1}}}
    rows = json.loads((FIXTURES / "pixelprose" / "rows.json").read_text())
    pixelprose = {r["url"]: r["vlm_caption"].strip() for r in rows}
    monkeypatch.setenv("VAMBA_DATA_ROOT", str(tmp_path))
    cfg = compose("data/pretrain_paper").data
    asked = []
    for prompt_style in ("release", "fixed"):
        cfg.caption_prompt = prompt_style
        ds = build_mixture(cfg, proc)
        for i in range(len(ds)):
            sample = ds[i]
            text = proc.tokenizer.decode(sample["input_ids"][0])
            caption = proc.tokenizer.decode(sample["labels"][0][sample["labels"][0] != IGNORE_INDEX],
                                            skip_special_tokens=True)
            url = json.loads(tarfile.open(out / "00000.tar").extractfile(f"{ds.records[i]['image']['path']}.json")
                             .read())["url"]
            assert caption == pixelprose[url]  # the PixelProse caption, not CC12M's alt-text
            asked.append(next(p for p in (*RELEASE_CAPTION_PROMPTS, CAPTION_PROMPT) if p in text))
    assert asked[:2] != [CAPTION_PROMPT] * 2 and set(asked[:2]) <= set(RELEASE_CAPTION_PROMPTS)
    assert asked[2:] == [CAPTION_PROMPT] * 2
    builder = SampleBuilder(proc, "caption", caption_prompt="release", seed=0)
    draws = [builder._prompt({"_index": i}) for i in range(200)]
    assert set(draws) == set(RELEASE_CAPTION_PROMPTS) and draws == [builder._prompt({"_index": i}) for i in range(200)]


def test_webdataset_index_reads_bytes_when_served_and_resume_skips_unread(proc, paper_data, tmp_path):
    from accelerate.data_loader import skip_first_batches

    shard = tmp_path / "00000.tar"
    shutil.copy(paper_data / "cc12m-wds" / "00000.tar", shard)
    recs = read_annotations("webdataset", shard)
    assert recs.members.shape == (3, 5) and recs.members.nbytes + recs.keys.nbytes < 200  # offsets, not images
    before, size = recs[1]["image"]["bytes"], int(recs.members[1, 2])
    after = _image_bytes((250, 0, 250), "JPEG")[:size].ljust(size, b"\0")
    with open(shard, "r+b") as f:  # replace sample 1's image in place after indexing: served bytes follow the file
        f.seek(int(recs.members[1, 1]))
        f.write(after)
    assert recs[1]["image"]["bytes"] == after != before and recs[1]["caption"] == "simply nature salad dressing"

    class Reads(list):  # the records a loader asks for
        def __getitem__(self, i):
            self.append(i)
            return recs[i]

    reads = Reads()
    ds = VambaDataset(type("Index", (), {"__len__": lambda s: 3, "__getitem__": lambda s, i: reads[i]})(),
                      SampleBuilder(proc, "webdataset"))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=list)
    assert len(list(skip_first_batches(loader, 2))) == 1 and reads == [2]  # resuming reads no skipped sample


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_index_matches_tarfile(tmp_path, fmt):
    from vamba.data.annotations import _tar_members

    shard = tmp_path / "s.tar"
    long_key = "d" * 60 + "/" + "k" * 90  # > 100 characters: ustar prefix, pax path or GNU long name
    with tarfile.open(shard, "w", format=fmt) as tar:
        for key, data in (("000001", b"x" * 700), (long_key, b"y" * 3)):
            _add(tar, f"{key}.jpg", data)
            _add(tar, f"{key}.txt", f"caption {key[:3]}".encode())
    with tarfile.open(shard) as tar:
        assert list(_tar_members(shard)) == [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
    recs = read_annotations("webdataset", shard)
    assert recs[1]["image"] == {"bytes": b"y" * 3, "path": long_key} and recs[1]["caption"] == "caption ddd"
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as tar:
        _add(tar, "a.jpg", b"x")
    with pytest.raises(AnnotationError, match=r"s\.tar\.gz: not an uncompressed tar shard"):
        read_annotations("webdataset", tmp_path / "s.tar.gz")
