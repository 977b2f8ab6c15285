"""Bank reconciliation: read a bank's CSV statement (its layout configured per bank by a BankStatementFormat),
store each line once, and match the money received to invoices.

- `parse_statement` is pure: it reads the file into rows and lists every bad row (line, column, reason).
- `import_statement` stores a clean file in one transaction: the same file again, or the lines another
  (overlapping) statement already brought, are never stored twice (unique fingerprints, inserts that ignore
  conflicts); debits are kept as ignored lines; the new credits are then matched automatically.
- `auto_match` finds the invoice numbers in a line's reference, or else its customer and the one open invoice
  of exactly its amount; `match_manually` is the operator's choice of customer and allocations.

A match records a bank-transfer payment through `invoicing.services.payments.record_payment` (overpayment to
the credit balance, a partial payment leaves the invoice partly paid). Locks follow the receivables rule: the
customer first, then the line, so a line is matched once even when two operators match it at the same moment.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import moneyed
from django.conf import settings
from django.db import IntegrityError, transaction

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from customers.models import Customer
from invoicing.models import BankStatement, BankStatementFormat, BankStatementLine, Invoice, Payment
from invoicing.services.payments import OPEN_STATUSES, AllocationRequest, lock_customer, record_payment

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_AMOUNT = Decimal("1e15")
ERRORS_IN_MESSAGE = 20  # an error message names this many problems; `errors` carries them all
TEXT_LIMITS = {"reference": 300, "description": 500, "counterparty": 300, "transaction_id": 100}
# Signs and separators a bank may write around a number; anything else in an amount cell is an error.
PLAIN_AMOUNT = re.compile(r"[+-]?\d+(\.\d+)?")
SPACES = str.maketrans("", "", " \u00a0\u202f\u2009")


def max_rows() -> int:
    return int(getattr(settings, "ACCRUAL_BANK_STATEMENT_MAX_ROWS", DEFAULT_MAX_ROWS))


def max_bytes() -> int:
    return int(getattr(settings, "ACCRUAL_BANK_STATEMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


# --- parsing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatementRow:
    line_number: int
    booked_on: date
    amount: Decimal  # signed: positive is money received
    currency: str
    reference: str = ""
    description: str = ""
    counterparty: str = ""
    transaction_id: str = ""


@dataclass(frozen=True)
class RowError:
    line: int | None  # line of the file (1 is its first line); None: the file as a whole
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        if self.column:
            where += f", column '{self.column}'"
        return f"{where}: {self.reason}"


@dataclass
class ParsedStatement:
    rows: list[StatementRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


class StatementFileError(BillingError):
    """The statement cannot be imported; `errors` lists every problem found (nothing was stored)."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        shown = "; ".join(str(e) for e in errors[:ERRORS_IN_MESSAGE])
        more = f" (and {len(errors) - ERRORS_IN_MESSAGE} more)" if len(errors) > ERRORS_IN_MESSAGE else ""
        super().__init__(f"The statement has {len(errors)} problem(s) and nothing was imported: {shown}{more}.",
                         field="file")
        self.errors = list(errors)


def parse_amount(text: str, *, decimal_separator: str, thousands_separator: str) -> Decimal:
    """An exact Decimal from a bank's number: "1.234,56" with ',' decimals and '.' thousands, "-12.50",
    "12.50-" (a trailing minus, as some banks write debits). Raises ValueError on anything else."""
    value = text.strip().translate(SPACES) if thousands_separator in ("", " ") else text.strip()
    if thousands_separator and thousands_separator != " ":
        value = value.replace(thousands_separator, "")
    if decimal_separator != ".":
        if "." in value:
            raise ValueError("unexpected '.'")
        value = value.replace(decimal_separator, ".")
    if value.endswith("-") and value[:1] not in "+-":
        value = "-" + value[:-1]
    if not PLAIN_AMOUNT.fullmatch(value):
        raise ValueError("not a number")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError("not a number") from None


def _decode(fmt: BankStatementFormat, data: bytes) -> str:
    encoding = (fmt.encoding or "utf-8").strip()
    try:
        codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        "".encode(codec)
    except LookupError:
        raise _FileProblem(f"The format's encoding {encoding!r} is not one Python knows.") from None
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _FileProblem(
            f"The file is not {encoding} text (byte 0x{data[exc.start]:02x} cannot be read); check the format's "
            "encoding or the file.", line=line,
        ) from None


