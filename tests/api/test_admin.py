"""The API key admin: the raw key is shown once at creation, only its hash is stored; revocation needs its
permission and takes effect at once."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from billing.api.models import APIKey, hash_key
from tests.api.conftest import client_for, make_key
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/api/apikey/add/"
LIST_URL = "/admin/api/apikey/"


def admin_client(*, superuser: bool = True, perms: tuple[str, ...] = ()) -> tuple[Client, object]:
    user = UserFactory(is_superuser=superuser)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="api", codename=codename))
    client = Client()
    client.force_login(user)
    return client, user


def test_creating_a_key_shows_it_once_and_stores_only_its_hash():
    client, user = admin_client()
    response = client.post(ADD_URL, {"name": "CRM sync", "scope": "write"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    match = re.search(r"acc_[0-9a-f]{8}_[A-Za-z0-9_\-]{40,}", page)
    assert match, page
    raw = match.group(0)
    api_key = APIKey.objects.get(name="CRM sync")
    assert api_key.hashed_key == hash_key(raw) and api_key.created_by == user
    assert raw.startswith(f"acc_{api_key.prefix}_")
    # Nothing stored anywhere holds the raw key.
    assert raw not in str(list(APIKey.objects.values()))
    # It works, and is never shown again: not on the change page, not in the list.
    assert client_for(type("K", (), {"raw": raw})).get("/api/v1/products").status_code == 200
    for url in (LIST_URL, f"{LIST_URL}{api_key.pk}/change/"):
        shown = client.get(url)
        assert shown.status_code == 200 and raw not in shown.content.decode()
        assert api_key.prefix in shown.content.decode()


def test_revoke_action_needs_its_permission():
    key = make_key(name="old")
    other = make_key(name="kept")
    client, _ = admin_client(superuser=False, perms=("view_apikey", "change_apikey"))
    response = client.post(LIST_URL, {"action": "revoke", "_selected_action": [key.model.pk]})
    key.model.refresh_from_db()
    assert key.model.revoked_at is None  # the action is not offered without the permission
    assert response.status_code in (200, 302)

    client, _ = admin_client(superuser=False, perms=("view_apikey", "change_apikey", "revoke_apikey"))
    response = client.post(LIST_URL, {"action": "revoke", "_selected_action": [key.model.pk]})
    assert response.status_code == 302
    key.model.refresh_from_db()
    other.model.refresh_from_db()
    assert key.model.revoked_at is not None and other.model.revoked_at is None
    assert client_for(key).get("/api/v1/products").status_code == 401
    assert client_for(other).get("/api/v1/products").status_code == 200


def test_keys_cannot_be_deleted_and_revoked_keys_are_read_only():
    key = make_key(name="old")
    client, _ = admin_client()
    assert client.get(f"{LIST_URL}{key.model.pk}/delete/").status_code == 403
    client.post(LIST_URL, {"action": "revoke", "_selected_action": [key.model.pk]})
    client.post(f"{LIST_URL}{key.model.pk}/change/", {"name": "renamed", "scope": "write"})
    key.model.refresh_from_db()
    assert key.model.name == "old" and key.model.revoked_at is not None
