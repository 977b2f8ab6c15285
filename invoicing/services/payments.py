"""Payments, allocations, the customer credit balance, refunds and reversals.

Every write here runs under the customer's row lock (taken first, always), so two operations on one
customer's account never interleave, whatever their entry point: API, admin, bank matching, a gateway
webhook, dunning. `apply_allocation` is the only code that changes an invoice's amount paid, amount credited,
amount due and paid status; it does so from the allocation it records, under the invoice's row lock.

Amounts: Decimal in the document currency, already rounded to its minor unit by the caller's input
validation (`money_amount`); two currencies are never mixed (a mismatch is refused with its field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.selectors import customer_today
from customers.models import Customer
from invoicing.models import (
    ZERO,
    Allocation,
    CustomerBalance,
    CustomerBalanceTransaction,
    Invoice,
    Payment,
    PaymentEvent,
    PaymentMethod,
    Refund,
)
from invoicing.pricing.rounding import currency_exponent

OPEN_STATUSES = (Invoice.Status.FINALIZED, Invoice.Status.UNCOLLECTIBLE)


@dataclass(frozen=True)
class AllocationRequest:
    invoice: Invoice | int
    amount: Decimal


# --- input checks -----------------------------------------------------------------------------------------


def money_amount(value: object, currency: str, *, field: str = "amount", allow_zero: bool = False) -> Decimal:
    """A positive amount with no more decimals than the currency has (2 for USD, 0 for JPY)."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except Exception:
        raise BillingError(f"{value!r} is not an amount.", field=field) from None
    if not amount.is_finite():
        raise BillingError("The amount must be a finite number.", field=field)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise BillingError("The amount must be greater than zero.", field=field)
    # Before quantize: a huge value would overflow the decimal context there instead of being refused.
    if amount >= Decimal("1e15"):
        raise BillingError("The amount is too large.", field=field)
    exponent = currency_exponent(currency)
    if amount != amount.quantize(Decimal(1).scaleb(-exponent)):
        raise BillingError(f"{currency} amounts have at most {exponent} decimal places.", field=field)
    return amount


def currency_code(value: object, *, field: str = "currency") -> str:
    """An ISO 4217 code, upper case ("usd" is USD: it must meet the USD invoices and balance)."""
    code = str(value or "").strip().upper()
    try:
        currency_exponent(code)
    except ValueError:
        raise BillingError(f"Unknown currency {value!r}.", field=field) from None
    return code


def _max_length(value: str | None, limit: int, *, field: str) -> None:
    if value and len(value) > limit:
        raise BillingError(f"At most {limit} characters.", field=field)


def shown(amount: Decimal, currency: str) -> str:
    """An amount as people read it in a message: the currency's minor unit, then its code."""
    return f"{amount.quantize(Decimal(1).scaleb(-currency_exponent(str(currency))))} {currency}"


def _same_currency(expected: str, got: str, *, field: str) -> None:
    if str(expected) != str(got):
        raise BillingError(f"Currency mismatch: {got} is not {expected}.", field=field)


def lock_customer(customer: Customer | int) -> Customer:
    pk = customer if isinstance(customer, int) else customer.pk
    return Customer.objects.select_for_update(of=("self",)).select_related("billing_entity").get(pk=pk)


def _lock_invoice(invoice: Invoice | int) -> Invoice:
    pk = invoice if isinstance(invoice, int) else invoice.pk
    return Invoice.objects.select_for_update(of=("self",)).get(pk=pk)


def record_payment_event(
    customer: Customer | int,
    action: str,
    actor: Actor,
    now: datetime,
    *,
    payment: Payment | None = None,
    refund: Refund | None = None,
    **details: object,
) -> None:
    PaymentEvent.objects.create(
        customer_id=customer if isinstance(customer, int) else customer.pk,
        payment=payment,
        refund=refund,
        action=action,
        details={key: str(value) if isinstance(value, Decimal) else value for key, value in details.items()},
        actor_label=actor.label,
        created_at=now,
    )


# --- the one place an invoice's paid amounts change ---------------------------------------------------------


