"""Where a TLS key rollover keeps its files (DN 42): next to the served certificate and key
([tls] certificate, [tls] key), so the certificate directory alone holds the whole state.

  <certificate>.next, <key>.next            made by prepare, served from switch on
  <certificate>.previous, <key>.previous    the replaced pair, kept from switch until finish
  <certificate>.rollover                    the times of prepare and switch (JSON)

`ddmail admin dns zone` publishes a TLSA record for every certificate present, so the next
key is in DNS before it is served and the previous one until the rollover is finished."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ddmail_common.config import ConfigError, TlsSettings


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    key: Path

    @classmethod
    def of(cls, tls: TlsSettings) -> TlsFiles:
        if tls.certificate is None or tls.key is None:
            raise ConfigError("tls.certificate and tls.key: both are needed for a key rollover")
        return cls(tls.certificate, tls.key)

    def _with(self, path: Path, suffix: str) -> Path:
        return path.with_name(path.name + suffix)

    @property
    def next_certificate(self) -> Path:
        return self._with(self.certificate, ".next")

    @property
    def next_key(self) -> Path:
        return self._with(self.key, ".next")

    @property
    def previous_certificate(self) -> Path:
        return self._with(self.certificate, ".previous")

    @property
    def previous_key(self) -> Path:
        return self._with(self.key, ".previous")

    @property
    def state(self) -> Path:
        return self._with(self.certificate, ".rollover")


def published_certificates(tls: TlsSettings) -> list[tuple[str, Path]]:
    """(role, path) of each certificate whose key belongs in DNS: the served one, and during a
    rollover the next or the previous one."""
    if tls.certificate is None:
        return []
    found = [("current", tls.certificate)]
    if tls.key is not None:
        files = TlsFiles.of(tls)
        found += [
            (role, path)
            for role, path in (
                ("next", files.next_certificate),
                ("previous", files.previous_certificate),
            )
            if path.exists()
        ]
    return found
