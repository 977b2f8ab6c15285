"""What a customer is given or sold outside the cycle: coupons, promotional credit, prepaid credit, one-off
charges and installment plans.

DESIGN: coupons and promotional credits are discounts (before tax, consumed by invoice pricing); prepaid
credit is a prepayment bought on its own invoice and drawn down after tax at finalization. One-off charges
and installments wait as PendingCharges for the customer's next invoice.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from moneyed import CurrencyDoesNotExist, get_currency

from billing.actors import Actor
from billing.errors import BillingError, InvalidTransition
from contracts.models import Coupon, Product, Subscription
from contracts.periods import add_months
from contracts.selectors import customer_today
from customers.models import Customer
from invoicing.models import AppliedCoupon, CreditGrant, InstallmentPlan, Invoice, InvoiceLine, PendingCharge
from invoicing.pricing.rounding import allocate_by_largest_remainder, currency_exponent, round_money
from invoicing.rating import LineDraft
from invoicing.services.documents import finalize_invoice, record_event, save_draft

# The MONEY columns hold 20 digits with 4 decimals; unit prices 28 digits with 12 decimals.
MAX_AMOUNT = Decimal("1e15")
MAX_UNIT_PRICE = Decimal("1e15")
MAX_QUANTITY = Decimal("1e20")
MAX_INSTALLMENTS = 120
DESCRIPTION_LENGTH = PendingCharge._meta.get_field("description").max_length
REASON_LENGTH = CreditGrant._meta.get_field("reason").max_length


# --- checks -------------------------------------------------------------------------------------------------


def _currency(code: str | None, customer: Customer, field: str = "currency") -> str:
    code = (code or str(customer.currency)).strip().upper()
    try:
        get_currency(code)
    except CurrencyDoesNotExist:
        raise BillingError(f"Unknown currency '{code[:10]}'; use an ISO 4217 code such as USD.", field=field) from None
    return code


def _money_amount(amount: Decimal, currency: str, field: str) -> Decimal:
    """A positive amount already on the currency's minor unit: money is never rounded behind the caller's back."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise BillingError("The amount must be a finite decimal number.", field=field)
    if amount <= 0:
        raise BillingError("The amount must be greater than zero.", field=field)
    if amount >= MAX_AMOUNT:
        raise BillingError(f"The amount must be below {MAX_AMOUNT:f}.", field=field)
    if round_money(amount, currency) != amount:
        places = currency_exponent(currency)
        raise BillingError(f"{currency} amounts have at most {places} decimal places.", field=field)
    return amount


def _text(value: str, field: str, max_length: int) -> str:
    text = (value or "").strip()
    if not text:
        raise BillingError("This must not be blank.", field=field)
    if len(text) > max_length:
        raise BillingError(f"Use at most {max_length} characters.", field=field)
    return text


def _future_expiry(expires_on: date | None, customer: Customer, now: datetime) -> None:
    if expires_on is not None and expires_on <= customer_today(customer, now):
        raise BillingError("The expiry must be after today (the first day the credit can no longer be used).",
                           field="expires_on")


# --- coupons ------------------------------------------------------------------------------------------------


