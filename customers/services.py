"""Writes for billing entities and customers. Each validates the whole object and the hierarchy rules
under a row lock, so concurrent edits cannot create a cycle or a half-valid customer."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from billing.actors import Actor
from customers.models import BillingEntity, Contact, Customer

MAX_HIERARCHY_DEPTH = 10
CUSTOMER_IMMUTABLE_FIELDS = ("external_id",)


def _apply(instance: Any, fields: dict[str, Any]) -> dict[str, list[str]]:
    known = {f.name for f in instance._meta.concrete_fields} | {f.attname for f in instance._meta.concrete_fields}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in unknown})
    errors: dict[str, list[str]] = {}
    for name, value in fields.items():
        try:
            setattr(instance, name, value)
        except ValidationError as exc:  # some fields (the timezone) check their value on assignment
            errors[name] = exc.messages
    return errors


def _full_clean(instance: Any, errors: dict[str, list[str]]) -> None:
    """Model validation of every field not already refused, reported together with those that were."""
    try:
        instance.full_clean(exclude=list(errors))
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)


def _record_actor(instance: Any, actor: Actor) -> None:
    # django-simple-history reads `_history_user` for the audit row of this save.
    instance._history_user = actor.user
    instance._change_reason = actor.label


def create_billing_entity(*, actor: Actor, **fields: Any) -> BillingEntity:
    entity = BillingEntity()
    _full_clean(entity, _apply(entity, fields))
    _record_actor(entity, actor)
    entity.save()
    return entity


def update_billing_entity(entity: BillingEntity, *, actor: Actor, **fields: Any) -> BillingEntity:
    with transaction.atomic():
        entity = BillingEntity.objects.select_for_update().get(pk=entity.pk)
        _full_clean(entity, _apply(entity, fields))
        _record_actor(entity, actor)
        entity.save()
    return entity


def _customer_rule_errors(customer: Customer) -> dict[str, list[str]]:
    """Business rules, checked before model validation so that their messages name the field at fault."""
    errors: dict[str, list[str]] = {}
    emails = customer.billing_emails
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        errors["billing_emails"] = ["Give a list of e-mail addresses."]
    else:
        from django.core.validators import validate_email

        for index, email in enumerate(emails):
            try:
                validate_email(email)
            except ValidationError:
                errors[f"billing_emails[{index}]"] = [f"'{email}' is not a valid e-mail address."]
    if not isinstance(customer.metadata, dict):
        errors["metadata"] = ["Give a JSON object."]
    if customer.tax_exempt and not customer.tax_exemption_reason.strip():
        errors["tax_exemption_reason"] = ["A tax-exempt customer needs the reason (e.g. the exemption certificate)."]
    if customer.invoice_to_parent and customer.parent_id is None:
        errors["invoice_to_parent"] = ["Only a customer with a parent can be invoiced to it."]
    if customer.parent_id is not None:
        errors.update(_hierarchy_errors(customer))
    return errors


def _hierarchy_errors(customer: Customer) -> dict[str, list[str]]:
    parent = Customer.objects.select_related("billing_entity").get(pk=customer.parent_id)
    if customer.pk is not None:
        ancestor, depth = parent, 0
        while ancestor is not None:
            if ancestor.pk == customer.pk:
                return {"parent": ["This parent would make the hierarchy a cycle."]}
            depth += 1
            if depth > MAX_HIERARCHY_DEPTH:
                return {"parent": [f"Hierarchies are limited to {MAX_HIERARCHY_DEPTH} levels."]}
            ancestor = ancestor.parent
    if customer.invoice_to_parent:
        if parent.billing_entity_id != customer.billing_entity_id:
            return {"invoice_to_parent": ["A consolidated invoice needs the parent in the same billing entity."]}
        if parent.currency != customer.currency:
            return {"invoice_to_parent": [f"A consolidated invoice needs the parent's currency ({parent.currency})."]}
    if parent.status == Customer.Status.ARCHIVED:
        return {"parent": ["The parent customer is archived."]}
    return {}


def create_customer(*, actor: Actor, contacts: list[dict[str, Any]] | None = None, **fields: Any) -> Customer:
    customer = Customer()
    errors = _apply(customer, fields)
    if not customer.currency and customer.billing_entity_id:
        customer.currency = customer.billing_entity.default_currency
    if not customer.legal_name:
        customer.legal_name = customer.name
    with transaction.atomic():
        if customer.parent_id is not None:
            # Lock the parent so a concurrent edit of the hierarchy sees this child.
            Customer.objects.select_for_update().filter(pk=customer.parent_id).first()
        _full_clean(customer, {**_customer_rule_errors(customer), **errors})
        _record_actor(customer, actor)
        customer.save()
        for contact in contacts or []:
            add_contact(customer, actor=actor, **contact)
    return customer


def update_customer(customer: Customer, *, actor: Actor, **fields: Any) -> Customer:
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        for name in CUSTOMER_IMMUTABLE_FIELDS:
            if name in fields and fields[name] != getattr(locked, name):
                raise ValidationError({name: ["The external id is the integrations' key and cannot change."]})
        if "currency" in fields and fields["currency"] != locked.currency and locked.subscriptions.exists():
            raise ValidationError({"currency": ["A customer with subscriptions cannot change currency."]})
        errors = _apply(locked, fields)
        _full_clean(locked, {**_customer_rule_errors(locked), **errors})
        _record_actor(locked, actor)
        locked.save()
    return locked


def archive_customer(customer: Customer, *, actor: Actor) -> Customer:
    live = ("pending", "trialing", "active", "paused")
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        if locked.subscriptions.filter(status__in=live).exists():
            raise ValidationError({"status": ["Cancel the customer's live subscriptions before archiving it."]})
        if locked.children.filter(status=Customer.Status.ACTIVE).exists():
            raise ValidationError({"status": ["Archive or re-parent the customer's children first."]})
        locked.status = Customer.Status.ARCHIVED
        _record_actor(locked, actor)
        locked.save(update_fields=["status", "updated_at"])
    return locked


def add_contact(customer: Customer, *, actor: Actor, **fields: Any) -> Contact:
    contact = Contact(customer=customer)
    _full_clean(contact, _apply(contact, fields))
    contact.save()
    return contact
