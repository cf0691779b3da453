"""Encrypted backups: one tar stream (a consistent database dump, the maildirs, the secrets, the
DKIM keys, the TLS key and certificate, a manifest) piped straight into gpg, so no plaintext
touches the disk; and the restore that verifies everything before it touches the live state (DN 33).

Archive layout (members in this order):
  roots.json              the paths backed up, so a restore knows where to stage each one
  database.sqlite3 | database.pgdump
  files/<i>[/<relative path>]   root i's content (a directory tree or a single file)
  manifest.json           every member's type, mode, owner, group, size and SHA-256
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from sqlalchemy import make_url

from ddmail_common.config import BackupSettings, Config

FORMAT = "ddmail-backup/1"
NAME = re.compile(r"^ddmail-(\d{8}T\d{6}Z)\.tar\.gpg$")
CHUNK = 1 << 16


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why and what to do."""


# --------------------------------------------------------------------------- what is backed up


def roots(cfg: Config, extra: tuple[Path, ...] = ()) -> list[Path]:
    """The mail root, every directory holding a secret file, the DKIM and DNSSEC keys, the
    configured and EXTRA paths."""
    secret_files = [*cfg.secret_files.values()]
    if cfg.web.master_keys is not None:
        secret_files.append(cfg.web.master_keys)
    found: list[Path] = []
    for path in (
        cfg.mail_root,
        *(p.parent for p in secret_files),
        cfg.dkim.key_dir,
        # The DNSSEC keys, once `dns zone --sign` has made them (the DS at the registrar names
        # the KSK: a lost key means a registrar change).
        *([cfg.zone.dnssec_key_dir] if cfg.zone.dnssec_key_dir.is_dir() else []),
        *cfg.backup.paths,
        *extra,
    ):
        path = Path(os.path.abspath(path))
        if path not in found:
            found.append(path)
    # A path inside another root is already in it (e.g. a TLS key under the secrets dir).
    return [p for p in found if not any(o != p and o in p.parents for o in found)]


def _names(st: os.stat_result) -> tuple[str, str]:
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def _meta(st: os.stat_result) -> dict[str, Any]:
    owner, group = _names(st)
    return {"mode": stat.S_IMODE(st.st_mode), "owner": owner, "group": group}


# --------------------------------------------------------------------------- database dumps


def _pg_command(db_url: str, program: str, *args: str) -> list[str]:
    """PROGRAM for the config's database. The URL names no user in production: each process
    connects as its own OS user, and root has no role, so root runs it as OS user postgres."""
    url = make_url(db_url)
    conninfo = {"dbname": url.database or ""}
    host = url.host or str(url.query.get("host", "") or "")
    for key, value in (("host", host), ("port", url.port), ("user", url.username)):
        if value:
            conninfo[key] = str(value)
    for key in ("passfile", "sslmode"):
        if key in url.query:
            conninfo[key] = str(url.query[key])
    quoted = {k: v.replace("\\", "\\\\").replace("'", "\\'") for k, v in conninfo.items()}
    dsn = " ".join(f"{k}='{v}'" for k, v in quoted.items())
    return [program, "--no-password", f"--dbname={dsn}", *args]