def apply_allocation(
    invoice: Invoice,
    kind: str,
    amount: Decimal,
    *,
    actor: Actor,
    now: datetime,
    payment: Payment | None = None,
    credit_note: object | None = None,
    refund: Refund | None = None,
    balance_transaction: CustomerBalanceTransaction | None = None,
    note: str = "",
) -> Allocation:
    """Record an allocation on a locked invoice and move its amounts and status accordingly.

    Positive amounts may not exceed what the invoice still owes; the invoice is paid when nothing is left and
    reopens (finalized) when a reversal or refund takes money back."""
    if invoice.status not in (*OPEN_STATUSES, Invoice.Status.PAID):
        raise InvalidTransition(f"Invoice {invoice} is {invoice.status}: nothing can be allocated to it.")
    if amount > 0 and amount > invoice.amount_due:
        raise BillingError(
            f"{shown(amount, invoice.currency)} is more than the {shown(invoice.amount_due, invoice.currency)} invoice "
            f"{invoice} still owes.",
            field="amount",
        )
    allocation = Allocation.objects.create(
        invoice=invoice,
        kind=kind,
        amount=amount,
        payment=payment,
        credit_note=credit_note,
        refund=refund,
        balance_transaction=balance_transaction,
        created_at=now,
        created_by=actor.label,
        note=note[:300],
    )
    if kind == Allocation.Kind.CREDIT_NOTE:
        invoice.amount_credited += amount
    else:
        invoice.amount_paid += amount
    invoice.amount_due = invoice.total - invoice.prepaid_credit_applied - invoice.amount_paid - invoice.amount_credited
    if invoice.amount_due < 0:
        raise BillingError(f"Invoice {invoice} would owe less than nothing.", field="amount")
    if invoice.amount_due == 0 and invoice.status != Invoice.Status.PAID:
        invoice.status = Invoice.Status.PAID
        invoice.paid_at = now
    elif invoice.amount_due > 0 and invoice.status == Invoice.Status.PAID:
        invoice.status = (
            Invoice.Status.UNCOLLECTIBLE if invoice.marked_uncollectible_at else Invoice.Status.FINALIZED
        )
        invoice.paid_at = None
    invoice.save(update_fields=["amount_paid", "amount_credited", "amount_due", "status", "paid_at", "updated_at"])
    from invoicing.services.documents import record_event

    record_event(invoice, f"allocation.{kind}", actor, now, amount=str(amount), amount_due=str(invoice.amount_due))
    if invoice.status == Invoice.Status.PAID:
        _after_settled(invoice, actor=actor, now=now)
    return allocation


def _after_settled(invoice: Invoice, *, actor: Actor, now: datetime) -> None:
    """A settled debt lifts a dunning suspension once the customer owes nothing overdue."""
    from invoicing.services.dunning import resume_if_settled

    resume_if_settled(invoice.customer_id, actor=actor, now=now)


# --- credit balance ---------------------------------------------------------------------------------------


def _balance_account(customer: Customer, currency: str) -> CustomerBalance:
    CustomerBalance.objects.bulk_create(
        [CustomerBalance(customer=customer, currency=currency)], ignore_conflicts=True
    )
    return CustomerBalance.objects.select_for_update().get(customer=customer, currency=currency)


def _move_balance(
    customer: Customer,
    currency: str,
    kind: str,
    amount: Decimal,
    *,
    actor: Actor,
    now: datetime,
    note: str = "",
    **links: object,
) -> CustomerBalanceTransaction:
    account = _balance_account(customer, currency)
    if account.balance + amount < 0:
        raise BillingError(
            f"The customer's credit balance is {shown(account.balance, currency)}: {shown(-amount, currency)} "
            "cannot be taken from it.",
            field="amount",
        )
    entry = CustomerBalanceTransaction.objects.create(
        balance=account, kind=kind, amount=amount, created_at=now, created_by=actor.label, note=note[:300], **links
    )
    account.balance += amount
    account.save(update_fields=["balance", "updated_at"])
    return entry


def credit_customer_balance(
    customer: Customer,
    currency: str,
    amount: Decimal,
    *,
    kind: str,
    actor: Actor,
    now: datetime,
    note: str = "",
    **links: object,
) -> CustomerBalanceTransaction:
    """Put credit in the customer's balance (a credit note credited to it, ...); the caller holds the
    customer's row lock (`lock_customer`)."""
    if amount <= 0:
        raise BillingError("Only a positive amount can be credited to the balance.", field="amount")
    return _move_balance(customer, currency, kind, amount, actor=actor, now=now, note=note, **links)


def credit_balance(customer: Customer, currency: str) -> Decimal:
    return (
        CustomerBalance.objects.filter(customer=customer, currency=currency).values_list("balance", flat=True).first()
        or ZERO
    )


def payment_credit(payment: Payment) -> Decimal:
    """What of a payment sits in the credit balance: its overpayment less what was allocated, refunded or
    reversed from it. (Credit applied automatically is not attributed to a payment; the balance itself never
    goes below zero, so an attribution that is out of date is refused, not overdrawn.)"""
    return CustomerBalanceTransaction.objects.filter(payment=payment).aggregate(s=Sum("amount"))["s"] or ZERO


