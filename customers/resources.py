"""CSV imports and exports (django-import-export), and the machinery every import shares.

An import reads the whole file first (`read_csv`: encoding, shape, size), checks the header against the
resource's columns, then creates each row through the domain service, so a row meets exactly the rules
the API and the admin apply. Every bad row is reported (line, column, reason) and a file with any problem
imports nothing: the run is one transaction, rolled back on the first error found and every one after it.
The layout of each file is documented in docs/imports.md.
"""

import csv
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple

import tablib
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist, ValidationError
from django.db import transaction
from django.utils import timezone
from import_export import fields, resources
from import_export.formats import base_formats
from import_export.instance_loaders import BaseInstanceLoader
from import_export.results import RowResult

from billing.actors import Actor
from billing.errors import BillingError
from customers.models import BillingEntity, Customer
from customers.services import create_customer

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
TRUE_WORDS = {"true", "yes", "y", "1"}
FALSE_WORDS = {"false", "no", "n", "0"}


def max_rows() -> int:
    return int(getattr(settings, "ACCRUAL_IMPORT_MAX_ROWS", DEFAULT_MAX_ROWS))


def max_bytes() -> int:
    return int(getattr(settings, "ACCRUAL_IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES))


# --- Reading the file -------------------------------------------------------------------------------------


class ImportFileError(ValueError):
    """The file cannot be read as a CSV table at all; `problems` says every reason found."""

    def __init__(self, problems: list["ImportProblem"]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class ImportProblem(NamedTuple):
    line: int | None  # line of the file (the header is line 1); None: the file as a whole
    column: str | None
    message: str

    def __str__(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        if self.column:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportFileError(
            [ImportProblem(line, None, f"The file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be read). "
                                       "Save it as 'CSV UTF-8' and upload it again.")]
        ) from None


def read_csv(data: bytes | str) -> tablib.Dataset:
    """The file as a Dataset with lower-cased headers, or ImportFileError listing everything wrong with it.

    Blank lines (and rows whose cells are all empty, as spreadsheets write them) are skipped; the source
    line of each row is kept in `dataset.line_numbers` for error messages.
    """
    if len(data) > max_bytes():
        raise ImportFileError([ImportProblem(None, None, f"The file is larger than {max_bytes() // 1024} KiB; "
                                                         "split it into smaller files.")])
    text = _decode(data)
    if "\x00" in text:
        raise ImportFileError([ImportProblem(None, None, "The file contains NUL bytes: it is not a CSV text file.")])
    if not text.strip():
        raise ImportFileError([ImportProblem(None, None, "The file is empty.")])
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[ImportProblem] = []
    headers: list[str] | None = None
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    limit = max_rows()
    start_line = 1
    try:
        for cells in reader:
            line, start_line = start_line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if headers is None:
                headers = [cell.strip().lower() for cell in cells]
                continue
            if len(rows) >= limit:
                raise ImportFileError([ImportProblem(None, None, f"The file has more than {limit} data rows, the "
                                                                 "limit of one import; split it into smaller files.")])
            if len(cells) > len(headers) and not any(c.strip() for c in cells[len(headers):]):
                cells = cells[: len(headers)]  # trailing empty cells, as spreadsheets write them
            if len(cells) != len(headers):
                problems.append(ImportProblem(line, None, f"The row has {len(cells)} cells but the header has "
                                                          f"{len(headers)} columns."))
                continue
            rows.append(cells)
            line_numbers.append(line)
    except csv.Error as exc:
        # Reported on the line where the unreadable record starts (a stray quote swallows the lines after it).
        problems.append(ImportProblem(start_line, None, f"The file is not valid CSV: {exc}."))
    if headers is None:
        raise ImportFileError([ImportProblem(None, None, "The file is empty.")])
    if not rows and not problems:
        raise ImportFileError([ImportProblem(None, None, "The file has a header but no data rows.")])
    if problems:
        raise ImportFileError(problems)
    # Columns with neither a name nor a value (trailing separators from spreadsheets) are dropped.
    keep = [i for i, name in enumerate(headers) if name or any(row[i].strip() for row in rows)]
    if len(keep) != len(headers):
        headers = [headers[i] for i in keep]
        rows = [[row[i] for i in keep] for row in rows]
    dataset = tablib.Dataset(*rows, headers=headers)
    dataset.line_numbers = line_numbers
    return dataset


class AccrualCSV(base_formats.CSV):
    """CSV read by `read_csv` (bytes in, so that a wrong encoding is reported with its line)."""

    def get_title(self) -> str:
        return "csv"

    def is_binary(self) -> bool:
        return True

    def get_read_mode(self) -> str:
        return "rb"

    def create_dataset(self, in_stream: bytes | str, **kwargs: Any) -> tablib.Dataset:
        return read_csv(in_stream)


# --- Cells ------------------------------------------------------------------------------------------------


def escape_formula(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made inert with a leading apostrophe. A plain
    number ("-12.5") is left alone: a spreadsheet reads it as the number it is, and runs nothing."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def unescape_formula(value: str) -> str:
    """Undo `escape_formula`, so an exported file imports back to the same text; anything else is kept as
    written (a formula in a cell is only ever stored as text)."""
    if len(value) > 1 and value[0] == "'" and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


class CellError(ValueError):
    """A cell that cannot be read; the message says why."""


def parse_decimal(value: str) -> Decimal:
    # Plain decimal notation only: Decimal() would also take "1_000", "1e3" or "NaN".
    if not PLAIN_NUMBER.fullmatch(value):
        raise CellError(f"'{value[:40]}' is not a number; write it like 1234.56 (a '.' for decimals).")
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern above only lets numbers through
        raise CellError(f"'{value[:40]}' is not a number.") from None


def parse_int(value: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", value):
        raise CellError(f"'{value[:40]}' is not a whole number.")
    return int(value)


def parse_bool(value: str) -> bool:
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CellError(f"'{value[:40]}' is not true or false (use true/false, yes/no or 1/0).")


def parse_date(value: str) -> date:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise CellError(f"'{value[:40]}' is not a date; write it as YYYY-MM-DD.") from None


def parse_json(value: str, *, decimals: bool = False) -> Any:
    try:
        return json.loads(value, parse_float=Decimal if decimals else float)
    except json.JSONDecodeError as exc:
        raise CellError(f"Malformed JSON: {exc.msg} at character {exc.pos + 1}.") from None


def parse_json_object(value: str, *, decimals: bool = False) -> dict[str, Any]:
    parsed = parse_json(value, decimals=decimals)
    if not isinstance(parsed, dict):
        raise CellError('Give a JSON object, e.g. {"key": "value"}.')
    return parsed


def parse_list(value: str) -> list[str]:
    """A JSON list, or values separated by ';' or ','."""
    if value.startswith("["):
        parsed = parse_json(value)
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise CellError('Give a list of texts, e.g. ["a", "b"] or a;b.')
        return parsed
    return [part.strip() for part in re.split(r"[;,]", value) if part.strip()]


def choice_parser(choices: Iterable[tuple[str, str]]) -> Callable[[str], str]:
    allowed = {str(value).lower(): str(value) for value, _ in choices}

    def parse(value: str) -> str:
        try:
            return allowed[value.lower()]
        except KeyError:
            raise CellError(f"'{value[:40]}' is not one of: {', '.join(allowed.values())}.") from None

    return parse


def lookup_parser(queryset: Any, field: str, what: str) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return queryset.get(**{field: value})
        except ObjectDoesNotExist:
            raise CellError(f"No {what} '{value[:100]}'.") from None

    return parse


# --- Resources --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    required: bool = False
    parse: Callable[[str], Any] | None = None  # None: the text as written
    attribute: str | None = None  # the service argument; default: the column name
    help: str = ""
    in_header: bool = False  # the header must have it even where some rows may leave it empty

    @property
    def column_name(self) -> str:  # what import-export's admin lists as the file's fields
        return self.name


class RowProblems(Exception):
    def __init__(self, errors: dict[str | None, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors


def service_errors(exc: Exception) -> dict[str, list[str]]:
    """A service refusal as {field path: [messages]} (NON_FIELD_ERRORS for the object as a whole)."""
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return {key: [str(m) for m in messages] for key, messages in exc.message_dict.items()}
        return {NON_FIELD_ERRORS: [str(m) for m in exc.messages]}
    if isinstance(exc, BillingError):
        return {exc.field or NON_FIELD_ERRORS: [exc.message]}
    return {NON_FIELD_ERRORS: [str(exc)]}


def describe_error(exc: Exception) -> str:
    """A service refusal as one line: "field: message; other: message"."""
    parts = []
    for field_path, messages in service_errors(exc).items():
        prefix = "" if field_path == NON_FIELD_ERRORS else f"{field_path}: "
        parts.extend(prefix + m for m in messages)
    return "; ".join(parts)


class CsvImportResource(resources.Resource):
    """Create-only import of one kind of record per row, through a service.

    Subclasses declare `columns`, optionally `key_column` (unique in the file and the database) and
    implement `exists(key)` and `create(values, line)`; `field_columns` maps service field names to the
    columns that feed them, so a service's error lands on the right column.
    """

    columns: ClassVar[tuple[Column, ...]] = ()
    key_column: ClassVar[str | None] = None
    field_columns: ClassVar[dict[str, str]] = {}
    display_name: ClassVar[str] = "rows"
    # Each subclass creates its record through its service: create(values, line) -> the new object.
    create: Callable[[dict[str, Any], int], Any]

    class Meta:
        instance_loader_class = BaseInstanceLoader

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not callable(getattr(cls, "create", None)):
            raise TypeError(f"{cls.__name__} must define create(values, line) to import its rows.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reset()

    def _reset(self) -> None:
        self.actor = Actor.system("csv-import")
        self.now = timezone.now()
        self.line_numbers: list[int] | None = None
        self.seen_keys: dict[str, int] = {}
        self.headers: list[str] = []

    @classmethod
    def get_display_name(cls) -> str:
        return cls.display_name

    # The admin lists these as the file's columns and shows them in the preview.
    def get_user_visible_fields(self) -> list[Column]:
        return list(self.columns)

    def get_import_fields(self) -> list[fields.Field]:
        return []

    def get_diff_headers(self) -> list[str]:
        return [c.name for c in self.columns]

    def get_import_id_fields(self) -> list[str]:
        return ["id"]  # rows are matched by their key column, not by import-export's instance loader

    # --- structure ---

    def allowed_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    def check_header(self, headers: list[str]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        seen: set[str] = set()
        for index, name in enumerate(headers, 1):
            if not name:
                errors.setdefault(NON_FIELD_ERRORS, []).append(f"Column {index} of the header has no name.")
            elif name in seen:
                errors.setdefault(name, []).append("This column appears twice in the header.")
            elif not self.allowed_column(name):
                errors.setdefault(name, []).append(
                    "Unknown column; the columns are: " + ", ".join(c.name for c in self.columns) + "."
                )
            seen.add(name)
        for column in self.columns:
            if (column.required or column.in_header) and column.name not in seen:
                errors.setdefault(column.name, []).append("This required column is missing from the header.")
        return errors

    def before_import(self, dataset: tablib.Dataset, **kwargs: Any) -> None:
        self._reset()
        user = kwargs.get("user")
        self.actor = kwargs.get("actor") or (Actor.for_user(user) if user is not None else self.actor)
        self.now = kwargs.get("now") or self.now
        self.line_numbers = getattr(dataset, "line_numbers", None)
        self.headers = [str(h or "").strip().lower() for h in (dataset.headers or [])]
        dataset.headers = self.headers
        errors = self.check_header(self.headers)
        if errors:
            # A file whose header is wrong imports no row at all: every row would be read wrongly.
            headers = dataset.headers
            dataset.wipe()
            dataset.headers = headers
            raise ValidationError(errors)
        if len(dataset) > max_rows():
            dataset.wipe()
            raise ValidationError(f"The file has more than {max_rows()} data rows, the limit of one import.")

    def after_import(self, dataset: tablib.Dataset, result: Any, **kwargs: Any) -> None:
        result.line_numbers = self.line_numbers
        result.diff_headers = list(self.headers)

    def line_of(self, row_number: int) -> int:
        if self.line_numbers and 0 < row_number <= len(self.line_numbers):
            return self.line_numbers[row_number - 1]
        return row_number + 1  # the header is line 1

    # --- rows ---

    def cell(self, row: dict[str, Any], name: str) -> str:
        value = row.get(name)
        return "" if value is None else unescape_formula(str(value).strip())

    def parse_row(self, row: dict[str, Any], line: int) -> dict[str, Any]:
        """The row's values by service argument; RowProblems lists every unreadable cell."""
        values, errors = self.read_cells(row, line)
        self.check_row(row, line, values, errors)
        if errors:
            raise RowProblems(errors)
        return values

    def check_row(self, row: dict[str, Any], line: int, values: dict[str, Any],
                  errors: dict[str | None, list[str]]) -> None:
        """Checks across cells and rows; add to `errors` by column."""

    def read_cells(self, row: dict[str, Any], line: int) -> tuple[dict[str, Any], dict[str | None, list[str]]]:
        values: dict[str, Any] = {}
        errors: dict[str | None, list[str]] = {}
        for column in self.columns:
            text = self.cell(row, column.name)
            if not text:
                if column.required:
                    errors.setdefault(column.name, []).append("This column is required.")
                continue
            try:
                values[column.attribute or column.name] = column.parse(text) if column.parse else text
            except CellError as exc:
                errors.setdefault(column.name, []).append(str(exc))
        if self.key_column:
            key = self.cell(row, self.key_column)
            if key:
                first = self.seen_keys.setdefault(key, line)
                if first != line:
                    errors.setdefault(self.key_column, []).append(f"'{key}' is already on line {first} of this file.")
                elif self.exists(key):
                    errors.setdefault(self.key_column, []).append(f"'{key}' already exists.")
        return values, errors

    def exists(self, key: str) -> bool:
        return False

    def column_for(self, field_path: str) -> str | None:
        """The column a service error about `field_path` (e.g. "tiers[1].up_to") belongs to."""
        if field_path == NON_FIELD_ERRORS:
            return None
        base = re.split(r"[.\[]", field_path, maxsplit=1)[0]
        if base in self.field_columns:
            return self.field_columns[base]
        if any(c.name == base for c in self.columns):
            return base
        return None

    def row_problems_from_service(
        self, exc: Exception, column_for: Callable[[str], str | None] | None = None
    ) -> dict[str | None, list[str]]:
        errors: dict[str | None, list[str]] = {}
        for path, messages in service_errors(exc).items():
            column = (column_for or self.column_for)(path)
            # Name the part at fault ("tiers[1].up_to", "billing_emails[0]") unless the column says it all.
            plain = path in (NON_FIELD_ERRORS, column) or (column is not None and path in self.known_fields())
            prefix = "" if plain else f"{path}: "
            errors.setdefault(column, []).extend(prefix + m for m in messages)
        return errors

    def known_fields(self) -> set[str]:
        """Service field names that a column stands for as a whole."""
        return {*self.field_columns, *(c.attribute or c.name for c in self.columns)}

    def import_row(self, row: dict[str, Any], instance_loader: Any, **kwargs: Any) -> RowResult:
        row_result = self.get_row_result_class()()
        line = self.line_of(kwargs.get("row_number", 0))
        try:
            values = self.parse_row(row, line)
            try:
                # A savepoint of its own: a refused row leaves the import's transaction usable.
                with transaction.atomic():
                    instance = self.create(values, line)
            except (ValidationError, BillingError) as exc:
                raise RowProblems(self.row_problems_from_service(exc)) from exc
        except RowProblems as problems:
            row_result.import_type = RowResult.IMPORT_TYPE_INVALID
            row_result.validation_error = ValidationError(
                {column or NON_FIELD_ERRORS: messages for column, messages in problems.errors.items()}
            )
            return row_result
        except Exception as exc:  # a bug rather than bad data: reported on its row, the import rolled back
            row_result.import_type = RowResult.IMPORT_TYPE_ERROR
            row_result.errors.append(self.get_error_result_class()(exc, row=row, number=kwargs.get("row_number")))
            return row_result
        row_result.import_type = RowResult.IMPORT_TYPE_NEW
        row_result.add_instance_info(instance)
        row_result.instance = instance
        row_result.diff = [self.cell(row, h) for h in self.headers]
        return row_result


def import_problems(result: Any) -> list[ImportProblem]:
    """Every problem of an import result, in file order, with the line of the file it comes from."""
    lines: list[int] | None = getattr(result, "line_numbers", None)

    def line_of(number: int) -> int:
        return lines[number - 1] if lines and 0 < number <= len(lines) else number + 1

    problems: list[ImportProblem] = []
    for error in result.base_errors:
        exc = error.error
        if isinstance(exc, ValidationError):
            for key, messages in service_errors(exc).items():
                column = None if key == NON_FIELD_ERRORS else key
                problems.extend(ImportProblem(1 if column else None, column, m) for m in messages)
        else:
            problems.append(ImportProblem(None, None, f"{type(exc).__name__}: {exc}"))
    for invalid in result.invalid_rows:
        for key, messages in invalid.error_dict.items():
            column = None if key == NON_FIELD_ERRORS else key
            problems.extend(ImportProblem(line_of(invalid.number), column, str(m)) for m in messages)
    for number, errors in result.row_errors():
        for error in errors:
            # An unexpected failure (a bug, not bad data): say so rather than hide it.
            problems.append(ImportProblem(line_of(error.number or number), None,
                                          f"Unexpected error {type(error.error).__name__}: {error.error}"))
    return sorted(problems, key=lambda p: (p.line or 0, p.column or ""))


def run_import(
    resource: CsvImportResource, data: bytes | str, *, dry_run: bool, actor: Actor | None = None,
    now: datetime | None = None,
) -> tuple[Any, list[ImportProblem]]:
    """Import `data` all-or-nothing; returns the import-export result and every problem found."""
    try:
        dataset = read_csv(data)
    except ImportFileError as exc:
        return None, exc.problems
    result = resource.import_data(
        dataset, dry_run=dry_run, raise_errors=False, use_transactions=True, rollback_on_validation_errors=True,
        actor=actor, now=now,
    )
    return result, import_problems(result)


# --- Customers --------------------------------------------------------------------------------------------


def _entity(value: str) -> BillingEntity:
    return lookup_parser(BillingEntity.objects.all(), "code", "billing entity with code")(value)


def _parent(value: str) -> Customer:
    # Customers created by earlier rows of the same file are found too (same transaction).
    return lookup_parser(Customer.objects.all(), "external_id", "customer with external id")(value)


class CustomerImportResource(CsvImportResource):
    display_name = "Customers (one row per customer)"
    key_column = "external_id"
    columns = (
        Column("external_id", required=True, help="Unique; the key integrations use."),
        Column("name", required=True),
        Column("billing_entity", required=True, parse=_entity, help="The billing entity's code."),
        Column("country", required=True, help="ISO 3166 code, e.g. US, DE."),
        Column("currency", help="ISO 4217 code; empty: the billing entity's currency."),
        Column("legal_name", help="Empty: the name."),
        Column("kind", parse=choice_parser(Customer.Kind.choices)),
        Column("billing_emails", parse=parse_list, help="Separated by ';'."),
        Column("tax_id"),
        Column("tax_exempt", parse=parse_bool),
        Column("tax_exemption_reason"),
        Column("timezone", help="IANA name, e.g. Europe/Berlin."),
        Column("payment_terms_days", parse=parse_int),
        Column("parent_external_id", parse=_parent, attribute="parent",
               help="An existing customer or one on an earlier line."),
        Column("invoice_to_parent", parse=parse_bool),
        Column("address_line1"),
        Column("address_line2"),
        Column("city"),
        Column("state"),
        Column("postal_code"),
        Column("metadata", parse=parse_json_object, help="A JSON object."),
    )
    field_columns = {"parent": "parent_external_id"}

    class Meta:
        model = Customer

    def exists(self, key: str) -> bool:
        return Customer.objects.filter(external_id=key).exists()

    def create(self, values: dict[str, Any], line: int) -> Customer:
        return create_customer(actor=self.actor, **values)


# --- Exports ----------------------------------------------------------------------------------------------


class SafeExportMixin:
    """Every exported text cell that a spreadsheet would run as a formula starts with an apostrophe."""

    def export_field(self, field: fields.Field, instance: Any, **kwargs: Any) -> Any:
        return escape_formula(super().export_field(field, instance, **kwargs))  # type: ignore[misc]


class CustomerExportResource(SafeExportMixin, resources.ModelResource):
    """The customers in the import layout, so an export imports back (into another instance)."""

    billing_entity = fields.Field(attribute="billing_entity__code", column_name="billing_entity")
    parent_external_id = fields.Field(attribute="parent__external_id", column_name="parent_external_id")
    billing_emails = fields.Field(column_name="billing_emails")
    metadata = fields.Field(column_name="metadata")

    class Meta:
        model = Customer
        name = "Customers"
        fields = (
            "external_id", "name", "billing_entity", "country", "currency", "legal_name", "kind", "billing_emails",
            "tax_id", "tax_exempt", "tax_exemption_reason", "timezone", "payment_terms_days",
            "parent_external_id", "invoice_to_parent", "address_line1", "address_line2", "city", "state",
            "postal_code", "metadata", "status",
        )
        export_order = fields

    def get_queryset(self) -> Any:
        return Customer.objects.select_related("billing_entity", "parent")

    def dehydrate_billing_emails(self, customer: Customer) -> str:
        return "; ".join(customer.billing_emails or [])

    def dehydrate_metadata(self, customer: Customer) -> str:
        return json.dumps(customer.metadata, sort_keys=True) if customer.metadata else ""

    def dehydrate_country(self, customer: Customer) -> str:
        return str(customer.country.code or "")

    def dehydrate_timezone(self, customer: Customer) -> str:
        return str(customer.timezone)
