"""The per-login send limit of the submission milter (ddmail_milter.ratelimit)."""

from __future__ import annotations

from ddmail_milter.ratelimit import SendLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_recipients_up_to_the_limit_fit_and_one_more_does_not() -> None:
    limit = SendLimit(5, 60, Clock())
    assert limit.take("a@x.org", 3) and limit.take("a@x.org", 2)
    assert limit.exhausted("a@x.org")
    assert not limit.take("a@x.org", 1)


def test_the_limit_is_per_login() -> None:
    limit = SendLimit(2, 60, Clock())
    assert limit.take("a@x.org", 2)
    assert not limit.exhausted("b@x.org") and limit.take("b@x.org", 2)


def test_the_window_slides_and_idle_logins_are_forgotten() -> None:
    clock = Clock()
    limit = SendLimit(2, 60, clock)
    assert limit.take("a@x.org", 2)
    clock.now += 59
    assert not limit.take("a@x.org", 1)
    clock.now += 1
    assert not limit.exhausted("a@x.org")
    assert limit._sent == {}
    assert limit.take("a@x.org", 2)


def test_a_refused_message_does_not_count() -> None:
    limit = SendLimit(3, 60, Clock())
    assert not limit.take("a@x.org", 4)
    assert limit.take("a@x.org", 3)
