"""Panel benchmark: `.venv/bin/python -m benchmarks.panel [--quick] [--client wrk|python]`.

Starts a real local stack (`ddmail stack up`: nginx with TLS in front of the panel under
gunicorn; backend and keyhandler behind it; production argon2id settings), registers and logs in one
user with one mailbox, then measures over loopback:

- authenticated page views per second and their p50/p99 latency with 1, 8 and 32 concurrent
  clients, each on its own keep-alive TLS connection, each level for a bounded time;
- the cost of one registration (POST /register) and of one login (POST /login), p50 over ~20,
  next to one in-process argon2id verify with the panel's own settings.

Prints a table beside the reference service's figures on this machine type and writes
docs/performance-panel.md (docs/performance.md belongs to benchmarks.mail, which rewrites it
whole). Not part of the test suite. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import math
import os
import platform
import re
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from argon2 import PasswordHasher

from ddmail_common.config import Argon2Settings
from ddmail_common.config import load as load_config

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "performance-panel.md"
LEVELS = (1, 8, 32)
PAGES = ("/settings", "/settings/mailboxes")
MAIN_PAGE = "/settings"  # the page the verdicts are about
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CODE = re.compile(r'<code id="([a-z-]+)">([^<]+)</code>')
GENERATORS = {"wrk": "wrk (Debian)", "python": "Python threads with http.client"}
MAX_REQUESTS = 2_000_000  # per level, a bound besides the time

# The reference service, measured on this machine type (2 cores).
BASE_VIEWS = 460.0  # authenticated views/s
BASE_P99 = {8: 0.026, 32: 0.100}
BASE_REGISTER = 0.345
BASE_LOGIN = 0.345
# Targets.
VIEWS_FACTOR = 2.0
P99_32_TARGET = 0.050
LOGIN_OVER_KDF = 0.050  # login p50 may exceed one argon2id verify by a request's worth


# -- a small browser over one keep-alive TLS connection -------------------------------------


class Browser:
    def __init__(self, url: str, ca: Path) -> None:
        parts = urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
        self.host, self.port = parts.hostname, parts.port or 443
        self.tls = ssl.create_default_context(cafile=str(ca))
        self.cookies: dict[str, str] = {}
        self.conn: http.client.HTTPSConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, str]:
        headers = {"Host": f"{self.host}:{self.port}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if content_type:
            headers["Content-Type"] = content_type
        while True:
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.tls, timeout=60
                )
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if not reused:
                    raise
                # A kept-alive connection the server had closed: once more on a new one.
        for line in resp.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie()
            cookie.load(line)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return resp.status, data.decode(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        return self.request("GET", path)

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        body = urlencode(fields).encode()
        return self.request("POST", path, body, "application/x-www-form-urlencoded")

    def post_multipart(
        self, path: str, fields: dict[str, str], files: dict[str, bytes]
    ) -> tuple[int, str]:
        boundary = secrets.token_hex(16)
        chunks = []
        for name, value in fields.items():
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        for name, content in files.items():
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{name}.key"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                + content
                + b"\r\n"
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        return self.request(
            "POST", path, b"".join(chunks), f"multipart/form-data; boundary={boundary}"
        )

    def token(self, path: str) -> str:
        status, page = self.get(path)
        match = CSRF.search(page)
        assert status == 200 and match, f"GET {path}: {status}, no CSRF token"
        return match.group(1)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class User:
    username: str
    password: str
    keyfile: bytes


def register(browser: Browser) -> tuple[User, float]:
    """A new account; the time of POST /register alone (the page with the CSRF token before it
    and the key file download after it are not timed)."""
    token = browser.token("/register")
    start = time.perf_counter()
    status, page = browser.post_form("/register", {"csrf_token": token})
    took = time.perf_counter() - start
    found = dict(CODE.findall(page))
    assert status == 200 and "username" in found, f"registration answered {status}"
    status, keyfile = browser.post_form("/register/keyfile", {"csrf_token": CSRF.findall(page)[0]})
    assert status == 200 and "key: " in keyfile, f"key file download answered {status}"
    return User(found["username"], found["password"], keyfile.encode()), took


def login(browser: Browser, user: User) -> float:
    """The time of POST /login alone (the login page before it is not timed)."""
    token = browser.token("/login")
    fields = {"csrf_token": token, "user": user.username, "password": user.password, "totp": ""}
    start = time.perf_counter()
    status, _ = browser.post_multipart("/login", fields, {"key": user.keyfile})
    took = time.perf_counter() - start
    assert status == 302, f"login answered {status}"
    return took


# -- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The logged-in panel of a running stack."""

    url: str
    ca: Path
    root: Path  # the stack's root: its panel processes carry it in their command line
    cookies: dict[str, str]


