"""What filtering costs delivery: `.venv/bin/python -m benchmarks.filtering [--quick]`.

One stack (`ddmail stack up`, with Redis, clamd and rspamd). Port 25 delivery with filtering ON
(as the stack runs: rspamd's milter, which asks clamd) against OFF (the same running stack with
Postfix's `smtpd_milters` emptied and Postfix reloaded; restored and checked afterwards), the
modes alternating round by round:

1. Throughput: benchmarks.mail's messages over 1 and 4 SMTP connections until all are stored.
2. Latency: one message at a time over one connection, from `DATA` sent to its `250`, and on
   until the file is in the maildir.
3. CPU per message of rspamd (its main process and workers) and clamd, from /proc over the ON
   runs (and, for comparison, their idle CPU over the OFF runs).

rspamd's own counters (controller `stat`) check each run: every ON message scanned with "no
action", no OFF message scanned. Loopback only; the stack runs under /tmp/ddb-* and is stopped
and removed. Prints a table and rewrites the "filtering" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from benchmarks import mail, report, stacks
from ddmail_stack import mta
from tests.authdns import AuthDns

PORT_BASE = 43000
THROUGHPUT_RATIO_TARGET = 0.7  # filtering costs at most 30 % of plain delivery throughput
LATENCY_P50_TARGET = 0.050  # filtering adds at most 50 ms p50 per message
MODES = ("on", "off")
SECTION = "filtering"
STORE_TIMEOUT = 60.0
COST = f"{1 - THROUGHPUT_RATIO_TARGET:.0%} of the throughput"
HEADER = ("measure", "filtering on", "filtering off", "target", "verdict")


@dataclass(frozen=True)
class Sizes:
    messages: int  # per throughput run
    rounds: int  # ON/OFF pairs of runs (medians reported)
    latency: int  # single messages per mode and round


FULL = Sizes(messages=300, rounds=3, latency=40)
QUICK = Sizes(messages=60, rounds=1, latency=15)


# --- CPU from /proc -----------------------------------------------------------------------


def stat_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime from the text of /proc/<pid>/stat. The command name (field
    2) is in parentheses and may hold spaces and parentheses: fields count from its last ')'."""
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
    return sum(int(fields[i]) for i in range(11, 15))


def tree(pid: int, proc: Path = Path("/proc")) -> Iterator[int]:
    """PID and its descendants (every thread's children file)."""
    yield pid
    for children in (proc / str(pid) / "task").glob("*/children"):
        try:
            kids = children.read_text().split()
        except OSError:  # the thread or process just ended
            continue
        for kid in kids:
            yield from tree(int(kid), proc)


def cpu_ticks(pid: int, proc: Path = Path("/proc")) -> int:
    """CPU clock ticks of PID's tree so far. Each live process counts its own time and that of
    the children it reaped (cutime/cstime), so a worker that ended in between still counts."""
    total = 0
    for member in set(tree(pid, proc)):
        try:
            total += stat_ticks((proc / str(member) / "stat").read_text())
        except (OSError, ValueError):
            continue
    return total


# The stack's pid files: rspamd's main process, clamd, Redis (rspamd's store), Postfix's master
# (which reaps smtpd, cleanup, qmgr, lmtp, ...: their time ends up in its cutime/cstime).
PID_FILES = {
    "rspamd": "run/rspamd.pid",
    "clamd": "run/clamd.pid",
    "Redis": "run/redis.pid",
    "Postfix": "spool/postfix/pid/master.pid",
}
MACHINE = "machine"  # every process: /proc/stat's busy time over both cores


def daemon_pid(stack: stacks.Stack, name: str) -> int:
    return int((stack.root / PID_FILES[name]).read_text().split()[0])


def machine_ticks(stat: str) -> int:
    """Busy clock ticks of all CPUs from /proc/stat: user, nice, system, irq, softirq, steal
    (not idle and iowait; guest time is already in user)."""
    fields = stat.splitlines()[0].split()
    assert fields[0] == "cpu"
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8))


def all_ticks(pids: dict[str, int]) -> Cpu:
    ticks = {name: cpu_ticks(pid) for name, pid in pids.items()}
    ticks[MACHINE] = machine_ticks(Path("/proc/stat").read_text())
    return ticks


# --- the sender's DNS ----------------------------------------------------------------------

SENDER_DOMAIN = mail.SENDER.split("@")[1]
# The benchmark's sender passes SPF from loopback, and DMARC with it (aligned, p=none).
SENDER_ZONE = '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n_dmarc IN TXT "v=DMARC1; p=none"\n'
HYPERSCAN_TIMEOUT = 240.0


