"""Serializers of /api/v1/credit-notes: notes with their lines and settlement, and the body that issues one."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from billing.api.fields import CurrencyCodeField, DecimalStringField, MoneyField
from billing.api.serializers import InputSerializer
from invoicing.models import CreditNote, CreditNoteLine
from invoicing.serializers import QUANTITY_DIGITS, DocumentMoneyField
from invoicing.services.credit_notes import MAX_MEMO_LENGTH
from invoicing.services.documents import MAX_LINES_PER_INVOICE

MAX_ID = 2**63 - 1


class CreditNoteLineSerializer(serializers.ModelSerializer):
    product = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    quantity = DecimalStringField(read_only=True, allow_null=True)
    amount = DocumentMoneyField(currency_path="credit_note.currency")
    tax = DocumentMoneyField(source="tax_amount", currency_path="credit_note.currency")
    tax_percent = DecimalStringField(read_only=True)

    class Meta:
        model = CreditNoteLine
        fields = ("id", "position", "invoice_line", "description", "product", "period_start", "period_end",
                  "quantity", "amount", "tax", "tax_percent")
        read_only_fields = fields


class CreditNoteSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    billing_entity = serializers.SlugRelatedField(slug_field="code", read_only=True)
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)
    currency = serializers.CharField(read_only=True)
    reason = serializers.CharField(read_only=True, help_text="One of: " + ", ".join(CreditNote.Reason.values) + ".")
    settlement = serializers.CharField(
        read_only=True, help_text="One of: " + ", ".join(CreditNote.Settlement.values) + "."
    )
    subtotal = DocumentMoneyField()
    tax_total = DocumentMoneyField()
    total = DocumentMoneyField()
    applied_to_invoice = DocumentMoneyField(help_text="Reduced what the credited invoice still owed.")
    refunded_amount = DocumentMoneyField()
    credited_to_balance = DocumentMoneyField()
    offset_amount = DocumentMoneyField()
    has_pdf = serializers.SerializerMethodField()

    class Meta:
        model = CreditNote
        fields = (
            "id", "number", "customer", "billing_entity", "invoice", "invoice_number", "currency", "issue_date",
            "issued_at", "reason", "memo", "subtotal", "tax_total", "total", "settlement", "applied_to_invoice",
            "refunded_amount", "credited_to_balance", "offset_amount", "offset_invoice", "has_pdf", "created_by",
        )
        read_only_fields = fields

    def get_has_pdf(self, note: CreditNote) -> bool:
        return bool(note.pdf)


class CreditNoteDetailSerializer(CreditNoteSerializer):
    tax_breakdown = serializers.JSONField(read_only=True, help_text="Per tax rate: net credited and tax given back.")
    seller = serializers.JSONField(read_only=True)
    buyer = serializers.JSONField(read_only=True)
    lines = CreditNoteLineSerializer(many=True, read_only=True)

    class Meta(CreditNoteSerializer.Meta):
        fields = (*CreditNoteSerializer.Meta.fields, "tax_breakdown", "seller", "buyer", "lines")
        read_only_fields = fields


class CreditLineInputSerializer(InputSerializer):
    invoice_line = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="The invoice line's id.")
    amount = MoneyField(required=False, help_text="Credited before tax, in the invoice's currency.")
    quantity = DecimalStringField(**QUANTITY_DIGITS, required=False,
                                  help_text="Or a quantity of the line, at its unit price net of discount.")


class CreditNoteCreateSerializer(InputSerializer):
    invoice = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="The id of the invoice credited.")
    lines = serializers.ListField(child=CreditLineInputSerializer(), required=False, min_length=1,
                                  max_length=MAX_LINES_PER_INVOICE, help_text="Credit these lines…")
    amount = MoneyField(required=False, help_text="…or an amount before tax, spread over the lines in proportion…")
    full = serializers.BooleanField(required=False, default=False, help_text="…or all that is left to credit.")
    reason = serializers.ChoiceField(choices=CreditNote.Reason.choices)
    memo = serializers.CharField(max_length=MAX_MEMO_LENGTH, required=False, allow_blank=True, default="")
    settlement = serializers.ChoiceField(
        choices=CreditNote.Settlement.choices, required=False, default=CreditNote.Settlement.CREDIT_BALANCE,
        help_text="What happens to the part the invoice no longer owes (it was paid): refund, credit_balance "
                  "(the default) or offset (with offset_invoice).",
    )
    offset_invoice = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, allow_null=True)
    currency = CurrencyCodeField(required=False, help_text="Optional: checked against the invoice's currency.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        chosen = [name for name in ("lines", "amount") if name in attrs] + (["full"] if attrs.get("full") else [])
        if len(chosen) != 1:
            raise serializers.ValidationError({"lines": ["Give exactly one of lines, amount or full."]})
        currencies = {str(attrs["amount"].currency)} if "amount" in attrs else set()
        for index, line in enumerate(attrs.get("lines", [])):
            if ("amount" in line) == ("quantity" in line):
                raise serializers.ValidationError({f"lines[{index}]": ["Give either an amount or a quantity."]})
            if "amount" in line:
                currencies.add(str(line["amount"].currency))
        if "currency" in attrs:
            currencies.add(attrs["currency"])
        if len(currencies) > 1:
            raise serializers.ValidationError({"currency": ["Every amount is in the invoice's one currency."]})
        attrs["stated_currency"] = currencies.pop() if currencies else None
        return attrs