@dataclass
class Level:
    page: str
    clients: int
    seconds: float
    requests: int
    errors: int  # answers other than 200, and failed requests
    p50: float
    p99: float
    cpu: float = 0.0  # CPU seconds the panel's gunicorn processes used meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_view(self) -> float:
        return self.cpu / max(self.requests, 1)


def panel_cpu(root: Path) -> float:
    """CPU seconds (user + system) of the stack's panel processes: nginx and gunicorn, masters
    and workers. The masters carry the stack's root in their command line (`ddmail-web
    --config ROOT/...`, `nginx -p ROOT/...`); the workers are their children."""
    procs: dict[int, tuple[int, str, int]] = {}  # pid -> (parent, command line, ticks)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(proc.name)] = (int(fields[1]), cmdline, int(fields[11]) + int(fields[12]))
    masters = {
        pid
        for pid, (_, cmdline, _) in procs.items()
        if str(root) in cmdline and ("ddmail-web" in cmdline or "nginx" in cmdline)
    }
    ticks = sum(t for pid, (parent, _, t) in procs.items() if pid in masters or parent in masters)
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def load_python(target: Target, page: str, clients: int, seconds: float) -> Level:
    """CLIENTS threads, each with its own keep-alive connection, for SECONDS."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    deadline = [0.0]

    def client(n: int) -> None:
        browser = Browser(target.url, target.ca)
        browser.cookies = dict(target.cookies)
        browser.get("/healthz")  # the TLS handshake is not measured
        ready.wait(120)
        go.wait(120)
        mine = latencies[n]
        while time.perf_counter() < deadline[0] and len(mine) < MAX_REQUESTS // clients:
            start = time.perf_counter()
            try:
                status, _ = browser.get(page)
            except (OSError, http.client.HTTPException):
                status = 0
            mine.append(time.perf_counter() - start)
            if status != 200:
                errors[n] += 1
        browser.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait(120)
    start = time.perf_counter()
    deadline[0] = start + seconds
    go.set()
    for thread in threads:
        thread.join(seconds + 120)
    took = time.perf_counter() - start
    flat = [x for mine in latencies for x in mine]
    p50, p99 = percentile(flat, 50), percentile(flat, 99)
    return Level(page, clients, took, len(flat), sum(errors), p50, p99)


# wrk counts what is not a 200 (a lost session answers 302, which wrk itself does not count).
WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    total + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def load_wrk(wrk: str, target: Target, page: str, clients: int, seconds: float) -> Level:
    """wrk: CLIENTS keep-alive connections over at most 2 threads, for SECONDS."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        cookie = "; ".join(f"{k}={v}" for k, v in target.cookies.items())
        argv = [
            wrk,
            f"-t{min(2, clients)}",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            script.name,
            "-H",
            f"Cookie: {cookie}",
            target.url + page,
        ]
        out = subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=seconds + 120
        ).stdout
    finally:
        os.unlink(script.name)
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.MULTILINE)
    assert match, f"no result from wrk:\n{out}"
    requests, micros, errors, p50, p99 = (int(x) for x in match.groups())
    return Level(page, clients, micros / 1e6, requests, errors, p50 / 1e6, p99 / 1e6)


def measure(client: str, target: Target, page: str, clients: int, seconds: float) -> Level:
    """One level: a 1 s warm-up, then SECONDS of load, with the panel's CPU time meanwhile."""
    wrk = shutil.which("wrk")

    def once(duration: float) -> Level:
        if client == "wrk" and wrk:
            return load_wrk(wrk, target, page, clients, duration)
        return load_python(target, page, clients, duration)

    once(1.0)
    before = panel_cpu(target.root)
    level = once(seconds)
    level.cpu = panel_cpu(target.root) - before
    return level


def argon2_verify(params: Argon2Settings) -> float:
    """One in-process argon2id verify with the panel's settings (its hash made beforehand)."""
    hasher = PasswordHasher(
        time_cost=params.time_cost, memory_cost=params.memory_kib, parallelism=params.parallelism
    )
    stored = hasher.hash("correct horse battery staple")
    start = time.perf_counter()
    hasher.verify(stored, "correct horse battery staple")
    return time.perf_counter() - start


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Results:
    quick: bool
    client: str
    db: str
    load_before: float
    argon2: Argon2Settings
    levels: list[Level] = field(default_factory=list)
    register: list[float] = field(default_factory=list)
    login: list[float] = field(default_factory=list)
    kdf: list[float] = field(default_factory=list)
    load_after: float = 0.0

    def level(self, page: str, clients: int) -> Level:
        return next(x for x in self.levels if x.page == page and x.clients == clients)

    def best_rate(self) -> float:
        return max(x.rate for x in self.levels if x.page == MAIN_PAGE)

    def checks(self) -> dict[str, bool]:
        login_over = statistics.median(self.login) - statistics.median(self.kdf)
        return {
            "throughput": self.best_rate() >= VIEWS_FACTOR * BASE_VIEWS,
            "p99 at 32 clients": self.level(MAIN_PAGE, 32).p99 <= P99_32_TARGET,
            "login": login_over <= LOGIN_OVER_KDF,
            "no errors": all(x.errors == 0 for x in self.levels),
        }


