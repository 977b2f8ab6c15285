"""Pure pricing arithmetic: charge models, proration and rounding over Decimal and dates.

No ORM and no Django: everything here is a function of its arguments, so the same code prices a real cycle
close, a preview and a recomputation check. Amounts stay exact until `rounding.round_money` turns them into
invoice lines (DESIGN: money).
"""

from decimal import Context

# Enough digits that sums and products of 12-decimal unit prices and 1e15 quantities stay exact, and that
# quotients (proration, allocation) are accurate far beyond any currency's minor unit.
PRECISION = 50


def exact_context() -> Context:
    """A decimal context for exact pricing arithmetic (use with decimal.localcontext)."""
    return Context(prec=PRECISION)
