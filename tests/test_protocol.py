import json

import pytest

from runners import protocol
from runners.protocol import EventReader, EventWriter


def test_writer_reader_roundtrip(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as w:
        w.emit("start", pid=1)
        w.emit("epoch", epoch=0, top1=12.5)
    events = EventReader(path).read_new()
    assert [e["type"] for e in events] == ["start", "epoch"]
    assert events[1]["top1"] == 12.5 and "t" in events[1]


def test_unknown_event_type_is_refused(tmp_path):
    with EventWriter(tmp_path / "e.jsonl") as w, pytest.raises(ValueError, match="unknown event type"):
        w.emit("bogus")


def test_reader_follows_by_offset_and_waits_for_partial_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read_new() == []  # no file yet
    with open(path, "wb") as f:
        f.write(b'{"t":1,"type":"start"}\n{"t":2,"type":"lo')
    assert [e["type"] for e in reader.read_new()] == ["start"]
    with open(path, "ab") as f:
        f.write(b'g","message":"hi"}\n')
    assert reader.read_new() == [{"t": 2, "type": "log", "message": "hi"}]
    assert reader.read_new() == []
    assert reader.offset == path.stat().st_size


def test_truncated_line_from_killed_writer_is_skipped_next_event_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t":1,"type":"start"}\n{"t":2,"type":"tra')  # killed mid-line
    reader = EventReader(path)
    assert [e["type"] for e in reader.read_new()] == ["start"]
    with EventWriter(path) as w:  # the resumed runner appends
        w.emit("log", message="resumed")
    events = reader.read_new()
    assert [e["type"] for e in events] == ["log"]
    assert reader.skipped == 1


def test_fragment_glued_to_an_event_keeps_the_event(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"t":1,"type":"sta{"t":2,"type":"log","message":"x"}\n')
    events = EventReader(path).read_new()
    assert events == [{"t": 2, "type": "log", "message": "x"}]


def test_malformed_lines_are_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'not json\n[1,2]\n{"t":1,"type":"heartbeat"}\n')
    reader = EventReader(path)
    assert [e["type"] for e in reader.read_new()] == ["heartbeat"]
    assert reader.skipped == 2


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "status.json"
    protocol.write_json_atomic(target, {"state": "running"})
    protocol.write_json_atomic(target, {"state": "finished"})
    assert json.loads(target.read_text()) == {"state": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