def apply_coupon(customer: Customer, coupon: Coupon, *, actor: Actor, now: datetime) -> AppliedCoupon:
    """Redeem a coupon for a customer: it discounts the customer's next invoices for its duration."""
    with transaction.atomic():
        # The coupon row lock serialises redemptions, so max_redemptions cannot be overrun by a race.
        coupon = Coupon.objects.select_for_update().get(pk=coupon.pk)
        if not coupon.is_active:
            raise BillingError(f"Coupon {coupon.code} is not active.", field="coupon")
        if coupon.redeem_by is not None and now >= coupon.redeem_by:
            raise BillingError(f"Coupon {coupon.code} could be redeemed until {coupon.redeem_by:%Y-%m-%d %H:%M} UTC.",
                               field="coupon")
        if coupon.max_redemptions is not None and coupon.applications.count() >= coupon.max_redemptions:
            raise BillingError(f"Coupon {coupon.code} has reached its {coupon.max_redemptions} redemptions.",
                               field="coupon")
        if AppliedCoupon.objects.filter(customer=customer, coupon=coupon, status=AppliedCoupon.Status.ACTIVE).exists():
            raise BillingError(f"Coupon {coupon.code} is already active for this customer.", field="coupon")
        try:
            # A savepoint: the partial unique constraint is the guarantee against a concurrent twin request.
            with transaction.atomic():
                applied = AppliedCoupon.objects.create(customer=customer, coupon=coupon, created_by=actor.label)
        except IntegrityError:
            raise BillingError(f"Coupon {coupon.code} is already active for this customer.", field="coupon") from None
    return applied


def remove_coupon(applied: AppliedCoupon, *, actor: Actor, now: datetime) -> AppliedCoupon:
    """Stop a coupon discounting future invoices (invoices already priced keep their discount)."""
    with transaction.atomic():
        applied = AppliedCoupon.objects.select_for_update().get(pk=applied.pk)
        if applied.status == AppliedCoupon.Status.REMOVED:
            raise InvalidTransition(f"Coupon {applied.coupon.code} was already removed.")
        applied.status = AppliedCoupon.Status.REMOVED
        applied._history_user = actor.user
        applied._change_reason = f"{actor.label} at {now.isoformat()}"
        applied.save(update_fields=["status", "updated_at"])
    return applied


# --- promotional and prepaid credit ---------------------------------------------------------------------------


def grant_credit(
    customer: Customer, *, amount: Decimal, currency: str | None, reason: str, expires_on: date | None = None,
    actor: Actor, now: datetime,
) -> CreditGrant:
    """Promotional credit: a discount on the customer's next invoices in its currency, before tax."""
    currency = _currency(currency, customer)
    amount = _money_amount(amount, currency, "amount")
    reason = _text(reason, "reason", REASON_LENGTH)
    _future_expiry(expires_on, customer, now)
    with transaction.atomic():
        grant = CreditGrant(customer=customer, currency=currency, amount=amount, remaining=amount,
                            expires_on=expires_on, reason=reason, created_by=actor.label)
        grant._history_user = actor.user
        grant._change_reason = actor.label
        grant.save()
    return grant


def purchase_prepaid_credit(
    customer: Customer, *, amount: Decimal, currency: str | None = None, expires_on: date | None = None,
    actor: Actor, now: datetime, finalize: bool = True,
) -> Invoice:
    """An invoice for prepaid credit; finalizing it tops up the customer's wallet (once, by constraint)."""
    currency = _currency(currency, customer)
    amount = _money_amount(amount, currency, "amount")
    _future_expiry(expires_on, customer, now)
    draft = LineDraft(
        kind=InvoiceLine.Kind.CREDIT_PURCHASE,
        description=f"Prepaid credit {amount:f} {currency}"
        + (f", expires on {expires_on.isoformat()}" if expires_on else ""),
        customer_id=customer.pk, currency=currency, amount=amount, quantity=Decimal(1), unit_price=amount,
        explanation={"expires_on": expires_on.isoformat() if expires_on else None, "manual": False,
                     "formula": f"{amount:f} {currency} of prepaid credit"},
    )
    with transaction.atomic():
        invoice = save_draft(customer, [draft], currency=currency, now=now, actor=actor,
                             kind=Invoice.Kind.CREDIT_PURCHASE)
        record_event(invoice, "created", actor, now, kind="credit_purchase", total=str(invoice.total),
                     expires_on=draft.explanation["expires_on"])
        if finalize:
            invoice = finalize_invoice(invoice, actor=actor, now=now)
    return invoice


# --- one-off charges and installments -------------------------------------------------------------------------


