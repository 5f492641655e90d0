"""Tests for ``vaez inspect`` (neuralcodec/inspect_panel.py): the figure and its failure modes."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

import cli
from imagegen import natural_image
from neuralcodec import inspect_panel


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(natural_image(48, 64, 3, seed=5)).save(path)
    return path


def test_inspect_image_and_vaez(tmp_path, capsys, image_path):
    panel = tmp_path / "panel.png"
    code, _, err = run(capsys, "inspect", image_path, "-o", panel, "-q", "40")
    assert code == 0, err
    assert "quality 40" in err and "bpp" in err and "PSNR" in err
    with Image.open(panel) as im:
        assert im.format == "PNG" and im.width >= 800 and im.height >= 500
        assert np.asarray(im.convert("L")).std() > 10  # not a blank canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "panel.png"]  # no temp file
    code, _, err = run(capsys, "inspect", image_path, "-o", panel)
    assert code == 1 and "already exists" in err  # atomic_write: no overwrite without --force

    assert run(capsys, "compress", image_path, "--quiet")[0] == 0
    code, _, err = run(capsys, "inspect", tmp_path / "in.vaez")
    assert code == 0, err
    assert "unknown" in err and (tmp_path / "in-inspect.png").is_file()


def test_bits_map_accounts_for_the_stream(codec, image_path):
    a = inspect_panel.analyse(image_path, quality=60, coder="constriction", codec=codec)
    assert a.bits.shape == a.y_symbols.shape and (a.bits > 0).all()
    coded = 8 * (len(a.sections["YSYM"]) + len(a.sections.get("YSYN", b"")))
    assert abs(a.bits.sum() - coded) <= 0.1 * coded + 256  # ideal lengths ~ the range coder's
    assert a.psnr is not None and a.bpp > 0


def test_missing_matplotlib_is_one_clear_line(tmp_path, capsys, monkeypatch, image_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run(capsys, "inspect", image_path, "-o", tmp_path / "p.png")
    assert code == 1
    assert err == "vaez: error: vaez inspect needs matplotlib: pip install 'vaez[plot]'\n"
    assert not (tmp_path / "p.png").exists()
    with pytest.raises(inspect_panel.MatplotlibMissing):
        inspect_panel.require_matplotlib()