class _FileProblem(Exception):
    def __init__(self, reason: str, *, line: int | None = None) -> None:
        super().__init__(reason)
        self.error = RowError(line, None, reason)


def _column_index(fmt: BankStatementFormat, header: list[str] | None, role: str, name: str,
                  header_line: int) -> int | RowError:
    if header is None:
        if not name.strip().isdecimal() or int(name) < 1:
            return RowError(None, name, f"The format has no header row, so its {role} column must be a position "
                                        "(1 for the first column).")
        return int(name) - 1
    wanted = name.strip().casefold()
    for index, title in enumerate(header):
        if title.strip().casefold() == wanted:
            return index
    return RowError(header_line, name, f"The header has no '{name}' column (the format's {role} column).")


def _configured_columns(fmt: BankStatementFormat) -> dict[str, str]:
    columns = {
        "date": fmt.date_column, "amount": fmt.amount_column, "credit": fmt.credit_column,
        "debit": fmt.debit_column, "currency": fmt.currency_column, "reference": fmt.reference_column,
        "description": fmt.description_column, "counterparty": fmt.counterparty_column,
        "transaction_id": fmt.transaction_id_column,
    }
    if fmt.amount_column:  # a signed amount column wins over credit/debit columns
        columns["credit"] = columns["debit"] = ""
    return {role: name for role, name in columns.items() if name and name.strip()}


def format_problems(fmt: BankStatementFormat) -> list[RowError]:
    """What makes a format unusable (checked by the admin's form and before every import)."""
    problems = []
    if not fmt.date_column.strip():
        problems.append(RowError(None, None, "The format names no date column."))
    if not fmt.amount_column.strip() and not (fmt.credit_column.strip() and fmt.debit_column.strip()):
        problems.append(RowError(None, None, "The format names neither an amount column nor credit and debit "
                                             "columns."))
    if not fmt.currency_column.strip() and not str(fmt.default_currency or "").strip():
        problems.append(RowError(None, None, "The format has no currency column and no default currency."))
    if len(fmt.delimiter) != 1 or fmt.delimiter in ('"', "\n", "\r"):
        problems.append(RowError(None, None, "The format's delimiter must be one character (not a quote)."))
    if not fmt.decimal_separator or fmt.decimal_separator == fmt.thousands_separator:
        problems.append(RowError(None, None, "The format's decimal and thousands separators must differ."))
    try:
        "".encode((fmt.encoding or "utf-8").strip())
    except LookupError:
        problems.append(RowError(None, None, f"The format's encoding {fmt.encoding!r} is not one Python knows."))
    if not fmt.has_header:
        for role, name in _configured_columns(fmt).items():
            if not name.strip().isdecimal() or int(name) < 1:
                problems.append(RowError(None, name, f"Without a header row, the {role} column must be a position "
                                                     "(1 for the first column)."))
    return problems


def _currency_code(text: str) -> str | None:
    code = text.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        return None
    try:
        moneyed.get_currency(code)
    except moneyed.CurrencyDoesNotExist:
        return None
    return code


def _exponent(code: str) -> int:
    return len(str(moneyed.get_currency(code).sub_unit)) - 1


