"""Thread choice: without --threads, fpt trains on the cores other processes leave free."""

import pytest
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


def test_bf16_on_a_cpu_that_only_emulates_it_is_said_once_with_the_fix(monkeypatch, capsys, tiny_bert_dir):
    """bf16 autocast on a CPU without bf16 instructions runs many times slower than fp32: `fpt train` says so (the
    run still trains as configured) and `fpt sweep` says it once before its runs, not in each run's log alone."""
    from fpt.experiments.plan import Plan, SweepConfig
    from fpt.experiments.sweep import slow_bf16

    cpu = torch.device("cpu")
    monkeypatch.setattr(placement, "native_bf16", lambda: False)
    assert placement.check_precision("bf16", cpu)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bf16 instructions" in err and "--precision fp32 trains faster" in err
    assert not placement.check_precision("fp32", cpu) and not placement.check_precision("bf16", torch.device("cuda"))
    assert capsys.readouterr().err == ""

    sweep = SweepConfig(name="s", base={"backbone": "bert", "backbone_path": tiny_bert_dir, "precision": "bf16"},
                        tasks={"xor": {"task": "bit-xor"}}, models={"fpt": {}, "linear": {"model": "linear"}},
                        lr=[1e-3, 1e-2], seeds=[0, 1])  # fmt: skip
    slow_bf16(Plan.of(sweep).now([]))
    assert capsys.readouterr().err.count("no bf16 instructions") == 1  # 4 runs, one line
    monkeypatch.setattr(placement, "native_bf16", lambda: True)
    slow_bf16(Plan.of(sweep).now([]))
    assert not placement.check_precision("bf16", cpu) and capsys.readouterr().err == ""


def test_native_bf16_matches_the_cpus_own_flags():
    """On x86 Linux the answer is the kernel's: AVX512-BF16 or AMX-BF16 among /proc/cpuinfo's flags."""
    import platform
    from pathlib import Path

    if platform.machine() != "x86_64" or not Path("/proc/cpuinfo").is_file():
        pytest.skip("reads x86 Linux's /proc/cpuinfo")
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    assert placement.native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
