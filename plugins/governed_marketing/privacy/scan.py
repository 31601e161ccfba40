"""Find a person's identifiers anywhere: every warehouse table, every file under GMP_HOME.

What erasure has to prove is an absence, so the scan does not trust the list of stores it knows:
it reads every varchar column of every table and every byte of every file. Identifiers are the
person's emails (as normalized and as written), phone numbers (compared by their digits, whatever
the separators) and names (first and last name together in one row or line; a row that carries
someone else's email is a namesake, not a leftover).

Tables are scanned set-based in DuckDB (tokens joined to the needles, then candidate rows checked
here in Python); files with `grep -F` (Aho-Corasick over many needles; a pure-Python search when
grep is missing). Identifiers are held in memory only and never written to disk, logs or results.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from governed_marketing.crm import contract

if TYPE_CHECKING:  # imported where frames are built: `gmp dsr ...` starts without pandas
    import pandas as pd

    from governed_marketing.warehouse import Warehouse

REDACTED = "[erased]"

EMAIL_TOKEN = re.compile(r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
PHONE_TOKEN = re.compile(r"(?:\+|00)?\d[\d ./()-]{5,}\d")
WORD = re.compile(r"\w+")
MIN_PHONE_DIGITS = 7

# The same token rules in DuckDB's RE2 (on lower-cased text).
_SQL_EMAIL = r"[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?"
_SQL_PHONE = r"(?:\+|00)?[0-9][0-9 ./()-]{5,}[0-9]"
_SQL_WORD = r"[\pL\pN_]+"
_TEXT_TYPES = ("VARCHAR", "JSON", "character varying", "text", "json", "jsonb")  # DuckDB, Postgres


def phone_digits(phone: str) -> str:
    """A phone number's digits, with an international `00` prefix dropped (`+49 ...` == `0049 ...`)."""
    digits = re.sub(r"\D", "", phone or "")
    return digits[2:] if digits.startswith("00") else digits


@dataclass
class Identity:
    """Everything that identifies one person in a request (in memory only, never persisted)."""

    ref: str  # the request id: what results are keyed by
    emails: set[str] = field(default_factory=set)  # trimmed, lower-case
    phones: set[str] = field(default_factory=set)  # as written, trimmed
    names: set[tuple[str, str]] = field(default_factory=set)  # (first, last) as written
    contact_ids: set[str] = field(default_factory=set)
    pseudonym: str | None = None  # the marketing pseudonym (HMAC of the normalized email)

    def add_contact(self, record: dict) -> None:
        """Take the identifiers of one contact row (raw, quarantined or archived)."""
        email = str(record.get("email") or "").strip().lower()
        if email:
            self.emails.add(email)
        phone = str(record.get("phone") or "").strip()
        if len(phone_digits(phone)) >= MIN_PHONE_DIGITS:
            self.phones.add(phone)
        first = str(record.get("first_name") or "").strip()
        last = str(record.get("last_name") or "").strip()
        if first and last:
            self.names.add((first, last))
        contact_id = str(record.get("contact_id") or "").strip()
        if contact_id:
            self.contact_ids.add(contact_id)


#: Columns that identify a row's own person; a hit in them, in someone else's row, is theirs (a shared
#: phone number, a namesake), so only the row's free text can mention the person being erased.
STRUCTURED = frozenset(
    {"email", "email_normalized", "contact_id", "phone", "first_name", "last_name", "recipient_pseudonym"}
)


def expand(record: dict) -> dict:
    """A row with its quarantined `raw_record` JSON opened into fields (malformed lines by position)."""
    raw = record.get("raw_record")
    if not (isinstance(raw, str) and raw.startswith("{")):
        return record
    try:
        parsed = json.loads(raw)
    except ValueError:
        return record
    if not isinstance(parsed, dict):
        return record
    spec = next((s for s in contract.EXPORT_FILES if s.name == record.get("file_name")), None)
    if spec and parsed and all(str(k).isdigit() for k in parsed):  # a malformed line: cells by position
        parsed = {spec.columns[int(k)]: v for k, v in parsed.items() if int(k) < len(spec.columns)}
    opened = {k: v for k, v in record.items() if k != "raw_record"}
    opened.update({f"{k}" if k not in opened else f"raw_record.{k}": v for k, v in parsed.items()})
    return opened


