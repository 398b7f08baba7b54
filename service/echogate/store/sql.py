"""SQL shared by the backends: the records columns, row conversion, and filters as bound parameters.

Both backends hold the same columns; they differ in types (SQLite keeps JSON and ISO 8601
times as TEXT, PostgreSQL uses JSONB and TIMESTAMPTZ) and in a few expressions, which a
`Dialect` supplies. Row conversion accepts either form, so each backend decodes the same way.
"""
from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from collections.abc import Iterator
from typing import Any, Callable

import orjson

from echogate.query import CountGroup, Cursor, GroupBy, RecordFilter
from echogate.store.base import Store, StoreItem, record_id_for
from echogate.errors import FailedPrecondition, NotFound
from echogate.types import (DeclaredOrigin, Decision, Label, Record, RepetitionStats, ReviewItem, Role, Scores,
                            Transcript, Turn, TurnScore, Verdict)

COLUMNS = ("record_id", "source", "transcript_id", "content_sha256", "declared_origin", "language", "metadata",
           "turns", "bot_origin", "repetitiveness", "decision", "tags", "reasons", "model_version",
           "policy_version", "received_at", "decided_at", "corpus_duplicate", "repetition")
COLUMN_LIST = ", ".join(COLUMNS)
_IX = {name: i for i, name in enumerate(COLUMNS)}


@dataclass(frozen=True)
class Dialect:
    """What differs between SQLite and PostgreSQL in the statements echogate builds."""

    param: str  # placeholder: "?" or "%s"
    time_param: Callable[[datetime], Any]  # how a time is bound
    any_of: Callable[[str, list], tuple[str, list]]  # column IN values
    has_tag: str  # condition that the record's tags contain one bound tag
    text_match: str  # condition that some turn's text contains a bound LIKE pattern, case-insensitively
    day: str  # expression: UTC date of decided_at as YYYY-MM-DD
    epoch_minute: str  # expression: decided_at as Unix seconds, rounded down to the minute
    json_param: str  # placeholder for a JSON value bound as text
    for_update: str  # suffix that locks the selected rows for the transaction ("" where the write lock does)
    skip_locked: str  # added to for_update: pass over rows another transaction holds


def where(f: RecordFilter, d: Dialect, after: Cursor | None = None) -> tuple[str, list]:
    """The WHERE clause (with its parameters) for a filter, and for a page after a cursor."""
    p = d.param
    parts: list[str] = []
    params: list = []
    if f.since:
        parts.append(f"decided_at >= {p}")
        params.append(d.time_param(f.since))
    if f.until:
        parts.append(f"decided_at < {p}")
        params.append(d.time_param(f.until))
    for column, values in (("source", f.sources), ("decision", [str(x) for x in f.decisions]),
                           ("declared_origin", [str(x) for x in f.declared_origins]),
                           ("model_version", f.model_versions)):
        if values:
            sql, values_params = d.any_of(column, list(values))
            parts.append(sql)
            params += values_params
    for tag in f.tags:
        parts.append(d.has_tag)
        params.append(tag)
    for column in ("bot_origin", "repetitiveness", "corpus_duplicate"):
        r = getattr(f, column)
        if r.at_least is not None:
            parts.append(f"{column} >= {p}")
            params.append(r.at_least)
        if r.below is not None:
            parts.append(f"{column} < {p}")
            params.append(r.below)
    if f.text_contains:
        parts.append(d.text_match)
        escaped = f.text_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(f"%{escaped}%")
    if after is not None:
        parts.append(f"(decided_at, record_id) > ({p}, {p})")
        params += [d.time_param(after.decided_at), after.record_id]
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def page_query(f: RecordFilter, d: Dialect, after: Cursor | None, limit: int) -> tuple[str, list]:
    clause, params = where(f, d, after)
    return (f"SELECT {COLUMN_LIST} FROM records{clause} ORDER BY decided_at, record_id LIMIT {int(limit)}",
            params)


def count_query(f: RecordFilter, d: Dialect, group_by: tuple[GroupBy, ...]) -> tuple[str, list]:
    clause, params = where(f, d)
    exprs = [d.day if g is GroupBy.DAY else str(g) for g in group_by]
    if not exprs:
        return f"SELECT count(*) FROM records{clause}", params
    cols = ", ".join(exprs)
    return (f"SELECT {cols}, count(*) FROM records{clause} GROUP BY {cols} ORDER BY {cols}", params)


