"""helpers.handin: the archive a student hands in, and the one reader the grader trusts."""
import io
import json
import stat
import zipfile

import pytest

from helpers.handin import archive
from helpers.handin.archive import HandInError, pack, unpack
from helpers.handin.pack import summary

NOTEBOOK = {"cells": [{"cell_type": "code", "source": "1", "metadata": {}, "execution_count": 1,
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def repo(tmp_path):
    """A student repository: two notebooks (one executed) and every exercise file (one still a stub)."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_one_step_denoising.ipynb").write_text(json.dumps(NOTEBOOK))
    blank = dict(NOTEBOOK, cells=[dict(NOTEBOOK["cells"][0], outputs=[], execution_count=None)])
    (root / "notebooks" / "02_time_conditioned_flow_matching.ipynb").write_text(json.dumps(blank))
    for name in archive.EXERCISE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("def f():\n    return 1\n")
    (root / "helpers" / "denoise.py").write_text(
        "def add_noise(x, sigma):\n    raise ExerciseMissing('1.1', 'z = x + sigma eps')\n")
    return root


def test_pack_then_unpack_round_trips_and_says_what_is_missing(repo, tmp_path):
    manifest = pack(repo, tmp_path / "alice.handin.zip", "course release 1", "cpu", "cpu")
    assert manifest.unexecuted == ["notebooks/02_time_conditioned_flow_matching.ipynb"]
    assert manifest.stubs == ["1.1"]
    assert summary(manifest) == ("packed anyway, but no outputs in 02_time_conditioned_flow_matching.ipynb; "
                                 "exercises still stubs: 1.1.")
    read = unpack(tmp_path / "alice.handin.zip", tmp_path / "scratch")
    assert read == manifest
    for name in manifest.files:
        assert (tmp_path / "scratch" / name).read_bytes() == (repo / name).read_bytes()


def test_a_link_in_the_repository_is_refused_when_packing(repo, tmp_path):
    target = repo / "helpers" / "samplers.py"
    target.unlink()
    target.symlink_to("/etc/passwd")
    with pytest.raises(HandInError, match=r"helpers/samplers.py is not a plain file"):
        pack(repo, tmp_path / "x.handin.zip", "r", "cpu", "cpu")


def forged(tmp_path, members, modes=None):
    """A zip written by hand, with `members` {name: bytes} and optional unix modes."""
    path = tmp_path / "forged.handin.zip"
    with zipfile.ZipFile(path, "w") as out:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            out.writestr(info, data)
    return path


def manifest_for(members):
    return archive.Manifest("r", "cpu", "cpu", files={n: archive.sha256(d) for n, d in members.items()}).to_json()


@pytest.mark.parametrize("name, sentence", [
    ("../outside.py", "not a notebook, an exercise file or the manifest"),
    ("/etc/cron.d/x", "not a notebook, an exercise file or the manifest"),
    ("helpers/../../x.py", "not a notebook, an exercise file or the manifest"),
    ("helpers/checks/__init__.py", "not a notebook, an exercise file or the manifest"),
])
def test_paths_outside_the_layout_are_refused(tmp_path, name, sentence):
    members = {name: b"x"}
    path = forged(tmp_path, {"manifest.json": manifest_for(members).encode(), **members})
    with pytest.raises(HandInError, match=sentence):
        unpack(path, tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


@pytest.mark.parametrize("mode, kind", [(stat.S_IFLNK | 0o777, "a link"), (stat.S_IFCHR | 0o666, "a device")])
def test_links_and_device_files_are_refused(tmp_path, mode, kind):
    members = {"helpers/denoise.py": b"/etc/passwd"}
    path = forged(tmp_path, {"manifest.json": manifest_for(members).encode(), **members},
                  modes={"helpers/denoise.py": mode})
    with pytest.raises(HandInError, match=kind):
        unpack(path, tmp_path / "scratch")


def test_a_zip_bomb_stops_at_the_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 2**20)
    members = {"helpers/denoise.py": b"\0" * (4 * 2**20)}     # compresses to a few KiB
    path = forged(tmp_path, {"manifest.json": manifest_for(members).encode(), **members})
    with pytest.raises(HandInError, match="size cap"):
        unpack(path, tmp_path / "scratch")


def test_an_edited_member_or_a_bad_manifest_is_named(tmp_path):
    members = {"helpers/denoise.py": b"x = 1\n"}
    path = forged(tmp_path, {"manifest.json": manifest_for(members).encode(), "helpers/denoise.py": b"x = 2\n"})
    with pytest.raises(HandInError, match="does not match the hash"):
        unpack(path, tmp_path / "a")
    path = forged(tmp_path, {"manifest.json": b"{not json", **members})
    with pytest.raises(HandInError, match="not JSON"):
        unpack(path, tmp_path / "b")
    path = forged(tmp_path, {"manifest.json": json.dumps({"format": "other"}).encode(), **members})
    with pytest.raises(HandInError, match="is not a diffusion-workbook-handin"):
        unpack(path, tmp_path / "c")


def test_not_a_zip_too_many_members_and_duplicates(tmp_path, monkeypatch):
    (tmp_path / "x.handin.zip").write_bytes(b"plain text")
    with pytest.raises(HandInError, match="is not a zip archive"):
        unpack(tmp_path / "x.handin.zip", tmp_path / "a")
    monkeypatch.setattr(archive, "MAX_MEMBERS", 2)
    members = {f"notebooks/0{i}_n.ipynb": b"{}" for i in range(3)}
    with pytest.raises(HandInError, match="more than the 2"):
        unpack(forged(tmp_path, {"manifest.json": manifest_for(members).encode(), **members}), tmp_path / "b")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out, pytest.warns(UserWarning):
        out.writestr("helpers/denoise.py", b"a")
        out.writestr("helpers/denoise.py", b"b")
    (tmp_path / "dup.handin.zip").write_bytes(buffer.getvalue())
    with pytest.raises(HandInError, match="twice"):
        unpack(tmp_path / "dup.handin.zip", tmp_path / "c")


def test_on_colab_the_running_notebook_is_packed_with_its_outputs(repo, tmp_path, monkeypatch):
    """Colab runs a badge's notebook from the browser: hand_in asks the front end for it and packs that."""
    import sys
    import types

    from helpers.handin.pack import hand_in
    running = dict(NOTEBOOK, cells=[{"cell_type": "markdown", "source": "# 02 · Time-conditioned", "metadata": {}},
                                    *NOTEBOOK["cells"]])
    colab = types.ModuleType("google.colab")
    colab._message = types.SimpleNamespace(blocking_request=lambda kind, timeout_sec: {"ipynb": running})
    downloads = []
    colab.files = types.SimpleNamespace(download=downloads.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab._message", colab._message)
    monkeypatch.setitem(sys.modules, "google.colab.files", colab.files)
    path = hand_in("bo", root=repo, out=tmp_path)
    manifest = unpack(path, tmp_path / "scratch")
    assert manifest.unexecuted == [] and downloads == [str(path)]
    assert json.loads((tmp_path / "scratch" / "notebooks" / "02_time_conditioned_flow_matching.ipynb").read_text()) == running
