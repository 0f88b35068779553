"""A lane's window of pending jobs: which batch may be sent next, and nothing else.

Pure bookkeeping — no store, no client, no clock of its own — so per-key FIFO, batch pinning and
partition boundaries are decided in one place and unit-tested through these methods alone.

The window holds jobs in job-id order (Kafka order per partition). A job may start only when no
earlier job with the same ordering key is unfinished, so a failing key holds back its own later
events and nothing else. A retried batch is re-sent whole (its ``webhook-id`` must not change),
and a batch never spans two source partitions, so it moves whole when its partition moves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from relay.store.models import Job

Partition = tuple[str, int]


class Window:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._jobs: dict[int, Job] = {}
        """Jobs not in flight, in id order. In-flight jobs live apart, so choosing the next batch
        does not walk past every job already being sent (with many batches in flight that walk
        was most of the choosing)."""
        self._in_flight_jobs: dict[int, Job] = {}
        self._in_flight_keys: set[str] = set()
        self._batches = 0
        self.loaded_upto = 0
        """Highest job id read from the store or offered; the next store read starts after it."""
        self.backlog = True
        """True while the store may hold pending jobs this window has not seen."""
        self.offer_skipped = False
        """Jobs were offered while full: a store read that started earlier may have missed them."""

    # -- filling ---------------------------------------------------------------------------
    def offer(self, jobs: Iterable[Job]) -> None:
        """Freshly persisted jobs; once the window is full (or behind the store) they stay in the store."""
        for job in jobs:
            if self.backlog or self.room <= 0:
                self.backlog = True
                self.offer_skipped = True
                return
            if job.id > self.loaded_upto:
                self._jobs[job.id] = job
                self.loaded_upto = job.id

    @property
    def room(self) -> int:
        return self.capacity - len(self)

    def wants_load(self) -> bool:
        """Read the store only when it may hold more and at least half the window is free."""
        return self.backlog and self.room >= self.capacity // 2

    def begin_load(self) -> None:
        self.offer_skipped = False

    def loaded(self, jobs: list[Job], asked: int) -> None:
        """Take the answer of a store read of ``asked`` jobs after ``loaded_upto``."""
        highest_held = max(self._jobs, default=0)
        for job in jobs:
            if job.id not in self._jobs and job.id not in self._in_flight_jobs:
                self._jobs[job.id] = job
            self.loaded_upto = max(self.loaded_upto, job.id)
        # A short read means the store is drained — unless jobs were offered (and skipped) while
        # the read ran: they may be newer than its snapshot, so read again.
        if len(jobs) < asked and not self.offer_skipped:
            self.backlog = False
        if jobs and jobs[0].id < highest_held:  # a replay brought back older jobs
            self._jobs = dict(sorted(self._jobs.items()))

    def reload(self) -> None:
        """Jobs were set back to pending in the store (replay): read it again from the start."""
        self.loaded_upto = 0
        self.backlog = True

    def forget(self) -> None:
        """Ownership is changing: keep only jobs in flight; the store has the rest."""
        self._jobs = {}
        self.reload()

    def __len__(self) -> int:
        return len(self._jobs) + len(self._in_flight_jobs)

    @property
    def batches_in_flight(self) -> int:
        return self._batches

    # -- choosing --------------------------------------------------------------------------
    def next_batch(self, max_size: int, now: float,
                   owned: Collection[Partition] | None = None) -> tuple[list[Job], float | None]:
        """The next batch that may start now, and when the earliest held-back retry falls due.

        A batch pinned by an earlier attempt comes back whole and alone; otherwise jobs are taken
        in order from one source partition, skipping keys that are in flight or waiting to retry.
        """
        in_flight = self._in_flight_keys
        blocked: set[str] = set()  # keys held back in this walk (in-flight keys are not copied here)
        batch: list[Job] = []
        next_due: float | None = None
        for job in self._jobs.values():
            if owned is not None and job.source not in owned:
                continue  # its partition moved to another instance while a send was in flight
            key = job.ordering_key
            if key is not None and (key in in_flight or key in blocked):
                continue
            if job.next_attempt_at > now:
                next_due = job.next_attempt_at if next_due is None else min(next_due, job.next_attempt_at)
                if key is not None:
                    blocked.add(key)
                continue
            if job.batch_id is not None:
                if batch:
                    if key is not None:
                        blocked.add(key)
                    continue
                return [j for j in self._jobs.values() if j.batch_id == job.batch_id], None
            if batch and job.source != batch[0].source:
                if key is not None:
                    blocked.add(key)
                continue
            batch.append(job)
            if len(batch) >= max_size:
                break
        return batch, next_due

    def begin(self, batch: list[Job]) -> None:
        """The batch is being sent: its keys are held until ``end``."""
        self._batches += 1
        for job in batch:
            del self._jobs[job.id]
            self._in_flight_jobs[job.id] = job
            if job.ordering_key is not None:
                self._in_flight_keys.add(job.ordering_key)

    def end(self, batch: list[Job]) -> None:
        """The send is over: jobs not settled meanwhile (retry, hold) wait again in id order."""
        self._batches -= 1
        back: list[Job] = []
        for job in batch:
            if self._in_flight_jobs.pop(job.id, None) is not None:
                back.append(job)
            if job.ordering_key is not None:
                self._in_flight_keys.discard(job.ordering_key)
        if back:
            self._jobs.update((job.id, job) for job in back)
            self._jobs = dict(sorted(self._jobs.items()))

    def pin(self, batch: list[Job], batch_id: str) -> None:
        """The batch's composition is fixed: a retry re-sends exactly these jobs under this id."""
        for job in batch:
            job.batch_id = batch_id

    def unpin(self, batch: list[Job]) -> None:
        """The pin could not be written before the first POST: compose the batch afresh later."""
        for job in batch:
            job.batch_id = None

    def retry_at(self, batch: list[Job], when: float, attempts: int, batch_id: str) -> None:
        for job in batch:
            job.attempts = attempts
            job.batch_id = batch_id
            job.next_attempt_at = when

    def hold(self, batch: list[Job], until: float) -> None:
        """Something failed before an attempt was made: try again later, attempts unchanged."""
        for job in batch:
            job.next_attempt_at = until

    def settled(self, batch: list[Job], attempts: int) -> None:
        """Delivered or dead: the jobs leave the window."""
        for job in batch:
            job.attempts = attempts
            self._jobs.pop(job.id, None)
            self._in_flight_jobs.pop(job.id, None)
