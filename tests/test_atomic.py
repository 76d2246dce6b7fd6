"""`atomic_file`: readers see the old file or the whole new one, and a failed write leaves no trace."""

import pytest

from buildlm.atomic import atomic_file, atomic_write_text


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "eval.json"
    atomic_write_text(path, "old\n")
    with atomic_file(path) as tmp:
        tmp.write_text("new\n", encoding="utf-8")
        assert path.read_text(encoding="utf-8") == "old\n"  # not replaced before the block ends
    assert path.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_write_text(path, "step,loss\n1,2.0\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(path) as tmp:
        tmp.write_text("step,lo", encoding="utf-8")
        raise RuntimeError("disk full")
    assert path.read_text(encoding="utf-8") == "step,loss\n1,2.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
