"""CSV imports of plans (one row per charge) and subscriptions, and the subscription export.

Rows are created through the catalog and subscription services; docs/imports.md documents the layouts.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from import_export import fields, resources

from billing.errors import BillingError
from contracts.charge_models import MAX_TIERS
from contracts.models import BillingInterval, BillingTiming, Charge, Contract, Plan, PlanVersion, Product, Subscription
from contracts.services.catalog import add_charge, create_plan, publish_plan_version
from contracts.services.subscriptions import create_subscription
from customers.models import Customer
from customers.resources import (
    CellError,
    Column,
    CsvImportResource,
    RowProblems,
    SafeExportMixin,
    choice_parser,
    describe_error,
    lookup_parser,
    parse_bool,
    parse_date,
    parse_decimal,
    parse_int,
    parse_json_object,
    parse_list,
)
from usage.models import Meter

SERVICE_ERRORS = (ValidationError, BillingError)


def _product(value: str) -> Product:
    return lookup_parser(Product.objects.all(), "code", "product with code")(value)


def _meter(value: str) -> Meter:
    return lookup_parser(Meter.objects.all(), "code", "meter with code")(value)


def _decimal_text(value: str) -> str:
    """A price kept as the exact text written (the service reads decimal strings), once checked."""
    parse_decimal(value)
    return value


# --- Plans ------------------------------------------------------------------------------------------------

PLAN_COLUMNS = (
    Column("plan_code", required=True, help="Repeated on every row of the plan."),
    Column("plan_name", in_header=True, attribute="name", help="On the plan's first row; later rows may repeat it."),
    Column("product_code", in_header=True, parse=_product, attribute="product"),
    Column("currency", in_header=True, help="ISO 4217 code."),
    Column("interval", in_header=True, parse=choice_parser(BillingInterval.choices)),
    Column("plan_description", attribute="description"),
    Column("base_fee", parse=_decimal_text),
    Column("base_fee_timing", parse=choice_parser(BillingTiming.choices)),
    Column("trial_days", parse=parse_int),
    Column("minimum_commitment", parse=_decimal_text),
    Column("publish", parse=parse_bool, help="true: publish version 1 once the whole file is imported."),
)
FLAT_PRICE_COLUMNS = ("unit_price", "package_size", "package_price", "free_units", "rate", "fixed_fee")
CHARGE_COLUMNS = (
    Column("meter_code", parse=_meter, attribute="meter", help="Empty: a row for the plan alone, no charge."),
    Column("charge_model", parse=choice_parser(Charge.Model.choices)),
    Column("properties", parse=lambda v: parse_json_object(v, decimals=True),
           help="The charge model's prices as JSON; or use the flat price and tier columns."),
    *(Column(name, parse=_decimal_text) for name in FLAT_PRICE_COLUMNS),
    Column("filters", parse=lambda v: parse_json_object(v), help='JSON, e.g. {"region": ["eu"]}.'),
    Column("group_by", parse=parse_list, help="Property names separated by ';'."),
    Column("billing_timing", parse=choice_parser(BillingTiming.choices)),
    Column("minimum_amount", parse=_decimal_text),
    Column("display_name"),
    Column("charge_product_code", parse=_product, attribute="charge_product"),
)
TIER_COLUMN = re.compile(r"tier_(\d+)_(up_to|unit_price|rate|flat_fee)")
PLAN_FIELD_COLUMNS = {
    "code": "plan_code", "name": "plan_name", "product": "product_code", "currency": "currency",
    "interval": "interval", "description": "plan_description", "base_fee": "base_fee",
    "base_fee_timing": "base_fee_timing", "trial_days": "trial_days", "minimum_commitment": "minimum_commitment",
}
CHARGE_FIELD_COLUMNS = {
    "meter": "meter_code", "charge_model": "charge_model", "properties": "properties", "filters": "filters",
    "group_by": "group_by", "billing_timing": "billing_timing", "minimum_amount": "minimum_amount",
    "display_name": "display_name", "product": "charge_product_code",
}


@dataclass
class _PlanInFile:
    first_line: int
    cells: dict[str, str]  # the plan columns as written on its first row
    values: dict[str, Any]
    version: PlanVersion | None = None  # set once a row of this plan is created
    lines: list[int] = field(default_factory=list)


class PlanImportResource(CsvImportResource):
    """Plans with their first version and its usage charges: one row per charge, the plan's columns
    repeated (or left empty) on each of its rows. A row without meter_code is a plan without charges."""

    display_name = "Plans with charges (one row per charge)"
    columns = (*PLAN_COLUMNS, *CHARGE_COLUMNS)
    plan_column_names = tuple(c.name for c in PLAN_COLUMNS)

    class Meta:
        model = Plan

    def get_user_visible_fields(self) -> list[Column]:
        return [*self.columns, Column("tier_N_up_to, tier_N_unit_price, tier_N_rate, tier_N_flat_fee (N = 1, 2, ...)")]

    def known_fields(self) -> set[str]:
        # Not the column names: "unit_price" from a JSON properties cell must say which property it is.
        return {*PLAN_FIELD_COLUMNS, *CHARGE_FIELD_COLUMNS}

    def _reset(self) -> None:
        super()._reset()
        self.plans: dict[str, _PlanInFile] = {}
        self.cell_was_json = False

    def allowed_column(self, name: str) -> bool:
        match = TIER_COLUMN.fullmatch(name)
        if match:
            return 1 <= int(match.group(1)) <= MAX_TIERS
        return super().allowed_column(name)

    def check_row(self, row: dict[str, Any], line: int, values: dict[str, Any],
                  errors: dict[str | None, list[str]]) -> None:
        code = self.cell(row, "plan_code")
        if not code:
            return
        cells = {name: self.cell(row, name) for name in self.plan_column_names}
        plan = self.plans.get(code)
        if plan is None:
            plan = self.plans[code] = _PlanInFile(line, cells, {k: v for k, v in values.items()
                                                                if k in {c.attribute or c.name for c in PLAN_COLUMNS}})
            for name in ("plan_name", "product_code", "currency", "interval"):
                if not cells[name]:
                    errors.setdefault(name, []).append(f"Required on the first row of plan '{code}'.")
            if Plan.objects.filter(code=code).exists():
                errors.setdefault("plan_code", []).append(
                    f"A plan '{code}' already exists; an import creates new plans only (add a version in the admin)."
                )
        else:
            for name, text in cells.items():
                if text and text != plan.cells[name]:
                    errors.setdefault(name, []).append(
                        f"'{text}' differs from line {plan.first_line}, the first row of plan '{code}'."
                    )
        plan.lines.append(line)
        self._check_charge_cells(row, values, errors)

    def _check_charge_cells(self, row: dict[str, Any], values: dict[str, Any],
                            errors: dict[str | None, list[str]]) -> None:
        charge_columns = [c.name for c in CHARGE_COLUMNS if c.name != "meter_code"] + self._tier_columns()
        filled = [name for name in charge_columns if self.cell(row, name)]
        if not self.cell(row, "meter_code"):
            if filled:
                errors.setdefault("meter_code", []).append(
                    f"Required when charge columns are filled ({', '.join(filled)})."
                )
            return
        if not self.cell(row, "charge_model"):
            errors.setdefault("charge_model", []).append("Required for a charge.")
        flat = [name for name in (*FLAT_PRICE_COLUMNS, *self._tier_columns()) if self.cell(row, name)]
        if self.cell(row, "properties") and flat:
            errors.setdefault("properties", []).append(
                f"Give the prices either here or in the flat columns ({', '.join(flat)}), not both."
            )
        elif not self.cell(row, "properties") and not flat:
            errors.setdefault("properties", []).append(
                "Give the charge's prices: this JSON column, or the flat price or tier columns."
            )
        try:
            values["properties"] = values.get("properties") or self._flat_properties(row)
        except CellError as exc:
            errors.setdefault("tiers", []).append(str(exc))

    def _tier_columns(self) -> list[str]:
        return [h for h in self.headers if TIER_COLUMN.fullmatch(h)]

    def _flat_properties(self, row: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = {name: self.cell(row, name) for name in FLAT_PRICE_COLUMNS if self.cell(row, name)}
        tiers: dict[int, dict[str, Any]] = {}
        for name in self._tier_columns():
            text = self.cell(row, name)
            match = TIER_COLUMN.fullmatch(name)
            assert match is not None
            number, key = int(match.group(1)), match.group(2)
            tier = tiers.setdefault(number, {})
            if text:
                tier[key] = text
        tiers = {n: t for n, t in tiers.items() if t}
        if tiers:
            numbers = sorted(tiers)
            if numbers != list(range(1, len(numbers) + 1)):
                raise CellError(f"Tiers must be numbered from 1 without gaps (found {', '.join(map(str, numbers))}).")
            # The last tier is open: its up_to is left empty.
            properties["tiers"] = [{"up_to": None, **tiers[n]} for n in numbers]
        return properties

    def _charge_column(self, path: str, flat: bool) -> str | None:
        if flat:
            match = re.fullmatch(r"tiers\[(\d+)\]\.(up_to|unit_price|rate|flat_fee)", path)
            if match:
                return f"tier_{int(match.group(1)) + 1}_{match.group(2)}"
            if path in FLAT_PRICE_COLUMNS:
                return path
            if path.startswith("tiers"):
                return None
        base = re.split(r"[.\[]", path, maxsplit=1)[0]
        if base in CHARGE_FIELD_COLUMNS:
            return CHARGE_FIELD_COLUMNS[base]
        return "properties" if not flat and base in (*FLAT_PRICE_COLUMNS, "tiers") else None

    def create(self, values: dict[str, Any], line: int) -> Any:
        code = values["plan_code"]
        plan_in_file = self.plans[code]
        version = plan_in_file.version
        if version is None or not PlanVersion.objects.filter(pk=version.pk).exists():
            plan_values = plan_in_file.values
            try:
                plan = create_plan(
                    code=code, name=plan_values.get("name", ""), product=plan_values.get("product"),
                    currency=plan_values.get("currency", ""), interval=plan_values.get("interval", ""),
                    actor=self.actor, description=plan_values.get("description", ""),
                    base_fee=plan_values.get("base_fee", "0"),
                    base_fee_timing=plan_values.get("base_fee_timing", BillingTiming.ADVANCE),
                    trial_days=plan_values.get("trial_days", 0),
                    minimum_commitment=plan_values.get("minimum_commitment"),
                )
            except SERVICE_ERRORS as exc:
                raise RowProblems(self.row_problems_from_service(exc, lambda p: PLAN_FIELD_COLUMNS.get(
                    re.split(r"[.\[]", p, maxsplit=1)[0]))) from exc
            version = plan.versions.get(version=1)
        created: Any = version.plan
        if "meter" in values:
            flat = not self.cell_was_json
            try:
                created = add_charge(
                    version, actor=self.actor, meter=values["meter"], charge_model=values["charge_model"],
                    properties=values["properties"], filters=values.get("filters"), group_by=values.get("group_by"),
                    billing_timing=values.get("billing_timing", BillingTiming.ARREARS),
                    minimum_amount=values.get("minimum_amount"), display_name=values.get("display_name", ""),
                    product=values.get("charge_product"),
                )
            except SERVICE_ERRORS as exc:
                raise RowProblems(self.row_problems_from_service(exc, lambda p: self._charge_column(p, flat))) from exc
        plan_in_file.version = version
        return created

    def parse_row(self, row: dict[str, Any], line: int) -> dict[str, Any]:
        self.cell_was_json = bool(self.cell(row, "properties"))
        return super().parse_row(row, line)

    def after_import(self, dataset: Any, result: Any, **kwargs: Any) -> None:
        super().after_import(dataset, result, **kwargs)
        if result.has_errors() or result.has_validation_errors():
            return  # rolled back: nothing to publish
        errors: dict[str, list[str]] = {}
        for code, plan_in_file in self.plans.items():
            if plan_in_file.values.get("publish") and plan_in_file.version is not None:
                try:
                    publish_plan_version(plan_in_file.version, actor=self.actor, now=self.now)
                except SERVICE_ERRORS as exc:
                    errors.setdefault("publish", []).append(
                        f"Plan '{code}' (line {plan_in_file.first_line}): {describe_error(exc)}"
                    )
        if errors:
            raise ValidationError(errors)


# --- Subscriptions ----------------------------------------------------------------------------------------


def _customer(value: str) -> Customer:
    return lookup_parser(Customer.objects.all(), "external_id", "customer with external id")(value)


def _plan(value: str) -> Plan:
    return lookup_parser(Plan.objects.all(), "code", "plan with code")(value)


def _contract(value: str) -> Contract:
    return lookup_parser(Contract.objects.all(), "reference", "contract with reference")(value)


class SubscriptionImportResource(CsvImportResource):
    display_name = "Subscriptions (one row per subscription)"
    key_column = "external_id"
    columns = (
        Column("external_id", required=True, help="Unique; the key integrations use."),
        Column("customer_external_id", required=True, parse=_customer, attribute="customer"),
        Column("plan_code", required=True, parse=_plan, attribute="plan"),
        Column("plan_version", parse=parse_int, attribute="version_number",
               help="Empty: the plan's latest published version."),
        Column("quantity", parse=parse_decimal),
        Column("start_date", parse=parse_date, help="YYYY-MM-DD; empty: today in the customer's timezone."),
        Column("billing_anchor", parse=choice_parser(Subscription.Anchor.choices)),
        Column("bill_cycle_day", parse=parse_int),
        Column("trial_days", parse=parse_int, help="Empty: the plan version's trial."),
        Column("end_date", parse=parse_date),
        Column("contract_reference", parse=_contract, attribute="contract"),
        Column("metadata", parse=parse_json_object),
    )
    field_columns = {
        "customer": "customer_external_id", "plan_version": "plan_version", "contract": "contract_reference",
    }

    class Meta:
        model = Subscription

    def exists(self, key: str) -> bool:
        return Subscription.objects.filter(external_id=key).exists()

    def check_row(self, row: dict[str, Any], line: int, values: dict[str, Any],
                  errors: dict[str | None, list[str]]) -> None:
        plan = values.pop("plan", None)
        number = values.pop("version_number", None)
        if plan is None:
            return
        column = "plan_version" if "plan_version" in self.headers else "plan_code"
        if number is not None:
            version = plan.versions.filter(version=number).first()
            if version is None:
                errors.setdefault(column, []).append(f"Plan '{plan.code}' has no version {number}.")
        else:
            version = plan.versions.filter(status=PlanVersion.Status.PUBLISHED).order_by("-version").first()
            if version is None:
                errors.setdefault(column, []).append(f"Plan '{plan.code}' has no published version.")
        values["plan_version"] = version

    def column_for(self, field_path: str) -> str | None:
        if field_path == "plan_version" and "plan_version" not in self.headers:
            return "plan_code"
        return super().column_for(field_path)

    def create(self, values: dict[str, Any], line: int) -> Subscription:
        return create_subscription(actor=self.actor, now=self.now, **values)


class SubscriptionExportResource(SafeExportMixin, resources.ModelResource):
    """Subscriptions in the import layout (plus their status)."""

    customer_external_id = fields.Field(attribute="customer__external_id", column_name="customer_external_id")
    plan_code = fields.Field(attribute="plan_version__plan__code", column_name="plan_code")
    plan_version = fields.Field(attribute="plan_version__version", column_name="plan_version")
    contract_reference = fields.Field(attribute="contract__reference", column_name="contract_reference")
    trial_days = fields.Field(column_name="trial_days")
    metadata = fields.Field(column_name="metadata")

    class Meta:
        model = Subscription
        name = "Subscriptions"
        fields = (
            "external_id", "customer_external_id", "plan_code", "plan_version", "quantity", "start_date",
            "billing_anchor", "bill_cycle_day", "trial_days", "end_date", "contract_reference", "metadata", "status",
        )
        export_order = fields

    def get_queryset(self) -> Any:
        return Subscription.objects.select_related("customer", "plan_version__plan", "contract")

    def dehydrate_trial_days(self, subscription: Subscription) -> Any:
        if subscription.trial_end_date is None:
            return ""
        return (subscription.trial_end_date - subscription.start_date).days

    def dehydrate_metadata(self, subscription: Subscription) -> str:
        return json.dumps(subscription.metadata, sort_keys=True) if subscription.metadata else ""

    def dehydrate_quantity(self, subscription: Subscription) -> str:
        return format(subscription.quantity.normalize(), "f")

