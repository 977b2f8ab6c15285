"""Query parameters validated like a body: every parameter known to the serializer and given once."""

from typing import Any

from rest_framework import serializers


class StrictQuery(serializers.Serializer):
    """A query-string serializer that refuses unknown and repeated parameters by name."""

    def to_internal_value(self, data: Any) -> Any:
        errors: dict[str, list[str]] = {}
        for key in data:
            if key not in self.fields:
                errors[str(key)[:50]] = ["Unknown parameter."]
            elif len(data.getlist(key)) > 1:
                errors[key] = ["Give this parameter once."]
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value({key: data.get(key) for key in data})
