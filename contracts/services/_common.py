from typing import Any

from django.core.exceptions import ValidationError
from djmoney.money import Money

from billing.actors import Actor


def record_actor(instance: Any, actor: Actor) -> None:
    # django-simple-history reads these for the audit row of the next save.
    instance._history_user = actor.user
    instance._change_reason = actor.label


def money_in(value: Any, currency: str, field: str) -> Money | None:
    """A Money in `currency` from a Money, a Decimal or a decimal string; refuses another currency."""
    if value is None:
        return None
    if isinstance(value, Money):
        if str(value.currency) != str(currency):
            raise ValidationError({field: [f"Must be in {currency}, not {value.currency}."]})
        return value
    from contracts.charge_models import _decimal, _Errors

    errors = _Errors()
    amount = _decimal(value, field, errors)
    if errors.by_path:
        raise ValidationError(errors.by_path)
    return Money(amount, str(currency))
