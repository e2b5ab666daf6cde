"""Config: unknown keys and wrong types are rejected with the YAML path of the field."""

from __future__ import annotations

import pytest

from edgetune.config import load_sweep_config
from edgetune.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "sweep.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_its_path(tmp_path):
    p = write(tmp_path, "name: x\nmodel: {source: builtin, name: det-s}\ndata: {source: builtin, name: shapes, val_imgs: 3}\n")
    with pytest.raises(ConfigError, match=r"`data.val_imgs`: unknown key"):
        load_sweep_config(p)


def test_wrong_type_names_its_path(tmp_path):
    p = write(tmp_path, "model: {source: builtin, name: det-s}\ndata: {source: builtin, name: shapes, val_images: lots}\n")
    with pytest.raises(ConfigError, match=r"`data.val_images`"):
        load_sweep_config(p)


def test_missing_field_for_source(tmp_path):
    p = write(tmp_path, "model: {source: python}\ndata: {source: builtin, name: shapes}\n")
    with pytest.raises(ConfigError, match=r"model source 'python' needs factory, input_size, task"):
        load_sweep_config(p)


def test_broken_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep_config(write(tmp_path, "model: {source: builtin\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep_config(tmp_path / "nope.yaml")