def parse_statement(fmt: BankStatementFormat, data: bytes) -> ParsedStatement:
    """The statement's rows, and every problem found in it (a row with a problem is not among the rows)."""
    result = ParsedStatement()
    if problems := format_problems(fmt):
        result.errors = problems
        return result
    if len(data) > max_bytes():
        result.errors.append(RowError(None, None, f"The file is larger than {max_bytes() // 1024} KiB; split it "
                                                  "into smaller statements."))
        return result
    try:
        text = _decode(fmt, data)
    except _FileProblem as problem:
        result.errors.append(problem.error)
        return result
    if "\x00" in text:
        result.errors.append(RowError(None, None, "The file contains NUL bytes: it is not a CSV text file."))
        return result
    if not text.strip():
        result.errors.append(RowError(None, None, "The file is empty."))
        return result

    stream = io.StringIO(text, newline="")
    for _ in range(fmt.skip_rows):
        stream.readline()
    reader = csv.reader(stream, delimiter=fmt.delimiter, strict=True)
    columns = _configured_columns(fmt)
    indexes: dict[str, int] = {}
    header: list[str] | None = None
    header_seen = not fmt.has_header
    previous_end = fmt.skip_rows
    data_rows = 0
    try:
        for cells in reader:
            line, previous_end = previous_end + 1, fmt.skip_rows + reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if not header_seen:
                header, header_seen = cells, True
            if not indexes:
                located = {role: _column_index(fmt, header, role, name, line) for role, name in columns.items()}
                missing = [problem for problem in located.values() if isinstance(problem, RowError)]
                if missing:
                    result.errors.extend(missing)
                    return result
                indexes = {role: index for role, index in located.items() if isinstance(index, int)}
                if header is not None:
                    continue
            data_rows += 1
            if data_rows > max_rows():
                result.rows.clear()
                result.errors = [RowError(None, None, f"The file has more than {max_rows()} rows, the limit of one "
                                                      "statement; split it into smaller files.")]
                return result
            row = _parse_row(fmt, cells, indexes, line, result.errors)
            if row is not None:
                result.rows.append(row)
    except csv.Error as exc:
        # A stray quote swallows the lines after it: the problem is reported where its record starts.
        result.errors.append(RowError(previous_end + 1, None, f"The file is not valid CSV: {exc}."))
    if not indexes and not result.errors:
        result.errors.append(RowError(None, None, "The file has no header row." if fmt.has_header
                                      else "The file has no rows."))
    elif not result.rows and not result.errors:
        result.errors.append(RowError(None, None, "The file has a header but no statement lines."))
    return result


def _parse_row(fmt: BankStatementFormat, cells: list[str], indexes: dict[str, int], line: int,
               errors: list[RowError]) -> StatementRow | None:
    found_errors = len(errors)
    names = _configured_columns(fmt)

    def cell(role: str) -> str | None:
        if role not in indexes:
            return None
        index = indexes[role]
        if index >= len(cells):
            errors.append(RowError(line, names[role], f"The row has {len(cells)} cells: the column is missing."))
            return None
        return cells[index].strip()

    booked_on = None
    raw_date = cell("date")
    if raw_date == "":
        errors.append(RowError(line, names["date"], "The date is empty."))
    elif raw_date is not None:
        try:
            booked_on = datetime.strptime(raw_date, fmt.date_format).date()
        except ValueError:
            example = BankStatementFormat.DateOrder(fmt.date_format).label
            errors.append(RowError(line, names["date"], f"{raw_date[:40]!r} is not a date written like {example}."))

    def amount_of(role: str, raw: str | None) -> Decimal | None:
        if raw is None or raw == "":
            return None
        try:
            value = parse_amount(raw, decimal_separator=fmt.decimal_separator,
                                 thousands_separator=fmt.thousands_separator)
        except ValueError:
            errors.append(RowError(line, names[role], f"{raw[:40]!r} is not an amount (decimal separator "
                                                      f"{fmt.decimal_separator!r}, thousands "
                                                      f"{fmt.thousands_separator or 'none'!r})."))
            return None
        if abs(value) >= MAX_AMOUNT:
            errors.append(RowError(line, names[role], "The amount is too large."))
            return None
        return value

    amount = None
    if "amount" in indexes:
        raw_amount = cell("amount")
        amount = amount_of("amount", raw_amount)
        if raw_amount == "":
            errors.append(RowError(line, names["amount"], "The amount is empty."))
    else:
        # Credits are money in and debits money out, whatever sign the bank writes in its column.
        credit, debit = amount_of("credit", cell("credit")), amount_of("debit", cell("debit"))
        if len(errors) == found_errors:
            if credit and debit:
                errors.append(RowError(line, names["credit"], "The row has both a credit and a debit."))
            elif credit:
                amount = abs(credit)
            elif debit:
                amount = -abs(debit)
            elif credit is None and debit is None:
                errors.append(RowError(line, names["credit"], "The row has neither a credit nor a debit."))
            else:
                amount = Decimal(0)

    default_currency = str(fmt.default_currency or "") or None
    if "currency" in indexes:
        raw_currency = cell("currency")
        currency = _currency_code(raw_currency) if raw_currency else default_currency
        if raw_currency == "" and currency is None:
            errors.append(RowError(line, names["currency"], "The currency is empty."))
        elif raw_currency and currency is None:
            errors.append(RowError(line, names["currency"], f"{raw_currency[:20]!r} is not an ISO 4217 currency."))
    else:
        currency = default_currency
    if amount is not None and currency is not None:
        places = _exponent(currency)
        if amount != amount.quantize(Decimal(1).scaleb(-places)):
            errors.append(RowError(line, names.get("amount") or names["credit"],
                                   f"{currency} amounts have at most {places} decimal places."))
        else:
            amount = amount.quantize(Decimal(1).scaleb(-places))

    texts = {}
    for role, limit in TEXT_LIMITS.items():
        value = cell(role) or ""
        if len(value) > limit:
            errors.append(RowError(line, names[role], f"The text is longer than {limit} characters."))
        texts[role] = value
    if len(errors) > found_errors or booked_on is None or amount is None or currency is None:
        return None
    return StatementRow(line_number=line, booked_on=booked_on, amount=amount, currency=currency, **texts)