def apply_credit_balance(
    invoice: Invoice | int, *, actor: Actor, now: datetime, amount: Decimal | None = None
) -> Allocation | None:
    """Use the customer's credit balance on an open invoice (all it can, or `amount`)."""
    with transaction.atomic():
        pk = invoice if isinstance(invoice, int) else invoice.pk
        customer_id = Invoice.objects.values_list("customer_id", flat=True).get(pk=pk)
        customer = lock_customer(customer_id)
        invoice = _lock_invoice(pk)
        return _apply_balance_locked(customer, invoice, actor=actor, now=now, amount=amount)


def _apply_balance_locked(
    customer: Customer, invoice: Invoice, *, actor: Actor, now: datetime, amount: Decimal | None
) -> Allocation | None:
    if invoice.status not in OPEN_STATUSES:
        raise InvalidTransition(f"Invoice {invoice} is {invoice.status}: it owes nothing.")
    available = credit_balance(customer, invoice.currency)
    wanted = min(available, invoice.amount_due) if amount is None else amount
    if amount is not None:
        wanted = money_amount(amount, invoice.currency)
        if wanted > available:
            raise BillingError(
                f"The credit balance is {shown(available, invoice.currency)}, less than "
                f"{shown(wanted, invoice.currency)}.",
                field="amount",
            )
    if wanted <= 0:
        return None
    # Attribute the use to the oldest credits first, so each payment's remaining credit stays known.
    entry = _move_balance(
        customer, invoice.currency, CustomerBalanceTransaction.Kind.APPLIED, -wanted, actor=actor, now=now,
        invoice=invoice, note=f"Applied to {invoice}",
    )
    return apply_allocation(
        invoice, Allocation.Kind.CREDIT_BALANCE, wanted, actor=actor, now=now, balance_transaction=entry
    )


# --- payments ---------------------------------------------------------------------------------------------


def open_invoices(customer: Customer, currency: str) -> list[Invoice]:
    """Invoices still owing, oldest due first (uncollectible ones last: a recovery pays current debt first)."""
    return list(
        Invoice.objects.select_for_update(of=("self",))
        .filter(customer=customer, currency=currency, status__in=OPEN_STATUSES, amount_due__gt=0)
        .order_by(F("marked_uncollectible_at").asc(nulls_first=True), "due_date", "sequence_number", "pk")
    )


def record_payment(
    *,
    customer: Customer,
    amount: Decimal,
    currency: str,
    method: str,
    received_on: date,
    actor: Actor,
    now: datetime,
    reference: str = "",
    allocations: Sequence[AllocationRequest] | None = None,
    auto_allocate: bool = True,
    idempotency_key: str | None = None,
    status: str = Payment.Status.SUCCEEDED,
    gateway: str = "manual",
    gateway_reference: str = "",
    invoice: Invoice | None = None,
    payment_method: object | None = None,
    memo: str = "",
) -> Payment:
    """Record money received. A succeeded payment is allocated as asked (`allocations`) or, with
    `auto_allocate`, to the invoice it names then the oldest open invoices; what is left is the customer's
    credit balance. A repeated `idempotency_key` returns the first payment, whatever else was sent."""
    currency = currency_code(currency)
    amount = money_amount(amount, currency)
    _max_length(idempotency_key, 200, field="idempotency_key")
    _max_length(gateway_reference, 100, field="gateway_reference")
    if method not in Payment.Method.values:
        raise BillingError(f"Unknown payment method {method!r}.", field="method")
    if status not in Payment.Status.values or status == Payment.Status.REVERSED:
        raise BillingError(f"A payment cannot be recorded as {status!r}.", field="status")
    if idempotency_key:
        existing = Payment.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replayed(existing, customer)
    with transaction.atomic():
        customer = lock_customer(customer)
        if idempotency_key and (existing := Payment.objects.filter(idempotency_key=idempotency_key).first()):
            return _replayed(existing, customer)
        if invoice is not None:
            _same_currency(invoice.currency, currency, field="currency")
            if invoice.customer_id != customer.pk:
                raise BillingError(f"Invoice {invoice} is not this customer's.", field="invoice")
        payment = Payment.objects.create(
            customer=customer,
            billing_entity=customer.billing_entity,
            currency=currency,
            amount=amount,
            method=method,
            status=status,
            received_on=received_on,
            reference=reference.strip()[:200],
            gateway=gateway,
            gateway_reference=gateway_reference,
            invoice=invoice,
            payment_method=payment_method,
            idempotency_key=idempotency_key or None,
            memo=memo,
            created_by=actor.label,
        )
        record_payment_event(customer, "payment.recorded", actor, now, payment=payment, amount=amount,
                             currency=currency, method=method, status=status)
        if status == Payment.Status.SUCCEEDED:
            _allocate_new_payment(customer, payment, allocations, auto_allocate, actor=actor, now=now)
        elif allocations:
            raise BillingError("Only a succeeded payment can be allocated.", field="allocations")
    return payment


