"""The bounded store ResultManagement answers from, and its handles (pure, no I/O)."""

from __future__ import annotations

import pytest

from plc.machine_vision.result_model import ResultFields, result_fields
from plc.machine_vision.results_store import Handles, ResultFilter, ResultStore
from tests.plc.peers import make_verdict


def fields(i: int, kind: str = "PASS", job: str = "job-1", recipe: str = "") -> ResultFields:
    return result_fields(make_verdict(i, kind).to_dict(), job, recipe)


def test_keeps_the_last_n_and_evicts_the_oldest() -> None:
    store = ResultStore(3)
    made = [fields(i) for i in range(5)]
    for f in made:
        store.add(f, "default")
    assert len(store) == 3 and store.evicted == 2
    assert store.get(made[0].result_id) is None and store.get(made[1].result_id) is None
    kept = store.get(made[4].result_id)
    assert kept is not None and kept.fields == made[4] and kept.configuration == "default"
    store.add(made[2], "strict")  # delivered again: kept once, as the newest, evicting nothing
    assert len(store) == 3 and store.evicted == 2
    items, complete = store.query(ResultFilter())
    assert [r.fields.result_id for r in items] == [made[2].result_id, made[4].result_id, made[3].result_id]
    assert complete and items[0].configuration == "strict"


def test_size_zero_keeps_nothing() -> None:
    store = ResultStore(0)
    f = fields(0)
    store.add(f, "default")
    assert len(store) == 0 and store.get(f.result_id) is None
    with pytest.raises(ValueError):
        ResultStore(-1)


def test_filters_and_pages_newest_first() -> None:
    store = ResultStore(100)
    made = [
        fields(i, "REJECT" if i % 3 == 0 else "PASS", job=f"job-{i // 5}", recipe="r2" if i > 7 else "")
        for i in range(10)
    ]
    for i, f in enumerate(made):
        store.add(f, "strict" if i % 2 else "default")
    rejects, complete = store.query(ResultFilter(state=2))
    assert [r.fields.part_id for r in rejects] == ["part-00009", "part-00006", "part-00003", "part-00000"]
    assert complete
    page, complete = store.query(ResultFilter(state=2), start=1, limit=2)
    assert [r.fields.part_id for r in page] == ["part-00006", "part-00003"] and not complete
    page, complete = store.query(ResultFilter(state=2), start=2, limit=2)
    assert [r.fields.part_id for r in page] == ["part-00003", "part-00000"] and complete
    assert store.query(ResultFilter(state=2), start=9)[0] == []
    assert [r.fields.part_id for r in store.query(ResultFilter(part_id="part-00004"))[0]] == ["part-00004"]
    assert [r.fields.meas_id for r in store.query(ResultFilter(meas_id="7"))[0]] == ["7"]
    assert len(store.query(ResultFilter(job_id="job-0"))[0]) == 5
    assert len(store.query(ResultFilter(recipe="default"))[0]) == 8  # no recipe on a verdict: the default
    assert len(store.query(ResultFilter(recipe="r2"))[0]) == 2
    assert len(store.query(ResultFilter(configuration="strict", state=1))[0]) == 3  # 1, 5, 7
    assert store.query(ResultFilter(config_version="v2"))[0] == []
    store.add(fields(99), "default", "v2")
    assert [r.fields.part_id for r in store.query(ResultFilter(config_version="v2"))[0]] == ["part-00099"]


def test_handles_are_nonzero_released_once_and_bounded() -> None:
    h = Handles(size=2)
    a, b, c = h.issue("list"), h.issue("result"), h.issue("result")
    assert 0 not in (a, b, c) and len({a, b, c}) == 3
    assert len(h) == 2 and not h.release(a)  # the oldest was forgotten
    assert h.release(b) and not h.release(b) and not h.release(12345)
