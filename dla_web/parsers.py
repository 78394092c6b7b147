"""The API's JSON body parser: plain JSON with limits a hostile body cannot get past. Nesting deeper than
``MAX_JSON_DEPTH``, integers beyond 64 bits, and NaN/Infinity are refused with a 400 that says so, instead of
a RecursionError, a database overflow or a non-JSON float reaching a view."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 64
MAX_ABS_INT = 2**63 - 1


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(int(text)) > MAX_ABS_INT:
        raise ParseError(
            f"JSON number {text[:30]}{'...' if len(text) > 30 else ''} is too large (limit 2^63-1)"
        )
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ParseError(f"JSON number {text[:30]} is too large for a float")
    return value


def _constant(name: str):
    raise ParseError(f"JSON value {name} is not allowed (use a finite number)")


def _check_depth(value, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise ParseError(f"JSON body is nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with depth, integer and float limits (see the module docstring)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON body is not valid {encoding} text") from exc
        try:
            data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
        except RecursionError:
            raise ParseError(f"JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
        _check_depth(data, MAX_JSON_DEPTH)
        return data
