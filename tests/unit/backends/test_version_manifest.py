"""A model version's lvkit.json has its own names, apart from a dataset's Ground Truth manifest."""

from __future__ import annotations

import json

import lvkit.backends as backends
import lvkit.datasets


def test_version_manifest_round_trip(tmp_path):
    backends.write_version_manifest(tmp_path, {"backend": "fake", "options": {"a": 1}})
    assert json.loads((tmp_path / backends.MANIFEST).read_text()) == {"backend": "fake", "options": {"a": 1}}
    assert backends.read_version_manifest(tmp_path) == {"backend": "fake", "options": {"a": 1}}


def test_one_write_manifest_name_per_kind_of_manifest():
    assert {"read_version_manifest", "write_version_manifest"} <= set(backends.__all__)
    assert not {"read_manifest", "write_manifest"} & set(backends.__all__)
    assert lvkit.datasets.write_manifest is not backends.write_version_manifest
    assert not hasattr(backends, "read_manifest") and not hasattr(backends, "write_manifest")
