"""Small building blocks shared by every domain app (no business rules here)."""

from django.db import models


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class PostalAddress(models.Model):
    address_line1 = models.CharField("address line 1", max_length=200, blank=True)
    address_line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    state = models.CharField("state / region", max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)

    class Meta:
        abstract = True

    def address_lines(self) -> list[str]:
        """The address as printed on documents, empty parts left out."""
        city_line = " ".join(p for p in (self.postal_code, self.city) if p)
        parts = [self.address_line1, self.address_line2, city_line, self.state, str(getattr(self, "country", "") or "")]
        return [p for p in parts if p]
