"""Serializers of the payments API: payments, their allocations and refunds, and the customer credit balance.

Input serializers check shapes only (amounts are decimal strings, checked against the currency's minor unit by
the services' `money_amount`); output shows every amount as Money {"amount", "currency"}.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from billing.api.fields import CurrencyCodeField, DecimalStringField
from billing.api.serializers import InputSerializer
from invoicing.models import Allocation, CustomerBalance, CustomerBalanceTransaction, Payment, Refund
from invoicing.serializers import DocumentMoneyField, InvoiceSerializer

MAX_ALLOCATIONS = 200  # invoices one payment is split across in a request
AMOUNT_HELP = 'A decimal string in the currency\'s minor unit at most, e.g. "100.00" (USD) or "5000" (JPY).'


def _choice_text(choices: Any, **kwargs: Any) -> serializers.CharField:
    # A plain string listing its values (an enum named "status" or "kind" would collide in the components).
    return serializers.CharField(read_only=True, help_text="One of: " + ", ".join(v for v, _ in choices) + ".",
                                 **kwargs)


# --- output -------------------------------------------------------------------------------------------------


class AllocationRowSerializer(serializers.ModelSerializer):
    kind = _choice_text(Allocation.Kind.choices)
    invoice = serializers.PrimaryKeyRelatedField(read_only=True)
    invoice_number = serializers.CharField(source="invoice.number", read_only=True, allow_null=True)
    amount = DocumentMoneyField(
        currency_path="invoice.currency",
        help_text="Positive: applied to the invoice; negative: taken back (reversal, refund).",
    )
    payment = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    credit_note = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    refund = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Allocation
        fields = ("id", "kind", "invoice", "invoice_number", "amount", "payment", "credit_note", "refund", "note",
                  "created_at", "created_by")
        read_only_fields = fields


class RefundSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    currency = serializers.CharField(read_only=True)
    amount = DocumentMoneyField()
    source = _choice_text(Refund.Source.choices)
    status = _choice_text(Refund.Status.choices)
    payment = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    credit_note = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    allocations = AllocationRowSerializer(
        many=True, read_only=True, help_text="What the refund took back off invoices (they are due again)."
    )

    class Meta:
        model = Refund
        fields = ("id", "customer", "currency", "amount", "source", "status", "payment", "credit_note", "gateway",
                  "gateway_reference", "refunded_on", "reason", "failure_message", "allocations", "created_by",
                  "created_at", "updated_at")
        read_only_fields = fields


class PaymentSerializer(serializers.ModelSerializer):
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)
    billing_entity = serializers.SlugRelatedField(slug_field="code", read_only=True)
    currency = serializers.CharField(read_only=True)
    amount = DocumentMoneyField()
    method = _choice_text(Payment.Method.choices)
    status = _choice_text(Payment.Status.choices)
    invoice = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The invoice a gateway charge was made for."
    )

    class Meta:
        model = Payment
        fields = ("id", "customer", "billing_entity", "currency", "amount", "method", "status", "received_on",
                  "reference", "gateway", "gateway_reference", "invoice", "failure_code", "failure_message",
                  "reversed_at", "reversal_reason", "memo", "created_by", "created_at", "updated_at")
        read_only_fields = fields


class PaymentDetailSerializer(PaymentSerializer):
    allocations = AllocationRowSerializer(many=True, read_only=True,
                                          help_text="Applied to invoices (positive) and taken back (negative).")
    refunds = RefundSerializer(many=True, read_only=True)
    allocated = DocumentMoneyField(help_text="Net amount of the payment on invoices.")
    credit_remaining = DocumentMoneyField(help_text="What of the payment still sits in the credit balance.")
    refundable = DocumentMoneyField(help_text="What can still be refunded.")

    class Meta(PaymentSerializer.Meta):
        fields = (*PaymentSerializer.Meta.fields, "allocated", "credit_remaining", "refundable", "allocations",
                  "refunds")
        read_only_fields = fields


class BalanceTransactionSerializer(serializers.ModelSerializer):
    kind = _choice_text(CustomerBalanceTransaction.Kind.choices)
    amount = DocumentMoneyField(currency_path="balance.currency",
                                help_text="Positive: credit to the customer; negative: credit used.")
    payment = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    invoice = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    credit_note = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    refund = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = CustomerBalanceTransaction
        fields = ("id", "kind", "amount", "payment", "invoice", "credit_note", "refund", "note", "created_at",
                  "created_by")
        read_only_fields = fields


class CreditBalanceSerializer(serializers.ModelSerializer):
    currency = serializers.CharField(read_only=True)
    balance = DocumentMoneyField()
    transactions = BalanceTransactionSerializer(many=True, read_only=True)

    class Meta:
        model = CustomerBalance
        fields = ("currency", "balance", "transactions", "updated_at")
        read_only_fields = fields


class CustomerCreditBalancesSerializer(serializers.Serializer):
    customer = serializers.CharField(help_text="The customer's external_id.")
    balances = CreditBalanceSerializer(many=True, help_text="One per currency the customer ever held credit in.")


class CreditAppliedSerializer(serializers.Serializer):
    allocation = AllocationRowSerializer()
    invoice = InvoiceSerializer(help_text="The invoice after the credit was applied.")
    balance = DocumentMoneyField(currency_path="invoice.currency", help_text="What is left in the credit balance.")


class InvoiceAllocationsSerializer(serializers.Serializer):
    invoice = serializers.IntegerField()
    number = serializers.CharField(allow_null=True)
    currency = serializers.CharField()
    status = serializers.CharField()
    total = DocumentMoneyField()
    prepaid_credit_applied = DocumentMoneyField()
    amount_paid = DocumentMoneyField(help_text="Sum of the payment, credit balance, reversal and refund rows.")
    amount_credited = DocumentMoneyField(help_text="Sum of the credit note rows.")
    amount_due = DocumentMoneyField(help_text="total - prepaid_credit_applied - amount_paid - amount_credited.")
    allocations = AllocationRowSerializer(many=True)


# --- input --------------------------------------------------------------------------------------------------


class AllocationInputSerializer(InputSerializer):
    invoice = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="The invoice's id.")
    amount = DecimalStringField(help_text=AMOUNT_HELP)


class PaymentCreateSerializer(InputSerializer):
    customer = serializers.CharField(max_length=100, help_text="The customer's external_id.")
    amount = DecimalStringField(help_text=AMOUNT_HELP)
    currency = CurrencyCodeField()
    method = serializers.CharField(
        max_length=20, help_text="One of: " + ", ".join(Payment.Method.values) + " (card payments come from "
        "a gateway; recording one here is for a charge taken outside Accrual)."
    )
    received_on = serializers.DateField(required=False, help_text="Value date; default: the customer's today.")
    reference = serializers.CharField(max_length=200, required=False, allow_blank=True, default="",
                                      help_text="Bank reference, check number, ...")
    memo = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    allocations = serializers.ListField(
        child=AllocationInputSerializer(), required=False, max_length=MAX_ALLOCATIONS,
        help_text="Explicit split across invoices; what is not allocated goes to the credit balance.",
    )
    auto_allocate = serializers.BooleanField(
        required=False, default=True,
        help_text="Without `allocations`: pay the oldest open invoices first (default), or keep it all as credit.",
    )

    def validate_method(self, value: str) -> str:
        if value not in Payment.Method.values:
            raise serializers.ValidationError("Use one of: " + ", ".join(Payment.Method.values) + ".")
        return value


class PaymentAllocateSerializer(InputSerializer):
    allocations = serializers.ListField(child=AllocationInputSerializer(), min_length=1, max_length=MAX_ALLOCATIONS,
                                        help_text="Invoices to pay from the payment's credit.")


class ReasonSerializer(InputSerializer):
    reason = serializers.CharField(max_length=300, help_text="Kept on the payment and in the audit trail.")


class PaymentRefundInputSerializer(InputSerializer):
    amount = DecimalStringField(help_text=AMOUNT_HELP + " In the payment's currency.")
    reason = serializers.CharField(max_length=300)


class CreditApplyInputSerializer(InputSerializer):
    invoice = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="An open invoice's id.")
    amount = DecimalStringField(required=False, help_text="Default: as much as the balance and the invoice allow.")


class CreditRefundInputSerializer(InputSerializer):
    currency = CurrencyCodeField()
    amount = DecimalStringField(help_text=AMOUNT_HELP)
    reason = serializers.CharField(max_length=300)
