"""Caption generation with a tiny, randomly initialised InstructBLIP built offline."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
from fixtures_data import write_jpeg
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    BlipImageProcessor,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from avalanche_exmask.benchmarks.image_text_folder import image_text_folder
from avalanche_exmask.captions.cli import add_caption_parser
from avalanche_exmask.captions.generate import caption_images, generate_captions, list_images, read_done
from avalanche_exmask.data.image_text import BadInputError

PROMPT = "describe the image"
WORDS = "a photo of the describe image in detail short caption cat dog red blue green".split()


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_instructblip(language_model: str = "t5", *, writes_words: bool = True):
    """A random InstructBLIP (vision 32 px, one-layer Q-Former and language model) and its processor.

    :param writes_words: like a trained captioner, generate at least one word token; otherwise its
        random weights may end the caption at once or emit only special tokens (an empty caption).
    """
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=_tokenizer(),
        qformer_tokenizer=_tokenizer(),
        num_query_tokens=4,
    )
    vocab_size = len(processor.tokenizer)
    if language_model == "t5":
        text_config = T5Config(
            vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
            num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    else:
        text_config = OPTConfig(
            vocab_size=vocab_size, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
            word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=1,
        )
    config = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
        ).to_dict(),
        qformer_config=InstructBlipQFormerConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            vocab_size=vocab_size, encoder_hidden_size=32, max_position_embeddings=64,
        ).to_dict(),
        text_config=text_config.to_dict(),
        num_query_tokens=4,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    model = InstructBlipForConditionalGeneration(config).eval()
    if writes_words:  # InstructBLIP generates with its language model's generation config
        model.language_model.generation_config.min_new_tokens = 1
        model.language_model.generation_config.suppress_tokens = [
            token for token in processor.tokenizer.all_special_ids if token != processor.tokenizer.eos_token_id
        ]
    return model, processor


@pytest.fixture(scope="module")
def captioner():
    return tiny_instructblip("t5")


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for i in range(5):
        write_jpeg(root / f"class{i % 2}" / f"img{i}.jpg", i)
    (root / ".hidden").mkdir()
    (root / "notes.txt").write_text("not an image")
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def _run(image_root, out, captioner, **kwargs):
    model, processor = captioner
    return generate_captions(
        image_root, out, model=model, processor=processor, model_name="tiny", prompt=PROMPT,
        batch_size=2, max_new_tokens=4, progress=False, **kwargs,
    )


def test_list_images_is_sorted_relative_and_skips_non_images(image_root):
    assert list_images(image_root) == [f"class{i % 2}/img{i}.jpg" for i in (0, 2, 4, 1, 3)]


def test_generate_writes_one_line_per_image_with_model_and_prompt(image_root, tmp_path, captioner):
    out = tmp_path / "captions.jsonl"
    run = _run(image_root, out, captioner)
    lines = _lines(out)
    assert run.written == 5 and run.already_done == 0
    assert sorted(line["image"] for line in lines) == list_images(image_root)
    assert all(line["model"] == "tiny" and line["prompt"] == PROMPT for line in lines)
    assert all(isinstance(line["text"], str) for line in lines)


def test_generate_is_resumable_after_an_interrupted_write(image_root, tmp_path, captioner):
    out = tmp_path / "captions.jsonl"
    model, processor = captioner
    calls = {"n": 0}

    class Interrupted(Exception):
        pass

    def failing_generate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted
        return model.__class__.generate(model, *args, **kwargs)

    model.generate = failing_generate
    try:
        with pytest.raises(Interrupted):
            _run(image_root, out, captioner)
    finally:
        del model.generate
    assert len(_lines(out)) == 2  # the first batch was flushed before the interruption
    with open(out, "a", encoding="utf-8") as file:
        file.write('{"image": "class0/img4.jpg", "te')  # torn write of a later line
    run = _run(image_root, out, captioner)
    lines = _lines(out)
    assert run.already_done == 2 and run.written == 3
    assert sorted(line["image"] for line in lines) == list_images(image_root)  # none lost, none twice
    assert _run(image_root, out, captioner).written == 0


def test_read_done_drops_a_torn_line_ending_in_newline(tmp_path):
    out = tmp_path / "c.jsonl"
    good = json.dumps({"image": "a.jpg", "text": "x", "model": "m", "prompt": None})
    out.write_text(good + "\n" + '{"image": "b.jp\n', encoding="utf-8")
    assert read_done(out, model_name="m", prompt=None) == {"a.jpg"}
    assert out.read_text(encoding="utf-8") == good + "\n"


def test_read_done_rejects_another_model_or_a_corrupt_middle_line(tmp_path):
    out = tmp_path / "c.jsonl"
    line = json.dumps({"image": "a.jpg", "text": "x", "model": "other", "prompt": PROMPT})
    out.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"c\.jsonl:1: written with model 'other'"):
        read_done(out, model_name="tiny", prompt=PROMPT)
    out.write_text("not json\n" + line.replace("other", "tiny") + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"c\.jsonl:1: not valid JSON"):
        read_done(out, model_name="tiny", prompt=PROMPT)


def test_corrupt_image_raises_naming_it_or_is_skipped(image_root, tmp_path, captioner):
    (image_root / "class0" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(BadInputError, match="broken.jpg"):
        _run(image_root, tmp_path / "a.jsonl", captioner)
    run = _run(image_root, tmp_path / "b.jsonl", captioner, on_error="skip")
    assert run.written == 5 and [Path(p).name for p, _ in run.skipped] == ["broken.jpg"]


def test_decoder_only_language_model_output_excludes_the_prompt():
    model, processor = tiny_instructblip("opt")
    images = [Image.new("RGB", (40, 30), (40 * i, 100, 200)) for i in range(2)]
    captions = caption_images(images, model=model, processor=processor, prompt=PROMPT, max_new_tokens=3, do_sample=False)
    assert len(captions) == 2
    assert all(not caption.startswith(PROMPT) and len(caption.split()) <= 3 for caption in captions)


def test_cli_captions_with_a_local_model_and_feeds_image_text_folder(image_root, tmp_path, captioner):
    model, processor = captioner
    model_dir = tmp_path / "tiny-instructblip"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    parser = argparse.ArgumentParser(prog="avalanche_exmask")
    add_caption_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "captions.jsonl"
    args = parser.parse_args(
        ["caption", "--images", str(image_root), "--out", str(out), "--model", str(model_dir),
         "--prompt", PROMPT, "--batch-size", "3", "--max-new-tokens", "4", "--device", "cpu", "--no-progress"]
    )
    assert args.func(args) == 0
    lines = _lines(out)
    assert len(lines) == 5 and {line["model"] for line in lines} == {str(model_dir)}
    benchmark = image_text_folder(image_root, out, n_experiences=2, test_fraction=0.4)
    assert benchmark.split_sizes == {"train": 3, "test": 2}


def test_empty_captions_are_retried_with_a_forced_word(image_root, tmp_path):
    model, processor = tiny_instructblip("t5", writes_words=False)  # its first captions are all empty
    assert caption_images([Image.new("RGB", (32, 32))], model=model, processor=processor, prompt=PROMPT,
                          max_new_tokens=4, do_sample=False) == [""]
    run = _run(image_root, tmp_path / "c.jsonl", (model, processor))
    assert run.written == 5 and run.empty == []
    assert all(line["text"] for line in _lines(tmp_path / "c.jsonl"))


def test_captions_still_empty_are_not_written_but_reported(image_root, tmp_path, captioner, monkeypatch, capsys):
    from avalanche_exmask.captions import generate

    calls = []

    def half_empty(images, **kwargs):  # the retry fixes the first image of each retried batch only
        calls.append(kwargs.get("min_new_tokens"))
        return ["" if kwargs.get("min_new_tokens") is None or i else "a red cat" for i in range(len(images))]

    monkeypatch.setattr(generate, "caption_images", half_empty)
    out = tmp_path / "c.jsonl"
    run = _run(image_root, out, captioner)  # batches of 2, 2, 1
    assert calls == [None, 1, None, 1, None, 1]
    assert run.written == 3 and [Path(p).name for p in run.empty] == ["img2.jpg", "img1.jpg"]
    assert [line["text"] for line in _lines(out)] == ["a red cat"] * 3
    monkeypatch.undo()
    rerun = _run(image_root, out, captioner)  # the images left out are tried again
    assert rerun.already_done == 3 and rerun.written == 2


def test_hostile_images_are_named_or_skipped_by_the_captioner(tmp_path, captioner):
    from test_bad_input import bomb_png

    root = tmp_path / "images"
    write_jpeg(root / "a" / "good.jpg", 0)
    (root / "a" / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (2, 2)).save(root / "a" / "dot.png")
    os.symlink("loop.jpg", root / "a" / "loop.jpg")  # points at itself
    with pytest.raises(BadInputError, match=r"bomb\.png: refused as a possible decompression bomb"):
        _run(root, tmp_path / "a.jsonl", captioner)
    run = _run(root, tmp_path / "b.jsonl", captioner, on_error="skip")
    assert run.written == 1 and sorted(Path(p).name for p, _ in run.skipped) == ["bomb.png", "dot.png", "loop.jpg"]
    assert "Too many levels of symbolic links" in dict(run.skipped)[str(root / "a" / "loop.jpg")]


def test_read_done_names_a_line_that_is_not_utf8(tmp_path):
    out = tmp_path / "c.jsonl"
    good = json.dumps({"image": "a.jpg", "text": "x", "model": "m", "prompt": None}).encode()
    out.write_bytes(good + b"\n" + good.replace(b'"x"', b'"\xe9"') + b"\n")
    with pytest.raises(BadInputError, match=r"c\.jsonl:2: not UTF-8 text"):
        read_done(out, model_name="m", prompt=None)


def test_sharded_generation_resumes_in_one_process_and_merges_to_the_single_process_output(image_root, tmp_path, captioner):
    """Shards of several ranks, simulated one after the other (the real 2-process launch, with its
    barrier between reading and writing, is in ``test_distributed.py``)."""
    from avalanche_exmask.captions.generate import merge_caption_parts, part_path, part_paths

    single = tmp_path / "single.jsonl"
    _run(image_root, single, captioner)
    out = tmp_path / "sharded.jsonl"
    images = list_images(image_root)
    first = _run(image_root, out, captioner, rank=0, world_size=3)
    assert first.written == 2 and not out.exists() and part_paths(out) == [part_path(out, 0, 3)]
    assert [line["image"] for line in _lines(part_path(out, 0, 3))] == images[0::3]
    # rank 1 of the same launch wrote one line and tore the next, rank 2 never ran
    line = json.dumps({"image": images[1], "text": "a dog", "model": "tiny", "prompt": PROMPT})
    part_path(out, 1, 3).write_text(line + "\n" + '{"image": "cla')
    resumed = _run(image_root, out, captioner)  # one process: the parts count as done, then merged
    assert resumed.already_done == 3 and resumed.written == 2 and part_paths(out) == []
    merged = _lines(out)
    assert sorted(line["image"] for line in merged) == sorted(images) and len(merged) == len(images)
    expected = {line["image"]: line["text"] for line in _lines(single)} | {images[1]: "a dog"}
    assert {line["image"]: line["text"] for line in merged} == expected
    assert merge_caption_parts(out, model_name="tiny", prompt=PROMPT) == 0


def test_merge_skips_images_already_merged_and_a_bad_rank_is_refused(image_root, tmp_path, captioner):
    from avalanche_exmask.captions.generate import merge_caption_parts, part_path, part_paths

    out = tmp_path / "captions.jsonl"
    _run(image_root, out, captioner, rank=1, world_size=2)
    part = part_path(out, 1, 2)
    out.write_text(part.read_text().splitlines()[0] + "\n")  # a merge killed before removing the part
    assert merge_caption_parts(out, model_name="tiny", prompt=PROMPT) == 1
    assert [line["image"] for line in _lines(out)] == list_images(image_root)[1::2] and part_paths(out) == []
    with pytest.raises(ValueError, match="rank must be in"):
        _run(image_root, out, captioner, rank=2, world_size=2)
    assert not part_path(out, 2, 2).exists()
