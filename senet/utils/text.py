"""The text files senet reads and writes: one-line errors naming the file, file names that
are not UTF-8, spreadsheet cells that cannot run formulas.

* :func:`read_json` / :func:`read_yaml`: a file that cannot be read, is not valid JSON / YAML
  (named with its line and column) or holds the wrong kind of value is a one-line
  :class:`~senet.errors.SenetError` naming it.
* :data:`ERRORS`: the codec error handler of all text senet writes (files, standard output),
  so that everything it writes is valid UTF-8. A file name that is not valid UTF-8 reaches
  Python as lone surrogates (PEP 383); its undecodable bytes are written as ``\\xNN``
  escapes (``caf\\xe9.jpg``, as ``ls -b`` shows it), any other character UTF-8 cannot hold
  (a lone surrogate from hostile metadata) as a backslash escape of its code point.
* :func:`csv_text`: every CSV senet writes. A text cell that a spreadsheet would read as a
  formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return and is not a
  number) gets a leading single quote, as OWASP recommends against CSV injection: a class
  folder named ``=HYPERLINK(...)`` shows as text.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from senet.errors import ConfigError, FileSystemError, SenetError, fs_error

ERRORS = "senet-text"


def _handler(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeEncodeError):
        bad = exc.object[exc.start:exc.end]
        if all(0xDC80 <= ord(c) <= 0xDCFF for c in bad):  # undecodable bytes of a file name
            return "".join(f"\\x{ord(c) - 0xDC00:02x}" for c in bad), exc.end
        return codecs.backslashreplace_errors(exc)
    raise exc


codecs.register_error(ERRORS, _handler)


def encode(text: str) -> bytes:
    """``text`` as valid UTF-8, undecodable file-name bytes as ``\\xNN`` (module docstring)."""
    return text.encode("utf-8", ERRORS)


def display(text: str | os.PathLike[str]) -> str:
    """A path (or a message naming one) as :func:`encode` writes it: ``caf\\xe9.jpg``."""
    return encode(os.fspath(text)).decode("utf-8")


# ------------------------------------------------------------------ CSV
FORMULA_START = frozenset("=+-@\t\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_cell(value: object) -> object:
    """``value`` as a spreadsheet shows it as data: text starting like a formula gets a
    leading ``'`` (numbers, ``-0.5`` included, stay as they are)."""
    if isinstance(value, str) and value[:1] in FORMULA_START and not _is_number(value):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV file's text: ``header``, then ``rows``, every cell through :func:`csv_cell`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in header])
    first = FORMULA_START  # inlined: an analysis CSV has millions of cells
    writer.writerows([csv_cell(v) if isinstance(v, str) and v[:1] in first else v for v in row] for row in rows)
    return buf.getvalue()


# ------------------------------------------------------------------ reading
_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false"}


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null, or an empty file)"
    return _TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


#: senet's JSON and YAML files are a few kilobytes; a larger one is not read into memory
MAX_TEXT_BYTES = 16 << 20


# byte-order marks, UTF-32's before UTF-16's (FF FE 00 00 starts with FF FE)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"))


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """A small text file (``what`` it should be, e.g. ``--classes: one class name per line``, for
    the messages): UTF-8, with or without a byte-order mark, or UTF-16 / UTF-32 with one (what
    Windows editors save as "Unicode"). A missing, unreadable, huge or binary file (UTF-16
    without its mark included) is a one-line error naming it and what it should be."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise SenetError(f"{display(path)} is {path.stat().st_size:,} bytes, too large for {what} "
                             f"(at most {MAX_TEXT_BYTES >> 20} MiB)")
        data = path.read_bytes()
    except OSError as e:
        raise FileSystemError(f"{fs_error(e, path, 'read')} ({what})") from None
    codec, name = next(((c, n) for bom, c, n in _BOMS if data.startswith(bom)), ("utf-8", "UTF-8"))
    try:
        text, problem = data.decode(codec), ""
    except UnicodeDecodeError as e:
        text, problem = "", f"byte {e.start} is not {name}"
    if problem or "\0" in text:
        guess = "; UTF-16 without a byte-order mark?" if b"\0" in data else ""
        raise SenetError(f"{display(path)} is not a text file ({what}): {problem or 'it holds NUL characters'}"
                         f"{guess}; save it as UTF-8 (or UTF-16 with a byte-order mark)")
    return text


def _expect(path: Path, value: Any, expected: type | tuple[type, ...], what: str,
            error: type[SenetError] = SenetError) -> Any:
    if not isinstance(value, expected):
        first = expected[0] if isinstance(expected, tuple) else expected
        raise error(f"{display(path)} should hold {_TYPE_NAMES.get(first, first.__name__)} ({what}), "
                    f"got {_kind(value)}")
    return value


def read_json(path: str | os.PathLike[str], expected: type | tuple[type, ...] = dict, *,
              what: str = "senet's JSON") -> Any:
    """The value of the JSON file ``path``, which must be an ``expected`` (module docstring)."""
    path = Path(path)
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SenetError(f"{display(path)} is not valid JSON ({what}): {e.msg}: line {e.lineno}, "
                         f"column {e.colno}") from None
    except RecursionError:  # hostile nesting ([[[[... thousands deep): the parser recurses per level
        raise SenetError(f"{display(path)} is not senet's JSON ({what}): nested too deeply") from None
    return _expect(path, value, expected, what)


def yaml_problem(e: Exception) -> str:
    """A YAML parser error in one line: ``line L, column C: problem``."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = " ".join(filter(None, (getattr(e, "context", None), getattr(e, "problem", None)))) or str(e)
    problem = " ".join(problem.split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml(path: str | os.PathLike[str], expected: type | tuple[type, ...] = dict, *,
              what: str = "a YAML file") -> Any:
    """The value of the YAML file ``path``, which must be an ``expected``; a syntax error is
    one line naming the file, line and column (a :class:`~senet.errors.ConfigError`: YAML
    files are configurations here)."""
    import yaml

    path = Path(path)
    text = read_text(path, what)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{display(path)} is not valid YAML ({what}): {yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{display(path)} is not a configuration ({what}): nested too deeply") from None
    return _expect(path, value, expected, what, ConfigError)
