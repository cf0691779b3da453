"""Mail benchmarks, side by side with a baseline: `.venv/bin/python -m benchmarks.mail [--quick]`.

1. Encrypted delivery throughput (SMTP to the MX port until every file is in the maildir),
   against the same stack with mail_crypt off (benchmarks.plainstack).
2. Mailbox creation latency and parallel throughput through the backend API (caller "web").
3. IMAP LOGIN latency over IMAPS, next to one in-process argon2id run with the stack's settings.

Loopback only, bounded loops; every stack runs under /tmp/ddb-* and is stopped and removed.
Prints a table and rewrites docs/performance.md (benchmarks.report).
"""

from __future__ import annotations

import argparse
import email.utils
import imaplib
import json
import os
import smtplib
import ssl
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2.low_level import Type, hash_secret_raw

from benchmarks import report, stacks
from ddmail_common.config import Argon2Settings
from ddmail_common.config import load as load_config

ENCRYPTED_PORT_BASE = 41000
PLAIN_PORT_BASE = 42000
DELIVERY_TIMEOUT = 600.0
SENDER = "bench@example.org"
BODY = "".join(
    f"Line {i:03d} of a benchmark message: the quick brown fox jumps over the lazy dog.\r\n"
    for i in range(48)
)  # about 4 KiB


@dataclass(frozen=True)
class Sizes:
    messages: int
    rounds: int  # delivery runs per stack and connection count (median reported)
    creations: int
    parallel_creations: int
    logins: int  # also the argon2id runs and direct unlocks


FULL = Sizes(messages=300, rounds=3, creations=50, parallel_creations=40, logins=50)
QUICK = Sizes(messages=100, rounds=1, creations=20, parallel_creations=20, logins=20)
WORKERS = 4
LMTP = report.LMTP  # "connections" of the 1-session LMTP runs straight into Dovecot


@dataclass(frozen=True)
class Delivery:
    messages: int
    accepted_s: float  # last "250" after the first connect
    stored_s: float  # last file in the maildir after the first connect
    first_bytes: bytes  # head of the first stored file


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def message(i: int, to: str) -> bytes:
    head = (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: benchmark {i}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: {email.utils.make_msgid('bench')}\r\n"
    )
    return (head + "\r\n" + BODY).encode()


def send(stack: stacks.Stack, to: str, numbers: range, lmtp: bool) -> None:
    """SMTP to the MX, or (LMTP) straight into Dovecot's LMTP socket, which only root and the
    OpenPGP stage may use: the benchmark runs as root, the stack has no LMTP port."""
    session = (
        smtplib.LMTP(str(stack.layout.dovecot_lmtp_socket), timeout=60)
        if lmtp
        else smtplib.SMTP("127.0.0.1", stack.layout.smtp_port, timeout=60)
    )
    with session as smtp:
        smtp.ehlo("bench.example.org")
        for i in numbers:
            smtp.sendmail(SENDER, [to], message(i, to))


def deliver(stack: stacks.Stack, messages: int, connections: int) -> Delivery:
    """MESSAGES over CONNECTIONS parallel SMTP sessions (LMTP: one LMTP session to Dovecot) to
    one new mailbox, timed until all are stored."""
    address, _ = stack.new_mailbox()
    lmtp = connections == LMTP
    sessions = max(connections, 1)
    share = messages // sessions
    parts = [range(k * share, messages if k == sessions - 1 else (k + 1) * share)
             for k in range(sessions)]  # fmt: skip
    start = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        for future in [pool.submit(send, stack, address, part, lmtp) for part in parts]:
            future.result()
    accepted = time.perf_counter() - start
    deadline = start + DELIVERY_TIMEOUT
    while (count := len(stack.stored(address))) < messages:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {count}/{messages} messages stored in {DELIVERY_TIMEOUT} s")
        time.sleep(0.02)
    stored = time.perf_counter() - start
    first = min(stack.stored(address), key=lambda p: p.stat().st_mtime_ns)
    return Delivery(messages, accepted, stored, first.read_bytes()[:16])


def delivery_rounds(
    encrypted: stacks.Stack, plain: stacks.Stack, sizes: Sizes
) -> dict[str, dict[int, list[Delivery]]]:
    """Runs alternate between the two stacks, so drift on the machine hits both alike."""
    runs: dict[str, dict[int, list[Delivery]]] = {"encrypted": {}, "plain": {}}
    for stack in (encrypted, plain):
        deliver(stack, 10, 1)  # warm-up: LMTP and lookup processes started, caches filled
    for _ in range(sizes.rounds):
        for connections in (1, WORKERS, LMTP):
            for name, stack in (("encrypted", encrypted), ("plain", plain)):
                run = deliver(stack, sizes.messages, connections)
                how = f"{connections} SMTP conn." if connections else "LMTP"
                rate = run.messages / run.stored_s
                print(f"  {name:9} {how:13} {rate:6.1f} msg/s stored", flush=True)
                runs[name].setdefault(connections, []).append(run)
    return runs


