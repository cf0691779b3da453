"""Errors that cross service boundaries as `{"error": code, "message": text}` with a real status."""

from __future__ import annotations


class ApiError(Exception):
    """Raised by a handler; rendered as JSON with its HTTP status. The message is shown to users."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_json(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, code, message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)


def rule_violated(message: str, code: str = "rule_violated") -> ApiError:
    return ApiError(422, code, message)


def unavailable(message: str, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, message)