# --- importing ----------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    statement: BankStatement
    created: bool
    line_count: int
    new_lines: int
    duplicate_lines: int
    ignored_lines: int
    matched_lines: int

    @property
    def unmatched_lines(self) -> int:
        return self.new_lines - self.ignored_lines - self.matched_lines

    def summary(self) -> str:
        if not self.created:
            return f"{self.statement.filename} was already imported on {self.statement.imported_at:%Y-%m-%d}: " \
                   "nothing new."
        return (f"{self.line_count} line(s) read: {self.new_lines} new, {self.duplicate_lines} already imported; "
                f"{self.matched_lines} matched, {self.unmatched_lines} to match by hand, "
                f"{self.ignored_lines} debit(s) ignored.")


def fingerprints(rows: Sequence[StatementRow], *, by_transaction_id: bool) -> list[str]:
    """One key per row, the same for the same bank line in any statement file: the bank's transaction id when
    the format has one, else its content and its rank among identical rows of the file (two equal transfers on
    one day are two lines; the same line in an overlapping statement is the same line)."""
    seen: Counter[tuple] = Counter()
    keys = []
    for row in rows:
        if by_transaction_id and row.transaction_id:
            keys.append(hashlib.sha256(f"id|{row.transaction_id}".encode()).hexdigest())
            continue
        content = (row.booked_on.isoformat(), f"{row.amount:f}", row.currency, row.reference, row.description,
                   row.counterparty)
        seen[content] += 1
        keys.append(hashlib.sha256("|".join((*content, str(seen[content]))).encode()).hexdigest())
    return keys


def import_statement(fmt: BankStatementFormat, data: bytes, *, filename: str, actor: Actor,
                     now: datetime) -> ImportResult:
    """Store a statement file and auto-match its new credits. Any bad row: StatementFileError (every problem
    listed), nothing stored. The same file again returns the statement stored the first time."""
    parsed = parse_statement(fmt, data)
    if parsed.errors:
        raise StatementFileError(parsed.errors)
    by_id = bool(fmt.transaction_id_column.strip())
    keys = fingerprints(parsed.rows, by_transaction_id=by_id)
    conflicts = _transaction_id_conflicts(parsed.rows, keys) if by_id else []
    if conflicts:
        raise StatementFileError(conflicts)
    digest = hashlib.sha256(data).hexdigest()
    name = (filename or "statement.csv").replace("\x00", "").strip()[-255:] or "statement.csv"
    with transaction.atomic():
        try:
            with transaction.atomic():
                statement = BankStatement.objects.create(
                    format=fmt, filename=name, sha256=digest, imported_at=now, imported_by=actor.label[:200],
                    line_count=len(parsed.rows),
                )
        except IntegrityError:
            # The same file, imported before (or at this very moment by someone else, now committed).
            statement = BankStatement.objects.get(format=fmt, sha256=digest)
            return ImportResult(statement, False, statement.line_count, 0, statement.line_count, 0, 0)
        BankStatementLine.objects.bulk_create(
            [_new_line(statement, fmt, row, key) for row, key in zip(parsed.rows, keys, strict=True)],
            ignore_conflicts=True, batch_size=2000,
        )
        new_lines = list(BankStatementLine.objects.filter(statement=statement))
        ignored = sum(1 for line in new_lines if line.status == BankStatementLine.Status.IGNORED)
        statement.new_lines = len(new_lines)
        statement.duplicate_lines = len(parsed.rows) - len(new_lines)
        statement.save(update_fields=["new_lines", "duplicate_lines"])
    matched = auto_match_lines([line for line in new_lines if line.status == BankStatementLine.Status.UNMATCHED],
                               actor=actor, now=now)
    BankStatement.objects.filter(pk=statement.pk).update(matched_lines=matched)
    statement.matched_lines = matched
    return ImportResult(statement, True, len(parsed.rows), len(new_lines), statement.duplicate_lines, ignored,
                        matched)