def _replayed(existing: Payment, customer: Customer) -> Payment:
    """A repeated idempotency key returns the first payment, never another customer's."""
    if existing.customer_id != customer.pk:
        raise BillingError("This idempotency key was already used for another customer.", field="idempotency_key")
    return existing


def _allocate_new_payment(
    customer: Customer,
    payment: Payment,
    allocations: Sequence[AllocationRequest] | None,
    auto_allocate: bool,
    *,
    actor: Actor,
    now: datetime,
) -> None:
    left = payment.amount
    if allocations:
        left -= _allocate_explicitly(customer, payment, allocations, payment.amount, actor=actor, now=now)
    elif auto_allocate:
        targets = open_invoices(customer, payment.currency)
        if payment.invoice_id:
            targets.sort(key=lambda inv: inv.pk != payment.invoice_id)  # the invoice it was made for first
        for invoice in targets:
            if left <= 0:
                break
            take = min(left, invoice.amount_due)
            apply_allocation(invoice, Allocation.Kind.PAYMENT, take, actor=actor, now=now, payment=payment)
            left -= take
    if left > 0:
        _move_balance(
            customer, payment.currency, CustomerBalanceTransaction.Kind.OVERPAYMENT, left, actor=actor, now=now,
            payment=payment, note="Unallocated part of the payment",
        )


def _allocate_explicitly(
    customer: Customer,
    payment: Payment,
    requests: Sequence[AllocationRequest],
    available: Decimal,
    *,
    actor: Actor,
    now: datetime,
) -> Decimal:
    total = ZERO
    seen: set[int] = set()
    for index, request in enumerate(requests):
        field = f"allocations[{index}]"
        pk = request.invoice if isinstance(request.invoice, int) else request.invoice.pk
        if pk in seen:
            raise BillingError("The same invoice is listed twice.", field=f"{field}.invoice")
        seen.add(pk)
        amount = money_amount(request.amount, payment.currency, field=f"{field}.amount")
        try:
            invoice = _lock_invoice(pk)
        except Invoice.DoesNotExist:
            raise BillingError(f"No invoice {pk}.", field=f"{field}.invoice") from None
        if invoice.customer_id != customer.pk:
            raise BillingError(f"Invoice {invoice} is not this customer's.", field=f"{field}.invoice")
        _same_currency(payment.currency, invoice.currency, field=f"{field}.invoice")
        if invoice.status not in OPEN_STATUSES:
            raise BillingError(f"Invoice {invoice} is {invoice.status}: it owes nothing.", field=f"{field}.invoice")
        if amount > invoice.amount_due:
            raise BillingError(
                f"{shown(amount, invoice.currency)} is more than the {shown(invoice.amount_due, invoice.currency)} "
                f"invoice {invoice} still owes.",
                field=f"{field}.amount",
            )
        total += amount
        if total > available:
            raise BillingError(
                f"The allocations add up to more than the {shown(available, payment.currency)} available.",
                field="allocations",
            )
        apply_allocation(invoice, Allocation.Kind.PAYMENT, amount, actor=actor, now=now, payment=payment)
    return total


def allocate_payment(
    payment: Payment | int, requests: Sequence[AllocationRequest], *, actor: Actor, now: datetime
) -> list[Allocation]:
    """Allocate what of a payment still sits in the credit balance to open invoices."""
    with transaction.atomic():
        pk = payment if isinstance(payment, int) else payment.pk
        customer = lock_customer(Payment.objects.values_list("customer_id", flat=True).get(pk=pk))
        payment = Payment.objects.select_for_update().get(pk=pk)
        if payment.status != Payment.Status.SUCCEEDED:
            raise InvalidTransition(f"{payment} is {payment.status}: only a succeeded payment can be allocated.")
        if not requests:
            raise BillingError("Say which invoices to allocate to.", field="allocations")
        available = payment_credit(payment)
        before = set(Allocation.objects.filter(payment=payment).values_list("pk", flat=True))
        used = _allocate_explicitly(customer, payment, requests, available, actor=actor, now=now)
        created = list(Allocation.objects.filter(payment=payment).exclude(pk__in=before))
        # The money moves from the balance to the invoices: take it out of the balance ledger.
        _move_balance(
            customer, payment.currency, CustomerBalanceTransaction.Kind.APPLIED, -used, actor=actor, now=now,
            payment=payment, note="Allocated to invoices",
        )
        record_payment_event(customer, "payment.allocated", actor, now, payment=payment, amount=used)
        return created


