"""Result files are replaced whole or not at all."""

from __future__ import annotations

import json

import pytest

from cogip.files import write_json_atomic, write_text_atomic


def test_atomic_writes_replace_the_file_and_leave_nothing_beside_it(tmp_path):
    path = tmp_path / "deep" / "metrics.json"
    write_json_atomic(path, {"srcc": 0.5})
    write_json_atomic(path, {"srcc": 0.7})
    assert json.loads(path.read_text()) == {"srcc": 0.7}
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "x\ud800")  # a write that fails part-way keeps the last whole file
    assert json.loads(path.read_text()) == {"srcc": 0.7}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
