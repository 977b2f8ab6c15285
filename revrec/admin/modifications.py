"""'Record a modification…' on a revenue contract's admin page: a form over
revrec.services.modifications.modify_contract (change, effective date, the three facts of ASC 606-10-25-12/13,
an optional treatment override, a price change and a new end per open obligation).

The form carries a source_key made when it is first shown, so a double submit records the modification once.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from uuid import uuid4

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.actors import Actor
from billing.api.fields import minor_unit_places
from billing.errors import BillingError
from contracts.models import Product
from customers.admin import error_text
from revrec.admin.common import amount, page
from revrec.models import ContractModification, PerformanceObligation, RevenueContract
from revrec.selectors.reports import MAX_DATE, MIN_DATE
from revrec.services.modifications import AddedObligation, ObligationChange, modify_contract

MODIFY = "revrec.add_contractmodification"
DATE_WIDGET = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
SOURCE_KEY = re.compile(r"^admin:[0-9a-f-]{36}$")
OPEN = (PerformanceObligation.Status.OPEN, PerformanceObligation.Status.AWAITING_DELIVERY)


def _in_range(day: Any) -> Any:
    if day is not None and not MIN_DATE <= day <= MAX_DATE:
        raise forms.ValidationError(f"Choose a day between {MIN_DATE} and {MAX_DATE}.")
    return day


class ModificationForm(forms.Form):
    change = forms.ChoiceField(choices=ContractModification.Change.choices)
    effective_date = forms.DateField(widget=DATE_WIDGET, validators=[_in_range],
                                     help_text="The modification applies from the start of this day.")
    adds_distinct_goods = forms.BooleanField(
        required=False, label="Adds distinct goods or services",
        help_text="ASC 606-10-25-12(a): “the scope of the contract increases because of the addition of promised "
                  "goods or services that are distinct”.")
    priced_at_ssp = forms.BooleanField(
        required=False, label="Priced at their standalone selling prices",
        help_text="ASC 606-10-25-12(b): “the price of the contract increases by an amount of consideration that "
                  "reflects the entity's standalone selling prices of the additional promised goods or services”. "
                  "Both facts: a separate contract.")
    remaining_distinct = forms.BooleanField(
        required=False, label="Remaining goods or services are distinct",
        help_text="ASC 606-10-25-13(a): “the remaining goods or services are distinct from the goods or services "
                  "transferred on or before the date of the contract modification”: prospective; otherwise "
                  "25-13(b): a cumulative catch-up adjustment.")
    treatment = forms.ChoiceField(
        required=False, choices=[("", "As the rule says (25-12 / 25-13)"), *ContractModification.Treatment.choices],
        help_text="Override only with a reason: the rationale records what the rule would have said.")
    source_key = forms.CharField(widget=forms.HiddenInput, max_length=120)
    # One good or service the modification adds (an added product; alone, a separate contract).
    added_description = forms.CharField(required=False, max_length=300, label="Added: description")
    added_product = forms.ModelChoiceField(Product.objects.order_by("code"), required=False, to_field_name="code",
                                           label="Added: product")
    added_pattern = forms.ChoiceField(choices=PerformanceObligation.Pattern.choices, required=False,
                                      initial=PerformanceObligation.Pattern.RATABLE, label="Added: recognised")
    added_start = forms.DateField(required=False, widget=DATE_WIDGET, validators=[_in_range], label="Added: start")
    added_end = forms.DateField(required=False, widget=DATE_WIDGET, validators=[_in_range],
                                label="Added: end (exclusive)")

    def __init__(self, *args: Any, obligations: list[PerformanceObligation], currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.obligations = obligations
        places = minor_unit_places(currency)
        money = {"required": False, "min_value": 0, "max_digits": 16 + places, "decimal_places": places}
        self.fields["added_price"] = forms.DecimalField(**money, label="Added: price",
                                                        help_text="Its consideration, in the contract's currency.")
        self.fields["added_ssp"] = forms.DecimalField(**money, label="Added: SSP",
                                                      help_text="Its standalone selling price (default: the price).")
        self.order_fields(["change", "effective_date", "adds_distinct_goods", "priced_at_ssp", "remaining_distinct",
                           "treatment", "added_description", "added_product", "added_price", "added_ssp"])
        for obligation in obligations:
            self.fields[f"price_change_{obligation.pk}"] = forms.DecimalField(
                required=False, max_digits=16 + places, decimal_places=places, label="Price change",
                help_text="Consideration added (negative: removed) that no invoice line of its own carries.")
            self.fields[f"new_end_{obligation.pk}"] = forms.DateField(
                required=False, widget=DATE_WIDGET, validators=[_in_range], label="New end",
                help_text="Exclusive: the first day no longer served.")

    def rows(self) -> list[dict[str, Any]]:
        """One row per obligation for the template: the obligation and its two fields."""
        return [{"obligation": o, "price_change": self[f"price_change_{o.pk}"], "new_end": self[f"new_end_{o.pk}"]}
                for o in self.obligations]

    def sections(self) -> list[dict[str, Any]]:
        """The modification's fields, then the optional added obligation's (the per-obligation rows apart)."""
        added = [self[name] for name in self.fields if name.startswith("added_")]
        main = [self[name] for name in self.fields if not name.startswith(("added_", "price_change_", "new_end_"))
                and name != "source_key"]
        return [{"title": "The modification", "fields": main},
                {"title": "An added good or service (optional)", "fields": added,
                 "note": "Added products and added quantities at their standalone selling price; alone, with both "
                         "25-12 facts, they form a separate contract."}]

    def clean_source_key(self) -> str:
        key = self.cleaned_data["source_key"]
        if not SOURCE_KEY.match(key):
            raise forms.ValidationError("The form is damaged: reload the page.")
        return key

    def changes(self) -> list[ObligationChange | AddedObligation]:
        result: list[ObligationChange | AddedObligation] = []
        for obligation in self.obligations:
            price = self.cleaned_data.get(f"price_change_{obligation.pk}") or Decimal(0)
            new_end = self.cleaned_data.get(f"new_end_{obligation.pk}")
            if price or new_end:
                result.append(ObligationChange(obligation, price_change=price, new_end=new_end))
        data = self.cleaned_data
        if data.get("added_description"):
            pattern = data.get("added_pattern") or PerformanceObligation.Pattern.RATABLE
            product = data.get("added_product")
            result.append(AddedObligation(
                description=data["added_description"], price=data["added_price"], ssp=data.get("added_ssp"),
                service_start=data.get("added_start"), service_end=data.get("added_end"), pattern=pattern,
                product_id=product.pk if product else None,
                kind=(PerformanceObligation.Kind.SUBSCRIPTION if pattern == PerformanceObligation.Pattern.RATABLE
                      else PerformanceObligation.Kind.ONE_TIME),
            ))
        return result

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("added_description") and data.get("added_price") is None:
            self.add_error("added_price", "Give the added obligation's price.")
        elif data.get("added_price") is not None and not data.get("added_description"):
            self.add_error("added_description", "Describe the added obligation.")
        if not self.errors and data.get("change") != ContractModification.Change.CANCELLATION and not self.changes():
            raise forms.ValidationError("Give a price change or a new end for at least one obligation, or add one.")
        return data


class ModificationAdminMixin:
    """For RevenueContractAdmin: the 'Record a modification…' link on the change page and its form's URL."""

    def has_modify_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(MODIFY)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_fields(request, obj))  # type: ignore[misc]
        if obj is not None and self.has_modify_permission(request):
            fields.append("record_modification")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        if obj is not None and self.has_modify_permission(request):
            fields.append("record_modification")
        return fields

    @admin.display(description="modifications")
    def record_modification(self, contract: RevenueContract) -> str:
        return format_html('<a class="button" href="{}">Record a modification…</a>',
                           reverse("admin:revrec_revenuecontract_modify", args=[contract.pk]))

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view  # type: ignore[attr-defined]
        return [path("<int:object_id>/modify/", view(self.modify_view), name="revrec_revenuecontract_modify"),
                *super().get_urls()]  # type: ignore[misc]

    def modify_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_modify_permission(request):
            raise PermissionDenied
        contract = get_object_or_404(RevenueContract.objects.select_related("customer"), pk=object_id)
        currency = str(contract.currency)
        obligations = list(contract.obligations.filter(status__in=OPEN).select_related("product").order_by("pk"))
        form = ModificationForm(request.POST or None, obligations=obligations, currency=currency,
                                initial={"source_key": f"admin:{uuid4()}"})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            now = timezone.now()
            try:
                modification = modify_contract(
                    contract, change=data["change"], effective_date=data["effective_date"],
                    obligation_changes=list(form.changes()), treatment=data["treatment"] or None,
                    adds_distinct_goods=data["adds_distinct_goods"], priced_at_ssp=data["priced_at_ssp"],
                    remaining_distinct=data["remaining_distinct"], actor=Actor.for_user(request.user), now=now,
                    source_key=data["source_key"],
                )
            except BillingError as exc:
                form.add_error(None, error_text(exc))
            else:
                again = modification.created_at != now
                catch_up = amount(modification.catch_up_amount, currency)
                self.message_user(  # type: ignore[attr-defined]
                    request,
                    ("This modification was already recorded: " if again else "Modification recorded: ")
                    + f"{modification.get_treatment_display()}. {modification.rationale} Catch-up: {catch_up} "
                      f"{currency}.",
                    messages.INFO if again else messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:revrec_revenuecontract_change", args=[contract.pk]))
        return page(self, request, "revenuecontract/modify.html",  # type: ignore[arg-type]
                    f"Record a modification of {contract.reference}", form=form, contract=contract,
                    currency=currency, media=self.media + form.media)  # type: ignore[attr-defined]
