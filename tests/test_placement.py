"""Thread choice: without --threads, fpt trains on the cores other processes leave free."""

import torch

from fpt import placement


def fake_machine(monkeypatch, cores: int, busy: float) -> None:
    """A machine of `cores` cores, `busy` of them kept busy by other processes (/proc/stat ticks)."""
    ticks = iter([[0] * 8, [int(100 * busy), 0, 0, int(100 * (cores - busy)), 0, 0, 0, 0]])
    monkeypatch.setattr(placement, "cpu_ticks", lambda: next(ticks))
    monkeypatch.setattr(placement, "available_cores", lambda: cores)
    monkeypatch.setattr(placement.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(placement, "LOOK_SECONDS", 0.0)


def test_threads_follow_the_free_cores_and_say_why(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        fake_machine(monkeypatch, cores=2, busy=1.0)  # another one-thread job on a 2-core machine
        assert placement.set_threads(None) == 1 and torch.get_num_threads() == 1
        assert "1 of 2 cores are busy with other work; training on 1 thread (--threads N to choose)" in (
            capsys.readouterr().err
        )
        fake_machine(monkeypatch, cores=4, busy=0.1)  # an idle machine: every core, nothing said
        assert placement.set_threads(None) == 4
        assert capsys.readouterr().err == ""
        fake_machine(monkeypatch, cores=2, busy=2.0)  # fully busy: still one thread
        assert placement.set_threads(None) == 1
        assert placement.set_threads(2) == 2 and torch.get_num_threads() == 2  # --threads is obeyed as given
    finally:
        torch.set_num_threads(before)


def test_free_cores_reads_the_machine():
    assert 1 <= placement.free_cores(0.05) <= placement.available_cores()