def _pg_identity(db_url: str) -> dict[str, Any]:
    """subprocess arguments that run a PostgreSQL client as OS user postgres when root runs it
    on a userless URL (root has no role). The process itself switches (no runuser/PAM: the
    backup's AppArmor profile lets it exec only the client programs)."""
    if os.geteuid() == 0 and not make_url(db_url).username:
        return {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": "/"}
    return {}


def dump_database(db_url: str) -> tuple[str, bytes, dict[str, Any]]:
    """(member name, dump, metadata). The dump stays in memory: the database holds accounts,
    addresses and keys, never mail, so it is small; mail is streamed file by file."""
    if db_url.startswith("sqlite"):
        path = Path(make_url(db_url).database or "")
        if not path.is_file():
            raise BackupError(f"database.url: {path} does not exist")
        source = sqlite3.connect(path)
        memory = sqlite3.connect(":memory:")
        try:
            source.backup(memory)  # SQLite's online backup: consistent while services write
            # Bytes 18-19 say "WAL" when the live file is in WAL mode; a copy without its WAL
            # file is a rollback-journal database (SQLite file format, section 1.3.3).
            data = memory.serialize()
            data = data[:18] + b"\x01\x01" + data[20:]
        finally:
            source.close()
            memory.close()
        return "database.sqlite3", data, {"kind": "sqlite", **_meta(path.stat())}
    ran = subprocess.run(
        _pg_command(db_url, "pg_dump", "--format=custom"),
        capture_output=True,
        check=False,
        **_pg_identity(db_url),
    )
    if ran.returncode != 0:
        raise BackupError(f"pg_dump failed: {ran.stderr.decode(errors='replace').strip()}")
    return "database.pgdump", ran.stdout, {"kind": "postgresql"}


# --------------------------------------------------------------------------- create


class _HashingReader:
    """Reads exactly SIZE bytes of a file (what its header announced) and hashes them."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.hash.update(data)
        return data


@dataclass
class _Writer:
    tar: tarfile.TarFile
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add_bytes(self, name: str, data: bytes, meta: dict[str, Any]) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o600
        self.tar.addfile(info, io.BytesIO(data))
        digest = hashlib.sha256(data).hexdigest()
        self.entries.append({"member": name, "type": "file", "size": len(data), "sha256": digest,
                             **meta})  # fmt: skip

    def add_path(self, name: str, path: Path) -> None:
        """PATH as member NAME: a file, a symlink or a directory (without its content)."""
        st = path.lstat()
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600, int(st.st_mtime)
        entry: dict[str, Any] = {"member": name, **_meta(st), "mtime": int(st.st_mtime)}
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            self.tar.addfile(info)
            entry["type"] = "dir"
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            self.tar.addfile(info)
            entry |= {"type": "symlink", "target": info.linkname}
        elif stat.S_ISREG(st.st_mode):
            with path.open("rb") as fh:
                # The size when opened: Dovecot's index logs only grow, and a message file never
                # changes (Maildir renames it), so the first SIZE bytes are a consistent copy.
                info.size = os.fstat(fh.fileno()).st_size
                reader = _HashingReader(fh)
                self.tar.addfile(info, reader)
            entry |= {"type": "file", "size": info.size, "sha256": reader.hash.hexdigest()}
        else:
            return  # sockets and fifos are runtime objects, not state
        self.entries.append(entry)

    def add_tree(self, index: int, root: Path) -> None:
        self.add_path(f"files/{index}", root)
        if not root.is_dir() or root.is_symlink():
            return
        for parent, dirs, files in os.walk(root):
            dirs.sort()
            rel = Path(parent).relative_to(root)
            for name in sorted(dirs) + sorted(files):
                member = f"files/{index}/{(rel / name).as_posix()}"
                try:
                    self.add_path(member, Path(parent) / name)
                except FileNotFoundError:
                    continue  # moved meanwhile (Maildir new/ -> cur/): its new name is read later


def write_archive(out: IO[bytes], cfg: Config, paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        raise BackupError(f"nothing to back up at {', '.join(missing)} (check [backup] paths)")
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        writer = _Writer(tar)
        listed = [{"path": str(p), "type": "dir" if p.is_dir() else "file"} for p in paths]
        writer.add_bytes("roots.json", json.dumps(listed).encode(), {"mode": 0o600})
        db_member, dump, db_meta = dump_database(cfg.db_url)
        writer.add_bytes(db_member, dump, {"mode": 0o600})
        for index, root in enumerate(paths):
            writer.add_tree(index, root)
        manifest = {
            "format": FORMAT,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "database": {"member": db_member, **db_meta},
            "roots": listed,
            "entries": writer.entries,
        }
        info = tarfile.TarInfo("manifest.json")
        data = json.dumps(manifest, indent=1).encode()
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))


def _gpg_home() -> tempfile.TemporaryDirectory[str]:
    # gpg writes a trustdb and may start an agent there; never the operator's or root's keyring.
    return tempfile.TemporaryDirectory(prefix="ddmail-gpg-")


def create(
    cfg: Config, settings: BackupSettings, extra: tuple[Path, ...] = (), gpg: str = "gpg"
) -> Path:
    """Write <dir>/ddmail-YYYYmmddTHHMMSSZ.tar.gpg (0600, via a temporary name), keep the newest
    settings.keep, and return its path."""
    if settings.public_key is None or not settings.public_key.is_file():
        raise BackupError(
            f"backup.public_key: {settings.public_key or 'not set'}: the operator's OpenPGP "
            "public key file is needed (set [backup] public_key or pass --public-key)"
        )
    settings.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = settings.dir / f"ddmail-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.tar.gpg"
    if final.exists():
        raise BackupError(f"{final} exists already; try again in a second")
    partial = settings.dir / f".{final.name}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with _gpg_home() as home, tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                [gpg, "--batch", "--no-tty", "--quiet", "--homedir", home,
                 "--trust-model", "always", "--recipient-file", str(settings.public_key),
                 "--encrypt", "--output", "-"],
                stdin=subprocess.PIPE, stdout=fd, stderr=errors,
            )  # fmt: skip
            assert proc.stdin is not None
            try:
                write_archive(proc.stdin, cfg, roots(cfg, extra))
                proc.stdin.close()
            except BrokenPipeError:
                cut_short = True  # gpg stopped reading: its status and message say why
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            else:
                cut_short = False
            if proc.wait() != 0 or cut_short:
                errors.seek(0)
                raise BackupError(f"gpg failed: {errors.read().decode(errors='replace').strip()}")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        partial.unlink(missing_ok=True)
        raise
    os.close(fd)
    partial.rename(final)
    prune(settings.dir, settings.keep)
    return final


def backups(directory: Path) -> list[Path]:
    """The backups in DIRECTORY, newest first (their names sort by time)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if NAME.match(p.name)), reverse=True)


