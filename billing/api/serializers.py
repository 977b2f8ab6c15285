"""Base serializers. They parse and check the shape of input; the domain services decide the rest."""

from collections.abc import Mapping
from functools import cache
from typing import Any

from rest_framework import serializers

MAX_ECHOED_KEY = 100


# The OpenAPI generator copies the first docstring up a serializer's or view's class hierarchy into the
# schema, so the bases below explain themselves in comments.


class StrictMixin:
    # Refuse keys that are not fields at all (a typo like "quantiy" must not be silently ignored). Read-only
    # fields sent back by a client that round-trips a representation are ignored, as usual.

    def to_internal_value(self, data: Any) -> Any:
        unknown: dict[str, list[str]] = {}
        if isinstance(data, Mapping):
            for key in data:
                if key not in self.fields:
                    unknown[str(key)[:MAX_ECHOED_KEY]] = ["Unknown field."]
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                exc.detail.update(unknown)
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class InputSerializer(StrictMixin, serializers.Serializer):
    # A request body for a service call or an action.
    pass


class WritableModelSerializer(StrictMixin, serializers.ModelSerializer):
    # A model resource whose writes go through a service; views call the service with validated_data.

    # Fields accepted on create but fixed afterwards (e.g. the code that is also the URL key).
    create_only_fields: tuple[str, ...] = ()
    # Read-only fields that a client might try to set: sent back unchanged they are ignored, changed they are
    # refused with the given explanation (e.g. status, which only lifecycle actions change).
    fixed_fields: dict[str, str] = {}
    for_update = False

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        if self.for_update or self.instance is not None:
            for name in self.create_only_fields:
                if name in fields:
                    fields[name].read_only = True
                    fields[name].required = False
        return fields

    def _current(self, name: str) -> Any:
        field = self.fields[name]
        if self.instance is None:
            default = self.Meta.model._meta.get_field(name).get_default()
            return None if default is None else field.to_representation(default)
        attribute = field.get_attribute(self.instance)
        return None if attribute is None else field.to_representation(attribute)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            changed = {}
            checked = dict(self.fixed_fields)
            if self.instance is not None:
                checked.update(dict.fromkeys(self.create_only_fields, "Cannot be changed after creation."))
            for name, message in checked.items():
                if name in data and data[name] != self._current(name):
                    changed[name] = [message]
            if changed:
                raise serializers.ValidationError(changed)
        return super().to_internal_value(data)


@cache
def update_variant(serializer_class: type[WritableModelSerializer]) -> type[WritableModelSerializer]:
    """The same resource as written by PUT/PATCH: its create-only fields documented as read-only."""
    name = serializer_class.__name__.removesuffix("Serializer") + "UpdateSerializer"
    return type(name, (serializer_class,), {"for_update": True, "__module__": serializer_class.__module__})
