"""Open a bioreps file with xarray as a user would, failing on unnamed dimensions.

Import from a test module as ``from _xarray import open_named_tree`` (pytest puts ``tests/`` on
the path).
"""

import contextlib
import warnings

import pytest


@contextlib.contextmanager
def open_named_tree(path):
    """``xarray.open_datatree(path, engine="h5netcdf")``, asserting that opening warned of no
    ``phony_dim`` and that no node has one (every axis is a named HDF5 dimension scale); the tree
    is closed afterwards. Skips without xarray or h5netcdf."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree = xr.open_datatree(path, engine="h5netcdf")
    try:
        assert not [str(w.message) for w in caught if "phony" in str(w.message)]
        for node in tree.subtree:
            assert not [d for d in node.dims if str(d).startswith("phony_dim")], node.path
        yield tree
    finally:
        tree.close()