def _transaction_id_conflicts(rows: Sequence[StatementRow], keys: Sequence[str]) -> list[RowError]:
    first: dict[str, StatementRow] = {}
    errors = []
    for row, key in zip(rows, keys, strict=True):
        if not row.transaction_id:
            continue
        earlier = first.setdefault(key, row)
        if earlier is not row and (earlier.booked_on, earlier.amount, earlier.currency) != (
                row.booked_on, row.amount, row.currency):
            errors.append(RowError(row.line_number, None, f"Transaction id {row.transaction_id!r} is also on line "
                                                          f"{earlier.line_number}, with another date or amount."))
    return errors


def _new_line(statement: BankStatement, fmt: BankStatementFormat, row: StatementRow, key: str) -> BankStatementLine:
    line = BankStatementLine(
        statement=statement, format=fmt, line_number=row.line_number, booked_on=row.booked_on, amount=row.amount,
        currency=row.currency, reference=row.reference, description=row.description, counterparty=row.counterparty,
        transaction_id=row.transaction_id, fingerprint=key,
    )
    if row.amount <= 0:
        line.status = BankStatementLine.Status.IGNORED
        line.note = "Money paid out (a debit), not a receipt." if row.amount < 0 else "A zero amount."
    return line


# --- matching -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What a line would be matched to: a customer and the invoices to pay, in order (amounts set under lock)."""

    customer_id: int
    invoice_ids: tuple[int, ...]
    method: str


def _texts(line: BankStatementLine) -> str:
    return f"{line.reference} {line.description}"


def invoice_sequence_numbers(text: str, prefix: str) -> list[int]:
    """The sequence numbers of the invoice numbers ("INV-000042", "inv 42", "INV000042") found in `text`, in
    the order they appear, each once."""
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(prefix)}[\s\-_/#.]?0*(\d{{1,15}})(?![A-Za-z0-9])",
                         re.IGNORECASE)
    numbers: list[int] = []
    for found in pattern.finditer(text):
        number = int(found.group(1))
        if number > 0 and number not in numbers:
            numbers.append(number)
    return numbers


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount.quantize(Decimal(1).scaleb(-_exponent(str(currency)))):f} {currency}"


def _plan(line: BankStatementLine, index: CustomerIndex | None = None) -> _Plan | str:
    """How to match the line, or why it cannot be matched automatically (read only)."""
    entity = line.format.billing_entity
    numbers = invoice_sequence_numbers(_texts(line), entity.invoice_prefix)
    if numbers:
        by_number = {inv.sequence_number: inv for inv in
                     Invoice.objects.filter(billing_entity=entity, sequence_number__in=numbers)}
        invoices = [by_number[n] for n in numbers if n in by_number]
        if invoices:
            return _plan_by_invoices(line, invoices)
    return _plan_by_customer(line, index)


def _plan_by_invoices(line: BankStatementLine, invoices: list[Invoice]) -> _Plan | str:
    named = ", ".join(str(inv) for inv in invoices)
    if len({inv.customer_id for inv in invoices}) > 1:
        return f"The reference names invoices of several customers ({named}): match it by hand."
    foreign = [inv for inv in invoices if str(inv.currency) != str(line.currency)]
    if foreign:
        return (f"Currency mismatch: invoice {foreign[0]} is in {foreign[0].currency}, the line in "
                f"{line.currency}.")
    open_ones = [inv for inv in invoices if inv.status in OPEN_STATUSES and inv.amount_due > 0]
    if not open_ones:
        states = ", ".join(f"{inv} is {inv.status}" for inv in invoices)
        return f"The invoices named owe nothing ({states}): a duplicate payment? Match it by hand or ignore it."
    return _Plan(invoices[0].customer_id, tuple(inv.pk for inv in open_ones),
                 BankStatementLine.MatchMethod.INVOICE_NUMBER)


ID_TOKEN = re.compile(r"[\w.:\-]+")  # the characters of an external_id (customers.models.code_validator)


