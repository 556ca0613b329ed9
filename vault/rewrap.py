"""Rewrap at scale: move stored ciphertexts of one key to its latest version, in batches.

Two kinds of store, both resumable after a kill with nothing lost:

- **JSON lines** in, JSON lines out: one output line per input line, in order, the
  ciphertext field replaced when it was rewrapped, the line copied unchanged otherwise.
  Each batch is written and flushed to disk before the next is read; a run that finds the
  output file already there keeps its complete lines, drops a torn last one, and goes on
  from the input line after them. The input is never modified.
- **a table** (database URL, table, column): each batch is one transaction of conditional
  updates (``... WHERE id = :id AND column = :old``), so a row the application changed
  meanwhile is left to it. What is already on the target version is skipped, so a second
  run simply continues.

Plaintexts exist only inside ``Transit.rewrap`` (and an OTP seed never leaves the HSM).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import MetaData, Table, func, select, update
from sqlalchemy.engine import Engine

from vault.encoding import Versioned, b64decode
from vault.errors import BadRequest, VaultError
from vault.transit import DecryptItem, Encrypted, Transit

MAX_FAILURES_LISTED = 20


@dataclass(frozen=True, slots=True)
class Stored:
    ciphertext: str
    associated_data: bytes = b""


@dataclass(slots=True)
class Summary:
    target_version: int = 0
    rewrapped: int = 0
    skipped: int = 0  # already on the target version (or changed by the application meanwhile)
    failed: int = 0
    resumed_after: int = 0  # items a previous run had done already
    failures: list[str] = field(default_factory=list)

    def fail(self, where: str, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_FAILURES_LISTED:
            self.failures.append(f"{where}: {reason}")


# Per item: the new ciphertext, None for "already there", or the reason it failed.
Outcome = str | None | VaultError


class Rewrapper:
    """Rewraps batches of one key's ciphertexts to ``target`` (the latest version when the
    run starts: versions made during a run are left for the next one)."""

    def __init__(self, transit: Transit, name: str, target: int):
        self.transit = transit
        self.name = name
        self.target = target

    async def batch(self, items: Sequence[Stored | VaultError]) -> list[Outcome]:
        out: list[Outcome] = []
        todo: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, VaultError):
                out.append(item)
                continue
            try:
                version = Versioned.parse(item.ciphertext, "ciphertext").version
            except VaultError as exc:
                out.append(exc)
                continue
            out.append(None)
            if version < self.target:
                todo.append(i)
        wanted: list[DecryptItem | VaultError] = []
        for i in todo:
            item = items[i]
            assert isinstance(item, Stored)
            wanted.append(DecryptItem(item.ciphertext, item.associated_data))
        if wanted:
            done = await self.transit.rewrap(self.name, wanted, self.target)
            for i, result in zip(todo, done, strict=True):
                out[i] = result.ciphertext if isinstance(result, Encrypted) else result
        return out


class Pace:
    """At most ``rate`` items a second (so a rewrap leaves the HSM to live traffic)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    async def after(self, count: int) -> None:
        self.done += count
        if self.rate:
            ahead = self.done / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                await asyncio.sleep(ahead)


Progress = Callable[[int], None]


# -- JSON lines -------------------------------------------------------------------------------