def wait_for_hyperscan(stack: stacks.Stack) -> None:
    """rspamd compiles its regular expressions for a while after start (~40 s here); measure
    only once its proxy worker has loaded them."""
    log = stack.layout.log_dir / "rspamd.log"
    deadline = time.monotonic() + HYPERSCAN_TIMEOUT
    while not any(
        "rspamd_proxy" in line and "hyperscan database" in line and "loaded" in line
        for line in log.read_text(errors="replace").splitlines()
    ):
        if time.monotonic() > deadline:
            print(f"warning: rspamd's proxy has not loaded hyperscan in {HYPERSCAN_TIMEOUT} s")
            return
        time.sleep(0.5)


# --- the switch ----------------------------------------------------------------------------


def postconf(stack: stacks.Stack, *args: str) -> str:
    done = subprocess.run(
        ["postconf", "-c", str(stack.layout.postfix_dir), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def set_milters(stack: stacks.Stack, value: str) -> None:
    """Port 25's smtpd_milters = VALUE, Postfix reloaded. Idle smtpd processes of the old
    configuration exit after the reload; the rspamd counters of every run catch any leftover."""
    postconf(stack, "-e", f"smtpd_milters={value}")
    mta.postfix_reload(stack.layout)
    if postconf(stack, "-h", "smtpd_milters") != value:
        raise RuntimeError(f"smtpd_milters is not {value!r} after postconf -e")
    time.sleep(1.0)


def rspamd_counts(stack: stacks.Stack) -> dict[str, int]:
    """rspamd's counters (controller socket): messages scanned and per action."""
    done = subprocess.run(
        ["rspamc", "-h", str(stack.layout.rspamd_controller_socket), "-j", "stat"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    data = json.loads(done.stdout)
    counts = {"scanned": int(data["scanned"])}
    counts.update({k: int(v) for k, v in data.get("actions", {}).items()})
    return counts


def counted(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What changed between two rspamd_counts, without zero entries."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


# --- measuring -----------------------------------------------------------------------------

Cpu = dict[str, int]  # clock ticks by daemon (and MACHINE)
FILTERS = ("rspamd", "clamd", "Redis")
CPU_KEYS = (*PID_FILES, MACHINE)
T = TypeVar("T")


@dataclass
class Tally:
    """One mode's runs: deliveries by connections, latencies, CPU ticks and messages."""

    runs: dict[int, list[mail.Delivery]] = field(default_factory=dict)
    data: list[float] = field(default_factory=list)  # DATA sent to its 250
    stored: list[float] = field(default_factory=list)  # DATA sent to the file in the maildir
    ticks: Cpu = field(default_factory=lambda: dict.fromkeys(CPU_KEYS, 0))
    messages: int = 0
    seconds: float = 0.0

    def add(self, cpu: Cpu, messages: int, seconds: float) -> None:
        for name, ticks in cpu.items():
            self.ticks[name] += ticks
        self.messages += messages
        self.seconds += seconds


def single_messages(stack: stacks.Stack, count: int) -> tuple[list[float], list[float]]:
    """COUNT messages over one SMTP session, one at a time: each timed from sending DATA to its
    250, and to its file in the maildir (the next goes once it is stored)."""
    address, _ = stack.new_mailbox()
    data: list[float] = []
    stored: list[float] = []
    with smtplib.SMTP("127.0.0.1", stack.layout.smtp_port, timeout=60) as smtp:
        smtp.ehlo("bench.example.org")
        for i in range(count):
            before = len(stack.stored(address))
            for code, answer in (smtp.mail(mail.SENDER), smtp.rcpt(address)):
                if code != 250:
                    raise RuntimeError(f"message {i}: {code} {answer!r}")
            start = time.perf_counter()
            code, answer = smtp.data(mail.message(i, address))
            data.append(time.perf_counter() - start)
            if code != 250:
                raise RuntimeError(f"message {i}: DATA answered {code} {answer!r}")
            while len(stack.stored(address)) == before:
                if time.perf_counter() - start > STORE_TIMEOUT:
                    raise RuntimeError(f"message {i} not stored in {STORE_TIMEOUT} s")
                time.sleep(0.002)
            stored.append(time.perf_counter() - start)
    return data, stored


def measured(
    stack: stacks.Stack, mode: str, tally: Tally, messages: int, run: Callable[[], T]
) -> T:
    """RUN (MESSAGES messages), its CPU added to TALLY, with rspamd's counters checked around
    it: with filtering on each message scanned once with "no action", with it off none."""
    pids = {name: daemon_pid(stack, name) for name in PID_FILES}
    counts = rspamd_counts(stack)
    ticks = all_ticks(pids)
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    after = all_ticks(pids)
    tally.add({name: after[name] - ticks[name] for name in ticks}, messages, seconds)
    seen = counted(counts, rspamd_counts(stack))
    expected = {"scanned": messages, "no action": messages} if mode == "on" else {}
    if seen != expected:
        raise RuntimeError(f"filtering {mode}: rspamd counted {seen}, expected {expected}")
    return result


def rounds(stack: stacks.Stack, sizes: Sizes, original: str) -> dict[str, Tally]:
    """Round by round, ON and OFF (the order swaps each round), each after the switch and a
    10-message warm-up: throughput over 1 and 4 connections, then single-message latency."""
    tallies = {mode: Tally() for mode in MODES}
    for k in range(sizes.rounds):
        for mode in MODES if k % 2 == 0 else MODES[::-1]:
            set_milters(stack, original if mode == "on" else "")
            tally = tallies[mode]
            measured(stack, mode, Tally(), 10, lambda: mail.deliver(stack, 10, 1))  # warm-up
            for n in report.SMTP_CONNECTIONS:
                run = measured(
                    stack,
                    mode,
                    tally,
                    sizes.messages,
                    lambda n=n: mail.deliver(stack, sizes.messages, n),  # type: ignore[misc]
                )
                tally.runs.setdefault(n, []).append(run)
                rate = run.messages / run.stored_s
                print(f"  filtering {mode:3} {n} SMTP conn. {rate:6.1f} msg/s stored", flush=True)
            data, stored = measured(
                stack, mode, tally, sizes.latency, lambda: single_messages(stack, sizes.latency)
            )
            tally.data += data
            tally.stored += stored
            print(
                f"  filtering {mode:3} p50 DATA to 250 {report.ms(statistics.median(data))}, "
                f"to stored {report.ms(statistics.median(stored))}",
                flush=True,
            )
    return tallies


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    quick: bool
    load_before: float
    load_after: float
    busy: list[str]  # other benchmark-disturbing processes seen when the run started
    sizes: dict[str, int]
    rates: dict[str, dict[int, report.Rate]]  # by mode, then SMTP connections
    data: dict[str, tuple[float, float]]  # p50, p90 by mode
    stored: dict[str, tuple[float, float]]
    cpu_ms: dict[str, dict[str, float]]  # CPU ms per message by mode, then daemon
    restored: str  # smtpd_milters after the run, the stack root as <root>
    verdicts: dict[str, int]  # rspamd's task log lines over the runs: all, SPF pass, DMARC pass

    def ratio(self, connections: int) -> float:
        return self.rates["on"][connections].stored / self.rates["off"][connections].stored

    def data_delta(self) -> float:
        return self.data["on"][0] - self.data["off"][0]


def checks(r: Results) -> dict[str, bool]:
    return {
        "throughput": all(r.ratio(n) >= THROUGHPUT_RATIO_TARGET for n in report.SMTP_CONNECTIONS),
        "latency": r.data_delta() <= LATENCY_P50_TARGET,
    }


def verdict(r: Results) -> str:
    failed = [name for name, ok in checks(r).items() if not ok]
    return "both targets met" if not failed else "MISSED: " + ", ".join(failed)


def _ok(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def rows(r: Results) -> list[tuple[str, str, str, str, str]]:
    out: list[tuple[str, str, str, str, str]] = []
    for n in report.SMTP_CONNECTIONS:
        ratio = r.ratio(n)
        ok = ratio >= THROUGHPUT_RATIO_TARGET
        out.append(
            (
                f"delivery, {n} SMTP conn. (msg/s stored)",
                str(r.rates["on"][n]),
                str(r.rates["off"][n]),
                f"on/off >= {THROUGHPUT_RATIO_TARGET}",
                f"{ratio:.2f} {_ok(ok)}",
            )
        )
    for n in report.SMTP_CONNECTIONS:
        on, off = r.rates["on"][n].accepted, r.rates["off"][n].accepted
        out.append((f"  SMTP accepted, {n} conn. (msg/s)", f"{on:.1f}", f"{off:.1f}", "", ""))
    delta = r.data_delta()
    out.append(
        (
            "latency p50, DATA sent to 250",
            report.ms(r.data["on"][0]),
            report.ms(r.data["off"][0]),
            f"on - off <= {report.ms(LATENCY_P50_TARGET)}",
            f"+{report.ms(delta)} {_ok(delta <= LATENCY_P50_TARGET)}",
        )
    )
    out.append(
        (
            "latency p90, DATA sent to 250",
            report.ms(r.data["on"][1]),
            report.ms(r.data["off"][1]),
            "",
            "",
        )
    )
    for q, name in ((0, "p50"), (1, "p90")):
        on, off = r.stored["on"][q], r.stored["off"][q]
        out.append(
            (
                f"latency {name}, DATA sent to stored",
                report.ms(on),
                report.ms(off),
                "",
                f"+{report.ms(on - off)}",
            )
        )
    for name in CPU_KEYS:
        on, off = r.cpu_ms["on"][name], r.cpu_ms["off"][name]
        idle = " (idle)" if name in FILTERS else ""
        what = "all processes" if name == MACHINE else name
        out.append(
            (
                f"CPU per message, {what}",
                f"{on:.1f} ms",
                f"{off:.1f} ms{idle}",
                "",
                f"+{on - off:.1f} ms",
            )
        )
    return out


def table_text(r: Results) -> str:
    return report.aligned(HEADER, rows(r))


def busy_processes() -> list[str]:
    """Other work that would disturb the figures: a QEMU VM, a test suite."""
    found = []
    for pattern in ("qemu-system", "pytest"):
        done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False)
        if done.stdout.strip():
            found.append(pattern)
    return found


VERDICT_SYMBOLS = {"SPF pass": "R_SPF_ALLOW", "DMARC pass": "DMARC_POLICY_ALLOW"}


def verdict_counts(log: str) -> dict[str, int]:
    """From rspamd's log: its per-message lines, and how many carry each VERDICT_SYMBOLS."""
    lines = [line for line in log.splitlines() if "rspamd_task_write_log" in line]
    counts = {"messages": len(lines)}
    for name, symbol in VERDICT_SYMBOLS.items():
        counts[name] = sum(f"{symbol}(" in line for line in lines)
    return counts


def markdown(r: Results) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    s = r.sizes
    quiet = (
        "no QEMU VM or test suite was running when it started"
        if not r.busy
        else f"NOT quiet: {' and '.join(r.busy)} running when it started, figures disturbed"
    )
    return f"""## Filtering

Generated by `.venv/bin/python -m benchmarks.filtering{" --quick" if r.quick else ""}` on {now}
({"quick" if r.quick else "full"} run; {quiet}; load average (1 min) {r.load_before:.2f} at the
start, {r.load_after:.2f} at the end; same machine as above).

Verdict: {verdict(r)}.

{report.markdown_rows(HEADER, rows(r))}

One stack (`ddmail stack up`, including Redis, clamd and rspamd with the local stack's test
settings). "On" is the stack as it runs: port 25's `smtpd_milters` is rspamd's milter, which
asks clamd to scan the whole message. "Off" is the same running stack with `smtpd_milters`
emptied (`postconf -e`, `postfix reload`); the benchmark restores and checks it afterwards
(after this run: `{r.restored}`). Each round switches the mode, sends a 10-message
warm-up, then measures; the order of the modes swaps every round, {s["rounds"]} round(s) per
mode.
rspamd resolves through a local NSD (`tests/authdns.py`) serving `{SENDER_DOMAIN}` with an SPF
record that passes 127.0.0.1 and a DMARC record (p=none) (`ddmail stack up --dns`); the
runs start once rspamd has compiled its regular expressions. (With the machine's resolver,
which answers NXDOMAIN but now and then loses a query, a message waited rspamd's 2 s DNS
timeout every few dozen messages.)

- **Throughput.** As in the delivery rows above: {s["messages"]} messages of about 4 KiB from
  `bench@example.org` to a new mailbox over SMTP to port 25, over 1 connection and split over
  4, timed until every file is in the maildir; median of the rounds (range in brackets).
  Target: on/off >= {THROUGHPUT_RATIO_TARGET} for both (filtering costs at most {COST}).
- **Latency.** {s["latency"]} messages per round and mode over one connection, one at a time
  (the next once the previous is stored), so nothing queues: "DATA sent to 250" is from the
  `DATA` command to the answer after the message (rspamd scans at the end of DATA), "to
  stored" until the file is in the maildir. Target: p50 on - off <= {report.ms(LATENCY_P50_TARGET)}.
- **CPU per message.** utime + stime (+ cutime + cstime of reaped children) from
  `/proc/<pid>/stat` of rspamd's main process (`run/rspamd.pid`) and all its workers, of
  clamd (`run/clamd.pid`), of Redis (`run/redis.pid`, rspamd's store) and of Postfix's
  master and all its processes (`spool/postfix/pid/master.pid`), over all measured runs of
  a mode (throughput and latency) divided by their messages. "Idle" is the filters' CPU over
  the "off" runs, which they do not see: their background work (timers, map checks) spread
  over as many messages. "All processes" is the busy time of both cores (`/proc/stat`), the
  benchmark's own SMTP client and anything else running on the machine included.
- **Checked:** rspamd's counters (`rspamc stat` on the controller socket) around every run:
  with filtering on, every message scanned once with "no action" (none rejected, none
  tagged as spam: `bench@example.org` is not spam, the test GTUBE patterns do not occur);
  with it off, none scanned. Every message is stored in the INBOX. rspamd's log over the
  runs: {r.verdicts["messages"]} scanned messages (warm-ups included), SPF pass
  {r.verdicts["SPF pass"]}, DMARC pass {r.verdicts["DMARC pass"]}.

The "Delivery" rows of the results above (benchmarks.mail) go through the stack as it runs, so
through rspamd too when generated after issue 10 (see their date); runs before it had no
filters. The test ClamAV database holds two signatures: with the full database production
loads (freshclam), clamd's CPU per message is higher.
"""


def run(sizes: Sizes) -> Results:
    busy = busy_processes()
    load = os.getloadavg()
    if busy or load[0] > 0.5:
        print(f"warning: load average {load[0]:.2f}, running: {busy}; figures will be noisy")
    stack: stacks.Stack | None = None
    dns = AuthDns(Path(tempfile.mkdtemp(prefix="ddb-dns-", dir="/tmp")))
    ok = False
    try:
        dns.publish(SENDER_DOMAIN, SENDER_ZONE)
        # rspamd resolves the sender through NSD: with the machine's resolver, a lost query
        # stalled a message for rspamd's 2 s DNS timeout every few dozen messages.
        stack = stacks.start(PORT_BASE, plain=False, dns=dns.address)
        wait_for_hyperscan(stack)
        log = stack.layout.log_dir / "rspamd.log"
        offset = log.stat().st_size
        original = postconf(stack, "-h", "smtpd_milters")
        if "rspamd" not in original:
            raise RuntimeError(f"port 25's smtpd_milters has no rspamd: {original!r}")
        print(f"stack up in {stack.root}; smtpd_milters = {original}", flush=True)
        try:
            tallies = rounds(stack, sizes, original)
        finally:
            set_milters(stack, original)
        restored = postconf(stack, "-h", "smtpd_milters")
        if restored != original:
            raise RuntimeError(f"smtpd_milters not restored: {restored!r}")
        with log.open("rb") as fh:
            fh.seek(offset)
            verdicts = verdict_counts(fh.read().decode(errors="replace"))
        restored = restored.replace(str(stack.root), "<root>")
        ok = True
    finally:
        if stack is not None:
            stacks.stop(stack, remove=ok)
        dns.stop()
        shutil.rmtree(dns.dir, ignore_errors=True)
        if not ok:
            print("failed; stack root kept for its logs", file=sys.stderr)
    hz = os.sysconf("SC_CLK_TCK")
    return Results(
        quick=sizes is QUICK,
        load_before=load[0],
        load_after=os.getloadavg()[0],
        busy=busy,
        sizes=vars(sizes),
        rates={mode: mail.rates(t.runs) for mode, t in tallies.items()},
        data={m: (mail.p(t.data, 50), mail.p(t.data, 90)) for m, t in tallies.items()},
        stored={m: (mail.p(t.stored, 50), mail.p(t.stored, 90)) for m, t in tallies.items()},
        cpu_ms={
            mode: {d: t.ticks[d] * 1000 / hz / t.messages for d in CPU_KEYS}
            for mode, t in tallies.items()
        },
        restored=restored,
        verdicts=verdicts,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.filtering", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else FULL)
    print()
    print(table_text(results))
    path = stacks.REPO / "docs" / "performance.md"
    report.update_section(
        path, SECTION, report.section(SECTION, "benchmarks.filtering", markdown(results))
    )
    print(f"\nwritten to docs/performance.md; verdict: {verdict(results)}")
    return 0 if all(checks(results).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