class CustomerIndex:
    """The customers of one billing entity, looked up by the words of a bank line's texts: read once per
    import, so a statement of many lines costs one query for its customers, not one per line."""

    MIN_NAME_LENGTH = 3  # shorter names ("AB") would match too many texts

    def __init__(self, billing_entity_id: int) -> None:
        self.by_external_id: dict[str, set[int]] = {}
        self.by_name: dict[tuple[str, ...], set[int]] = {}
        self.longest_name = 0
        rows = Customer.objects.filter(billing_entity_id=billing_entity_id).values_list(
            "pk", "external_id", "name", "legal_name")
        for pk, external_id, name, legal_name in rows.iterator(chunk_size=5000):
            self.by_external_id.setdefault(external_id.casefold(), set()).add(pk)
            for text in (name, legal_name):
                words = tuple(_words(text))
                if words and len(text.strip()) >= self.MIN_NAME_LENGTH:
                    self.by_name.setdefault(words, set()).add(pk)
                    self.longest_name = max(self.longest_name, len(words))

    def named_by_external_id(self, text: str) -> set[int]:
        found: set[int] = set()
        for token in ID_TOKEN.findall(text.casefold()):
            # Every stretch of the token between non-alphanumeric characters: "ref:cus_1." holds "cus_1".
            cuts = [i for i, char in enumerate(token) if not char.isalnum()]
            starts, ends = [0, *(i + 1 for i in cuts)], [*cuts, len(token)]
            for start in starts:
                for end in ends:
                    if end > start and (ids := self.by_external_id.get(token[start:end])):
                        found |= ids
        return found

    def named_by_name(self, text: str) -> set[int]:
        words = _words(text)
        found: dict[int, int] = {}
        for size in range(min(self.longest_name, len(words)), 0, -1):
            for start in range(len(words) - size + 1):
                for pk in self.by_name.get(tuple(words[start:start + size]), ()):
                    found.setdefault(pk, size)
        if not found:
            return set()
        # "Acme" and "Acme Group" both appear in "ACME GROUP LTD": the longer name is the one meant.
        longest = max(found.values())
        return {pk for pk, size in found.items() if size == longest}

    def customers_named(self, line: BankStatementLine) -> list[Customer]:
        pks = self.named_by_external_id(f"{line.reference} {line.counterparty} {line.description}")
        if not pks:
            pks = self.named_by_name(f"{line.counterparty} {line.reference}")
        return list(Customer.objects.filter(pk__in=pks).order_by("external_id")) if pks else []


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def customers_named(line: BankStatementLine, index: CustomerIndex | None = None) -> list[Customer]:
    """The customers of the line's billing entity that its texts name: by external_id (reference, counterparty
    or description), otherwise by name or legal name (counterparty or reference), word for word."""
    index = index or CustomerIndex(line.format.billing_entity_id)
    return index.customers_named(line)


def _plan_by_customer(line: BankStatementLine, index: CustomerIndex | None) -> _Plan | str:
    customers = customers_named(line, index)
    if not customers:
        return "No invoice number or known customer in the reference: match it by hand."
    if len(customers) > 1:
        names = ", ".join(c.external_id for c in customers[:5])
        return f"Several customers match the line ({names}): match it by hand."
    customer = customers[0]
    exact = list(Invoice.objects.filter(customer=customer, currency=line.currency, status__in=OPEN_STATUSES,
                                        amount_due=line.amount).order_by("due_date", "pk"))
    if len(exact) == 1:
        return _Plan(customer.pk, (exact[0].pk,), BankStatementLine.MatchMethod.AMOUNT_AND_CUSTOMER)
    if exact:
        named = ", ".join(str(inv) for inv in exact[:5])
        return (f"{customer.external_id} has {len(exact)} open invoices of exactly "
                f"{_money(line.amount, line.currency)} ({named}): match it by hand.")
    return (f"{customer.external_id} has no open invoice of exactly {_money(line.amount, line.currency)}: "
            "match it by hand.")


def _lock_line(pk: int) -> BankStatementLine:
    return BankStatementLine.objects.select_for_update(of=("self",)).select_related("statement").get(pk=pk)


def _line_pk(line: BankStatementLine | int) -> int:
    return line if isinstance(line, int) else line.pk