def completed_lines(out_path: Path) -> int:
    """How many complete lines a previous run wrote; a torn last line is cut off."""
    if not out_path.exists():
        return 0
    data = out_path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with out_path.open("r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return data.count(b"\n", 0, keep)


def _parse_line(line: str, field_name: str) -> tuple[dict[str, Any] | None, Stored | VaultError]:
    if not line.strip():
        return None, BadRequest("empty line")
    try:
        doc = json.loads(line)
    except ValueError:
        return None, BadRequest("not a JSON object")
    if not isinstance(doc, dict) or not isinstance(doc.get(field_name), str):
        return None, BadRequest(f"no string field {field_name!r}")
    ad = doc.get("associated_data")
    try:
        aad = b64decode(ad, "associated_data") if isinstance(ad, str) else b""
    except VaultError as exc:
        return None, exc
    return doc, Stored(doc[field_name], aad)


async def rewrap_json_lines(
    rewrapper: Rewrapper,
    in_path: Path,
    out_path: Path,
    *,
    field_name: str = "ciphertext",
    batch_size: int = 500,
    rate: float | None = None,
    progress: Progress = lambda _: None,
) -> Summary:
    summary = Summary(rewrapper.target, resumed_after=completed_lines(out_path))
    pace = Pace(rate)
    with in_path.open("r", encoding="utf-8", newline="\n") as src:
        for _ in range(summary.resumed_after):
            if not src.readline():
                raise BadRequest("the output file has more lines than the input: wrong file?")
        progress(summary.resumed_after)
        number = summary.resumed_after
        with out_path.open("a", encoding="utf-8", newline="\n") as out:
            for lines in _batches(src, batch_size):
                parsed = [_parse_line(line, field_name) for line in lines]
                outcomes = await rewrapper.batch([item for _, item in parsed])
                written = []
                for line, (doc, _), outcome in zip(lines, parsed, outcomes, strict=True):
                    number += 1
                    written.append(
                        _settle(summary, f"line {number}", line, outcome, doc, field_name)
                    )
                _append(out, written)
                progress(len(lines))
                await pace.after(len(lines))
    return summary


def _settle(
    summary: Summary,
    where: str,
    line: str,
    outcome: Outcome,
    doc: dict[str, Any] | None,
    field_name: str,
) -> str:
    """The output line for one input line, counted in the summary."""
    text = line if line.endswith("\n") else line + "\n"
    if isinstance(outcome, VaultError):
        summary.fail(where, str(outcome))
        return text
    if outcome is None or doc is None:
        summary.skipped += 1
        return text
    summary.rewrapped += 1
    doc[field_name] = outcome
    return json.dumps(doc, separators=(",", ":")) + "\n"


def _batches(src: IO[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in src:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _append(out: IO[str], lines: list[str]) -> None:
    out.write("".join(lines))
    out.flush()
    os.fsync(out.fileno())


# -- a table ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableSource:
    engine: Engine
    table: str
    column: str
    id_column: str = "id"
    ad_column: str | None = None

    def reflect(self) -> Table:
        try:
            table = Table(self.table, MetaData(), autoload_with=self.engine)
        except Exception as exc:
            raise BadRequest(f"cannot read table {self.table!r}: {type(exc).__name__}") from None
        for name in (self.column, self.id_column, self.ad_column):
            if name is not None and name not in table.c:
                raise BadRequest(f"table {self.table!r} has no column {name!r}")
        return table

    def count(self) -> int:
        table = self.reflect()
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _associated_data(value: object) -> bytes:
    """An associated-data column holds raw bytes, or text in base64 (as the API takes it)."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return b64decode(str(value), "associated_data")


async def rewrap_table(
    rewrapper: Rewrapper,
    source: TableSource,
    *,
    batch_size: int = 500,
    rate: float | None = None,
    progress: Progress = lambda _: None,
) -> Summary:
    table = source.reflect()
    ident, column = table.c[source.id_column], table.c[source.column]
    wanted = [ident, column] + ([table.c[source.ad_column]] if source.ad_column else [])
    summary = Summary(rewrapper.target)
    pace = Pace(rate)
    last: Any = None
    while True:
        query = select(*wanted).order_by(ident).limit(batch_size)
        if last is not None:
            query = query.where(ident > last)
        with source.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return summary
        last = rows[-1][0]
        items: list[Stored | VaultError] = []
        for row in rows:
            try:
                if not isinstance(row[1], str):
                    raise BadRequest("the ciphertext is not text")
                aad = _associated_data(row[2]) if source.ad_column else b""
                items.append(Stored(row[1], aad))
            except VaultError as exc:
                items.append(exc)
        outcomes = await rewrapper.batch(items)
        with source.engine.begin() as conn:
            for row, outcome in zip(rows, outcomes, strict=True):
                where = f"{source.id_column}={row[0]}"
                if isinstance(outcome, VaultError):
                    summary.fail(where, str(outcome))
                elif outcome is None:
                    summary.skipped += 1
                elif conn.execute(
                    update(table).where(ident == row[0], column == row[1]).values({column: outcome})
                ).rowcount:
                    summary.rewrapped += 1
                else:  # the application wrote the row meanwhile: its value stands
                    summary.skipped += 1
        progress(len(rows))
        await pace.after(len(rows))
