"""The export table's reopen semantics: generations go up on every reopen, and a copy of
the table (a worker's) follows them with ``sync``, reopening exactly what changed."""

from __future__ import annotations

import pickle

import pytest

from acmenfs.nfs3.exports import ClientRule, Export, ExportTable


def recording(table: ExportTable) -> list[tuple[str, str, int]]:
    events: list[tuple[str, str, int]] = []
    table.subscribe(lambda event, export: events.append((event, export.path, export.generation)))
    return events


def test_a_new_export_keeps_its_generation_and_a_replacement_is_a_reopen():
    table = ExportTable()
    events = recording(table)
    assert table.add(Export("/a", "/tmp")).generation == 0
    stored = table.add(Export("/a", "/tmp"))          # equal, re-published: still a reopen
    assert stored.generation == 1 and table.get("/a") is stored
    assert table.add(Export("/a", "/tmp", quota_bytes=10)).generation == 2
    assert events == [("add", "/a", 0), ("add", "/a", 1), ("add", "/a", 2)]
    assert table.by_id(stored.export_id).generation == 2


def test_reopen_bumps_the_generation_of_the_same_export_only():
    table = ExportTable([Export("/a", "/tmp", quota_bytes=5), Export("/b", "/tmp")])
    events = recording(table)
    reopened = table.reopen("/a")
    assert reopened == Export("/a", "/tmp", quota_bytes=5, generation=1)
    assert table.get("/b").generation == 0
    assert events == [("add", "/a", 1)]
    with pytest.raises(KeyError, match="/nowhere"):
        table.reopen("/nowhere")
    assert events == [("add", "/a", 1)]


def test_generations_are_part_of_equality_and_must_be_non_negative_integers():
    assert Export("/a", "/tmp") != Export("/a", "/tmp", generation=1)
    for bad in (-1, "1", 1.5):
        with pytest.raises(ValueError, match="generation"):
            Export("/a", "/tmp", generation=bad)


def test_a_copy_reopens_whatever_export_got_a_new_generation_and_nothing_else():
    source = ExportTable([Export("/a", "/tmp"), Export("/b", "/tmp"), Export("/c", "/tmp")])
    copy = ExportTable(pickle.loads(pickle.dumps(source.list())))  # as a worker receives it
    events = recording(copy)
    copy.sync(pickle.loads(pickle.dumps(source.list())))
    assert events == []                                  # nothing changed: no rescans
    source.reopen("/a")                                  # e.g. a revert of share /a
    source.add(Export("/b", "/tmp", rules=(ClientRule("10.0.0.0/8"),)))
    source.remove("/c")
    copy.sync(pickle.loads(pickle.dumps(source.list())))
    assert sorted(events) == [("add", "/a", 1), ("add", "/b", 1), ("remove", "/c", 0)]
    assert copy.list() == source.list()
    copy.sync(source.list())                             # applied twice: still nothing new
    assert len(events) == 3


def test_a_higher_generation_given_to_add_is_kept_and_clashes_leave_the_table_alone():
    table = ExportTable([Export("/a", "/tmp")])
    assert table.add(Export("/a", "/tmp", generation=7)).generation == 7
    with pytest.raises(ValueError, match="clash"):
        table.add(Export("/b", "/tmp", export_id=table.get("/a").export_id))
    assert [export.path for export in table.list()] == ["/a"]
    assert table.by_id(table.get("/a").export_id).path == "/a"
