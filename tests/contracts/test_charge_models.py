import pytest
from django.core.exceptions import ValidationError

from contracts.charge_models import validate_charge_properties, validate_filters, validate_group_by


def errors_of(model, props):
    with pytest.raises(ValidationError) as info:
        validate_charge_properties(model, props)
    return info.value.message_dict


def test_standard_keeps_twelve_decimals_and_reads_numbers_as_text():
    assert validate_charge_properties("standard", {"unit_price": "0.0000015"}) == {"unit_price": "0.0000015"}
    assert validate_charge_properties("standard", {"unit_price": 0.1}) == {"unit_price": "0.1"}
    assert "unit_price" in errors_of("standard", {"unit_price": "0.0000000000001"})


def test_tiers_report_every_problem_with_its_path():
    errors = errors_of("graduated", {"tiers": [
        {"up_to": "1000", "unit_price": "abc"},
        {"up_to": "500", "unit_price": "1"},
        {"up_to": "900", "unit_price": "-1"},
    ], "extra": 1})
    assert errors["tiers[0].unit_price"] == ["'abc' is not a decimal number."]
    assert "Must be greater than the previous tier's bound (1000)." in errors["tiers[1].up_to"]
    assert errors["tiers[2].up_to"] == ['The last tier must be open: "up_to": null.']
    assert errors["tiers[2].unit_price"] == ["Must be at least 0."]
    assert "extra" in errors


def test_only_last_tier_is_open():
    errors = errors_of("volume", {"tiers": [{"up_to": None, "unit_price": "1"}, {"up_to": None, "unit_price": "1"}]})
    assert "tiers[0].up_to" in errors


def test_graduated_percentage_rates_are_capped_at_100():
    errors = errors_of("graduated_percentage", {"tiers": [{"up_to": None, "rate": "101"}]})
    assert errors["tiers[0].rate"] == ["Must be at most 100."]


def test_package_and_percentage():
    assert validate_charge_properties("package", {"package_size": 1000, "package_price": "5"})["free_units"] == "0"
    assert "package_size" in errors_of("package", {"package_size": "0", "package_price": "5"})
    ok = validate_charge_properties("percentage", {"rate": "2.9", "fixed_fee": "0.30", "free_units_per_events": 3})
    assert ok["rate"] == "2.9" and ok["free_units_per_events"] == 3
    errors = errors_of(
        "percentage", {"rate": "1", "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"}
    )
    assert "per_transaction_max_amount" in errors
    assert "free_units_per_events" in errors_of("percentage", {"rate": "1", "free_units_per_events": -1})


@pytest.mark.parametrize("hostile", ["NaN", "Infinity", "1e400", True, None, {"x": 1}, "1; DROP TABLE"])
def test_hostile_prices_are_refused(hostile):
    assert "unit_price" in errors_of("standard", {"unit_price": hostile})


def test_unknown_model_and_non_object():
    assert "charge_model" in errors_of("magic", {})
    assert "properties" in errors_of("standard", ["unit_price"])


def test_filters_and_group_by():
    assert validate_filters({"region": "eu", "tier": ["a", 1]}) == {"region": ["eu"], "tier": ["a", "1"]}
    with pytest.raises(ValidationError):
        validate_filters({"region": []})
    with pytest.raises(ValidationError):
        validate_group_by(["a", "a"])
    assert validate_group_by(["region"]) == ["region"]
