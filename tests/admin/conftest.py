import pytest

from tests.admin.support import Book, build_book


@pytest.fixture
def book(db) -> Book:
    return build_book()