def prune(directory: Path, keep: int) -> list[Path]:
    removed = backups(directory)[keep:]
    for path in removed:
        path.unlink()
    return removed


# --------------------------------------------------------------------------- restore


@dataclass
class _Staged:
    roots: list[dict[str, Any]] = field(default_factory=list)
    staging: list[Path] = field(default_factory=list)
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> what arrived
    database: bytes = b""
    manifest: dict[str, Any] | None = None


def _non_empty(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return os.path.lexists(path)


# Whether any table but Alembic's holds a row, in one statement psql can run.
_PG_HAS_ROWS = (
    "SELECT coalesce(bool_or((xpath('/row/e/text()', query_to_xml(format("
    "'SELECT EXISTS (SELECT 1 FROM public.%I) AS e', c.relname), false, true, '')))[1]"
    "::text::boolean), false) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'alembic_version'"
)


def database_has_data(db_url: str) -> bool:
    """Whether any table of the configured database holds a row (a live state to protect)."""
    if not db_url.startswith("sqlite"):
        # Through psql, as pg_restore will connect (root has no role of its own).
        ran = subprocess.run(
            _pg_command(db_url, "psql", "--no-psqlrc", "--tuples-only", "--no-align",
                        "--command", _PG_HAS_ROWS),
            capture_output=True, text=True, check=False, **_pg_identity(db_url),
        )  # fmt: skip
        if ran.returncode != 0:
            raise BackupError(f"cannot inspect the database: {ran.stderr.strip()}")
        return str(ran.stdout).strip() == "t"
    path = Path(make_url(db_url).database or "")
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [
            str(t)
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if t != "alembic_version" and not str(t).startswith("sqlite_")
        ]
        return any(
            conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")').fetchone()[0]  # noqa: S608
            for t in tables
        )


def _stage_path(target: Path, stamp: str, kind: str) -> Path:
    return target.parent / f".{target.name}.ddmail-{kind}-{stamp}"


def _safe_member(name: str) -> tuple[int, str]:
    """(root index, relative path) of a files/ member; refuses anything leaving its root."""
    parts = name.split("/")
    if len(parts) < 2 or parts[0] != "files" or not parts[1].isdigit():
        raise BackupError(f"unexpected member {name!r} in the archive")
    rel = "/".join(parts[2:])
    if any(p in ("", ".", "..") for p in parts[2:]) or rel.startswith("/"):
        raise BackupError(f"unsafe member name {name!r} in the archive")
    return int(parts[1]), rel


def _receive(tar: tarfile.TarFile, staged: _Staged, force: bool, db_url: str, stamp: str) -> None:
    for member in tar:
        name = member.name
        if name == "roots.json":
            staged.roots = json.loads(_read_member(tar, member))
            targets = [Path(r["path"]) for r in staged.roots]
            busy = [str(t) for t in targets if _non_empty(t)]
            if database_has_data(db_url):
                busy.append("the database")
            if busy and not force:
                raise BackupError(
                    f"refusing to overwrite existing state ({', '.join(busy)}): stop the "
                    "services and pass --force (the previous state is kept aside)"
                )
            for t in targets:
                t.parent.mkdir(parents=True, exist_ok=True)
            staged.staging = [_stage_path(t, stamp, "restore") for t in targets]
        elif name.startswith("database."):
            staged.database = _read_member(tar, member)
            staged.seen[name] = {"size": len(staged.database),
                                 "sha256": hashlib.sha256(staged.database).hexdigest()}  # fmt: skip
        elif name == "manifest.json":
            staged.manifest = json.loads(_read_member(tar, member))
        else:
            if not staged.staging:
                raise BackupError("archive damaged: files before roots.json")
            index, rel = _safe_member(name)
            if index >= len(staged.staging) or name in staged.seen:
                raise BackupError(f"archive damaged: unexpected or repeated member {name!r}")
            top = staged.staging[index]
            dest = top / rel if rel else top
            # A member may not reach outside its root through a symlink restored before it.
            inside = Path(os.path.realpath(dest.parent)).is_relative_to(os.path.realpath(top))
            if rel and not inside:
                raise BackupError(f"unsafe member {name!r}: its directory leaves the root")
            try:
                staged.seen[name] = _extract(tar, member, dest)
            except OSError as exc:
                raise BackupError(f"cannot stage {dest}: {exc.strerror}") from None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise BackupError(f"archive damaged: {member.name} is not a file")
    return fh.read()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> dict[str, Any]:
    if member.isdir():
        dest.mkdir(mode=0o700)
        return {"type": "dir"}
    if member.issym():
        os.symlink(member.linkname, dest)
        return {"type": "symlink", "target": member.linkname}
    if not member.isfile():
        raise BackupError(f"unexpected member type in {member.name!r}")
    source = tar.extractfile(member)
    assert source is not None
    digest, size = hashlib.sha256(), 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return {"type": "file", "size": size, "sha256": digest.hexdigest()}


def verify(staged: _Staged) -> dict[str, Any]:
    """The manifest is there, of our format, and matches every member that arrived."""
    manifest = staged.manifest
    if manifest is None or manifest.get("format") != FORMAT:
        raise BackupError("not a DDMail backup, or cut short: its manifest is missing")
    if manifest["roots"] != staged.roots:
        raise BackupError("archive damaged: manifest and roots.json disagree")
    listed = {e["member"]: e for e in manifest["entries"]}
    if set(listed) != set(staged.seen) | {"roots.json"}:
        diff = sorted(set(listed) ^ (set(staged.seen) | {"roots.json"}))
        raise BackupError(f"archive damaged: manifest and content differ at {diff[:5]}")
    for member, arrived in staged.seen.items():
        expected = listed[member]
        for key, value in arrived.items():
            if expected.get(key) != value:
                raise BackupError(f"archive damaged: {member}: {key} does not match the manifest")
    return manifest


def _uid_gid(entry: dict[str, Any]) -> tuple[int, int]:
    try:
        return pwd.getpwnam(entry["owner"]).pw_uid, grp.getgrnam(entry["group"]).gr_gid
    except KeyError:
        raise BackupError(
            f"user {entry['owner']} or group {entry['group']} does not exist on this host: "
            "create them first (apply the playbook), then restore"
        ) from None


def apply_ownership(staged: _Staged, manifest: dict[str, Any]) -> None:
    """Owners and modes as the manifest recorded them (owners only when running as root)."""
    as_root = os.geteuid() == 0
    # Deepest first: a directory's restricted mode never blocks reaching its content.
    for entry in sorted(manifest["entries"], key=lambda e: -e["member"].count("/")):
        if not entry["member"].startswith("files/"):
            continue
        index, rel = _safe_member(entry["member"])
        path = staged.staging[index] / rel if rel else staged.staging[index]
        if as_root:
            os.lchown(path, *_uid_gid(entry))
        if entry["type"] != "symlink":
            path.chmod(entry["mode"])
            os.utime(path, (entry["mtime"], entry["mtime"]))


def _swap_in(staged: _Staged, stamp: str) -> list[tuple[Path, Path | None]]:
    """Move every restored root into place; the previous ones go aside. Returns (target, old)
    pairs for a rollback."""
    done: list[tuple[Path, Path | None]] = []
    try:
        for root, new in zip(staged.roots, staged.staging, strict=True):
            target = Path(root["path"])
            old = None
            if os.path.lexists(target):
                old = _stage_path(target, stamp, "old")
                target.rename(old)
            done.append((target, old))
            new.rename(target)
    except BaseException:
        _swap_back(done, stamp)
        raise
    return done


def _swap_back(done: list[tuple[Path, Path | None]], stamp: str) -> None:
    for target, old in reversed(done):
        if os.path.lexists(target):
            target.rename(_stage_path(target, stamp, "failed"))
        if old is not None:
            old.rename(target)


def restore_database(db_url: str, manifest: dict[str, Any], dump: bytes, stamp: str) -> None:
    db = manifest["database"]
    if db["kind"] == "sqlite":
        if not db_url.startswith("sqlite"):
            raise BackupError("the backup holds an SQLite database, the config a PostgreSQL one")
        path = Path(make_url(db_url).database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.ddmail-restore-{stamp}"
        memory, out = sqlite3.connect(":memory:"), sqlite3.connect(tmp)
        try:
            memory.deserialize(dump)
            memory.backup(out)
        finally:
            memory.close()
            out.close()
        if os.geteuid() == 0:
            os.chown(tmp, *_uid_gid(db))
        tmp.chmod(db["mode"])
        for suffix in ("-wal", "-shm"):  # the old file's journal must not be replayed on it
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        if path.exists():
            path.rename(_stage_path(path, stamp, "old"))
        tmp.rename(path)
        return
    if db_url.startswith("sqlite"):
        raise BackupError("the backup holds a PostgreSQL database, the config an SQLite one")
    ran = subprocess.run(
        _pg_command(db_url, "pg_restore", "--clean", "--if-exists", "--single-transaction",
                    "--exit-on-error"),
        input=dump, capture_output=True, check=False, **_pg_identity(db_url),
    )  # fmt: skip
    if ran.returncode != 0:
        raise BackupError(f"pg_restore failed: {ran.stderr.decode(errors='replace').strip()}")


@dataclass(frozen=True)
class Restored:
    manifest: dict[str, Any]
    kept_aside: list[Path]


def restore(
    cfg: Config,
    archive: Path,
    homedir: Path | None = None,
    passphrase_on_stdin: bool = False,
    force: bool = False,
    gpg: str = "gpg",
) -> Restored:
    """Decrypt ARCHIVE as a stream, stage every root next to its target, verify the manifest,
    then swap the roots in and restore the database; on a database failure the roots are
    swapped back. Services must be stopped first (this stops nothing)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    command = [gpg, "--batch", "--no-tty", "--quiet"]
    if homedir is not None:
        command += ["--homedir", str(homedir)]
    if passphrase_on_stdin:  # the passphrase arrives on our stdin, never in argv
        command += ["--pinentry-mode", "loopback", "--passphrase-fd", "0"]
    command += ["--decrypt", str(archive)]
    staged = _Staged()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            command,
            stdin=None if passphrase_on_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdout is not None
        try:
            failure: BaseException | None = None
            tar_failed = False
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                    _receive(tar, staged, force, cfg.db_url, stamp)
            except tarfile.TarError as exc:
                tar_failed, failure = True, BackupError(f"archive damaged: {exc}")
            except BaseException as exc:
                failure = exc  # e.g. the refusal to overwrite: gpg then fails on a closed pipe
            proc.stdout.close()
            if proc.wait() != 0 and (failure is None or tar_failed):
                errors.seek(0)
                message = errors.read().decode(errors="replace").strip()
                failure = BackupError(f"gpg could not decrypt {archive}: {message}")
            if failure is not None:
                raise failure
            manifest = verify(staged)
            apply_ownership(staged, manifest)
        except BaseException:
            for path in staged.staging:
                _remove(path)
            raise
    swapped = _swap_in(staged, stamp)
    try:
        restore_database(cfg.db_url, manifest, staged.database, stamp)
    except BaseException:
        _swap_back(swapped, stamp)
        raise
    kept = []
    for _target, old in swapped:
        if old is not None and not _non_empty(old):
            _remove(old)  # an empty directory the installation had made
        elif old is not None:
            kept.append(old)
    return Restored(manifest, kept)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def describe(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        st = path.stat()
        when = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        yield f"{path.name}\t{st.st_size}\t{when}"