def mark_payment_succeeded(
    payment: Payment | int, *, actor: Actor, now: datetime, gateway_time: datetime | None = None
) -> Payment:
    """A pending gateway payment went through: allocate it (its invoice first). Idempotent."""
    with transaction.atomic():
        pk = payment if isinstance(payment, int) else payment.pk
        customer = lock_customer(Payment.objects.values_list("customer_id", flat=True).get(pk=pk))
        payment = Payment.objects.select_for_update().get(pk=pk)
        if payment.status in (Payment.Status.SUCCEEDED, Payment.Status.REVERSED):
            return payment
        payment.status = Payment.Status.SUCCEEDED
        payment.failure_code = payment.failure_message = ""
        payment.gateway_updated_at = gateway_time or payment.gateway_updated_at
        payment.save(update_fields=["status", "failure_code", "failure_message", "gateway_updated_at", "updated_at"])
        record_payment_event(customer, "payment.succeeded", actor, now, payment=payment, amount=payment.amount)
        _allocate_new_payment(customer, payment, None, True, actor=actor, now=now)
        return payment


def mark_payment_failed(
    payment: Payment | int,
    *,
    code: str,
    message: str,
    actor: Actor,
    now: datetime,
    gateway_time: datetime | None = None,
) -> Payment:
    """A gateway payment was declined or abandoned. A succeeded payment is never turned into a failure by a
    late or reordered event (a chargeback is a reversal)."""
    with transaction.atomic():
        pk = payment if isinstance(payment, int) else payment.pk
        payment = Payment.objects.select_for_update().get(pk=pk)
        if payment.status in (Payment.Status.SUCCEEDED, Payment.Status.REVERSED, Payment.Status.FAILED):
            return payment
        payment.status = Payment.Status.FAILED
        payment.failure_code = code[:100]
        payment.failure_message = message[:500]
        payment.gateway_updated_at = gateway_time or payment.gateway_updated_at
        payment.save(update_fields=["status", "failure_code", "failure_message", "gateway_updated_at", "updated_at"])
        record_payment_event(payment.customer_id, "payment.failed", actor, now, payment=payment, code=code,
                             message=message[:200])
        return payment


def reverse_payment(payment: Payment | int, *, reason: str, actor: Actor, now: datetime) -> Payment:
    """Undo a payment recorded by mistake (or bounced): negative allocations reopen its invoices and its
    credit leaves the balance. Refused when that credit was already used or refunded: undo those first."""
    if not reason.strip():
        raise BillingError("Say why the payment is reversed.", field="reason")
    with transaction.atomic():
        pk = payment if isinstance(payment, int) else payment.pk
        customer = lock_customer(Payment.objects.values_list("customer_id", flat=True).get(pk=pk))
        payment = Payment.objects.select_for_update().get(pk=pk)
        if payment.status != Payment.Status.SUCCEEDED:
            raise InvalidTransition(f"{payment} is {payment.status}: only a succeeded payment can be reversed.")
        if payment.refunds.exclude(status=Refund.Status.FAILED).exists():
            raise InvalidTransition(f"{payment} has refunds: a refunded payment cannot also be reversed.")
        in_balance = payment_credit(payment)
        if in_balance > 0:
            _move_balance(
                customer, payment.currency, CustomerBalanceTransaction.Kind.PAYMENT_REVERSAL, -in_balance,
                actor=actor, now=now, payment=payment, note=reason.strip(),
            )
        per_invoice = (
            Allocation.objects.filter(payment=payment).values("invoice").annotate(net=Sum("amount")).filter(net__gt=0)
        )
        for row in per_invoice:
            invoice = _lock_invoice(row["invoice"])
            apply_allocation(
                invoice, Allocation.Kind.PAYMENT_REVERSAL, -row["net"], actor=actor, now=now, payment=payment,
                note=reason.strip(),
            )
        payment.status = Payment.Status.REVERSED
        payment.reversed_at = now
        payment.reversal_reason = reason.strip()[:300]
        payment.save(update_fields=["status", "reversed_at", "reversal_reason", "updated_at"])
        record_payment_event(customer, "payment.reversed", actor, now, payment=payment, reason=reason.strip())
        return payment


# --- refunds ----------------------------------------------------------------------------------------------