@dataclass(frozen=True)
class Owners:
    """Whose row this is, as far as its identity fields say (all empty: the row does not say).

    A name found in a row that belongs to someone else (another contact_id, another email) is a
    namesake, not a leftover; a name in a row that says nothing about its owner counts.
    """

    emails: frozenset[str] = frozenset()
    contact_ids: frozenset[str] = frozenset()
    pseudonyms: frozenset[str] = frozenset()

    @classmethod
    def of(cls, record: dict) -> Owners:
        """From an (expanded) row's identity fields."""
        emails, contacts, pseudonyms = set(), set(), set()
        for column, value in record.items():
            if not value:
                continue
            name = column.rsplit(".", 1)[-1]
            if name in ("email", "email_normalized"):
                emails.add(str(value).strip().lower())
            elif name == "contact_id":
                contacts.add(str(value).strip())
            elif name == "recipient_pseudonym":
                pseudonyms.add(str(value))
        return cls(frozenset(emails), frozenset(contacts), frozenset(pseudonyms))

    @property
    def known(self) -> bool:
        return bool(self.emails or self.contact_ids or self.pseudonyms)

    def include(self, identity: Identity) -> bool:
        return bool(
            self.emails & identity.emails
            or self.contact_ids & identity.contact_ids
            or (identity.pseudonym and identity.pseudonym in self.pseudonyms)
        )


@dataclass(frozen=True)
class _Name:
    ref: str
    first_words: tuple[str, ...]
    last_words: tuple[str, ...]
    full: str  # "first last", lower-case

    @property
    def key(self) -> str:
        return self.last_words[-1]


