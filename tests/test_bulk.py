"""Tests for folder inputs: ``vaez compress DIR -o OUTDIR`` and ``vaez decompress DIR -o OUTDIR``."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

import cli
import formats
from imagegen import natural_image


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_tree(root: Path) -> None:
    """Two good images at two depths, a broken one, and a file that is not an image."""
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(natural_image(32, 40, 3, seed=1)).save(root / "a.png")
    Image.fromarray(natural_image(24, 32, 1, seed=2)).save(root / "sub" / "deeper" / "b.JPG")
    (root / "sub" / "broken.png").write_bytes(b"not an image at all")
    (root / "notes.txt").write_text("not an image either")


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_compress_tree_keeps_going_and_skips_up_to_date(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src)
    code, _, err = run(capsys, "compress", src, "-o", out, "-q", "30")
    assert code == 1  # the broken file failed ...
    assert files(out) == ["a.vaez", "sub/deeper/b.vaez"]  # ... the others were written
    assert "broken.png" in err and "Traceback" not in err
    assert "2 compressed, 0 skipped (up to date), 1 failed" in err and "mean" in err
    assert "1 of 3 files failed" in err
    assert formats.read_header((out / "a.vaez").read_bytes()).quality == 30
    stamps = {p: (out / p).stat().st_mtime_ns for p in files(out)}

    code, _, err = run(capsys, "compress", src, "-o", out)
    assert code == 1 and "0 compressed, 2 skipped (up to date), 1 failed" in err
    assert {p: (out / p).stat().st_mtime_ns for p in files(out)} == stamps  # untouched

    newer = (out / "a.vaez").stat().st_mtime + 10
    os.utime(src / "a.png", (newer, newer))  # the input changed after its output was written
    code, _, err = run(capsys, "compress", src, "-o", out)
    assert "1 compressed, 1 skipped (up to date)" in err
    code, _, err = run(capsys, "compress", src, "-o", out, "--force", "--quiet")
    assert code == 1 and "2 compressed" not in err and "broken.png" in err  # quiet: errors only
    assert (out / "sub/deeper/b.vaez").stat().st_mtime_ns > stamps["sub/deeper/b.vaez"]


def test_a_tree_of_failures_leaves_no_empty_folders(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "only" / "bad").mkdir(parents=True)
    (src / "only" / "bad" / "x.png").write_bytes(b"not an image")
    Image.fromarray(natural_image(24, 32, 3, seed=5)).save(src / "good.png")
    code, _, err = run(capsys, "compress", src, "-o", out, "--jobs", "1")
    assert code == 1 and "x.png" in err
    dirs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_dir())
    assert files(out) == ["good.vaez"] and dirs == []    # "only/bad" was made, then removed
    (src / "good.png").unlink()
    code, _, _ = run(capsys, "compress", src, "-o", tmp_path / "none")
    assert code == 1 and not (tmp_path / "none").exists()


def test_decompress_tree(tmp_path, capsys):
    src, packed, back = tmp_path / "src", tmp_path / "packed", tmp_path / "back"
    make_tree(src)
    run(capsys, "compress", src, "-o", packed)
    (packed / "sub" / "junk.vaez").write_bytes(b"\x89VAEZ\r\n\x1a garbage")
    code, _, err = run(capsys, "decompress", packed, "-o", back)
    assert code == 1 and "junk.vaez" in err
    assert files(back) == ["a.png", "sub/deeper/b.png"]
    with Image.open(back / "sub/deeper/b.png") as im:
        assert im.size == (32, 24) and im.mode == "L"
    assert "2 decompressed, 0 skipped (up to date), 1 failed" in err
    code, _, err = run(capsys, "decompress", packed, "-o", back)
    assert "0 decompressed, 2 skipped" in err


def test_decompress_tree_overlaps_writes_and_reports_in_order(tmp_path, capsys, monkeypatch):
    """One process: file k's PNG is written in a helper thread while file k+1 decodes. The
    lines still come in the files' order, a failure in either half is one line for its own
    file, and every other file is written, with the pixels of a one-at-a-time decode."""
    import numpy as np

    import neuralcodec

    packed, back = tmp_path / "packed", tmp_path / "back"
    packed.mkdir()
    for i in range(4):
        (packed / f"{i}.vaez").write_bytes(neuralcodec.compress(natural_image(24, 32, 3, seed=i)))
    (packed / "1.vaez").write_bytes(b"\x89VAEZ\r\n\x1a garbage")       # fails in the first half
    real = cli._store_decoded

    def store(decoded, src, dst, force):                                    # ... and 2 in the second
        if src.endswith("2.vaez"):
            raise OSError(28, "No space left on device", dst)
        return real(decoded, src, dst, force)

    monkeypatch.setattr(cli, "_store_decoded", store)
    monkeypatch.setattr(cli, "_isatty", lambda stream: False)
    code, _, err = run(capsys, "decompress", packed, "-o", back)
    assert code == 1 and files(back) == ["0.png", "3.png"]
    lines = [line for line in err.splitlines() if ".vaez" in line]
    assert [line.split(".vaez")[0][-1] for line in lines[:4]] == ["0", "1", "2", "3"]
    assert "unsupported version" in lines[1] and "no space left" in lines[2]
    for i in (0, 3):
        with Image.open(back / f"{i}.png") as im:
            expected = neuralcodec.decompress((packed / f"{i}.vaez").read_bytes())
            assert np.array_equal(np.asarray(im), np.asarray(expected))


def test_several_files_overlap_writes_and_keep_the_checks(tmp_path, capsys, monkeypatch):
    """An explicit list of files runs the same overlap: lines in order, each failure one
    line, and two inputs with the same output name are still caught (the second is refused
    once the first is written)."""
    import neuralcodec

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    names = []
    for i, folder in enumerate(("a", "a", "b", "a")):
        path = tmp_path / folder / (f"{i}.vaez" if i != 2 else "0.vaez")   # b/0 clashes with a/0
        path.write_bytes(neuralcodec.compress(natural_image(24, 32, 3, seed=i)))
        names.append(path)
    names[1].write_bytes(b"not a vaez file")
    monkeypatch.setattr(cli, "_isatty", lambda stream: False)
    out = tmp_path / "out"
    code, _, err = run(capsys, "decompress", *names, "-o", out)
    assert code == 1 and files(out) == ["0.png", "3.png"]
    lines = [line for line in err.splitlines() if ".vaez" in line and "files failed" not in line]
    assert len(lines) == 4
    assert " -> " in lines[0] and "bad magic" in lines[1] and " -> " in lines[3]
    assert "already written from" in lines[2] and "a/0.vaez" in lines[2]
    # the same file twice, spelled two ways: the second is refused even with --force
    monkeypatch.chdir(tmp_path / "a")
    code, _, err = run(capsys, "decompress", "0.vaez", "./0.vaez", "-o", out, "--force")
    assert code == 1 and "already written from 0.vaez" in err


def test_folder_usage_errors(tmp_path, capsys):
    src = tmp_path / "src"
    make_tree(src)
    for argv in (["compress", src], ["compress", src, "-o", src],
                 ["compress", src, src / "a.png", "-o", tmp_path / "o"], ["compress", src, "-o", "-"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("vaez: error: ") and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "decompress", tmp_path / "empty", "-o", tmp_path / "o")
    assert code == 0 and "no .vaez files found" in err


def test_progress_bar_shows_running_total_on_a_tty(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    make_tree(src)
    (src / "sub" / "broken.png").unlink()
    monkeypatch.setattr(cli, "_isatty", lambda stream: True)
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "out")
    assert code == 0 and "\r" in err and "] 2/2 saved " in err


def test_jobs_uses_worker_processes(tmp_path, capsys):
    src = tmp_path / "src"
    make_tree(src)
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "out", "--jobs", "2")
    assert code == 1 and "broken.png" in err
    assert files(tmp_path / "out") == ["a.vaez", "sub/deeper/b.vaez"]
