"""The 128 px regime: the exmask-tiny-128 geometry, its pretraining script's geometry arguments, the
transfer evaluation's model-qualified weights, and the bytes table on a tiny slice."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from avalanche_exmask.models.factory import create_clip, register_packaged_configs

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    """A module of benchmarks/, imported once under its own name (its folder on the path for its imports)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_128_geometry_has_the_64_px_models_widths_and_token_count():
    register_packaged_configs()
    small, large = (open_clip.get_model_config(n) for n in ("exmask-tiny", "exmask-tiny-128"))
    assert large["vision_cfg"]["image_size"] == 128 and large["vision_cfg"]["patch_size"] == 16
    for key in ("layers", "width", "head_width"):
        assert large["vision_cfg"][key] == small["vision_cfg"][key]
    assert large["text_cfg"] == small["text_cfg"] and large["embed_dim"] == small["embed_dim"]
    model = create_clip("exmask-tiny-128", None)
    assert model.visual.positional_embedding.shape[0] == 1 + 64  # [CLS] + 8 x 8 patches, as at 64 px
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 128, 128)).shape == (1, 128)


def test_pretraining_script_takes_the_geometry_and_trains_at_128_px(tmp_path):
    pretrain = _script("pretrain_tiny_clip_real")
    material_module = _script("clipart_material")
    (tmp_path / "emoji-datasource").mkdir()  # stand-ins for the installed material
    assert pretrain.model_for_geometry(64, 8) == "exmask-tiny"
    assert pretrain.model_for_geometry(128, 16) == "exmask-tiny-128"
    with pytest.raises(ValueError, match="no shipped model config at 128 px with 8-pixel patches"):
        pretrain.model_for_geometry(128, 8)
    defaults = pretrain.parse_args(["--cache", str(tmp_path / "m.npz"), "--openclipart", str(tmp_path), "--emoji", str(tmp_path)])
    assert defaults.model_name == "exmask-tiny" and defaults.output.name == "exmask-tiny-real.safetensors"
    args = pretrain.parse_args(["--image-size", "128", "--patch-size", "16", "--steps", "2", "--batch-size", "2",
                                "--quiet", "--output", str(tmp_path / "w.safetensors"), "--cache", str(tmp_path / "m.npz"),
                                "--openclipart", str(tmp_path), "--emoji", str(tmp_path)])
    assert args.model_name == "exmask-tiny-128"
    tiles = np.zeros((4, 128, 128, 4), np.uint8)
    tiles[:, :50, :40] = 200
    items = [material_module.Item(Path(f"/x{i}.png"), "openclipart", f"thing {i}", f"c / g{i % 2}", f"g{i % 2}") for i in range(4)]
    material = material_module.Material(tiles, np.array([[40, 50]] * 4), items, np.zeros((0, 128, 128, 3), np.uint8))
    model, record = pretrain.pretrain(args, material)
    assert record["model_name"] == "exmask-tiny-128" and len(record["contrastive_loss_every_50_steps"]) == 1
    with pytest.raises(ValueError, match="holds 128 px tiles, not 64 px"):
        np.savez(tmp_path / "m.npz", objects=tiles, extents=material.extents, backgrounds=material.backgrounds,
                 items=np.array("[]"))
        material_module.load_material([], cache=tmp_path / "m.npz", tile=64)


def test_transfer_eval_reads_model_qualified_weights():
    transfer = _script("transfer_eval")
    assert transfer.split_weights("exmask-tiny-128:real") == ("exmask-tiny-128", "real")
    assert transfer.split_weights("real") == ("exmask-tiny", "real")
    assert transfer.split_weights("/tmp/a:b/w.safetensors") == ("exmask-tiny", "/tmp/a:b/w.safetensors")
    with pytest.raises(SystemExit):
        transfer.parse_args(["--weights", "no-such-model:real"])


def test_bytes_table_on_photographs_orders_the_codecs(tmp_path):
    regime = _script("regime_bytes")
    results = regime.main(["--sources", "photos-128", "--crops", "1", "--weights", "none", "--extra-jpeg", "95",
                           "--out", str(tmp_path)])
    table = results["sources"]["photos-128"]
    rows = table["codecs"]
    assert table["records"] == 7 and table["plain_nbytes"] == 3 * 128 * 128 + 2 * 32
    assert abs(rows["raw"]["exemplars_per_class"] - 5.0) < 0.05  # raw: the budget's own unit
    jpeg = [rows[f"jpeg q{q}"]["mean_record_nbytes"] for q in (10, 30, 50, 70, 90, 95)]
    assert jpeg == sorted(jpeg) and jpeg[-1] < rows["raw"]["mean_record_nbytes"]
    assert rows["jpeg q95 4:4:4"]["mean_record_nbytes"] > rows["jpeg q95"]["mean_record_nbytes"]
    masked = rows["masked, top 35%"]["mean_record_nbytes"]
    assert 0.3 < masked / rows["raw"]["mean_record_nbytes"] < 0.45  # 35% of the patches, plus the mask and tokens
    assert rows["composed, top 35%, q50"]["mean_record_nbytes"] < masked
    assert (tmp_path / "regime_bytes.json").is_file() and "| raw |" in (tmp_path / "regime_bytes.md").read_text()


def test_128_px_real_weights_ship_small_fp16_with_their_record_and_load_offline():
    from safetensors import safe_open

    from avalanche_exmask.models.factory import PACKAGED_WEIGHTS

    path = PACKAGED_WEIGHTS["exmask-tiny-128"]["real"]
    assert path.stat().st_size <= 10 * 2**20
    with safe_open(str(path), framework="pt") as file:
        assert file.metadata() == {"model_name": "exmask-tiny-128", "dtype": "float16"}
        assert all(file.get_tensor(k).dtype == torch.float16 for k in file.keys())
    record = __import__("json").loads(path.with_suffix(".json").read_text())
    assert record["model_name"] == "exmask-tiny-128" and record["arguments"]["image_size"] == 128
    assert record["arguments"]["patch_size"] == 16 and record["weights_bytes"] == path.stat().st_size
    assert record["material"]["objects"] > 9000 and set(record["sources"]) == {"openclipart", "twemoji", "noto", "emoji-names"}
    assert len(record["contrastive_loss_every_50_steps"]) == record["arguments"]["steps"] // 50
    assert record["contrastive_loss_every_50_steps"][-1] < record["contrastive_loss_every_50_steps"][0] - 2
    assert "CC BY 4.0" in path.with_name(path.stem + ".LICENSES.md").read_text()
    model = create_clip("exmask-tiny-128", "real")
    random = create_clip("exmask-tiny-128", None)
    assert not torch.equal(model.visual.conv1.weight, random.visual.conv1.weight)
    assert model.visual.conv1.weight.shape == (128, 3, 16, 16)