class Matcher:
    """Which of a batch's people a piece of text identifies, and how to redact them from it."""

    def __init__(self, identities: Iterable[Identity]) -> None:
        self.identities = {i.ref: i for i in identities}
        self.by_email: dict[str, set[str]] = defaultdict(set)
        self.by_phone: dict[str, set[str]] = defaultdict(set)
        self.by_name_key: dict[str, list[_Name]] = defaultdict(list)
        for identity in self.identities.values():
            for email in identity.emails:
                self.by_email[email].add(identity.ref)
            for phone in identity.phones:
                self.by_phone[phone_digits(phone)].add(identity.ref)
            for first, last in identity.names:
                first_words = tuple(WORD.findall(first.lower()))
                last_words = tuple(WORD.findall(last.lower()))
                if first_words and last_words:
                    full = f"{first.lower()} {last.lower()}"
                    self.by_name_key[last_words[-1]].append(_Name(identity.ref, first_words, last_words, full))
        self._redactors: dict[tuple[frozenset[str], bool], Callable[[str], str]] = {}

    # ---- finding -----------------------------------------------------------------------------
    def find(self, text: str) -> dict[str, set[str]]:
        """{ref: {"email"|"phone"|"name"}} for the people this text (one line, one row) identifies."""
        found: dict[str, set[str]] = defaultdict(set)
        if not text:
            return found
        lower = text.lower()
        emails = {token.rstrip(".") for token in EMAIL_TOKEN.findall(lower)}
        for email in emails:
            for ref in self.by_email.get(email, ()):
                found[ref].add("email")
        for token in PHONE_TOKEN.findall(text):
            digits = phone_digits(token)
            if len(digits) >= MIN_PHONE_DIGITS:
                for ref in self.by_phone.get(digits, ()):
                    found[ref].add("phone")
        if self.by_name_key:
            words = set(WORD.findall(lower))
            # over the row's few words, not the batch's many name keys (set.intersection(dict) walks the dict)
            for key in [word for word in words if word in self.by_name_key]:
                for name in self.by_name_key[key]:
                    contiguous = name.full in lower
                    # first and last name as words of one row count too, unless next to another email (a namesake)
                    together = set(name.first_words) | set(name.last_words) <= words
                    if contiguous or (together and not emails - self.identities[name.ref].emails):
                        found[name.ref].add("name")
        return found

    def find_in_record(self, record: dict) -> tuple[dict[str, set[str]], bool]:
        """Like `find`, for a structured row (a table row, a CSV or JSONL record).

        In a row that belongs to someone else, only its free text counts (a note mentioning the
        person); its own phone, name and ids are that other person's, even when they coincide.

        Returns:
            The hits, and whether the row belongs to someone else (then only free text may be redacted).
        """
        record = expand(record)
        values = {k: str(v) for k, v in record.items() if v not in (None, "")}
        found = self.find("\x1f".join(values.values()))
        owners = Owners.of(record)
        if not found or not owners.known:
            return found, False
        free = "\x1f".join(v for k, v in values.items() if k.rsplit(".", 1)[-1] not in STRUCTURED)
        in_free = self.find(free) if free else {}
        kept = {}
        others = False
        for ref, kinds in found.items():
            if owners.include(self.identities[ref]):
                kept[ref] = kinds
            else:
                others = True
                if ref in in_free:
                    kept[ref] = in_free[ref]
        return kept, others

    # ---- needles for grep and the SQL prefilter ------------------------------------------------
    def file_needles(self) -> dict[str, str]:
        """Fixed strings to look for in files (lower-case where case does not matter) -> ref."""
        needles: dict[str, str] = {}
        for identity in self.identities.values():
            for email in identity.emails:
                needles[email] = identity.ref
            for phone in identity.phones:
                digits = phone_digits(phone)
                for variant in (phone, digits, f"+{digits}", f"00{digits}"):
                    needles[variant.lower()] = identity.ref
            for first, last in identity.names:
                for variant in (f"{first} {last}", f"{first},{last}", f'"{first}","{last}"', f"{first}\t{last}"):
                    needles[variant] = identity.ref
                    needles[variant.lower()] = identity.ref
        return needles

    def sql_needles(self) -> dict[str, pd.DataFrame]:
        import pandas as pd

        return {
            "scan_emails": pd.DataFrame({"email": sorted(self.by_email)}, dtype="string"),
            "scan_phones": pd.DataFrame({"digits": sorted(self.by_phone)}, dtype="string"),
            "scan_names": pd.DataFrame(
                [(n.key, n.first_words[0]) for names in self.by_name_key.values() for n in names],
                columns=["last_key", "first_key"],
                dtype="string",
            ).drop_duplicates(),
        }

    # ---- redacting -----------------------------------------------------------------------------
    def redactor(self, refs: Iterable[str], *, whole_cells: bool = True) -> Callable[[str], str]:
        """A function replacing these people's emails, phones (any separators) and full names with [erased].

        Args:
            whole_cells: also blank a cell that is exactly their first or last name (their own rows only).
        """
        refs = frozenset(refs)
        cache_key = (refs, whole_cells)
        if cache_key not in self._redactors:
            patterns = []
            for ref in refs:
                identity = self.identities[ref]
                patterns += [re.escape(email) for email in identity.emails]
                for phone in identity.phones:
                    digits = phone_digits(phone)
                    patterns.append(r"(?:\+|00)?" + r"[ ./()-]{0,2}".join(re.escape(d) for d in digits))
                patterns += [re.escape(first) + r"\s+" + re.escape(last) for first, last in identity.names]
                patterns += [re.escape(f"{first},{last}") for first, last in identity.names]
            names = {part.lower() for ref in refs for pair in self.identities[ref].names for part in pair}
            names = names if whole_cells else set()
            compiled = (
                re.compile("|".join(sorted(patterns, key=len, reverse=True)), re.IGNORECASE) if patterns else None
            )

            def redact(text: str, compiled=compiled, names=names) -> str:
                if not isinstance(text, str) or not text:
                    return text
                if text.strip().lower() in names:  # a first_name or last_name cell of a matched row
                    return REDACTED
                return compiled.sub(REDACTED, text) if compiled else text

            self._redactors[cache_key] = redact
        return self._redactors[cache_key]


