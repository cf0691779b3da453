"""The pure parts of benchmarks.filtering: CPU ticks from /proc, rspamd's counters and log."""

from __future__ import annotations

from pathlib import Path

from benchmarks import filtering


def stat_line(pid: int, comm: str, utime: int, stime: int, cutime: int, cstime: int) -> str:
    # Fields 3-13 (state .. cmajflt), then utime stime cutime cstime, then the rest.
    head = f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0"
    return f"{head} {utime} {stime} {cutime} {cstime} 20 0 1 0 100 1000 50\n"


def test_stat_ticks_sums_own_and_reaped_children_time() -> None:
    assert filtering.stat_ticks(stat_line(7, "rspamd", 10, 5, 3, 2)) == 20


def test_stat_ticks_survives_spaces_and_parentheses_in_the_name() -> None:
    assert filtering.stat_ticks(stat_line(7, "rspamd: (proxy) worker", 1, 2, 3, 4)) == 10


def fake_proc(tmp_path: Path, procs: dict[int, tuple[str, list[int]]]) -> Path:
    """/proc-like tree: pid -> (stat line, children), children listed on one thread."""
    for pid, (stat, children) in procs.items():
        task = tmp_path / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        (tmp_path / str(pid) / "stat").write_text(stat)
        (task / "children").write_text(" ".join(map(str, children)) + (" " if children else ""))
    return tmp_path


def test_cpu_ticks_counts_the_whole_tree_once(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            1: (stat_line(1, "rspamd: main", 1, 1, 100, 0), [2, 3]),  # 100: reaped workers
            2: (stat_line(2, "rspamd: proxy", 20, 10, 0, 0), [4]),
            3: (stat_line(3, "rspamd: controller", 2, 2, 0, 0), []),
            4: (stat_line(4, "helper", 5, 0, 0, 0), []),
            9: (stat_line(9, "unrelated", 999, 0, 0, 0), []),
        },
    )
    assert sorted(filtering.tree(1, proc)) == [1, 2, 3, 4]
    assert filtering.cpu_ticks(1, proc) == 2 + 100 + 30 + 4 + 5


def test_cpu_ticks_skips_a_process_that_ended(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {1: (stat_line(1, "clamd", 4, 4, 0, 0), [5])})
    assert filtering.cpu_ticks(1, proc) == 8


def test_counted_keeps_only_changes() -> None:
    before = {"scanned": 10, "no action": 10, "reject": 1}
    after = {"scanned": 70, "no action": 70, "reject": 1, "add header": 0}
    assert filtering.counted(before, after) == {"scanned": 60, "no action": 60}
    assert filtering.counted(after, after) == {}


def test_verdict_counts_reads_rspamds_task_lines() -> None:
    log = "\n".join(
        [
            "2026-12-03 #1(rspamd_proxy) <a>; proxy; rspamd_task_write_log: id: <1>, (F no action):"
            " [0.1/15.00] [R_SPF_ALLOW(-0.20),DMARC_POLICY_ALLOW(-0.50)], len: 3981",
            "2026-12-03 #1(rspamd_proxy) <b>; proxy; rspamd_task_write_log: id: <2>, (F no action):"
            " [1.5/15.00] [R_SPF_NA(0.00),DMARC_NA(0.00)], len: 3981",
            "2026-12-03 #1(rspamd_proxy) <b>; proxy; rspamd_spf_maybe_return: R_SPF_ALLOW(",
        ]
    )
    assert filtering.verdict_counts(log) == {"messages": 2, "SPF pass": 1, "DMARC pass": 1}


def test_machine_ticks_counts_busy_time_of_all_cpus() -> None:
    stat = "cpu  100 20 30 5000 40 1 2 3 7 0\ncpu0 50 10 15 2500 20 1 1 2 4 0\n"
    assert filtering.machine_ticks(stat) == 100 + 20 + 30 + 1 + 2 + 3