def rates(runs: dict[int, list[Delivery]]) -> dict[int, report.Rate]:
    out = {}
    for n, ds in runs.items():
        stored = [d.messages / d.stored_s for d in ds]
        accepted = statistics.median(d.messages / d.accepted_s for d in ds)
        out[n] = report.Rate(statistics.median(stored), min(stored), max(stored), accepted)
    return out


def create_sequential(stack: stacks.Stack, count: int) -> list[float]:
    client = stack.client()
    return [timed(lambda: stack.new_mailbox(client)) for _ in range(count)]


def create_parallel(stack: stacks.Stack, count: int) -> float:
    """Mailboxes per second with WORKERS creators in parallel."""

    def worker(n: int) -> None:
        client = stack.client()
        for _ in range(n):
            stack.new_mailbox(client)

    shares = [count // WORKERS + (k < count % WORKERS) for k in range(WORKERS)]
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(worker, n) for n in shares]:
            future.result()
    return count / (time.perf_counter() - start)


def login_costs(
    stack: stacks.Stack, address: str, password: str, params: Argon2Settings, count: int
) -> tuple[list[float], list[float], list[float]]:
    """COUNT times, interleaved so that drift on the machine hits all three alike: one argon2id
    run in this process, one /v1/unlock straight to the keyhandler (as Dovecot's Lua passdb
    calls it), and one IMAP LOGIN from command to tagged OK (TLS connect and greeting untimed)."""
    tls = ssl.create_default_context(cafile=str(stack.layout.ca_cert))
    token = (stack.layout.secrets / "dovecot.key").read_text().strip()
    body = json.dumps({"user": address, "password": password}).encode()
    url = f"http://127.0.0.1:{stack.layout.unlock_port}/v1/unlock"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def argon2() -> None:
        hash_secret_raw(
            secret=password.encode(),
            salt=os.urandom(16),
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            type=Type.ID,
        )

    def unlock() -> None:
        request = urllib.request.Request(url, body, headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()

    def login() -> float:
        with imaplib.IMAP4_SSL(
            "127.0.0.1", stack.layout.imaps_port, ssl_context=tls, timeout=30
        ) as imap:
            start = time.perf_counter()
            status, _ = imap.login(address, password)
            elapsed = time.perf_counter() - start
            if status != "OK":
                raise RuntimeError(f"LOGIN answered {status}")
            imap.logout()
        return elapsed

    for _ in range(3):  # warm-up: the first argon2 runs pay page faults on fresh memory
        argon2()
        unlock()
        login()
    times: tuple[list[float], list[float], list[float]] = ([], [], [])
    for _ in range(count):
        times[0].append(timed(argon2))
        times[1].append(timed(unlock))
        times[2].append(login())
    return times


def p(values: list[float], q: int) -> float:
    """The q-th percentile (q = 50 or 90) of VALUES."""
    return statistics.quantiles(values, n=10, method="inclusive")[q // 10 - 1]


def run(sizes: Sizes) -> report.Results:
    load = os.getloadavg()
    if load[0] > 0.5:
        print(f"warning: load average {load[0]:.2f} before the run; figures will be noisy")
    encrypted: stacks.Stack | None = None
    plain: stacks.Stack | None = None
    ok = False
    try:
        encrypted = stacks.start(ENCRYPTED_PORT_BASE, plain=False)
        print(f"encrypted stack up in {encrypted.root}; mailbox creation", flush=True)
        creations = create_sequential(encrypted, sizes.creations)
        parallel = create_parallel(encrypted, sizes.parallel_creations)
        print("IMAP LOGIN and argon2id", flush=True)
        params = load_config(encrypted.layout.etc / "ddmail.toml").argon2
        address, password = encrypted.new_mailbox()
        argon2, unlocks, logins = login_costs(encrypted, address, password, params, sizes.logins)
        plain = stacks.start(PLAIN_PORT_BASE, plain=True)
        print(f"plain stack up in {plain.root}; delivery, {sizes.rounds} round(s)", flush=True)
        runs = delivery_rounds(encrypted, plain, sizes)
        ok = True
    finally:
        for stack in (plain, encrypted):
            if stack is not None:
                stacks.stop(stack, remove=ok)
        if not ok:
            print("failed; stack roots kept for their logs", file=sys.stderr)
    return report.Results(
        quick=sizes is QUICK,
        load_before=load[0],
        sizes=vars(sizes),
        argon2=params,
        argon2_s=statistics.median(argon2),
        create_p50=p(creations, 50),
        create_p90=p(creations, 90),
        create_parallel_rate=parallel,
        login_p50=p(logins, 50),
        login_p90=p(logins, 90),
        unlock_p50=p(unlocks, 50),
        encrypted=rates(runs["encrypted"]),
        plain=rates(runs["plain"]),
        encrypted_head=runs["encrypted"][1][0].first_bytes,
        plain_head=runs["plain"][1][0].first_bytes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mail", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages, logins, mailboxes")
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else FULL)
    print()
    print(report.table_text(results))
    report.write_markdown(results, stacks.REPO / "docs" / "performance.md")
    print(f"\nwritten to docs/performance.md; verdict: {report.verdict(results)}")
    return 0 if report.all_pass(results) else 1


if __name__ == "__main__":
    sys.exit(main())