# ---- tables ------------------------------------------------------------------------------------


@dataclass
class TableHit:
    schema: str
    table: str
    rowid: int
    refs: dict[str, set[str]]
    someone_elses: bool = False  # the row is another person's: only its free text is redacted


def _count_by_ref(hits: list) -> dict[str, dict[str, int]]:
    """{ref: {kind: hits}}: how often each person's identifier kinds were found (table rows or files)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for hit in hits:
        for ref, kinds in hit.refs.items():
            for kind in kinds:
                counts[ref][kind] += 1
    return counts


@dataclass
class TableScan:
    tables: int = 0
    columns: int = 0
    hits: list[TableHit] = field(default_factory=list)

    def by_ref(self) -> dict[str, dict[str, int]]:
        """{ref: {kind: hits}} over all hits."""
        return _count_by_ref(self.hits)

    def stores_by_ref(self) -> dict[str, set[str]]:
        stores: dict[str, set[str]] = defaultdict(set)
        for hit in self.hits:
            for ref in hit.refs:
                stores[ref].add(f"{hit.schema}.{hit.table}")
        return stores


def text_columns(conn: Warehouse) -> dict[tuple[str, str], list[str]]:
    """Every base table's varchar and JSON columns."""
    rows = conn.execute(
        """
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns c
        join information_schema.tables t using (table_catalog, table_schema, table_name)
        where t.table_type = 'BASE TABLE' and c.data_type = any(cast(? as varchar[]))
          and c.table_catalog = current_database()
          and c.table_schema not in ('pg_catalog', 'information_schema', 'gmp_private')
        order by c.table_schema, c.table_name, c.ordinal_position
        """,
        [list(_TEXT_TYPES)],
    ).fetchall()
    columns: dict[tuple[str, str], list[str]] = defaultdict(list)
    for schema, table, column in rows:
        columns[(schema, table)].append(column)
    return dict(columns)


def _identity_columns(conn: Warehouse) -> dict[tuple[str, str], list[str]]:
    """Columns that say whose row it is (any type), per table."""
    rows = conn.execute(
        """
        select table_schema, table_name, column_name from information_schema.columns
        where column_name in ('contact_id', 'email', 'email_normalized', 'recipient_pseudonym', 'file_name')
          and table_catalog = current_database()
          and table_schema not in ('pg_catalog', 'information_schema', 'gmp_private')
        """
    ).fetchall()
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for schema, table, column in rows:
        found[(schema, table)].append(column)
    return found


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scan_tables(conn: Warehouse, matcher: Matcher, *, only: Collection[tuple[str, str]] | None = None) -> TableScan:
    """Every row of every table (or of the (schema, table) pairs `only` names) that identifies one of
    the matcher's people."""
    result = TableScan()
    if not matcher.identities:
        return result
    for name, frame in matcher.sql_needles().items():
        conn.temp_table(name, frame)
    patterns = {"email": _SQL_EMAIL, "phone": _SQL_PHONE, "word": _SQL_WORD}
    identity_columns = _identity_columns(conn)
    for (schema, table), columns in text_columns(conn).items():
        if schema == "temp" or table.startswith("scan_") or (only is not None and (schema, table) not in only):
            continue
        result.tables += 1
        result.columns += len(columns)
        relation = f"{_quote(schema)}.{_quote(table)}"
        text = "lower(concat_ws(chr(31), " + ", ".join(f"{_quote(c)}::varchar" for c in columns) + "))"
        fetched = columns + [c for c in identity_columns.get((schema, table), []) if c not in columns]
        select = ", ".join(f"{_quote(c)}::varchar" for c in fetched)
        rows = conn.rows_mentioning(relation, text, select, patterns, names=bool(matcher.by_name_key), columns=columns)
        for rowid, *values in rows:
            refs, someone_elses = matcher.find_in_record(dict(zip(fetched, values, strict=True)))
            if refs:
                result.hits.append(TableHit(schema, table, rowid, dict(refs), someone_elses))
    for name in ("scan_emails", "scan_phones", "scan_names"):
        conn.execute(f"drop table if exists {name}").fetchall()
    return result