def set_up(url: str, ca: Path) -> tuple[Browser, User]:
    """One registered, logged-in user with the mailbox alice@ddmail.test."""
    browser = Browser(url, ca)
    user, _ = register(browser)
    login(browser, user)
    token = browser.token("/settings/mailboxes")
    form = {"csrf_token": token, "local_part": "alice", "domain": "ddmail.test"}
    status, _ = browser.post_form("/settings/mailboxes", form)
    assert status == 200, f"mailbox creation answered {status}"
    return browser, user


def run(quick: bool, client: str) -> Results:
    from tests.stackrun import start_stack, stop_stack_proc

    seconds = 3.0 if quick else 10.0
    costs = 8 if quick else 20  # well under the stack's 60 registrations per hour
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the run; figures will be noisy")
    print("starting the stack (ddmail stack up) ...", flush=True)
    stack = start_stack()
    try:
        url, ca = stack.info["web_url"], Path(stack.info["tls_ca"])
        params = load_config(Path(stack.info["config"])).web.argon2
        db = "PostgreSQL" if stack.info["db_url"].startswith("postgresql") else "SQLite"
        results = Results(quick, client, db, load, params)
        browser, user = set_up(url, ca)
        target = Target(url, ca, stack.root, dict(browser.cookies))
        for page in PAGES:
            for clients in LEVELS:
                x = measure(client, target, page, clients, seconds)
                results.levels.append(x)
                print(
                    f"  GET {page} x{clients}: {x.rate:.0f}/s, p50 {ms(x.p50)}, p99 {ms(x.p99)},"
                    f" panel CPU {x.cpu_per_view * 1000:.2f} ms/view, errors {x.errors}",
                    flush=True,
                )
        assert browser.get("/settings")[0] == 200, "the session did not outlive the load"
        # Interleaved, so that all three see the same machine.
        for _ in range(costs):
            results.kdf.append(argon2_verify(params))
            fresh = Browser(url, ca)
            results.register.append(register(fresh)[1])
            fresh.close()
            results.login.append(login(browser, user))
        browser.close()
        results.load_after = os.getloadavg()[0]
        return results
    finally:
        stop_stack_proc(stack.proc)
        shutil.rmtree(stack.root, ignore_errors=True)


# -- the report ------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def passed(ok: bool) -> str:
    return "pass" if ok else "FAIL"


Table = list[tuple[str, ...]]  # a header row, then the rows


def views_table(r: Results) -> Table:
    table: Table = [
        ("page", "clients", "views/s", "p50", "p99", "panel CPU/view", "baseline (reference)")
    ]
    for x in r.levels:
        baseline = ""
        if x.page == MAIN_PAGE and x.clients in BASE_P99:
            baseline = f"{BASE_VIEWS:.0f}/s, p99 {ms(BASE_P99[x.clients])}"
        table.append(
            (
                f"GET {x.page}",
                str(x.clients),
                f"{x.rate:.0f}",
                ms(x.p50),
                ms(x.p99),
                f"{x.cpu_per_view * 1000:.2f} ms",
                baseline,
            )
        )
    return table


def targets_table(r: Results) -> Table:
    checks = r.checks()
    best = r.best_rate()
    p99 = r.level(MAIN_PAGE, 32).p99
    kdf, login_p50 = statistics.median(r.kdf), statistics.median(r.login)
    errors = sum(x.errors for x in r.levels)
    return [
        ("target", "DDMail", "baseline (reference)", "verdict"),
        (
            f"GET {MAIN_PAGE}: >= {VIEWS_FACTOR:.0f}x the baseline's views/s (best level)",
            f"{best:.0f}/s = {best / BASE_VIEWS:.2f}x",
            f"{BASE_VIEWS:.0f}/s",
            passed(checks["throughput"]),
        ),
        (
            f"GET {MAIN_PAGE}: p99 <= {ms(P99_32_TARGET)} at 32 clients",
            ms(p99),
            ms(BASE_P99[32]),
            passed(checks["p99 at 32 clients"]),
        ),
        (
            f"login p50 <= argon2id verify p50 + {ms(LOGIN_OVER_KDF)}",
            f"{ms(login_p50)} = argon2id {ms(kdf)} + {ms(login_p50 - kdf)}",
            ms(BASE_LOGIN),
            passed(checks["login"]),
        ),
        ("every answer a 200", f"{errors} other", "", passed(checks["no errors"])),
    ]