def _product_and_subscription(customer: Customer, product: Product | None, subscription: Subscription | None) -> None:
    if product is not None and not product.is_active:
        raise BillingError(f"Product {product.code} is not active.", field="product")
    if subscription is not None and subscription.customer_id != customer.pk:
        raise BillingError("The subscription belongs to another customer.", field="subscription")


def add_one_off_charge(
    customer: Customer, *, description: str, unit_price: Decimal, quantity: Decimal = Decimal(1),
    currency: str | None = None, product: Product | None = None, bill_on: date,
    subscription: Subscription | None = None, actor: Actor, now: datetime,
) -> PendingCharge:
    """A charge billed on the customer's first invoice made on or after `bill_on`."""
    description = _text(description, "description", DESCRIPTION_LENGTH)
    currency = _currency(currency, customer)
    if not isinstance(unit_price, Decimal) or not unit_price.is_finite() or unit_price <= 0:
        raise BillingError("The unit price must be greater than zero.", field="unit_price")
    if unit_price >= MAX_UNIT_PRICE:
        raise BillingError(f"The unit price must be below {MAX_UNIT_PRICE:f}.", field="unit_price")
    if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity <= 0:
        raise BillingError("The quantity must be greater than zero.", field="quantity")
    if quantity >= MAX_QUANTITY:
        raise BillingError(f"The quantity must be below {MAX_QUANTITY:f}.", field="quantity")
    if round_money(unit_price * quantity, currency) >= MAX_AMOUNT:
        raise BillingError(f"The charge's amount must be below {MAX_AMOUNT:f}.", field="quantity")
    _product_and_subscription(customer, product, subscription)
    if subscription is not None and str(subscription.plan_version.plan.currency) != currency:
        raise BillingError("The currency differs from the subscription's plan currency.", field="currency")
    return PendingCharge.objects.create(
        customer=customer, subscription=subscription, description=description, currency=currency,
        quantity=quantity, unit_price=unit_price, product=product, bill_on=bill_on, created_by=actor.label,
    )


def create_installment_plan(
    customer: Customer, *, description: str, total: Decimal, installments: int, first_bill_on: date,
    currency: str | None = None, product: Product | None = None, actor: Actor, now: datetime,
) -> InstallmentPlan:
    """Split a one-time fee into monthly installments that add up to `total` exactly (largest remainder:
    the minor units that do not divide go to the first installments)."""
    description = _text(description, "description", InstallmentPlan._meta.get_field("description").max_length)
    currency = _currency(currency, customer)
    total = _money_amount(total, currency, "total")
    if isinstance(installments, bool) or not isinstance(installments, int) or not 1 <= installments <= MAX_INSTALLMENTS:
        raise BillingError(f"Give between 1 and {MAX_INSTALLMENTS} installments.", field="installments")
    _product_and_subscription(customer, product, None)
    parts = allocate_by_largest_remainder(total, [Decimal(1)] * installments, currency)
    if any(part <= 0 for part in parts):
        raise BillingError("Each installment must be at least the currency's minor unit; use fewer installments.",
                           field="installments")
    with transaction.atomic():
        plan = InstallmentPlan.objects.create(
            customer=customer, description=description, currency=currency, total=total, installments=installments,
            product=product, created_by=actor.label,
        )
        PendingCharge.objects.bulk_create([
            PendingCharge(
                customer=customer, description=f"{description[:DESCRIPTION_LENGTH - 24]} ({number}/{installments})",
                currency=currency, quantity=Decimal(1), unit_price=part, product=product,
                # Months counted from the first day, so a 31st clamps per month instead of drifting to the 28th.
                bill_on=add_months(first_bill_on, number - 1, on_day=first_bill_on.day),
                installment_plan=plan, installment_number=number, created_by=actor.label,
            )
            for number, part in enumerate(parts, start=1)
        ])
    return plan


__all__ = [
    "add_one_off_charge",
    "apply_coupon",
    "create_installment_plan",
    "grant_credit",
    "purchase_prepaid_credit",
    "remove_coupon",
]