def recheck(conn: Warehouse, matcher: Matcher, hits: list[TableHit]) -> list[TableHit]:
    """The hits still there after redaction, re-read row by row.

    Redaction changed only these rows, so a full scan's other rows need not be read again. On
    Postgres an UPDATE moves the row (new ctid), so the tables that held them are scanned again instead.
    """
    if not conn.stable_row_ids:  # an updated row moved: its old row id finds nothing
        return scan_tables(conn, matcher, only={(hit.schema, hit.table) for hit in hits}).hits
    identity_columns = _identity_columns(conn)
    columns = text_columns(conn)
    still = []
    for hit in hits:
        cols = columns.get((hit.schema, hit.table), [])
        fetched = cols + [c for c in identity_columns.get((hit.schema, hit.table), []) if c not in cols]
        relation = f"{_quote(hit.schema)}.{_quote(hit.table)}"
        rows = conn.execute(
            f"select {', '.join(_quote(c) + '::varchar' for c in fetched)} from {relation} where {conn.row_id()} = ?",
            [hit.rowid],
        ).fetchall()
        if rows:
            refs, someone_elses = matcher.find_in_record(dict(zip(fetched, rows[0], strict=True)))
            if refs:
                still.append(TableHit(hit.schema, hit.table, hit.rowid, dict(refs), someone_elses))
    return still


def live_values(conn: Warehouse, values: Iterable[str]) -> set[str]:
    """Which of these strings a live row of some table holds (case-insensitive).

    A binary scan of the database file also finds values that are still, rightly, in someone
    else's row (a shared phone number); those are not remnants of the erased rows. One query per
    table tests every value still unfound against each row's text, built once (not once per value).
    """
    import pandas as pd

    wanted = {v.lower() for v in values}
    found: set[str] = set()
    try:
        for (schema, table), cols in text_columns(conn).items():
            if schema == "temp" or table == "live_probe":
                continue
            left = sorted(wanted - found)
            if not left:
                break
            conn.temp_table("live_probe", pd.DataFrame({"value": left}, dtype="string"))
            text = "lower(concat_ws(chr(31), " + ", ".join(f"{_quote(c)}::varchar" for c in cols) + "))"
            rows = conn.execute(
                f"""
                with t as materialized (select {text} as txt from {_quote(schema)}.{_quote(table)})
                select distinct p.value from live_probe p join t on strpos(t.txt, p.value) > 0
                """
            ).fetchall()
            found.update(row[0] for row in rows)
    finally:
        conn.execute("drop table if exists live_probe").fetchall()  # the values searched: not kept
    return found