def refundable(payment: Payment) -> Decimal:
    """What of a succeeded payment can still be paid back: its amount less what was refunded."""
    if payment.status != Payment.Status.SUCCEEDED:
        return ZERO
    refunded = payment.refunds.exclude(status=Refund.Status.FAILED).aggregate(s=Sum("amount"))["s"] or ZERO
    return payment.amount - refunded


def refund_payment(
    payment: Payment | int,
    *,
    amount: Decimal,
    reason: str,
    actor: Actor,
    now: datetime,
    idempotency_key: str | None = None,
) -> Refund:
    """Pay back (part of) a payment: first from its credit in the balance, then from its allocations, the
    latest invoice first (those invoices are due again). A card payment is refunded through its gateway."""
    if not reason.strip():
        raise BillingError("Say why the payment is refunded.", field="reason")
    _max_length(idempotency_key, 200, field="idempotency_key")
    if idempotency_key and (existing := Refund.objects.filter(idempotency_key=idempotency_key).first()):
        return existing
    with transaction.atomic():
        pk = payment if isinstance(payment, int) else payment.pk
        customer = lock_customer(Payment.objects.values_list("customer_id", flat=True).get(pk=pk))
        payment = Payment.objects.select_for_update().get(pk=pk)
        amount = money_amount(amount, payment.currency)
        if payment.status != Payment.Status.SUCCEEDED:
            raise InvalidTransition(f"{payment} is {payment.status}: only a succeeded payment can be refunded.")
        available = refundable(payment)
        if amount > available:
            raise BillingError(
                f"Only {shown(available, payment.currency)} of {payment} can be refunded.", field="amount"
            )
        refund = Refund.objects.create(
            customer=customer, currency=payment.currency, amount=amount, source=Refund.Source.PAYMENT,
            status=Refund.Status.PENDING, payment=payment, gateway=payment.gateway,
            refunded_on=customer_today(customer, now), reason=reason.strip()[:300],
            idempotency_key=idempotency_key or None, created_by=actor.label,
        )
        left = amount
        from_balance = min(left, payment_credit(payment), credit_balance(customer, payment.currency))
        if from_balance > 0:
            _move_balance(
                customer, payment.currency, CustomerBalanceTransaction.Kind.REFUND, -from_balance, actor=actor,
                now=now, payment=payment, refund=refund, note=reason.strip(),
            )
            left -= from_balance
        if left > 0:
            per_invoice = (
                Allocation.objects.filter(payment=payment)
                .values("invoice")
                .annotate(net=Sum("amount"))
                .filter(net__gt=0)
                .order_by("-invoice")
            )
            for row in per_invoice:
                if left <= 0:
                    break
                take = min(left, row["net"])
                apply_allocation(
                    _lock_invoice(row["invoice"]), Allocation.Kind.REFUND, -take, actor=actor, now=now,
                    payment=payment, refund=refund, note=reason.strip(),
                )
                left -= take
        if left > 0:
            raise BillingError(
                f"{payment}'s credit was used elsewhere: {shown(left, payment.currency)} cannot be refunded.",
                field="amount",
            )
        record_payment_event(customer, "refund.created", actor, now, payment=payment, refund=refund, amount=amount)
        _send_refund(refund, actor=actor, now=now)
        return refund


def refund_credit_balance(
    customer: Customer,
    *,
    currency: str,
    amount: Decimal,
    reason: str,
    actor: Actor,
    now: datetime,
    payment: Payment | None = None,
    credit_note: object | None = None,
    idempotency_key: str | None = None,
) -> Refund:
    """Pay back credit the customer holds (an overpayment, a credit note credited to the balance)."""
    if not reason.strip():
        raise BillingError("Say why the credit is refunded.", field="reason")
    _max_length(idempotency_key, 200, field="idempotency_key")
    if idempotency_key and (existing := Refund.objects.filter(idempotency_key=idempotency_key).first()):
        return existing
    currency = currency_code(currency)
    amount = money_amount(amount, currency)
    with transaction.atomic():
        customer = lock_customer(customer)
        if payment is not None:
            # The money goes back through that payment's instrument: the customer's own, and no more than it took.
            payment = Payment.objects.select_for_update().get(pk=payment.pk)
            if payment.customer_id != customer.pk:
                raise BillingError(f"{payment} is not this customer's.", field="payment")
            _same_currency(currency, payment.currency, field="payment")
            if amount > refundable(payment):
                raise BillingError(
                    f"Only {shown(refundable(payment), currency)} can be refunded through {payment}.", field="amount"
                )
        refund = Refund.objects.create(
            customer=customer, currency=currency, amount=amount,
            source=Refund.Source.CREDIT_NOTE if credit_note is not None else Refund.Source.CREDIT_BALANCE,
            status=Refund.Status.PENDING, payment=payment, credit_note=credit_note,
            gateway=payment.gateway if payment is not None else "manual",
            refunded_on=customer_today(customer, now), reason=reason.strip()[:300],
            idempotency_key=idempotency_key or None, created_by=actor.label,
        )
        if credit_note is None:
            _move_balance(
                customer, currency, CustomerBalanceTransaction.Kind.REFUND, -amount, actor=actor, now=now,
                payment=payment, refund=refund, note=reason.strip(),
            )
        record_payment_event(customer, "refund.created", actor, now, refund=refund, amount=amount)
        _send_refund(refund, actor=actor, now=now)
        return refund


