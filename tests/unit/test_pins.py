"""A pin's job ids survive their packing, whatever they are, and a job takes the right pin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.store.models import Job
from relay.store.pins import pack_job_ids, restore_pins, unpack_job_ids

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.lists(INT64, max_size=2000))
def test_job_ids_survive_packing(ids: list[int]) -> None:
    packed = pack_job_ids(ids)
    assert len(packed) == 8 * len(ids)
    assert unpack_job_ids(packed) == ids


def test_an_id_no_store_holds_cannot_be_packed() -> None:
    with pytest.raises(OverflowError):
        pack_job_ids([1, 2**70])


def _job(job_id: int, attempts: int = 0, batch_id: str | None = None) -> Job:
    return Job(job_id, f"evt_{job_id}", "cb", None, b"", 0.0, attempts=attempts, batch_id=batch_id)


def test_only_jobs_never_attempted_and_unpinned_take_a_pin_and_the_last_pin_wins() -> None:
    jobs = [_job(1), _job(2), _job(3, attempts=1, batch_id="msg_answered"), _job(4, batch_id="msg_own"), _job(5)]
    pins = [("msg_old", pack_job_ids([1, 2])), ("msg_new", pack_job_ids([2, 3, 4])),
            ("msg_other", pack_job_ids([6, 7]))]
    restore_pins(jobs, lambda low, high: pins)
    assert [job.batch_id for job in jobs] == ["msg_old", "msg_new", "msg_answered", "msg_own", None]
