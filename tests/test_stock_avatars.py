"""Stock avatars (avatar/stock.py): the default avatar on other anny bodies with other looks,
put together at load time from a small asset; valid avatars that cross a .lca file, listed by
`avatar list`, and an unknown name is one error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from avatar.avatar import DEFAULT_AVATAR_PATH, load_avatar
from avatar.codes import Codes
from avatar.lca import AvatarFileError, load_avatar_file, save_avatar_file
from avatar.stock import STOCK_PATH, load_stock, part_of_gaussians, recolour, stock_names
from avatar.template import load_template

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def default(template):
    return load_avatar("default", template)


def test_the_stock_asset_is_small_and_holds_several_people():
    palette, avatars = load_stock()
    size_kb = STOCK_PATH.stat().st_size / 1e3
    print(f"stock asset: {size_kb:.0f} kB for {len(avatars)} avatars")
    assert len(avatars) >= 4 and size_kb < 100 * len(avatars)
    genders = [a.shape.phenotype["gender"] for a in avatars.values()]
    assert min(genders) < 0.2 and max(genders) > 0.8  # men and women


def test_each_stock_avatar_is_its_own_body_and_look(template, default, tmp_path):
    palette, avatars = load_stock()
    parts = part_of_gaussians(default.data, template, palette)
    shirt = parts == list(palette).index("shirt")
    skin = parts == list(palette).index("skin")
    assert 0.1 < shirt.mean() < 0.6 and skin.mean() > 0.1
    heights = {}
    for name in stock_names():
        avatar = load_avatar(f"stock:{name}", template)
        look = avatars[name].look
        # The shirt's Gaussians carry the stock shirt colour (up to the default's shading).
        got = np.median(avatar.data.colors[shirt], axis=0)
        assert np.abs(got - np.asarray(look["shirt"])).max() < 0.06, (name, got)
        got = np.median(avatar.data.colors[skin], axis=0)
        assert np.abs(got - np.asarray(look["skin"])).max() < 0.06, (name, got)
        heights[name] = float(np.ptp(avatar.template.vertices[:, 1]))
        posed = avatar.pose(Codes())
        assert np.isfinite(posed.means).all() and len(posed.means) == len(default)
        # A valid .lca: it crosses a call as any other avatar.
        path = tmp_path / f"{name}.lca"
        save_avatar_file(path, avatar.data)
        back = load_avatar_file(path, template)
        assert back.shape.phenotype == avatar.data.shape.phenotype
    print("stock heights: " + ", ".join(f"{n} {h:.2f} m" for n, h in heights.items()))
    assert max(heights.values()) - min(heights.values()) > 0.15


def test_the_default_look_recolours_to_itself(template, default):
    palette, _ = load_stock()
    parts = part_of_gaussians(default.data, template, palette)
    same = recolour(default.data.colors, parts, palette,
                    {p: palette[p] for p in ("skin", "hair", "iris", "shirt", "trousers",
                                             "shoes")})
    np.testing.assert_allclose(same, default.data.colors, atol=1e-6)


def test_avatar_list_names_them_and_an_unknown_one_is_an_error(capsys):
    assert main(["avatar", "list"]) == 0
    out = capsys.readouterr().out
    assert all(f"stock:{name}" in out for name in stock_names())
    assert main(["avatar", "info", "stock:dana"]) == 0
    assert "body:        " in capsys.readouterr().out
    assert main(["avatar", "info", "stock:nobody"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no stock avatar 'nobody'") and err.count("\n") == 1
    with pytest.raises(AvatarFileError, match="no stock avatar"):
        load_avatar("stock:nobody")


@pytest.mark.slow
def test_the_stock_asset_rebuilds_exactly(tmp_path):
    pytest.importorskip("anny", reason="needs the 'create' extra to rebuild the stock asset")
    assert DEFAULT_AVATAR_PATH.is_file()
    out = tmp_path / "stock.safetensors"
    run = subprocess.run([sys.executable, "scripts/build_stock_avatars.py", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == STOCK_PATH.read_bytes()
