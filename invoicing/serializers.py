"""Serializers of the invoicing API: invoices and lines, previews, tax rates, coupons applied, credits, wallets,
one-off charges and installment plans.

Amounts are stored as plain decimals next to their document's single currency; the API shows every one of
them as Money {"amount", "currency"} (billing/api/fields.py), with the currency read from the document.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from djmoney.money import Money
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.api.fields import (
    CountryCodeField,
    CurrencyCodeField,
    DecimalStringField,
    MoneyField,
    MoneySchema,
    format_amount,
)
from billing.api.serializers import InputSerializer, WritableModelSerializer
from contracts.models import Product
from invoicing.models import (
    AppliedCoupon,
    CreditGrant,
    InstallmentPlan,
    Invoice,
    InvoiceLine,
    PendingCharge,
    TaxRate,
    Wallet,
    WalletTransaction,
)
from invoicing.services.documents import MAX_LINES_PER_INVOICE

# Column precision (invoicing.models): a value that parses is storable.
UNIT_PRICE_DIGITS = {"max_places": 12, "max_digits": 28}
QUANTITY_DIGITS = {"max_places": 12, "max_digits": 38}
MAX_MEMO_LENGTH = 5_000


@extend_schema_field(MoneySchema)
class DocumentMoneyField(serializers.Field):
    """A decimal column shown as Money in the currency of the row (`currency_path`, dotted)."""

    def __init__(self, *, currency_path: str = "currency", **kwargs: Any) -> None:
        self.currency_path = currency_path
        kwargs["read_only"] = True
        super().__init__(**kwargs)

    def get_attribute(self, instance: Any) -> Any:
        value = super().get_attribute(instance)
        currency: Any = instance
        for part in self.currency_path.split("."):
            currency = currency[part] if isinstance(currency, dict) else getattr(currency, part)
        return (value, str(currency))

    def to_representation(self, value: tuple[Decimal, str]) -> dict[str, str]:
        amount, currency = value
        return {"amount": format_amount(Decimal(amount), currency), "currency": currency}


def _choice_text(choices: Any) -> serializers.CharField:
    # A plain string listing its values: an enum named "status" or "kind" would collide with other apps' enums
    # in the OpenAPI components.
    return serializers.CharField(read_only=True, help_text="One of: " + ", ".join(value for value, _ in choices) + ".")


def _slug(queryset: Any, field: str = "code", **kwargs: Any) -> serializers.SlugRelatedField:
    return serializers.SlugRelatedField(slug_field=field, queryset=queryset, **kwargs)


# --- invoices -----------------------------------------------------------------------------------------------


class InvoiceLineSerializer(serializers.ModelSerializer):
    kind = _choice_text(InvoiceLine.Kind.choices)
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    subscription = serializers.SlugRelatedField(slug_field="external_id", read_only=True, allow_null=True)
    product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    meter = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    quantity = DecimalStringField(read_only=True)
    unit_price = DecimalStringField(read_only=True)
    amount = DocumentMoneyField(currency_path="invoice.currency")
    discount = DocumentMoneyField(source="discount_amount", currency_path="invoice.currency")
    tax = DocumentMoneyField(source="tax_amount", currency_path="invoice.currency")
    tax_percent = DecimalStringField(read_only=True)
    group = serializers.JSONField(read_only=True)
    explanation = serializers.JSONField(
        read_only=True, help_text="What produced the line: period, fee formula, usage quantity, tiers, price source."
    )

    class Meta:
        model = InvoiceLine
        fields = (
            "id", "position", "kind", "description", "customer", "subscription", "product", "meter", "group",
            "period_start", "period_end", "quantity", "unit_price", "amount", "discount", "tax", "tax_percent",
            "tax_treatment", "explanation",
        )
        read_only_fields = fields


class InvoiceSerializer(serializers.ModelSerializer):
    status = _choice_text(Invoice.Status.choices)
    kind = _choice_text(Invoice.Kind.choices)
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    billing_entity = serializers.SlugRelatedField(slug_field="code", read_only=True)
    currency = serializers.CharField(read_only=True)
    subtotal = DocumentMoneyField()
    discount_total = DocumentMoneyField()
    tax_total = DocumentMoneyField()
    total = DocumentMoneyField()
    prepaid_credit_applied = DocumentMoneyField()
    amount_paid = DocumentMoneyField()
    amount_credited = DocumentMoneyField()
    credit_notes_total = DocumentMoneyField()
    amount_due = DocumentMoneyField()
    has_pdf = serializers.SerializerMethodField()

    class Meta:
        model = Invoice
        fields = (
            "id", "number", "status", "kind", "customer", "billing_entity", "currency", "issue_date", "due_date",
            "period_start", "period_end", "grace_until", "subtotal", "discount_total", "tax_total", "total",
            "prepaid_credit_applied", "amount_paid", "amount_credited", "credit_notes_total", "amount_due",
            "paid_at", "marked_uncollectible_at", "memo", "finalized_at", "voided_at", "void_reason", "has_pdf",
            "created_at", "updated_at",
        )
        read_only_fields = fields

    def get_has_pdf(self, invoice: Invoice) -> bool:
        return bool(invoice.pdf)


class InvoiceDetailSerializer(InvoiceSerializer):
    tax_breakdown = serializers.JSONField(
        read_only=True, help_text="Per tax rate: taxable amount and tax, rounded once."
    )
    discount_breakdown = serializers.JSONField(read_only=True, help_text="Coupons and promotional credits applied.")
    mentions = serializers.ListField(child=serializers.CharField(), read_only=True)
    seller = serializers.JSONField(read_only=True)
    buyer = serializers.JSONField(read_only=True)
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta(InvoiceSerializer.Meta):
        fields = (*InvoiceSerializer.Meta.fields, "tax_breakdown", "discount_breakdown", "mentions", "seller", "buyer",
                  "lines")
        read_only_fields = fields


class ManualLineInputSerializer(InputSerializer):
    description = serializers.CharField(max_length=300)
    unit_price = DecimalStringField(**UNIT_PRICE_DIGITS, min_value=Decimal(0),
                                    help_text="In the invoice's currency; up to 12 decimal places.")
    quantity = DecimalStringField(**QUANTITY_DIGITS, min_value=Decimal(0), allow_zero=False, required=False,
                                  default=Decimal(1))
    product = _slug(Product.objects.all(), required=False, allow_null=True, help_text="The product's code (tax code).")
    period_start = serializers.DateField(required=False, allow_null=True)
    period_end = serializers.DateField(required=False, allow_null=True, help_text="First day after the period.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("period_start"), attrs.get("period_end")
        if start and end and end < start:
            raise serializers.ValidationError({"period_end": ["Must not be before period_start."]})
        return attrs


class InvoiceCreateSerializer(InputSerializer):
    customer = serializers.CharField(max_length=100, help_text="The customer's external_id.")
    currency = CurrencyCodeField(required=False, help_text="Default: the customer's currency.")
    lines = serializers.ListField(child=ManualLineInputSerializer(), min_length=1, max_length=MAX_LINES_PER_INVOICE)
    memo = serializers.CharField(max_length=MAX_MEMO_LENGTH, required=False, allow_blank=True, default="")
    finalize = serializers.BooleanField(required=False, default=False, help_text="Finalize at once (numbered).")


class VoidInputSerializer(InputSerializer):
    reason = serializers.CharField(max_length=300, help_text="Why the invoice is voided (kept for the audit).")


class ExplainedLineSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    description = serializers.CharField()
    amount = MoneyField()
    formula = serializers.CharField(help_text="How the amount was computed, in words and numbers.")
    explanation = serializers.JSONField()


class InvoiceExplanationSerializer(serializers.Serializer):
    invoice = serializers.IntegerField()
    number = serializers.CharField(allow_null=True)
    lines = ExplainedLineSerializer(many=True)


class LineCheckSerializer(serializers.Serializer):
    line_id = serializers.IntegerField()
    description = serializers.CharField()
    kind = serializers.CharField()
    stored_amount = DecimalStringField()
    recomputed_amount = DecimalStringField(allow_null=True)
    stored_quantity = DecimalStringField()
    recomputed_quantity = DecimalStringField(allow_null=True)
    matches = serializers.BooleanField()
    note = serializers.CharField(allow_blank=True)


class RecomputeSerializer(serializers.Serializer):
    matches = serializers.BooleanField(help_text="True when the stored lines equal a fresh computation.")
    late_events = serializers.IntegerField(help_text="Events received after the invoice was computed.")
    lines = LineCheckSerializer(many=True, help_text="Every line checked, with what it recomputes to.")
    differences = LineCheckSerializer(many=True, help_text="The lines that do not match.")


# --- previews -----------------------------------------------------------------------------------------------


class PreviewLineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    subscription_id = serializers.IntegerField(allow_null=True)
    period_start = serializers.DateField(allow_null=True)
    period_end = serializers.DateField(allow_null=True)
    quantity = DecimalStringField()
    unit_price = DecimalStringField()
    amount = MoneyField()
    discount = MoneyField()
    tax = MoneyField()
    tax_percent = DecimalStringField()
    tax_treatment = serializers.CharField()
    explanation = serializers.JSONField()


class PreviewInvoiceSerializer(serializers.Serializer):
    currency = serializers.CharField()
    lines = PreviewLineSerializer(many=True)
    subtotal = MoneyField()
    discount_total = MoneyField()
    tax_total = MoneyField()
    total = MoneyField()
    tax_breakdown = serializers.ListField(child=serializers.JSONField())
    discount_breakdown = serializers.ListField(child=serializers.JSONField())
    mentions = serializers.ListField(child=serializers.CharField())


class UpcomingInvoiceSerializer(serializers.Serializer):
    customer = serializers.CharField(help_text="The bill-to customer's external_id.")
    as_of = serializers.DateField(help_text="The day the current period closes (customer's timezone).")
    invoices = PreviewInvoiceSerializer(many=True, help_text="One per currency.")


def preview_body(preview: Any) -> dict[str, Any]:
    """A cycle.Preview as plain data for UpcomingInvoiceSerializer."""

    def money(value: Decimal, currency: str) -> Money:
        return Money(value, currency)

    invoices = []
    for priced in preview.invoices:
        cur = priced.currency
        invoices.append({
            "currency": cur,
            "lines": [
                {
                    "kind": pl.draft.kind, "description": pl.draft.description,
                    "subscription_id": pl.draft.subscription_id, "period_start": pl.draft.period_start,
                    "period_end": pl.draft.period_end, "quantity": pl.draft.quantity,
                    "unit_price": pl.draft.unit_price, "amount": money(pl.draft.amount, cur),
                    "discount": money(pl.discount, cur), "tax": money(pl.tax, cur),
                    "tax_percent": pl.decision.percent, "tax_treatment": pl.decision.treatment,
                    "explanation": pl.draft.explanation,
                }
                for pl in priced.lines
            ],
            "subtotal": money(priced.subtotal, cur), "discount_total": money(priced.discount_total, cur),
            "tax_total": money(priced.tax_total, cur), "total": money(priced.total, cur),
            "tax_breakdown": priced.tax_breakdown, "discount_breakdown": priced.discount_breakdown,
            "mentions": priced.mentions,
        })
    return {"customer": preview.customer.external_id, "as_of": preview.as_of_day, "invoices": invoices}


# --- tax rates ----------------------------------------------------------------------------------------------


class TaxRateSerializer(WritableModelSerializer):
    country = CountryCodeField()
    percent = DecimalStringField(max_places=6, max_digits=9, min_value=Decimal(0))

    class Meta:
        model = TaxRate
        fields = (
            "id", "name", "country", "region", "tax_code", "percent", "valid_from", "valid_to", "legal_mention",
            "is_active", "created_at", "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")

    def validate_percent(self, value: Decimal) -> Decimal:
        if value > 100:
            raise serializers.ValidationError("Must be at most 100.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start = attrs.get("valid_from", getattr(self.instance, "valid_from", None))
        end = attrs.get("valid_to", getattr(self.instance, "valid_to", None))
        if start and end and end <= start:
            message = "Must be after valid_from (it is the first day not valid)."
            raise serializers.ValidationError({"valid_to": [message]})
        return attrs


# --- coupons and credits ------------------------------------------------------------------------------------


class AppliedCouponSerializer(serializers.ModelSerializer):
    status = _choice_text(AppliedCoupon.Status.choices)
    coupon = serializers.SlugRelatedField(slug_field="code", read_only=True)
    name = serializers.CharField(source="coupon.name", read_only=True)

    class Meta:
        model = AppliedCoupon
        fields = ("id", "coupon", "name", "status", "periods_used", "created_by", "created_at", "updated_at")
        read_only_fields = fields


class ApplyCouponSerializer(InputSerializer):
    coupon = serializers.CharField(max_length=100, help_text="The coupon's code.")


class CreditGrantSerializer(serializers.ModelSerializer):
    amount = DocumentMoneyField()
    remaining = DocumentMoneyField()

    class Meta:
        model = CreditGrant
        fields = ("id", "amount", "remaining", "expires_on", "reason", "created_by", "created_at")
        read_only_fields = fields


class GrantCreditSerializer(InputSerializer):
    amount = MoneyField(allow_zero=False, help_text='Promotional credit, e.g. {"amount": "50.00", "currency": "USD"}.')
    reason = serializers.CharField(max_length=200)
    expires_on = serializers.DateField(required=False, allow_null=True, help_text="First day it can no longer be used.")


class WalletTransactionSerializer(serializers.ModelSerializer):
    kind = _choice_text(WalletTransaction.Kind.choices)
    amount = DocumentMoneyField(currency_path="wallet.currency")
    remaining = DocumentMoneyField(currency_path="wallet.currency", help_text="Top-ups: what is left of this lot.")
    invoice = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = WalletTransaction
        fields = ("id", "kind", "amount", "remaining", "expires_on", "invoice", "created_at", "created_by")
        read_only_fields = fields


class WalletSerializer(serializers.ModelSerializer):
    currency = serializers.CharField(read_only=True)
    balance = DocumentMoneyField()
    transactions = WalletTransactionSerializer(many=True, read_only=True)

    class Meta:
        model = Wallet
        fields = ("currency", "balance", "transactions", "created_at", "updated_at")
        read_only_fields = fields


class CustomerWalletsSerializer(serializers.Serializer):
    customer = serializers.CharField()
    wallets = WalletSerializer(many=True, help_text="One per currency.")


class PurchaseCreditSerializer(InputSerializer):
    amount = MoneyField(allow_zero=False, help_text="The prepaid credit bought (and invoiced).")
    expires_on = serializers.DateField(required=False, allow_null=True, help_text="First day it can no longer be used.")
    finalize = serializers.BooleanField(required=False, default=True,
                                        help_text="Finalize the invoice now (the wallet is credited on finalization).")


# --- one-off charges and installments -----------------------------------------------------------------------


class PendingChargeSerializer(serializers.ModelSerializer):
    subscription = serializers.SlugRelatedField(slug_field="external_id", read_only=True, allow_null=True)
    product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    currency = serializers.CharField(read_only=True)
    quantity = DecimalStringField(read_only=True)
    unit_price = DecimalStringField(read_only=True)
    invoice = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True, help_text="Set once billed.")

    class Meta:
        model = PendingCharge
        fields = (
            "id", "description", "currency", "quantity", "unit_price", "product", "subscription", "bill_on",
            "installment_number", "invoice", "created_by", "created_at",
        )
        read_only_fields = fields


class OneOffChargeInputSerializer(InputSerializer):
    description = serializers.CharField(max_length=200)
    unit_price = MoneyField(allow_zero=False, help_text="Up to 12 decimal places.")
    quantity = DecimalStringField(**QUANTITY_DIGITS, min_value=Decimal(0), allow_zero=False, required=False,
                                  default=Decimal(1))
    product = _slug(Product.objects.all(), required=False, allow_null=True)
    subscription = serializers.CharField(max_length=100, required=False, allow_null=True,
                                         help_text="The subscription's external_id (optional).")
    bill_on = serializers.DateField(required=False, help_text="Default: today in the customer's timezone.")


class InstallmentPlanSerializer(serializers.ModelSerializer):
    currency = serializers.CharField(read_only=True)
    total = DocumentMoneyField()
    product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    charges = PendingChargeSerializer(many=True, read_only=True)

    class Meta:
        model = InstallmentPlan
        fields = ("id", "description", "currency", "total", "installments", "product", "charges", "created_by",
                  "created_at")
        read_only_fields = fields


class InstallmentPlanInputSerializer(InputSerializer):
    description = serializers.CharField(max_length=200)
    total = MoneyField(allow_zero=False)
    installments = serializers.IntegerField(min_value=1, max_value=120)
    first_bill_on = serializers.DateField(required=False, help_text="Default: today in the customer's timezone.")
    product = _slug(Product.objects.all(), required=False, allow_null=True)
