"""The public surface is exactly ``locksmith.__all__``: sorted, importable, and complete."""

from __future__ import annotations

import pkgutil

import locksmith


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


def test_all_is_sorted_and_unique() -> None:
    assert len(set(locksmith.__all__)) == len(locksmith.__all__)
    assert locksmith.__all__ == sorted(locksmith.__all__, key=_isort_key)


def test_every_exported_name_exists() -> None:
    missing = [name for name in locksmith.__all__ if not hasattr(locksmith, name)]
    assert missing == []


def test_no_public_name_is_left_out() -> None:
    for name in locksmith.__all__:
        getattr(locksmith, name)  # load the lazy ones
    public = {
        name
        for name, value in vars(locksmith).items()
        if not name.startswith("_") and not isinstance(value, type(locksmith))
    }
    assert public - set(locksmith.__all__) == set()


def test_lazy_names_are_exactly_the_exported_ones() -> None:
    lazy = set(locksmith._LAZY)
    eager = {n for n in locksmith.__all__ if n not in lazy}
    assert lazy <= set(locksmith.__all__)
    assert all(issubclass(getattr(locksmith, n), Exception) for n in eager)
    assert sorted(dir(locksmith)) == dir(locksmith) and set(locksmith.__all__) <= set(
        dir(locksmith)
    )


def test_exported_objects_claim_a_public_home() -> None:
    """Classes and functions are defined in private modules and re-exported here."""
    for name in locksmith.__all__:
        obj = getattr(locksmith, name)
        module = getattr(obj, "__module__", None)
        if module is None or isinstance(obj, int):
            continue
        assert module.startswith("locksmith"), (name, module)


def test_only_private_modules_besides_the_documented_ones() -> None:
    public_modules = {m.name for m in pkgutil.iter_modules(locksmith.__path__)}
    assert {m for m in public_modules if not m.startswith("_")} <= {
        "aio",
        "demo",
        "prometheus",
        "testing",
    }


def test_the_async_surface_is_sorted_complete_and_importable() -> None:
    from locksmith import aio

    assert aio.__all__ == sorted(aio.__all__, key=_isort_key)
    assert all(hasattr(aio, name) for name in aio.__all__)
    public = {
        n for n, v in vars(aio).items() if not n.startswith("_") and not isinstance(v, type(aio))
    }
    assert public - set(aio.__all__) == set()
