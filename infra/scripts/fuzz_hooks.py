"""Schemathesis hooks for `make fuzz` (loaded through SCHEMATHESIS_HOOKS).

Hypothesis seldom puts a particular control character into a string, and
never into one with a format or pattern. These hooks splice NUL or another
control character (C0, DEL, C1; tab and line breaks too) into one string of
about half the generated bodies and query strings, so that every string
field and parameter is also tried with one.
"""

import copy

import schemathesis
from hypothesis import strategies as st

CONTROL = st.sampled_from(["\x00", "\x01", "\x07", "\x08", "\x0b", "\x1b", "\x7f", "\x85", "\x9f", "\t", "\n", "\r"])


def _string_paths(value, path=()):
    """Paths (keys and indexes) to the strings inside `value`."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_paths(item, path + (index,))


def _splice(value, path, char, at):
    """A copy of `value` with `char` inserted into the string at `path`, at index `at` (clamped)."""
    value = copy.deepcopy(value)
    if not path:
        return value[: min(at, len(value))] + char + value[min(at, len(value)) :]
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    text = parent[path[-1]]
    parent[path[-1]] = text[: min(at, len(text))] + char + text[min(at, len(text)) :]
    return value


def _with_control(value):
    """`value` as drawn, or with a control character in one of its strings."""
    paths = list(_string_paths(value))
    if not paths:
        return st.just(value)
    spliced = st.builds(lambda p, c, at: _splice(value, p, c, at), st.sampled_from(paths), CONTROL, st.integers(0, 64))
    return st.one_of(st.just(value), spliced)


@schemathesis.hook
def flatmap_body(ctx, body):
    return _with_control(body)


@schemathesis.hook
def flatmap_query(ctx, query):
    return _with_control(query)
