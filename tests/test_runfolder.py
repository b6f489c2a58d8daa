"""The one run-folder helper: fingerprint and overwrite rule, input overlap, lock (live and
stale), journal with torn-line replay, atomic artefacts, staging leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from defectforge.errors import ConfigError, InputError
from defectforge.runfolder import Journal, RunFolder, check_no_overlap, fingerprint, remove_leftovers, write_artifact

CFG = {"seed": 0, "n": 3, "nested": {"a": [1, 2]}}


def _open(path, cfg=CFG, **kw):
    kw.setdefault("outputs", ["images", "manifest.csv"])
    return RunFolder.open(path, job="test", config=cfg, **kw)


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_same_config_resumes_other_config_refused_overwrite_clears_only_outputs(tmp_path):
    out = tmp_path / "run"
    with _open(out) as rf:
        assert not rf.resumed
        rf.write_artifact("images/a.png", b"png")
        rf.write_artifact("manifest.csv", "file\n")
    (out / "notes.txt").write_text("mine")  # the user's file, not an output of the run
    with _open(out) as rf:
        assert rf.resumed
    with pytest.raises(ConfigError, match="different config"):
        _open(out, {**CFG, "seed": 1})
    assert (out / "images" / "a.png").read_bytes() == b"png"
    with _open(out, {**CFG, "seed": 1}, overwrite=True) as rf:
        assert not rf.resumed
    assert not (out / "images").exists() and not (out / "manifest.csv").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_foreign_non_empty_folder_is_refused_and_overwrite_keeps_what_is_not_ours(tmp_path):
    out = tmp_path / "data"
    (out / "images").mkdir(parents=True)
    (out / "images" / "x.png").write_bytes(b"x")
    (out / "other.csv").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        _open(out)
    assert (out / "images" / "x.png").exists() and not (out / ".run").exists()
    _open(out, overwrite=True).close()
    assert not (out / "images").exists() and (out / "other.csv").read_text() == "keep"


def test_check_failure_removes_nothing(tmp_path):
    out = tmp_path / "run"
    with _open(out) as rf:
        rf.write_artifact("images/a.png", b"png")

    def bad():
        raise InputError("src", "unreadable")

    with pytest.raises(InputError, match="unreadable"):
        _open(out, {**CFG, "seed": 9}, overwrite=True, check=bad)
    assert (out / "images" / "a.png").exists()
    _open(out).close()  # the lock was released


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_output_overlapping_an_input_is_refused_and_input_untouched(tmp_path, where):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(b"a")
    out = {"same": data, "inside": data / "out", "contains": tmp_path}[where]
    with pytest.raises(InputError, match="overlaps the input"):
        _open(out, inputs=[data], overwrite=True)
    assert (data / "images" / "a.png").read_bytes() == b"a"
    assert sorted(p.name for p in data.iterdir()) == ["images"]
    with pytest.raises(InputError, match="overlaps"):
        check_no_overlap(tmp_path, [data / "images" / "a.png"])  # a file input inside the output
    check_no_overlap(tmp_path / "elsewhere", [data, None, ""])


_HOLDER = textwrap.dedent("""
    import os, sys, time
    from defectforge.runfolder import RunFolder
    rf = RunFolder.open(sys.argv[1], job="test", config={"seed": 0, "n": 3, "nested": {"a": [1, 2]}},
                        outputs=["images", "manifest.csv"])
    print("locked", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), 9)
    time.sleep(60)
""")


def _holder(out, mode):
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), mode], stdout=subprocess.PIPE, text=True,
                         env={**os.environ})
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "run"
    p = _holder(out, "hold")
    try:
        with pytest.raises(InputError, match=f"in use by another run \\(pid {p.pid}\\)") as ei:
            _open(out)
        assert "\n" not in str(ei.value)
    finally:
        p.kill()
        p.wait()
    _open(out).close()  # its lock died with it


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    p = _holder(out, "die")
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert (out / ".run" / "lock").read_text().strip() == str(p.pid)  # left behind
    with _open(out) as rf:
        assert rf.resumed and (out / ".run" / "lock").read_text().strip() == str(os.getpid())
    assert not (out / ".run" / "lock").exists()


def test_same_process_cannot_open_the_folder_twice(tmp_path):
    rf = _open(tmp_path / "run")
    try:
        with pytest.raises(InputError, match="in use"):
            _open(tmp_path / "run")
    finally:
        rf.close()


def test_journal_appends_replays_and_drops_a_torn_last_line(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    for i in range(3):
        j.append({"index": i, "status": "ok" if i != 1 else "failed"})
    j.close()
    with open(tmp_path / "j.jsonl", "a") as fh:
        fh.write('{"index": 3, "sta')  # a crash in the middle of a line
    assert [r["index"] for r in j.records()] == [0, 1, 2]
    assert (tmp_path / "j.jsonl").read_text().endswith('"status":"ok"}\n')  # torn tail cut off
    done = j.done_ids("index", valid=lambda r: r["status"] == "ok")
    assert sorted(done) == [0, 2]
    j.append({"index": 3, "status": "ok"})
    assert sorted(j.done_ids("index")) == [0, 1, 2, 3]
    j.rewrite([{"index": 0}])
    assert j.records() == [{"index": 0}]
    j.close()


def test_garbage_in_the_middle_ends_the_replay(tmp_path):
    (tmp_path / "j.jsonl").write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    assert Journal(tmp_path / "j.jsonl").done_ids() == {1: {"id": 1}}


def test_artifacts_are_atomic_and_leftovers_are_removed_on_reopen(tmp_path):
    out = tmp_path / "run"
    with _open(out) as rf:
        rf.write_artifact("images/a.png", b"abc")
        rf.write_artifact("manifest.csv", "x\n")
        rf.write_artifact("images/b.txt", lambda fh: fh.write("func"), mode="w")
        with pytest.raises(RuntimeError):
            rf.write_artifact("images/c.png", lambda fh: (fh.write(b"half"), (_ for _ in ()).throw(RuntimeError())))
    assert (out / "images" / "b.txt").read_text() == "func" and not (out / "images" / "c.png").exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.txt"]
    # what a SIGKILL in the middle of writes leaves behind
    (out / "images" / ".a.png.x1y2.tmp").write_bytes(b"ha")
    (out / "export" / ".mvtec.abc.tmp" / "images").mkdir(parents=True)
    (out / "export" / ".mvtec.def.old").mkdir()
    with _open(out):
        pass
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.txt"]
    assert list((out / "export").iterdir()) == []
    assert remove_leftovers(out) == 0


def test_write_artifact_without_a_run_folder(tmp_path):
    write_artifact(tmp_path / "w" / "x.bin", b"\x00\x01")
    assert (tmp_path / "w" / "x.bin").read_bytes() == b"\x00\x01"
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["x.bin"]


def test_run_json_is_deterministic(tmp_path):
    for d in ("a", "b"):
        _open(tmp_path / d).close()
        time.sleep(0.01)
    assert (tmp_path / "a" / ".run" / "run.json").read_bytes() == (tmp_path / "b" / ".run" / "run.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / ".run").iterdir()) == ["run.json"]