def redact_table_hits(conn: Warehouse, matcher: Matcher, scan: TableScan) -> dict[str, dict[str, int]]:
    """Redact, in place, what the scan found in rows that are not the person's own (mentions).

    Returns:
        {ref: {"schema.table": rows redacted}}.
    """
    columns = text_columns(conn)
    redacted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for hit in scan.hits:
        cols = columns.get((hit.schema, hit.table), [])
        relation = f"{_quote(hit.schema)}.{_quote(hit.table)}"
        values = conn.execute(
            f"select {', '.join(_quote(c) + '::varchar' for c in cols)} from {relation} where {conn.row_id()} = ?",
            [hit.rowid],
        ).fetchall()
        if not values:
            continue
        redact = matcher.redactor(hit.refs, whole_cells=not hit.someone_elses)
        changes = {
            c: redact(v)
            for c, v in zip(cols, values[0], strict=True)
            if v and not (hit.someone_elses and c in STRUCTURED) and redact(v) != v
        }
        if not changes:
            continue
        assignments = ", ".join(f"{_quote(c)} = ?" for c in changes)
        conn.execute(
            f"update {relation} set {assignments} where {conn.row_id()} = ?", [*changes.values(), hit.rowid]
        ).fetchall()
        for ref in hit.refs:
            redacted[ref][f"{hit.schema}.{hit.table}"] += 1
    return redacted


# ---- files -------------------------------------------------------------------------------------


@dataclass
class FileHit:
    path: Path
    line: int | None  # None: a binary file
    refs: dict[str, set[str]]
    matches: set[str] = field(default_factory=set)  # what matched, for a binary file (in memory only)


@dataclass
class FileScan:
    files: int = 0
    bytes: int = 0
    hits: list[FileHit] = field(default_factory=list)
    engine: str = "grep -F"

    def by_ref(self) -> dict[str, dict[str, int]]:
        """{ref: {kind: hits}} over all hits."""
        return _count_by_ref(self.hits)

    def paths_by_ref(self) -> dict[str, set[Path]]:
        paths: dict[str, set[Path]] = defaultdict(set)
        for hit in self.hits:
            for ref in hit.refs:
                paths[ref].add(hit.path)
        return paths


