"""The library's exception base: ``except VilmoError`` catches every error vilmo raises on
purpose (bad policy or YAML file, unknown policy or value, missing data, a failing classifier or
target), while each subclass keeps its builtin base (``KeyError``, ``ValueError``, ...)."""


class VilmoError(Exception):
    """Base of every exception the library defines."""