def _settle(line: BankStatementLine, customer: Customer, allocations: Sequence[AllocationRequest] | None,
            method: str, *, auto_allocate: bool, actor: Actor, now: datetime) -> BankStatementLine:
    """Record the line's payment and mark it matched; the caller holds the customer's and the line's locks."""
    currency = str(line.currency)
    payment = record_payment(
        customer=customer, amount=line.amount.quantize(Decimal(1).scaleb(-_exponent(currency))), currency=currency,
        method=Payment.Method.BANK_TRANSFER, received_on=line.booked_on, actor=actor, now=now,
        reference=(line.reference or line.description or line.counterparty)[:200],
        allocations=allocations or None, auto_allocate=auto_allocate, idempotency_key=f"bank-line:{line.pk}",
        memo=f"Bank statement {line.statement.filename}, line {line.line_number}"
             + (f", from {line.counterparty}" if line.counterparty else ""),
    )
    line.status = BankStatementLine.Status.MATCHED
    line.payment = payment
    line.match_method = method
    line.customer = customer
    line.matched_at = now
    line.matched_by = actor.label[:200]
    line.note = ""
    line.save(update_fields=["status", "payment", "match_method", "customer", "matched_at", "matched_by", "note"])
    return line


def _queued(pk: int) -> BankStatementLine:
    return BankStatementLine.objects.select_related("format__billing_entity", "statement").get(pk=pk)


def auto_match(line: BankStatementLine | int, *, actor: Actor, now: datetime) -> BankStatementLine:
    """Match an unmatched credit automatically when its reference says what it pays; otherwise leave it in the
    queue with a note saying why. A line already matched or ignored is returned as it is."""
    line = _queued(_line_pk(line))
    if line.status != BankStatementLine.Status.UNMATCHED or line.amount <= 0:
        return line
    _auto_match(line.pk, _plan(line), actor=actor, now=now)
    return _queued(line.pk)


def _note(pk: int, note: str) -> None:
    # Conditional on the status, so a note never lands on a line an operator matched meanwhile.
    BankStatementLine.objects.filter(pk=pk, status=BankStatementLine.Status.UNMATCHED).update(note=note[:300])


def _auto_match(pk: int, plan: _Plan | str, *, actor: Actor, now: datetime) -> bool:
    """Carry out a plan (or leave its reason as the line's note); True when the line was matched."""
    if isinstance(plan, str):
        _note(pk, plan)
        return False
    with transaction.atomic():
        customer = lock_customer(plan.customer_id)
        locked = _lock_line(pk)
        if locked.status != BankStatementLine.Status.UNMATCHED:
            return False
        outcome = _allocations_for(locked, plan)
        if isinstance(outcome, str):
            _note(pk, outcome)
            return False
        _settle(locked, customer, outcome, plan.method, auto_allocate=False, actor=actor, now=now)
        return True


def _allocations_for(line: BankStatementLine, plan: _Plan) -> list[AllocationRequest] | str:
    """The plan's allocations from the invoices as they are now, under the customer's lock."""
    invoices = {inv.pk: inv for inv in Invoice.objects.filter(pk__in=plan.invoice_ids)}
    if plan.method == BankStatementLine.MatchMethod.AMOUNT_AND_CUSTOMER:
        invoice = invoices[plan.invoice_ids[0]]
        if invoice.status not in OPEN_STATUSES or invoice.amount_due != line.amount:
            return f"Invoice {invoice} no longer owes {_money(line.amount, line.currency)}: match it by hand."
        return [AllocationRequest(invoice.pk, line.amount)]
    left, requests = line.amount, []
    for pk in plan.invoice_ids:
        invoice = invoices[pk]
        if left <= 0 or invoice.status not in OPEN_STATUSES or invoice.amount_due <= 0:
            continue
        take = min(left, invoice.amount_due)
        requests.append(AllocationRequest(invoice.pk, take))
        left -= take
    if not requests:
        return "The invoices named owe nothing any more: match it by hand or ignore it."
    return requests


