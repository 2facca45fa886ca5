"""Atomic files and folders: nothing half-written, stale staging cleaned, publish never leaves a gap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workbench import files


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    files.write_json_atomic(target, {"b": 1, "a": [1, 2]})
    files.write_json_atomic(target, {"b": 2})
    assert target.read_text() == '{\n  "b": 2\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.txt"
    files.write_text_atomic(target, "old")
    with pytest.raises(ValueError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        files.write_json_atomic(target, {"x": float("nan")})
    assert target.read_text() == "old"


def test_sha256_refuses_what_is_not_a_regular_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert files.sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(OSError):
        files.sha256_file(tmp_path)
    with pytest.raises(OSError):
        files.sha256_file("/dev/zero")  # would never end


def test_publish_swaps_folders_and_removes_the_old_one(tmp_path):
    target = tmp_path / "cat"
    for version in ("v1", "v2"):
        with files.staging_dir(target) as st:
            (st.path / "version").write_text(version)
            st.publish()
        assert (target / "version").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_a_failed_build_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "cat"
    target.mkdir()
    (target / "version").write_text("v1")
    with pytest.raises(RuntimeError), files.staging_dir(target) as st:
        (st.path / "version").write_text("v2")
        raise RuntimeError("build failed")
    assert (target / "version").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_fallback_publish_and_recovery_of_an_interrupted_one(tmp_path, monkeypatch):
    target = tmp_path / "cat"
    target.mkdir()
    (target / "version").write_text("v1")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    with files.staging_dir(target) as st:
        (st.path / "version").write_text("v2")
        st.publish()
    assert (target / "version").read_text() == "v2"
    # A crash between the two renames of the fallback: the target is gone, its backup remains.
    backup = tmp_path / ".cat.old-deadbeef"
    os.replace(target, backup)
    assert files.interrupted_publish(target) == backup
    restored = files.remove_stale_staging(target)
    assert restored == [backup]
    assert (target / "version").read_text() == "v2"


def test_staging_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "cat"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from workbench import files
        st = files.StagingDir(Path({str(target)!r}))
        st.create()
        (st.path / "big.bin").write_bytes(b"x" * 1000)
        print(st.path, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    staged = Path(proc.stdout.readline().strip())
    assert staged.is_dir()
    # While its writer lives, a second writer leaves it alone.
    assert files.remove_stale_staging(target) == []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with files.staging_dir(target) as st:
        st.publish()
    assert not staged.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, r"doc.json: missing; expected the test document$"),
    (lambda p: p.mkdir(), r"doc.json: a folder; expected the test document \(a JSON file\)$"),
    (lambda p: os.mkfifo(p), r"doc.json: not a regular file; expected the test document"),  # must not block
    (lambda p: p.write_text("{oops"), r"doc.json: not valid JSON \(Expecting .*\); expected the test document$"),
    (lambda p: p.write_bytes(b"\xff\xfe{}"), r"doc.json: not valid JSON \(.*utf-8.*\); expected the test document$"),
    (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), r"doc.json: not valid JSON"),
    (lambda p: p.write_text("[1, 2]"), r"doc.json: holds a JSON list; expected the test document \(a JSON object\)$"),
])
def test_read_json_object_names_the_file_and_what_was_expected(tmp_path, make, message):
    from workbench.errors import ReportError

    path = tmp_path / "doc.json"
    make(path)
    with pytest.raises(ReportError, match=message):
        files.read_json_object(path, "the test document", ReportError)


def test_read_json_object_reads_an_object(tmp_path):
    (tmp_path / "doc.json").write_text('{"a": [1, 2.5], "b": null}')
    assert files.read_json_object(tmp_path / "doc.json", "x") == {"a": [1, 2.5], "b": None}
