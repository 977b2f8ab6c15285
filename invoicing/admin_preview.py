"""The admin page of an upcoming invoice: a dry run of the next close of a customer or subscription, through
the same rating and pricing code as the close, writing nothing."""

from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from contracts.models import Subscription
from customers.models import Customer
from invoicing.services.cycle import preview_customer


@permission_required("invoicing.view_invoice", raise_exception=True)
def upcoming_invoice_view(request: HttpRequest) -> HttpResponse:
    customer_id = request.GET.get("customer", "").strip()
    subscription_id = request.GET.get("subscription", "").strip()
    preview, error, subscription = None, "", None
    if subscription_id:
        subscription = Subscription.objects.select_related("customer").filter(external_id=subscription_id).first()
        if subscription is None:
            error = f"No subscription '{subscription_id}'."
    customer = subscription.customer if subscription else None
    if customer is None and customer_id:
        customer = Customer.objects.filter(external_id=customer_id).first()
        if customer is None:
            error = f"No customer '{customer_id}'."
    if customer is not None:
        preview = preview_customer(customer, now=timezone.now(), subscription=subscription)
    context = {
        **admin.site.each_context(request), "title": "Upcoming invoice", "preview": preview, "error": error,
        "customer_id": customer.external_id if customer else customer_id, "subscription_id": subscription_id,
    }
    return render(request, "admin/invoicing/preview/upcoming_invoice.html", context)