def is_text_file(path: Path) -> bool:
    """UTF-8 without NUL bytes in its first 64 KiB: scanned line by line; anything else is binary."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # a multi-byte character cut at the edge of the sample
    return True


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _grep(root: Path, needles: dict[str, str]) -> dict[Path, dict[int, set[str]]]:
    """{path: {line number: matched needles}} via GNU grep (needles on stdin, never on disk)."""
    process = subprocess.run(
        ["grep", "-r", "-a", "-o", "-i", "-n", "-F", "-Z", "-f", "-", str(root)],
        input="\n".join(needles).encode("utf-8") + b"\n",
        capture_output=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    if process.returncode not in (0, 1):
        raise RuntimeError(f"grep failed while scanning {root}: exit {process.returncode}")
    found: dict[Path, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for raw in process.stdout.split(b"\n"):
        if b"\x00" not in raw:
            continue
        path, _, rest = raw.partition(b"\x00")
        line, _, match = rest.partition(b":")
        found[Path(path.decode("utf-8", "surrogateescape"))][int(line)].add(match.decode("utf-8", "replace").lower())
    return found


def _python_search(paths: list[Path], needles: dict[str, str]) -> dict[Path, dict[int, set[str]]]:
    """The same answer as `_grep`, slower: for hosts without GNU grep."""
    encoded = [(n.lower().encode("utf-8"), n.lower()) for n in needles]
    found: dict[Path, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in paths:
        data = path.read_bytes().lower()
        for needle, text in encoded:
            start = data.find(needle)
            while start != -1:
                found[path][data.count(b"\n", 0, start) + 1].add(text)
                start = data.find(needle, start + 1)
    return found


def scan_files(root: Path, matcher: Matcher, *, skip: Callable[[Path], bool] | None = None) -> FileScan:
    """Every line of every file under `root` (every byte, for binary files) that identifies someone."""
    result = FileScan()
    paths = [p for p in _walk(root) if not (skip and skip(p))]
    result.files = len(paths)
    result.bytes = sum(p.stat().st_size for p in paths)
    needles = matcher.file_needles()
    if not needles or not paths:
        return result
    lowered = {n.lower(): ref for n, ref in needles.items()}
    if shutil.which("grep"):
        found = _grep(root, needles)
    else:
        result.engine = "python"
        found = _python_search(paths, needles)
    wanted = set(paths)
    for path, lines in found.items():
        if path not in wanted:
            continue
        if not is_text_file(path):
            refs: dict[str, set[str]] = defaultdict(set)
            matched: set[str] = set()
            for matches in lines.values():
                for match in matches:
                    if match in lowered:
                        refs[lowered[match]].add(_kind(matcher, lowered[match], match))
                        matched.add(match)
            if refs:
                result.hits.append(FileHit(path, None, dict(refs), matched))
            continue
        text_lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
        header = _csv_header(text_lines[0]) if path.suffix == ".csv" and text_lines else None
        for number in sorted(lines):
            if number - 1 < len(text_lines):
                line = text_lines[number - 1]
                record = _line_record(path, line, header)
                refs = matcher.find_in_record(record)[0] if record is not None else matcher.find(line)
                if refs:
                    result.hits.append(FileHit(path, number, dict(refs)))
    return result


def _csv_header(line: str) -> list[str] | None:
    try:
        return [h.strip().lower().lstrip("\ufeff") for h in next(csv.reader([line]))]
    except (csv.Error, StopIteration):
        return None


def _line_record(path: Path, line: str, header: list[str] | None) -> dict | None:
    """A line of a CSV (by its header) or a JSONL file as a record; None for unstructured text."""
    try:
        if header is not None:
            cells = next(csv.reader([line]))
            if len(cells) == len(header) or header[:2] == ["contact_id", "email"]:  # also a cut-short contacts row
                return dict(zip(header, cells, strict=False))
        elif path.suffix == ".jsonl" and line.startswith("{"):
            record = json.loads(line)
            return record if isinstance(record, dict) else None
    except (csv.Error, StopIteration, ValueError):
        return None
    return None


def _kind(matcher: Matcher, ref: str, match: str) -> str:
    identity = matcher.identities[ref]
    if match in identity.emails:
        return "email"
    if any(match in {p.lower(), phone_digits(p)} or match.lstrip("+0") == phone_digits(p) for p in identity.phones):
        return "phone"
    return "name"


def redact_text_file(path: Path, matcher: Matcher, refs: Iterable[str]) -> int:
    """Replace these people's identifiers in a text file, in place (an appending writer keeps working).

    Returns:
        Lines changed.
    """
    redact = matcher.redactor(refs)
    with path.open("r+", encoding="utf-8", errors="surrogateescape", newline="") as handle:
        lines = handle.read().split("\n")
        changed = 0
        for i, line in enumerate(lines):
            if matcher.find(line):
                new = redact(line)
                changed += new != line
                lines[i] = new
        if changed:
            handle.seek(0)
            handle.write("\n".join(lines))
            handle.truncate()
            handle.flush()
    return changed


def redact_sqlite(path: Path, matcher: Matcher, refs: Iterable[str]) -> int:
    """Redact these people's identifiers in every text column of a SQLite file (e.g. Airflow's), then VACUUM.

    VACUUM rewrites the file, so the old values do not survive in free pages.
    """
    import sqlite3

    redact = matcher.redactor(refs)
    changed = 0
    with sqlite3.connect(path, timeout=30) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            columns = [r[1] for r in db.execute(f"pragma table_info({_quote(table)})")]
            for column in columns:
                quoted = _quote(column)
                rows = db.execute(
                    f"select rowid, {quoted} from {_quote(table)} where typeof({quoted}) in ('text', 'blob')"
                ).fetchall()
                for rowid, value in rows:
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                    if text and matcher.find(text):
                        new = redact(text)
                        if new != text:
                            db.execute(f"update {_quote(table)} set {_quote(column)} = ? where rowid = ?", [new, rowid])
                            changed += 1
    if changed:
        db = sqlite3.connect(path, timeout=30)
        try:
            db.execute("vacuum")
        finally:
            db.close()
    return changed


def is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"
