"""Admin forms save through the services: the same rules as the API, refusals shown on the form."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.roles import BILLING_OPERATOR, FINANCE_ADMIN
from contracts.models import Charge, ContractPrice, Plan, PlanVersion, Subscription
from customers.models import Contact, Customer
from tests.admin.support import client_for

pytestmark = pytest.mark.django_db


def customer_form(book, **overrides):
    data = {
        "external_id": "new-co", "name": "New Co", "legal_name": "", "kind": "business",
        "billing_entity": book.entity.pk, "parent": "", "currency": "USD", "billing_emails": '["ap@new.example"]',
        "payment_terms_days": "", "timezone": "UTC", "country": "US", "tax_id": "", "tax_exemption_reason": "",
        "address_line1": "", "address_line2": "", "city": "", "state": "", "postal_code": "", "metadata": "{}",
        "contacts-TOTAL_FORMS": "1", "contacts-INITIAL_FORMS": "0", "contacts-MIN_NUM_FORMS": "0",
        "contacts-MAX_NUM_FORMS": "1000",
        "contacts-0-name": "Pat", "contacts-0-email": "pat@new.example", "contacts-0-role": "billing",
        "contacts-0-receives_invoices": "on",
    }
    data.update(overrides)
    return data


def test_add_customer_goes_through_the_service(book):
    client = client_for(BILLING_OPERATOR)
    response = client.post(reverse("admin:customers_customer_add"), customer_form(book))
    assert response.status_code == 302, response.context["adminform"].form.errors
    customer = Customer.objects.get(external_id="new-co")
    assert customer.legal_name == "New Co"  # the service's default, not the form's empty value
    assert Contact.objects.get(customer=customer).email == "pat@new.example"
    record = customer.history.first()
    assert record.history_user == client.user
    assert record.history_change_reason == f"user:{client.user.username}"


def test_a_service_refusal_is_shown_on_the_form_and_nothing_is_saved(book):
    client = client_for(BILLING_OPERATOR)
    eur_parent = book.customer
    response = client.post(reverse("admin:customers_customer_add"), customer_form(
        book, parent=eur_parent.pk, invoice_to_parent="on", currency="EUR"))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "invoice_to_parent" in form.errors
    assert "parent's currency (USD)" in " ".join(form.errors["invoice_to_parent"])
    assert not Customer.objects.filter(external_id="new-co").exists()
    assert not Contact.objects.filter(email="pat@new.example").exists()
    # The submitted values are kept for correction.
    assert form["name"].value() == "New Co"
    assert response.context["inline_admin_formsets"][0].formset.forms[0]["email"].value() == "pat@new.example"


def test_change_customer_keeps_the_external_id(book):
    client = client_for(BILLING_OPERATOR)
    data = customer_form(book, external_id="hacked", name="Acme Group Renamed", billing_emails='["ap@acme.example"]',
                         **{"contacts-TOTAL_FORMS": "1", "contacts-INITIAL_FORMS": "1",
                            "contacts-0-id": book.contact.pk, "contacts-0-customer": book.customer.pk,
                            "contacts-0-email": book.contact.email})
    response = client.post(reverse("admin:customers_customer_change", args=[book.customer.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    customer = Customer.objects.get(pk=book.customer.pk)
    assert (customer.external_id, customer.name) == ("acme-group", "Acme Group Renamed")


def test_add_plan_creates_a_draft_first_version(book):
    client = client_for(FINANCE_ADMIN)
    response = client.post(reverse("admin:contracts_plan_add"), {
        "code": "team", "name": "Team", "description": "", "product": book.product.pk, "currency": "USD",
        "interval": "month", "base_fee": "19.99", "base_fee_timing": "advance", "trial_days": "7",
        "minimum_commitment": "",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors
    version = Plan.objects.get(code="team").versions.get()
    assert (version.version, version.status, version.base_fee.amount, version.trial_days) == (
        1, PlanVersion.Status.DRAFT, Decimal("19.99"), 7)


def draft_form(book, **overrides):
    data = {
        "base_fee_0": "59.00", "base_fee_1": "USD", "base_fee_timing": "advance", "trial_days": "0",
        "minimum_commitment_0": "", "minimum_commitment_1": "USD",
    }
    for prefix, count in (("charges", book.draft.charges.count()), ("fixed_charges", book.draft.fixed_charges.count()),
                          ("entitlements", book.draft.entitlements.count())):
        data.update({f"{prefix}-TOTAL_FORMS": str(count), f"{prefix}-INITIAL_FORMS": str(count),
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"})
    for index, charge in enumerate(book.draft.charges.all()):
        data.update({f"charges-{index}-id": charge.pk, f"charges-{index}-plan_version": book.draft.pk,
                     f"charges-{index}-meter": charge.meter_id, f"charges-{index}-charge_model": charge.charge_model,
                     f"charges-{index}-properties": '{"unit_price": "0.0000015"}', f"charges-{index}-filters": "{}",
                     f"charges-{index}-group_by": "[]", f"charges-{index}-billing_timing": "arrears",
                     f"charges-{index}-minimum_amount_0": "", f"charges-{index}-minimum_amount_1": "USD",
                     f"charges-{index}-display_name": charge.display_name, f"charges-{index}-product": ""})
    for index, fixed in enumerate(book.draft.fixed_charges.all()):
        data.update({f"fixed_charges-{index}-id": fixed.pk, f"fixed_charges-{index}-plan_version": book.draft.pk,
                     f"fixed_charges-{index}-code": fixed.code, f"fixed_charges-{index}-name": fixed.name,
                     f"fixed_charges-{index}-amount_0": "50", f"fixed_charges-{index}-amount_1": "USD",
                     f"fixed_charges-{index}-quantity": "1", f"fixed_charges-{index}-billing_timing": "advance",
                     f"fixed_charges-{index}-recurring": "on", f"fixed_charges-{index}-prorated": "on",
                     f"fixed_charges-{index}-product": ""})
    for index, entitlement in enumerate(book.draft.entitlements.all()):
        data.update({f"entitlements-{index}-id": entitlement.pk, f"entitlements-{index}-plan_version": book.draft.pk,
                     f"entitlements-{index}-feature": entitlement.feature_id, f"entitlements-{index}-enabled": "on",
                     f"entitlements-{index}-limit": ""})
    data.update(overrides)
    return data


def new_charge(book, index: int, properties: str) -> dict[str, str]:
    return {
        "charges-TOTAL_FORMS": str(index + 1),
        f"charges-{index}-plan_version": str(book.draft.pk), f"charges-{index}-meter": str(book.storage.pk),
        f"charges-{index}-charge_model": "graduated", f"charges-{index}-properties": properties,
        f"charges-{index}-filters": "{}", f"charges-{index}-group_by": "[]",
        f"charges-{index}-billing_timing": "arrears", f"charges-{index}-minimum_amount_0": "",
        f"charges-{index}-minimum_amount_1": "USD", f"charges-{index}-display_name": "Storage",
        f"charges-{index}-product": "",
    }


def test_edit_a_draft_version_and_add_a_charge(book):
    client = client_for(FINANCE_ADMIN)
    tiers = '{"tiers": [{"up_to": "100", "unit_price": "0"}, {"up_to": null, "unit_price": "0.10"}]}'
    response = client.post(reverse("admin:contracts_planversion_change", args=[book.draft.pk]),
                           draft_form(book, **new_charge(book, 1, tiers)))
    assert response.status_code == 302, response.context["adminform"].form.errors
    draft = PlanVersion.objects.get(pk=book.draft.pk)
    assert draft.base_fee.amount == Decimal("59.00")
    added = draft.charges.get(meter=book.storage)
    assert added.properties["tiers"][1] == {"up_to": None, "unit_price": "0.10", "flat_fee": "0"}  # normalised


def test_a_bad_tier_is_reported_and_nothing_is_saved(book):
    client = client_for(FINANCE_ADMIN)
    tiers = '{"tiers": [{"up_to": "100", "unit_price": "0"}, {"up_to": "50", "unit_price": "0.10"}]}'
    response = client.post(reverse("admin:contracts_planversion_change", args=[book.draft.pk]),
                           draft_form(book, **new_charge(book, 1, tiers)))
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.non_field_errors())
    assert "tiers[1].up_to" in errors
    assert PlanVersion.objects.get(pk=book.draft.pk).base_fee.amount == Decimal("49.00")  # rolled back too
    assert not Charge.objects.filter(plan_version=book.draft, meter=book.storage).exists()


def test_a_published_version_cannot_be_edited(book):
    client = client_for(FINANCE_ADMIN)
    client.post(reverse("admin:contracts_planversion_change", args=[book.published.pk]),
                {"base_fee_0": "1.00", "base_fee_1": "USD", "trial_days": "30"})
    published = PlanVersion.objects.get(pk=book.published.pk)
    assert (published.base_fee.amount, published.trial_days) == (Decimal("49.00"), 0)


def subscription_form(book, **overrides):
    data = {
        "customer": book.customer.pk, "plan_version": book.published.pk, "contract": "", "external_id": "",
        "quantity": "2", "start_date": "", "billing_anchor": "calendar", "bill_cycle_day": "", "trial_days": "",
        "end_date": "", "metadata": "{}",
        "phases-TOTAL_FORMS": "0", "phases-INITIAL_FORMS": "0", "changes-TOTAL_FORMS": "0",
        "changes-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_add_subscription_through_the_service(book):
    client = client_for(BILLING_OPERATOR)
    response = client.post(reverse("admin:contracts_subscription_add"), subscription_form(book))
    assert response.status_code == 302, response.context["adminform"].form.errors
    created = Subscription.objects.exclude(pk=book.subscription.pk).get()
    assert created.external_id.startswith("sub_")
    assert created.status == Subscription.Status.ACTIVE
    assert created.phases.count() == 1


def test_add_subscription_refusals_land_on_their_fields(book):
    client = client_for(BILLING_OPERATOR)
    response = client.post(reverse("admin:contracts_subscription_add"), subscription_form(
        book, plan_version=book.draft.pk, bill_cycle_day="40", start_date="2024-01-01"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "plan_version" in errors
    assert Subscription.objects.count() == 1


def test_contract_prices_are_added_through_the_service(book):
    client = client_for(BILLING_OPERATOR)
    url = reverse("admin:contracts_contract_change", args=[book.contract.pk])
    page = client.get(url)
    assert page.status_code == 200
    existing = book.contract.prices.count()
    data = {
        "name": "Master agreement", "renewal_uplift_percent": "0", "renewal_term_months": "", "signed_at": "",
        "notes": "", "metadata": "{}",
        "prices-TOTAL_FORMS": str(existing + 1), "prices-INITIAL_FORMS": str(existing),
        "prices-MIN_NUM_FORMS": "0", "prices-MAX_NUM_FORMS": "1000",
        f"prices-{existing}-target": "fixed_charge", f"prices-{existing}-plan_version": book.published.pk,
        f"prices-{existing}-charge": "", f"prices-{existing}-fixed_charge": book.fixed_charge.pk,
        f"prices-{existing}-amount_0": "40", f"prices-{existing}-amount_1": "USD",
        f"prices-{existing}-charge_model": "", f"prices-{existing}-properties": "{}",
        f"prices-{existing}-effective_from": "2024-06-01", f"prices-{existing}-effective_to": "",
        "commitments-TOTAL_FORMS": "1", "commitments-INITIAL_FORMS": "1", "commitments-MIN_NUM_FORMS": "0",
        "commitments-MAX_NUM_FORMS": "1000", "commitments-0-id": book.contract.commitments.get().pk,
        "commitments-0-contract": book.contract.pk,
        "entitlements-TOTAL_FORMS": "1", "entitlements-INITIAL_FORMS": "1", "entitlements-MIN_NUM_FORMS": "0",
        "entitlements-MAX_NUM_FORMS": "1000", "entitlements-0-id": book.contract.entitlements.get().pk,
        "entitlements-0-contract": book.contract.pk, "entitlements-0-feature": book.feature.pk,
        "entitlements-0-enabled": "on", "entitlements-0-limit": "",
        "subscriptions-TOTAL_FORMS": "1", "subscriptions-INITIAL_FORMS": "1",
        "subscriptions-0-id": book.subscription.pk, "subscriptions-0-contract": book.contract.pk,
    }
    for index, price in enumerate(book.contract.prices.all()):
        data.update({f"prices-{index}-id": price.pk, f"prices-{index}-contract": book.contract.pk})
    response = client.post(url, data)
    assert response.status_code == 302, (response.context["adminform"].form.errors,
                                          [f.formset.errors for f in response.context["inline_admin_formsets"]])
    price = ContractPrice.objects.get(contract=book.contract, target="fixed_charge")
    assert (price.amount.amount, price.effective_from) == (Decimal("40"), date(2024, 6, 1))

    # An overlapping price is refused by the service, and the page says so.
    data[f"prices-{existing}-effective_from"] = "2024-07-01"
    data["prices-TOTAL_FORMS"] = str(existing + 2)
    data["prices-INITIAL_FORMS"] = str(existing + 1)
    data.update({f"prices-{existing}-id": price.pk, f"prices-{existing}-contract": book.contract.pk})
    data.update({f"prices-{existing + 1}-{k}": v for k, v in {
        "target": "fixed_charge", "plan_version": book.published.pk, "charge": "", "fixed_charge": book.fixed_charge.pk,
        "amount_0": "30", "amount_1": "USD", "charge_model": "", "properties": "{}", "effective_from": "2024-07-01",
        "effective_to": "",
    }.items()})
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Overlaps" in " ".join(response.context["adminform"].form.non_field_errors())
    assert ContractPrice.objects.filter(contract=book.contract, target="fixed_charge").count() == 1