def auto_match_lines(lines: Iterable[BankStatementLine], *, actor: Actor, now: datetime) -> int:
    """Auto-match several lines, each in its own savepoint; returns how many were matched. Lines are matched
    in the order of their customers' ids, so two imports running at once lock customers in the same order."""
    pks = [line.pk for line in lines]
    current = BankStatementLine.objects.select_related("format__billing_entity").filter(
        pk__in=pks, status=BankStatementLine.Status.UNMATCHED, amount__gt=0)
    planned: list[tuple[int, int, _Plan | str]] = []
    indexes: dict[int, CustomerIndex] = {}
    for line in current.iterator(chunk_size=2000):
        entity_id = line.format.billing_entity_id
        if entity_id not in indexes:
            indexes[entity_id] = CustomerIndex(entity_id)
        plan = _plan(line, indexes[entity_id])
        planned.append((plan.customer_id if isinstance(plan, _Plan) else 0, line.pk, plan))
    # Lines left for a person get their reason in one UPDATE per distinct reason (most share one).
    reasons: dict[str, list[int]] = {}
    for _customer_id, pk, plan in planned:
        if isinstance(plan, str):
            reasons.setdefault(plan[:300], []).append(pk)
    for reason, reason_pks in reasons.items():
        for start in range(0, len(reason_pks), 5000):
            BankStatementLine.objects.filter(pk__in=reason_pks[start:start + 5000],
                                             status=BankStatementLine.Status.UNMATCHED).update(note=reason)
    matched = 0
    for _customer_id, pk, plan in sorted((item for item in planned if isinstance(item[2], _Plan)),
                                         key=lambda item: item[:2]):
        try:
            matched += _auto_match(pk, plan, actor=actor, now=now)
        except BillingError as exc:
            # An invoice changed under us (voided, paid elsewhere): the line waits for a person.
            _note(pk, f"Automatic match refused: {exc.message}")
    return matched


def match_manually(line: BankStatementLine | int, *, customer: Customer, allocations: list[AllocationRequest] | None,
                   actor: Actor, now: datetime) -> BankStatementLine:
    """An operator's match: the line's money is the customer's payment, allocated as given or (no
    allocations) to the oldest open invoices; what is left goes to the customer's credit balance."""
    pk = _line_pk(line)
    with transaction.atomic():
        customer = lock_customer(customer)
        try:
            locked = _lock_line(pk)
        except BankStatementLine.DoesNotExist:
            raise BillingError(f"No bank statement line {pk}.", field="line") from None
        if locked.status == BankStatementLine.Status.MATCHED:
            raise InvalidTransition(f"Line {locked.pk} is already matched (payment #{locked.payment_id}).")
        if locked.status == BankStatementLine.Status.IGNORED:
            raise InvalidTransition(f"Line {locked.pk} is ignored: put it back in the queue first.")
        if locked.amount <= 0:
            raise BillingError("Only money received (a credit) can be matched.", field="line")
        entity_id = BankStatementFormat.objects.values_list("billing_entity_id", flat=True).get(pk=locked.format_id)
        if customer.billing_entity_id != entity_id:
            raise BillingError(f"{customer} is invoiced by another billing entity than the one whose bank account "
                               "received this money.", field="customer")
        return _settle(locked, customer, allocations, BankStatementLine.MatchMethod.MANUAL,
                       auto_allocate=not allocations, actor=actor, now=now)


def ignore_line(line: BankStatementLine | int, *, reason: str, actor: Actor, now: datetime) -> BankStatementLine:
    """Take a line out of the queue (not a customer's payment: a refund from a supplier, interest, ...)."""
    if not reason.strip():
        raise BillingError("Say why the line is ignored.", field="reason")
    with transaction.atomic():
        locked = _lock_line(_line_pk(line))
        if locked.status == BankStatementLine.Status.MATCHED:
            raise InvalidTransition(f"Line {locked.pk} is matched to payment #{locked.payment_id}: reverse the "
                                    "payment instead.")
        if locked.status == BankStatementLine.Status.IGNORED:
            return locked
        locked.status = BankStatementLine.Status.IGNORED
        locked.note = f"Ignored by {actor.label} on {now:%Y-%m-%d}: {reason.strip()}"[:300]
        locked.save(update_fields=["status", "note"])
        return locked


def unignore_line(line: BankStatementLine | int, *, actor: Actor, now: datetime) -> BankStatementLine:
    """Put an ignored credit back in the reconciliation queue."""
    with transaction.atomic():
        locked = _lock_line(_line_pk(line))
        if locked.status != BankStatementLine.Status.IGNORED:
            raise InvalidTransition(f"Line {locked.pk} is {locked.status}, not ignored.")
        if locked.amount <= 0:
            raise BillingError("A debit is never a payment received: it stays ignored.", field="line")
        locked.status = BankStatementLine.Status.UNMATCHED
        locked.note = f"Put back in the queue by {actor.label} on {now:%Y-%m-%d}."[:300]
        locked.save(update_fields=["status", "note"])
        return locked
