"""/api/v1/bank-statements (import a statement file, list them) and /api/v1/bank-statement-lines (the
reconciliation queue: list, match to a customer's invoices, ignore, put back).

Thin shells over invoicing.services.bank. An import is a multipart upload (`file` + the format's name); a file
with bad rows answers 400 with every row's problem under `fields.file`. Writes accept an Idempotency-Key: the
upload's digest is part of what makes two requests "the same", so one key cannot replay another file's answer.
"""

from __future__ import annotations

import hashlib
from typing import Any

import django_filters
from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import DataAndFiles, MultiPartParser
from rest_framework.response import Response

from billing.api.fields import DecimalStringField
from billing.api.serializers import InputSerializer
from billing.api.views import APIViewSet
from customers.models import Customer
from invoicing.models import BankStatement, BankStatementFormat, BankStatementLine
from invoicing.serializers import DocumentMoneyField
from invoicing.services import bank
from invoicing.services.payments import AllocationRequest

ID_REGEX = r"\d+"
ERRORS_SHOWN = 1_000  # row problems listed in one response; the count says how many there were
UPLOAD_FIELDS = {"format", "file", "file.sha256"}


class StatementUploadParser(MultiPartParser):
    """Multipart, with each uploaded file's SHA-256 added to the data (`<field>.sha256`), so the
    Idempotency-Key fingerprint covers the file's content and not only its name."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> DataAndFiles:
        parsed = super().parse(stream, media_type, parser_context)
        data = parsed.data.copy()
        for name, uploads in parsed.files.lists():
            digests = []
            for upload in uploads:
                digest = hashlib.sha256()
                for chunk in upload.chunks():
                    digest.update(chunk)
                upload.seek(0)
                digests.append(digest.hexdigest())
            data.setlist(f"{name}.sha256", digests)
        return DataAndFiles(data, parsed.files)


# --- serializers --------------------------------------------------------------------------------------------


class BankStatementSerializer(serializers.ModelSerializer):
    format = serializers.SlugRelatedField(slug_field="name", read_only=True)
    unmatched_lines = serializers.IntegerField(read_only=True, help_text="Credits of this statement still to match.")
    matched_lines = serializers.IntegerField(read_only=True, help_text="Credits matched automatically on import.")

    class Meta:
        model = BankStatement
        fields = ("id", "format", "filename", "sha256", "imported_at", "imported_by", "line_count", "new_lines",
                  "duplicate_lines", "matched_lines", "unmatched_lines")
        read_only_fields = fields


class ImportResultSerializer(serializers.Serializer):
    statement = BankStatementSerializer()
    created = serializers.BooleanField(help_text="False: this very file was imported before; nothing was added.")
    new_lines = serializers.IntegerField()
    duplicate_lines = serializers.IntegerField(help_text="Lines an earlier statement already brought.")
    ignored_lines = serializers.IntegerField(help_text="Debits (money paid out), kept as ignored.")
    matched_lines = serializers.IntegerField()
    unmatched_lines = serializers.IntegerField(help_text="New credits waiting in the reconciliation queue.")
    summary = serializers.CharField()


class BankStatementLineSerializer(serializers.ModelSerializer):
    format = serializers.SlugRelatedField(slug_field="name", read_only=True)
    amount = DocumentMoneyField(help_text="Positive: money received; negative: money paid out.")
    customer = serializers.SlugRelatedField(slug_field="external_id", read_only=True)

    class Meta:
        model = BankStatementLine
        fields = ("id", "statement", "format", "line_number", "booked_on", "amount", "currency", "reference",
                  "description", "counterparty", "transaction_id", "status", "match_method", "customer", "payment",
                  "matched_at", "matched_by", "note")
        read_only_fields = fields


class BankAllocationInputSerializer(InputSerializer):
    invoice = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="The invoice's id.")
    amount = DecimalStringField(max_places=4, max_digits=20, help_text="In the line's currency.")


class BankLineMatchInputSerializer(InputSerializer):
    customer = serializers.CharField(max_length=100, help_text="The paying customer's external_id.")
    allocations = serializers.ListField(
        child=BankAllocationInputSerializer(), required=False, max_length=100,
        help_text="Invoices to pay and how much; omitted: the oldest open invoices first. The rest of the line's "
                  "amount goes to the customer's credit balance.",
    )


class BankLineIgnoreInputSerializer(InputSerializer):
    reason = serializers.CharField(max_length=250, help_text="Why this line is not a customer's payment.")


# --- statements ---------------------------------------------------------------------------------------------


def _statements() -> QuerySet[BankStatement]:
    return BankStatement.objects.select_related("format").annotate(
        unmatched_lines=Count("lines", filter=Q(lines__status=BankStatementLine.Status.UNMATCHED))
    ).order_by("-imported_at", "-id")


class BankStatementFilter(django_filters.FilterSet):
    format = django_filters.CharFilter(field_name="format__name", help_text="The format's name.")
    imported_from = django_filters.DateTimeFilter(field_name="imported_at", lookup_expr="gte")
    imported_to = django_filters.DateTimeFilter(field_name="imported_at", lookup_expr="lte")

    class Meta:
        model = BankStatement
        fields = ("format",)


@extend_schema_view(
    list=extend_schema(summary="List imported bank statements"),
    retrieve=extend_schema(summary="Get a bank statement"),
    create=extend_schema(
        summary="Import a bank statement (CSV) and match its credits",
        description="Multipart form: `file` (the CSV) and `format` (the bank statement format's name). Any bad "
                    "row: 400 listing every row's problem under `fields.file`, nothing imported. The same file "
                    "again answers the statement imported the first time with `created: false`; lines another "
                    "statement already brought are not stored twice.",
        request={"multipart/form-data": {"type": "object", "required": ["file", "format"], "properties": {
            "file": {"type": "string", "format": "binary"}, "format": {"type": "string"}}}},
        responses={201: ImportResultSerializer},
    ),
)
class BankStatementViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, APIViewSet):
    serializer_class = BankStatementSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = BankStatementFilter
    search_fields = ("filename",)
    ordering_fields = ("imported_at", "id")
    parser_classes = [StatementUploadParser]
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[BankStatement]:
        return _statements()

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        fmt, upload = self._upload()
        try:
            result = bank.import_statement(fmt, upload.read(), filename=upload.name or "statement.csv",
                                           actor=self.actor, now=self.now())
        except bank.StatementFileError as exc:
            problems = [str(e) for e in exc.errors[:ERRORS_SHOWN]]
            if len(exc.errors) > ERRORS_SHOWN:
                problems.append(f"... and {len(exc.errors) - ERRORS_SHOWN} more problems.")
            raise serializers.ValidationError({"file": problems}) from exc
        body = {
            "statement": _statements().get(pk=result.statement.pk), "created": result.created,
            "new_lines": result.new_lines, "duplicate_lines": result.duplicate_lines,
            "ignored_lines": result.ignored_lines, "matched_lines": result.matched_lines,
            "unmatched_lines": result.unmatched_lines, "summary": result.summary(),
        }
        # One status for a repeat too (a retry without an Idempotency-Key): `created` tells them apart.
        return Response(ImportResultSerializer(body).data, status=status.HTTP_201_CREATED)

    def _upload(self) -> tuple[BankStatementFormat, Any]:
        data, files = self.request.data, self.request.FILES
        errors: dict[str, list[str]] = {str(key)[:100]: ["Unknown field."] for key in data if key not in UPLOAD_FIELDS}
        names = data.getlist("format") if hasattr(data, "getlist") else []
        uploads = files.getlist("file")
        fmt = None
        if len(names) != 1 or not str(names[0]).strip():
            errors["format"] = ["Give the name of one bank statement format."]
        elif "\x00" in names[0]:
            errors["format"] = ["NUL characters are not allowed."]
        else:
            fmt = BankStatementFormat.objects.select_related("billing_entity").filter(name=names[0].strip()).first()
            if fmt is None:
                errors["format"] = ["No bank statement format with this name."]
        if len(uploads) != 1:
            errors["file"] = ["Send one statement file." if uploads else "This field is required."]
        elif uploads[0].size > bank.max_bytes():
            errors["file"] = [f"The file is larger than {bank.max_bytes() // 1024} KiB; split it into smaller "
                              "statements."]
        if errors:
            raise serializers.ValidationError(errors)
        return fmt, uploads[0]


# --- lines: the reconciliation queue -----------------------------------------------------------------------------


class BankStatementLineFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=BankStatementLine.Status.choices)
    statement = django_filters.NumberFilter(field_name="statement_id")
    format = django_filters.CharFilter(field_name="format__name")
    customer = django_filters.CharFilter(field_name="customer__external_id")
    currency = django_filters.CharFilter(field_name="currency", lookup_expr="iexact")
    booked_from = django_filters.DateFilter(field_name="booked_on", lookup_expr="gte")
    booked_to = django_filters.DateFilter(field_name="booked_on", lookup_expr="lte")

    class Meta:
        model = BankStatementLine
        fields = ("status", "statement", "currency")


@extend_schema_view(
    list=extend_schema(summary="List bank statement lines (the queue: ?status=unmatched)"),
    retrieve=extend_schema(summary="Get a bank statement line"),
)
class BankStatementLineViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, APIViewSet):
    serializer_class = BankStatementLineSerializer
    lookup_value_regex = ID_REGEX
    filterset_class = BankStatementLineFilter
    search_fields = ("reference", "description", "counterparty", "transaction_id")
    ordering_fields = ("booked_on", "amount", "id")
    http_method_names = ["get", "post", "head", "options"]

    def get_queryset(self) -> QuerySet[BankStatementLine]:
        return BankStatementLine.objects.select_related("format", "customer").order_by("booked_on", "id")

    @extend_schema(summary="Match a line to a customer's invoices (records a bank-transfer payment)",
                   request=BankLineMatchInputSerializer, responses={200: BankStatementLineSerializer})
    @action(detail=True, methods=["post"])
    def match(self, request, *args: Any, **kwargs: Any) -> Response:
        line = self.get_object()
        data = self.parse(BankLineMatchInputSerializer)
        customer = Customer.objects.filter(external_id=data["customer"]).first()
        if customer is None:
            raise serializers.ValidationError({"customer": ["No customer with this external_id."]})
        allocations = [AllocationRequest(a["invoice"], a["amount"]) for a in data.get("allocations") or []]
        line = bank.match_manually(line, customer=customer, allocations=allocations or None, actor=self.actor,
                                   now=self.now())
        return self.render(self.get_queryset().get(pk=line.pk), BankStatementLineSerializer)

    @extend_schema(summary="Ignore a line (not a customer's payment)", request=BankLineIgnoreInputSerializer,
                   responses={200: BankStatementLineSerializer})
    @action(detail=True, methods=["post"])
    def ignore(self, request, *args: Any, **kwargs: Any) -> Response:
        line = self.get_object()
        data = self.parse(BankLineIgnoreInputSerializer)
        line = bank.ignore_line(line, reason=data["reason"], actor=self.actor, now=self.now())
        return self.render(self.get_queryset().get(pk=line.pk), BankStatementLineSerializer)

    @extend_schema(summary="Put an ignored credit back in the queue", request=None,
                   responses={200: BankStatementLineSerializer})
    @action(detail=True, methods=["post"])
    def unignore(self, request, *args: Any, **kwargs: Any) -> Response:
        line = bank.unignore_line(self.get_object(), actor=self.actor, now=self.now())
        return self.render(self.get_queryset().get(pk=line.pk), BankStatementLineSerializer)


urlpatterns: list = []


def register(router: Any) -> None:
    router.register("bank-statements", BankStatementViewSet, basename="bank-statement")
    router.register("bank-statement-lines", BankStatementLineViewSet, basename="bank-statement-line")