def costs_table(r: Results) -> Table:
    return [
        ("cost", "p50", "p90", "baseline (reference)"),
        (
            "registration (POST /register)",
            ms(statistics.median(r.register)),
            ms(percentile(r.register, 90)),
            ms(BASE_REGISTER),
        ),
        (
            "login (POST /login)",
            ms(statistics.median(r.login)),
            ms(percentile(r.login, 90)),
            ms(BASE_LOGIN),
        ),
        (
            "argon2id verify, in-process",
            ms(statistics.median(r.kdf)),
            ms(percentile(r.kdf, 90)),
            "",
        ),
    ]


def verdict(r: Results) -> str:
    failed = [name for name, ok in r.checks().items() if not ok]
    return "PASS: every target met." if not failed else "MISSED: " + ", ".join(failed) + "."


def machine() -> list[str]:
    cpu = mem = os_name = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    release = Path("/etc/os-release")
    if release.exists():
        found = re.search(r'^PRETTY_NAME="?([^"\n]+)', release.read_text(), re.MULTILINE)
        os_name = found.group(1) if found else "?"
    return [
        f"CPU: {os.cpu_count()} cores, {cpu}",
        f"memory: {mem}",
        f"OS: {os_name}, Linux {platform.release()}",
        f"Python {platform.python_version()}",
    ]


def plain(table: Table) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def markdown_table(table: Table) -> list[str]:
    header, *body = table
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in body],
    ]


def report(r: Results) -> str:
    return "\n\n".join(plain(t) for t in (views_table(r), costs_table(r), targets_table(r)))


def markdown(r: Results) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    a = r.argon2
    seconds = 3 if r.quick else 10
    return "\n".join(
        [
            "# Performance: the panel",
            "",
            f"Generated by `.venv/bin/python -m benchmarks.panel` on {now}",
            f"({'quick' if r.quick else 'full'} run). Rerun it to update this file; do not",
            "edit it by hand. The benchmarks are not part of the test suite.",
            "",
            "## Panel",
            "",
            f"Verdict: {verdict(r)}",
            "",
            *markdown_table(targets_table(r)),
            "",
            "### Machine",
            "",
            *[f"- {line}" for line in machine()],
            f"- load average (1 min) before / after the run: {r.load_before:.2f} /"
            f" {r.load_after:.2f}",
            f"- load generator: {GENERATORS[r.client]}, on the same 2 cores as the panel",
            "",
            "### Page views",
            "",
            *markdown_table(views_table(r)),
            "",
            "### Registration and login",
            "",
            *markdown_table(costs_table(r)),
            "",
            "### What is measured",
            "",
            f"A real local stack (`ddmail stack up`, {r.db}): the panel as in production, nginx",
            "(TLS on 127.0.0.1, keep-alive) in front of gunicorn (sync workers, one per core + 1,",
            "on a unix socket), the backend and keyhandler behind it, production argon2id",
            f"settings ({a.memory_kib} KiB, t={a.time_cost}, p={a.parallelism}). One user is",
            "registered and logged in, with one mailbox.",
            "",
            f"- **Page views.** `GET {MAIN_PAGE}` (the settings overview: the session lookup,",
            "  four small queries of the panel's tables, one backend call that asks the",
            "  keyhandler once, one template) and `GET /settings/mailboxes` (three backend",
            "  calls: domains, mailboxes, storage), with",
            "  the user's session cookie, by 1, 8 and 32 concurrent clients, each on its own",
            f"  keep-alive TLS connection, {seconds} s per level after a 1 s warm-up. Every",
            "  answer must be a 200. Latency is per request, at the client. Panel CPU/view is",
            "  the CPU time of the panel's nginx and gunicorn processes during the level divided",
            "  by the views: it depends less than the rates on what else runs on the machine.",
            f"  Baseline: the reference service on this machine type, {BASE_VIEWS:.0f}",
            f"  authenticated views/s, p99 {ms(BASE_P99[8])} at 8 clients and"
            f" {ms(BASE_P99[32])} at 32.",
            f"- **Registration and login.** {len(r.register)} `POST /register` (a new account:",
            "  argon2id hash of the panel password, a backend call, the key file sealed) and",
            "  as many `POST /login` (username, password, key file: one argon2id verify),",
            "  interleaved with as many in-process argon2id verifies with the panel's",
            "  settings. Only the POST is timed, not the page with the form before it.",
            f"  Baseline: the reference service, about {ms(BASE_REGISTER)} each.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.panel", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per level, 8 logins")
    parser.add_argument(
        "--client",
        choices=sorted(GENERATORS),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk if installed: apt-get install wrk)",
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not write {OUTPUT.name}")
    args = parser.parse_args(argv)
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk)")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # for tests.stackrun
    results = run(args.quick, args.client)
    print()
    print(report(results))
    print(f"\n{verdict(results)}")
    if not args.no_write:
        OUTPUT.write_text(markdown(results))
        print(f"written to {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
