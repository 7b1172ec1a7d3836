"""With bars off, progress_bar prints a line at most every LINE_INTERVAL_S seconds and at the end
of long work; short work prints nothing."""

import pytest

from bioreps import _progress
from bioreps._progress import progress_bar


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(_progress.time, "monotonic", c)
    return c


def test_lines_are_rate_limited_and_one_comes_at_the_end(clock, capsys):
    out = []
    for epoch in progress_bar(range(500), progress=False, desc="readout", unit="epoch"):
        clock.t += 0.125                             # 62.5 s in all
        out.append(epoch)
    assert out == list(range(500))
    assert capsys.readouterr().err.splitlines() == [
        "readout: 240/500 epochs, 30.0 s elapsed",
        "readout: 480/500 epochs, 60.0 s elapsed",
        "readout: 500/500 epochs, 62.5 s elapsed",   # the end
    ]


def test_manual_updates_postfix_and_env_switch(clock, capsys, monkeypatch):
    monkeypatch.setenv("BIOREPS_PROGRESS", "0")
    with progress_bar(total=10, desc="fit", unit="sample") as bar:
        for i in range(10):
            clock.t += 7.0
            bar.update(1)
            bar.set_postfix(loss=0.25)
    assert bar.n == 10
    assert capsys.readouterr().err.splitlines() == [
        "fit: 5/10 samples, 35.0 s elapsed (loss=0.25)",
        "fit: 10/10 samples, 70.0 s elapsed (loss=0.25)",   # at the last update; the end adds no copy
    ]


def test_short_work_prints_nothing(clock, capsys):
    bar = progress_bar(total=3, progress=False, desc="quick")
    for _ in range(3):
        clock.t += 1.0
        bar.update()
    bar.close()
    bar.close()
    assert capsys.readouterr().err == ""


def test_bars_on_are_tqdm(clock):
    from tqdm.auto import tqdm

    bar = progress_bar(total=3, progress=True)
    bar.close()
    assert isinstance(bar, tqdm)
