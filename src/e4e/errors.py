class E4EError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def first_line(exc: BaseException, limit: int | None = 200, default: str | None = None) -> str:
    """The first line of an exception's message, for a one-line error: at most `limit` characters; an
    empty message gives `default` (the exception's type name when None)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else (type(exc).__name__ if default is None else default)
    return text[:limit] if limit is not None else text
