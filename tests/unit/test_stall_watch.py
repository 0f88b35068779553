from relay.stall import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_never_stalls_however_long_since_the_last_commit() -> None:
    clock = Clock()
    watch = StallWatch(60, clock)
    clock.now += 3600
    assert watch.observe(behind=False) is None
    assert not watch.stalled


def test_behind_without_commit_stalls_once_then_resumes_on_commit() -> None:
    clock = Clock()
    watch = StallWatch(60, clock)
    clock.now += 3600  # idle for an hour: the clock starts when work appears
    assert watch.observe(behind=True) is None
    clock.now += 59
    assert watch.observe(behind=True) is None
    clock.now += 2
    assert watch.observe(behind=True) == "stalled"
    assert watch.stalled and watch.stalled_since == 1000.0 + 3600
    clock.now += 30
    assert watch.observe(behind=True) is None  # said once
    watch.committed()
    assert watch.observe(behind=True) == "resumed"
    assert not watch.stalled


def test_commits_that_keep_coming_are_no_stall_even_with_lag() -> None:
    clock = Clock()
    watch = StallWatch(10, clock)
    for _ in range(100):
        clock.now += 5
        watch.committed()
        assert watch.observe(behind=True) is None


def test_a_stall_ends_when_there_is_nothing_left_to_read() -> None:
    clock = Clock()
    watch = StallWatch(10, clock)
    watch.observe(behind=True)
    clock.now += 11
    assert watch.observe(behind=True) == "stalled"
    assert watch.observe(behind=False) == "resumed"