def count_groups(rows, group_by: tuple[GroupBy, ...]) -> list[CountGroup]:
    out = []
    for row in rows:
        values = dict(zip(group_by, row))
        decision = values.get(GroupBy.DECISION)
        out.append(CountGroup(decision=Decision(decision) if decision is not None else None,
                              source=values.get(GroupBy.SOURCE), day=values.get(GroupBy.DAY), count=int(row[-1])))
    return out


@lru_cache(maxsize=256)
def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with microseconds: sorts as text in time order (cached: a group's rows
    share a few received and decided times)."""
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def dumps(value) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def turns_json(item: StoreItem) -> list[dict]:
    t, v = item.transcript, item.verdict
    return [{"role": turn.role, "text": turn.text, "ts": iso(turn.timestamp) if turn.timestamp else None,
             "declared_author": turn.declared_author, "bot_origin": score.bot_origin,
             "repetitiveness": score.repetitiveness, "seen_before": score.seen_before}
            for turn, score in zip(t.turns, v.scores.turns)]


def row_values(record_id: str, item: StoreItem, encode_json: Callable = dumps, time=iso) -> tuple:
    """One records row, in COLUMNS order."""
    t, v = item.transcript, item.verdict
    return (record_id, t.source, t.id, v.content_sha256, str(t.declared_origin), t.language,
            encode_json(t.metadata), encode_json(turns_json(item)), v.scores.bot_origin, v.scores.repetitiveness,
            str(v.decision), encode_json(list(v.tags)), encode_json(list(v.reasons)), v.model_version,
            v.policy_version, time(item.received_at), time(v.decided_at), v.scores.corpus_duplicate,
            encode_json(v.scores.repetition._asdict()))


def queued_reviews(fresh: list[tuple[str, StoreItem]], time) -> list[tuple]:
    """reviews rows (record_id, source, model_decision, queued_at) for newly stored REVIEW verdicts:
    they enter the review queue in the same transaction as the record."""
    return [(rid, item.transcript.source, str(item.verdict.decision), time(item.verdict.decided_at))
            for rid, item in fresh if item.verdict.decision is Decision.REVIEW]


def _json(value):
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _time(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def repetition_stats(value) -> RepetitionStats:
    """The stored statistics ({} for records stored before they existed: zeros)."""
    stored = _json(value)
    return RepetitionStats(*(stored.get(name, 0.0) for name in RepetitionStats._fields))


def row_to_verdict(row) -> Verdict:
    turns = _json(row[_IX["turns"]])
    return Verdict(
        transcript_id=row[2], source=row[1], content_sha256=row[3],
        scores=Scores(row[8], row[9], tuple(TurnScore(t["bot_origin"], t["repetitiveness"], t.get("seen_before", 0))
                                            for t in turns),
                      corpus_duplicate=row[17], repetition=repetition_stats(row[18])),
        decision=Decision(row[10]), tags=tuple(_json(row[11])), reasons=tuple(_json(row[12])),
        model_version=row[13], policy_version=row[14], decided_at=_time(row[16]), record_id=row[0],
    )


def row_to_record(row) -> Record:
    turns = tuple(Turn(Role(t["role"]), t["text"], datetime.fromisoformat(t["ts"]) if t["ts"] else None,
                       DeclaredOrigin(t["declared_author"])) for t in _json(row[7]))
    transcript = Transcript(id=row[2], source=row[1], turns=turns, metadata=_json(row[6]),
                            declared_origin=DeclaredOrigin(row[4]), language=row[5])
    return Record(verdict=row_to_verdict(row), transcript=transcript, received_at=_time(row[15]))


class SQLStore(Store):
    """Reads shared by the SQL backends; each supplies its dialect, a read and a write transaction."""

    dialect: Dialect

    @abstractmethod
    def _fetch(self, sql: str, params: list) -> list[tuple]:
        """Run one read-only statement on the reader connection."""

    @abstractmethod
    def _admin_transaction(self) -> AbstractContextManager:
        """A connection in a write transaction, apart from the verdict writer (purges)."""

    def get(self, record_id: str | None = None, key: tuple[str, str] | None = None) -> Record | None:
        if record_id is None:
            if key is None:
                raise ValueError("record_id or key is required")
            record_id = record_id_for(*key)
        rows = self._fetch(f"SELECT {COLUMN_LIST} FROM records WHERE record_id = {self.dialect.param}", [record_id])
        return row_to_record(rows[0]) if rows else None

    def query(self, f: RecordFilter, after: Cursor | None = None, limit: int = 100) -> list[Record]:
        sql, params = page_query(f, self.dialect, after, limit)
        return [row_to_record(row) for row in self._fetch(sql, params)]

    def _row_pages(self, f: RecordFilter, page_size: int) -> Iterator[list[tuple]]:
        """Pages of matching rows (keyset pagination: flat memory, and rows committed meanwhile are
        picked up if they sort after the current page)."""
        after = None
        while rows := self._fetch(*page_query(f, self.dialect, after, page_size)):
            yield rows
            last = rows[-1]
            after = Cursor(_time(last[_IX["decided_at"]]), last[_IX["record_id"]])

    def iter_records(self, f: RecordFilter, page_size: int = 2000) -> Iterator[Record]:
        """Every record matching `f`, page by page."""
        for rows in self._row_pages(f, page_size):
            yield from map(row_to_record, rows)

    def iter_rows(self, f: RecordFilter, page_size: int = 5000) -> Iterator[dict]:
        """Matching records as flat dicts of column values (JSON decoded, times as datetimes),
        page by page: the export path, which skips building Record objects."""
        for rows in self._row_pages(f, page_size):
            for row in rows:
                out = dict(zip(COLUMNS, row))
                for name in ("metadata", "tags", "reasons"):
                    out[name] = _json(out[name])
                out["repetition"] = repetition_stats(out["repetition"])._asdict()
                out["turns"] = turns = _json(out["turns"])
                for t in turns:
                    if t["ts"]:
                        t["ts"] = _time(t["ts"])
                out["received_at"], out["decided_at"] = _time(out["received_at"]), _time(out["decided_at"])
                yield out

    def accepted_since(self, since: datetime) -> list[tuple[str, float, int, float]]:
        """Accepted records decided since `since`, per source and minute: (source, epoch seconds,
        count, sum of bot origin), oldest first. The real-data floor's state after a restart."""
        d = self.dialect
        rows = self._fetch(f"SELECT source, {d.epoch_minute} AS minute, count(*), sum(bot_origin) FROM records "
                           f"WHERE decision = 'accept' AND decided_at >= {d.param} GROUP BY source, minute "
                           "ORDER BY minute", [d.time_param(since)])
        return [(source, float(minute), int(n), float(mass)) for source, minute, n, mass in rows]

    def count(self, f: RecordFilter, group_by: tuple[GroupBy, ...] = ()) -> list[CountGroup]:
        sql, params = count_query(f, self.dialect, group_by)
        return count_groups(self._fetch(sql, params), group_by)

    def purge(self, f: RecordFilter) -> list[CountGroup]:
        clause, params = where(f, self.dialect)
        group_by = (GroupBy.SOURCE, GroupBy.DECISION)
        with self._admin_transaction() as con:
            rows = con.execute(f"SELECT source, decision, count(*) FROM records{clause} "
                               "GROUP BY source, decision ORDER BY source, decision", params).fetchall()
            con.execute(f"DELETE FROM reviews WHERE record_id IN (SELECT record_id FROM records{clause})", params)
            con.execute(f"DELETE FROM records{clause}", params)
        return count_groups(rows, group_by)

    # --- the review queue ---------------------------------------------------------------------

    def lease_reviews(self, reviewer: str, max_items: int, lease_seconds: float,
                      sources: tuple[str, ...] = ()) -> list[ReviewItem]:
        """Hand out up to `max_items` open review items, oldest first, leased to `reviewer`: items
        nobody holds, or whose lease expired. Selection and lease are one transaction with the
        rows locked, so two reviewers never get the same item."""
        d, p = self.dialect, self.dialect.param
        now = datetime.now(timezone.utc)
        until = now + timedelta(seconds=lease_seconds)
        cond, params = (f"reviewed_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at < {p})",
                        [d.time_param(now)])
        if sources:
            sql, values = d.any_of("source", list(sources))
            cond, params = f"{cond} AND {sql}", params + values
        with self._admin_transaction() as con:
            picked = con.execute(f"SELECT record_id, queued_at FROM reviews WHERE {cond} ORDER BY queued_at "
                                 f"LIMIT {int(max_items)}{d.for_update}{d.skip_locked}", params).fetchall()
            ids = [rid for rid, _ in picked]
            if ids:
                sql, values = d.any_of("record_id", ids)
                con.execute(f"UPDATE reviews SET lease_owner = {p}, lease_expires_at = {p} WHERE {sql}",
                            [reviewer, d.time_param(until), *values])
                rows = {row[0]: row for row in con.execute(
                    f"SELECT {COLUMN_LIST} FROM records WHERE {sql}", values).fetchall()}
        return [ReviewItem(row_to_record(rows[rid]), _time(queued), until) for rid, queued in picked if rid in rows]

    def submit_review(self, record_id: str, reviewer: str, label: Label, final: Decision, note: str) -> Record:
        """Record a reviewer's judgement on an item they hold; the record's decision becomes the
        final one, tagged `reviewed_<label>` with a `human_review` reason first."""
        d, p = self.dialect, self.dialect.param
        now = datetime.now(timezone.utc)
        with self._admin_transaction() as con:
            row = con.execute(f"SELECT lease_owner, lease_expires_at, reviewed_at, reviewer FROM reviews "
                              f"WHERE record_id = {p}{d.for_update}",
                              [record_id]).fetchone()
            if row is None:
                raise NotFound(f"no review item for record_id {record_id!r}")
            owner, expires, reviewed_at, done_by = row
            if reviewed_at is not None:
                raise FailedPrecondition(f"record {record_id} was already reviewed by {done_by}")
            if owner != reviewer or expires is None or _time(expires) < now:
                holder = f"held by {owner}" if owner and owner != reviewer and _time(expires) >= now else "not held"
                raise FailedPrecondition(f"{reviewer} holds no lease on record {record_id} (it is {holder}); "
                                         "take it again with ListReviews")
            con.execute(f"UPDATE reviews SET reviewer = {p}, label = {p}, final_decision = {p}, note = {p}, "
                        f"reviewed_at = {p} WHERE record_id = {p}",
                        [reviewer, str(label), str(final), note, d.time_param(now), record_id])
            record = list(con.execute(f"SELECT {COLUMN_LIST} FROM records WHERE record_id = {p}",
                                      [record_id]).fetchone())
            tags = [t for t in _json(record[_IX["tags"]]) if not t.startswith("reviewed_")] + [f"reviewed_{label}"]
            reason = f"human_review: {reviewer} judged it {label}-written and decided {final}" + (
                f" ({note})" if note else "")
            reasons = [reason, *_json(record[_IX["reasons"]])]
            con.execute(f"UPDATE records SET decision = {p}, tags = {d.json_param}, reasons = {d.json_param} "
                        f"WHERE record_id = {p}", [str(final), dumps(tags), dumps(reasons), record_id])
        record[_IX["decision"]], record[_IX["tags"]], record[_IX["reasons"]] = str(final), tags, reasons
        return row_to_record(record)  # the row as just written, not read again

    def review_stats(self) -> tuple[int, datetime | None]:
        """(open review items, when the oldest was queued)."""
        count, oldest = self._fetch("SELECT count(*), min(queued_at) FROM reviews WHERE reviewed_at IS NULL", [])[0]
        return int(count), _time(oldest) if oldest is not None else None

    def iter_reviewed(self, since: datetime | None = None) -> Iterator[tuple[Record, dict]]:
        """Reviewed records with their review (reviewer, label, final_decision, note, reviewed_at),
        oldest review first: the reviewers' labels as training data."""
        p = self.dialect.param
        cols = ", ".join(f"r.{c}" for c in COLUMNS)
        cond, params = ("AND v.reviewed_at >= " + p, [self.dialect.time_param(since)]) if since else ("", [])
        for row in self._fetch(f"SELECT {cols}, v.reviewer, v.label, v.final_decision, v.note, v.reviewed_at "
                               f"FROM reviews v JOIN records r ON r.record_id = v.record_id "
                               f"WHERE v.reviewed_at IS NOT NULL {cond} ORDER BY v.reviewed_at", params):
            review = dict(zip(("reviewer", "label", "final_decision", "note", "reviewed_at"), row[len(COLUMNS):]))
            review["reviewed_at"] = _time(review["reviewed_at"])
            yield row_to_record(row[:len(COLUMNS)]), review
