"""`--where 'auc > 0.8 and params.max_depth <= 5'` and `--sort -auc`: a small parser, no eval.

Grammar: `expr := term ("or" term)*`, `term := factor ("and" factor)*`,
`factor := "not" factor | "(" expr ")" | FIELD OP VALUE`, with OP one of
`== != > >= < <=` and VALUE a number, a quoted string, `true`, `false` or a bare word.
FIELD is `status`, `kind`, `name`, `experiment`, `params.X`, `metrics.X`, or a bare metric name
(`auc` also finds `validation:auc`), else a parameter of that name. A run lacking the field does
not match. A bad query is an InvalidInput naming the spot (a 400).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cairn.errors import InvalidInput

from services.experiments.domain import Run, final_metric

Predicate = Callable[[Run], bool]
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>==|!=|>=|<=|>|<)
      | (?P<paren>[()])
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w:.@-]))
      | (?P<word>[A-Za-z_][\w:.@/-]*)
    )""",
    re.VERBOSE,
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_ATTRIBUTES = ("status", "kind", "name", "experiment", "run_id")
_MISSING = object()


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    at: int


def _tokens(text: str) -> list[_Token]:
    found, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise InvalidInput(
                f"where: cannot read {text[position:].strip()[:20]!r} at character {position}",
                field="where",
            )
        kind = match.lastgroup or ""
        found.append(_Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    return found


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.index = 0

    def fail(self, what: str) -> InvalidInput:
        token = self.tokens[self.index] if self.index < len(self.tokens) else None
        where = f"at character {token.at} ({token.text!r})" if token else "at the end"
        return InvalidInput(f"where: {what} {where}", field="where")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail("unexpected end")
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self.expr()
        if self.peek() is not None:
            raise self.fail("expected `and`, `or` or the end")
        return predicate

    def expr(self) -> Predicate:
        parts = [self.term()]
        while self.keyword("or"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda run: any(p(run) for p in parts))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda run: all(p(run) for p in parts))

    def factor(self) -> Predicate:
        if self.keyword("not"):
            inner = self.factor()
            return lambda run: not inner(run)
        token = self.peek()
        if token is not None and token.kind == "paren" and token.text == "(":
            self.index += 1
            inner = self.expr()
            closing = self.peek()
            if closing is None or closing.text != ")":
                raise self.fail("expected `)`")
            self.index += 1
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        field = self.take()
        if field.kind != "word" or field.text.lower() in ("and", "or", "not"):
            self.index -= 1
            raise self.fail("expected a field name")
        op = self.take()
        if op.kind != "op":
            self.index -= 1
            raise self.fail(f"expected a comparison (==, !=, >, >=, <, <=) after {field.text!r}")
        value = _value(self.take(), self)
        compare = _OPS[op.text]
        name = field.text

        def predicate(run: Run) -> bool:
            found = field_value(run, name)
            if found is _MISSING:
                return False
            if isinstance(value, int | float) and not isinstance(value, bool):
                if isinstance(found, bool) or not isinstance(found, int | float):
                    return False
            elif op.text not in ("==", "!=") and type(found) is not type(value):
                return False
            try:
                return bool(compare(found, value))
            except TypeError:
                return False

        return predicate


def _value(token: _Token, parser: _Parser) -> Any:
    if token.kind == "number":
        number = float(token.text)
        return int(number) if number.is_integer() and "." not in token.text else number
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    if token.kind == "word":
        return {"true": True, "false": False}.get(token.text.lower(), token.text)
    parser.index -= 1
    raise parser.fail("expected a value")


def field_value(run: Run, name: str) -> Any:
    """The value a query's field names on a run, or a marker when the run has none."""
    if name in _ATTRIBUTES:
        return getattr(run, name)
    head, dot, rest = name.partition(".")
    if dot and head in ("params", "parameters"):
        return run.parameters.get(rest, _MISSING)
    if dot and head == "metrics":
        found = final_metric(run, rest)
        return _MISSING if found is None else found
    metric = final_metric(run, name)
    if metric is not None:
        return metric
    return run.parameters.get(name, _MISSING)


def parse_where(text: str | None) -> Predicate:
    """A predicate over runs; an empty query matches every run."""
    if text is None or not text.strip():
        return lambda run: True
    return _Parser(text).parse()


def sort_runs(runs: list[Run], sort: str | None) -> list[Run]:
    """`auc` ascending, `-auc` or `auc desc` descending; runs without the field go last."""
    if sort is None or not sort.strip():
        return sorted(runs, key=lambda run: run.created_at, reverse=True)
    text = sort.strip()
    descending = text.startswith("-")
    words = text.lstrip("-").split()
    if len(words) == 2 and words[1].lower() in ("asc", "desc"):
        descending = words[1].lower() == "desc"
    elif len(words) != 1:
        raise InvalidInput(f"sort: {sort!r} is not FIELD, -FIELD or 'FIELD desc'", field="sort")
    name = words[0]
    present = [(field_value(run, name), run) for run in runs]
    keyed = [(value, run) for value, run in present if value is not _MISSING]
    missing = [run for value, run in present if value is _MISSING]
    try:
        keyed.sort(key=lambda pair: pair[0], reverse=descending)
    except TypeError:
        keyed.sort(key=lambda pair: str(pair[0]), reverse=descending)
    return [run for _, run in keyed] + missing