def _send_refund(refund: Refund, *, actor: Actor, now: datetime) -> None:
    """Manual refunds are done (the money left by hand); gateway refunds go out after commit."""
    if refund.gateway == "manual":
        refund.status = Refund.Status.SUCCEEDED
        refund.save(update_fields=["status", "updated_at"])
        return
    from invoicing.tasks import send_gateway_refund_task

    refund_id = refund.pk
    transaction.on_commit(lambda: send_gateway_refund_task.delay(refund_id))


def mark_refund_succeeded(
    refund: Refund | int, *, actor: Actor, now: datetime, gateway_reference: str = "",
    gateway_time: datetime | None = None,
) -> Refund:
    with transaction.atomic():
        refund = Refund.objects.select_for_update().get(pk=refund if isinstance(refund, int) else refund.pk)
        if refund.status == Refund.Status.PENDING:
            refund.status = Refund.Status.SUCCEEDED
            refund.gateway_reference = gateway_reference or refund.gateway_reference
            refund.gateway_updated_at = gateway_time or now
            refund.save(update_fields=["status", "gateway_reference", "gateway_updated_at", "updated_at"])
            record_payment_event(refund.customer_id, "refund.succeeded", actor, now, refund=refund)
        return refund


def mark_refund_failed(
    refund: Refund | int, *, message: str, actor: Actor, now: datetime, gateway_time: datetime | None = None
) -> Refund:
    """The gateway could not pay the refund back: what it took off invoices or the balance is put back, as
    new entries (the customer's credit is restored; refunded invoices are settled again)."""
    with transaction.atomic():
        pk = refund if isinstance(refund, int) else refund.pk
        customer = lock_customer(Refund.objects.values_list("customer_id", flat=True).get(pk=pk))
        refund = Refund.objects.select_for_update().get(pk=pk)
        if refund.status == Refund.Status.FAILED:
            return refund
        refund.status = Refund.Status.FAILED
        refund.failure_message = message[:500]
        refund.gateway_updated_at = gateway_time or now
        refund.save(update_fields=["status", "failure_message", "gateway_updated_at", "updated_at"])
        taken_from_balance = -(
            CustomerBalanceTransaction.objects.filter(refund=refund, kind=CustomerBalanceTransaction.Kind.REFUND)
            .aggregate(s=Sum("amount"))["s"] or ZERO
        )
        taken = (
            Allocation.objects.filter(refund=refund).values("invoice").annotate(s=Sum("amount")).order_by("invoice")
        )
        restored = taken_from_balance
        if refund.source == Refund.Source.CREDIT_NOTE and restored == 0 and not taken:
            restored = refund.amount  # a credit note's refund goes back to the customer as credit
        for row in taken:
            # Back on the invoice it came off, as the payment's money again (so the payment can be refunded or
            # reversed later); what that invoice no longer owes (paid meanwhile) becomes credit.
            invoice = _lock_invoice(row["invoice"])
            back = min(-row["s"], invoice.amount_due)
            if back > 0:
                apply_allocation(
                    invoice, Allocation.Kind.PAYMENT, back, actor=actor, now=now, payment=refund.payment,
                    note=f"Refund #{refund.pk} failed: {message}",
                )
            restored += -row["s"] - back
        if restored > 0:
            # The money never left: the customer holds it as credit again, applied to open invoices at once.
            # A credit note's refund only went through the payment's instrument: its credit is the note's, not
            # the payment's (else reversing that payment would take the note's credit with it).
            from_note = refund.source == Refund.Source.CREDIT_NOTE
            _move_balance(
                customer, refund.currency, CustomerBalanceTransaction.Kind.REFUND_FAILED, restored, actor=actor,
                now=now, payment=None if from_note else refund.payment,
                credit_note=refund.credit_note if from_note else None, refund=refund, note=message[:300],
            )
            for invoice in open_invoices(customer, refund.currency):
                if credit_balance(customer, refund.currency) <= 0:
                    break
                _apply_balance_locked(customer, invoice, actor=actor, now=now, amount=None)
        record_payment_event(customer, "refund.failed", actor, now, refund=refund, message=message[:200])
        return refund


# --- invoice hooks ----------------------------------------------------------------------------------------


def settle_before_finalize_save(invoice: Invoice, *, actor: Actor, now: datetime) -> None:
    """Finalization, before it saves the invoice: a negative invoice's credit goes to the customer's credit
    balance and the invoice is paid; an invoice that owes nothing (prepaid credit covered it) is paid. Only
    the in-memory invoice changes here; finalization saves it."""
    if invoice.amount_due < 0:
        customer = lock_customer(invoice.customer_id)
        credit = -invoice.amount_due
        entry = _move_balance(
            customer, invoice.currency, CustomerBalanceTransaction.Kind.INVOICE_CREDIT, credit, actor=actor,
            now=now, invoice=invoice, note=f"Credit of {invoice.number}",
        )
        Allocation.objects.create(
            invoice=invoice, kind=Allocation.Kind.CREDIT_BALANCE, amount=-credit, balance_transaction=entry,
            created_at=now, created_by=actor.label, note="Credit moved to the customer's balance",
        )
        invoice.amount_paid -= credit
        invoice.amount_due = ZERO
    if invoice.amount_due == 0:
        invoice.status = Invoice.Status.PAID
        invoice.paid_at = now


def settle_after_finalize(invoice: Invoice, *, actor: Actor, now: datetime) -> None:
    """Finalization, once the invoice is saved: it takes what the customer's credit balance holds, and what
    is left is charged to the customer's default saved payment method after commit (ACCRUAL_AUTO_CHARGE).
    A negative invoice's credit, just moved to the balance, settles what the customer still owes, oldest first."""
    if invoice.amount_paid < 0:
        customer = lock_customer(invoice.customer_id)
        for owing in open_invoices(customer, invoice.currency):
            if credit_balance(customer, invoice.currency) <= 0:
                break
            _apply_balance_locked(customer, owing, actor=actor, now=now, amount=None)
        return
    if invoice.status != Invoice.Status.FINALIZED or invoice.amount_due <= 0:
        return
    if CustomerBalance.objects.filter(customer_id=invoice.customer_id, currency=invoice.currency,
                                      balance__gt=0).exists():
        customer = lock_customer(invoice.customer_id)
        _apply_balance_locked(customer, invoice, actor=actor, now=now, amount=None)
    if invoice.status != Invoice.Status.FINALIZED or invoice.amount_due <= 0:
        return
    if getattr(settings, "ACCRUAL_AUTO_CHARGE", True) and PaymentMethod.objects.filter(
        customer_id=invoice.customer_id, is_default=True, is_active=True
    ).exclude(gateway="manual").exists():
        from invoicing.tasks import charge_invoice_task

        invoice_id = invoice.pk
        transaction.on_commit(lambda: charge_invoice_task.delay(invoice_id))


def mark_uncollectible(invoice: Invoice | int, *, reason: str, actor: Actor, now: datetime) -> Invoice:
    """Write off what an invoice still owes; a later payment can still settle it."""
    if not reason.strip():
        raise BillingError("Say why the invoice is uncollectible.", field="reason")
    from invoicing.services.documents import record_event

    with transaction.atomic():
        pk = invoice if isinstance(invoice, int) else invoice.pk
        lock_customer(Invoice.objects.values_list("customer_id", flat=True).get(pk=pk))
        invoice = _lock_invoice(pk)
        if invoice.status == Invoice.Status.UNCOLLECTIBLE:
            return invoice
        if invoice.status != Invoice.Status.FINALIZED:
            raise InvalidTransition(f"Invoice {invoice} is {invoice.status}: only an open invoice can be written off.")
        invoice.status = Invoice.Status.UNCOLLECTIBLE
        invoice.marked_uncollectible_at = now
        invoice.save(update_fields=["status", "marked_uncollectible_at", "updated_at"])
        record_event(invoice, "marked_uncollectible", actor, now, reason=reason.strip(),
                     amount_due=str(invoice.amount_due))
        return invoice


def invoice_allocation_sums(invoice: Invoice) -> dict[str, Decimal]:
    """The invoice's allocations summed by kind (the property tests compare these with its columns)."""
    rows = Allocation.objects.filter(invoice=invoice).values("kind").annotate(s=Sum("amount"))
    sums = dict.fromkeys(Allocation.Kind.values, ZERO)
    for row in rows:
        sums[row["kind"]] = row["s"]
    return sums

