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


BASE = "model: {source: builtin, name: det-s}\ndata: {source: builtin, name: shapes}\n"


@pytest.mark.parametrize(("text", "field", "registered"), [
    ("model: {source: timm, path: y.pt}\ndata: {source: builtin, name: shapes}\n", "model.source",
     "edgetune.models:available_sources"),
    ("model: {source: builtin, name: det-s}\ndata: {source: voc, path: x}\n", "data.source",
     "edgetune.data:available_data_sources"),
    (BASE + "search: {sampler: cmaes}\n", "search.sampler", "edgetune.search.samplers:SAMPLERS"),
    (BASE + "search: {backend: dask}\n", "search.backend", "edgetune.search.backends:available_backends"),
    (BASE + "space: {sparsity: {importance: hessian}}\n", "space.sparsity.importance", "edgetune.compress:IMPORTANCES"),
    (BASE + "devices: [{name: a, url: 'http://127.0.0.1:1', kind: rpi9}]\n", "devices.0.kind",
     "edgetune.spaces:DEVICE_KINDS"),
])
def test_names_are_checked_against_their_registry(tmp_path, text, field, registered):
    """The error names the field and lists what is registered (read from the registry, not a copy)."""
    import importlib

    mod, _, attr = registered.partition(":")
    names = getattr(importlib.import_module(mod), attr)
    names = sorted(names() if callable(names) else names)
    with pytest.raises(ConfigError) as err:
        load_sweep_config(write(tmp_path, text))
    msg = str(err.value)
    assert f"`{field}`" in msg and all(n in msg for n in names), msg


def test_a_newly_registered_source_is_accepted_with_its_required_fields(tmp_path):
    from edgetune.models import ModelSource, register_source
    from edgetune.models._registry import _SOURCES

    @register_source("test-only")
    class _TestSource(ModelSource):
        requires = ("path",)

        def load(self, spec, *, class_names, category_ids):
            raise NotImplementedError

    try:
        cfg = load_sweep_config(write(tmp_path, "model: {source: test-only, path: m.bin}\ndata: {source: builtin, "
                                                "name: shapes}\n"))
        assert cfg.model.source == "test-only"
        with pytest.raises(ConfigError, match="model source 'test-only' needs path"):
            load_sweep_config(write(tmp_path, "model: {source: test-only}\ndata: {source: builtin, name: shapes}\n"))
    finally:
        _SOURCES.pop("test-only")


def test_taylor_scoring_without_recovery_is_a_config_error(tmp_path):
    text = BASE + "space: {sparsity: {kind: channel, ratios: [0, 0.25], importance: taylor}}\nrecovery: {steps: 0}\n"
    with pytest.raises(ConfigError, match=r"importance: taylor.*recovery.steps"):
        load_sweep_config(write(tmp_path, text))
    load_sweep_config(write(tmp_path, text.replace("taylor", "magnitude")))  # the fix it names works


def test_a_misspelt_key_gets_the_closest_key_of_its_section(tmp_path):
    text = ("model: {source: builtin, name: det-s}\ndata: {source: builtin, name: shapes}\nsearch: {trails: 3}\n"
            "devices: [{name: a, url: 'http://127.0.0.1:1', knd: rpi4}]\nspace: {sparsity: {ratio: [0.1]}}\n")
    with pytest.raises(ConfigError) as err:
        load_sweep_config(write(tmp_path, text))
    msg = str(err.value)
    assert "`search.trails`: unknown key (remove it or check its spelling; did you mean trials" in msg  # closest first
    assert "`devices.0.knd`: unknown key" in msg and "did you mean kind?" in msg
    assert "`space.sparsity.ratio`: unknown key" in msg and "did you mean ratios?" in msg


@pytest.mark.parametrize(("section", "value", "fix"), [
    ("search: {storage: edgetune.db}", "edgetune.db", "sqlite:///edgetune.db"),
    ("tracking: {uri: mlflow.db}", "mlflow.db", "sqlite:///mlflow.db"),
])
def test_storage_and_tracking_must_be_urls(tmp_path, section, value, fix):
    with pytest.raises(ConfigError, match=rf"{value}.*write {fix}"):
        load_sweep_config(write(tmp_path, BASE + section + "\n"))


def test_missing_paths_fail_before_any_device_is_contacted(tmp_path, monkeypatch):
    """Every wrong path is named at once, with its field, before the (unreachable) agent is asked anything."""
    from edgetune.search.wiring import prepare_sweep

    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, "model: {source: python, factory: 'm:f', weights: w.pt, task: classify, input_size: 64}\n"
                        "data: {source: imagefolder, path: no/such/folder}\n"
                        "devices: [{name: d, url: 'http://127.0.0.1:9'}]\n"
                        "objectives: [{metric: top1, device: d}]\n")
    with pytest.raises(ConfigError) as err:
        prepare_sweep(p, workdir=tmp_path / "w")
    msg = str(err.value)
    assert "`model.weights`: file 'w.pt' does not exist" in msg and "`data.path`: path 'no/such/folder'" in msg
    assert "127.0.0.1:9" not in msg and "unreachable" not in msg


def test_bare_on_and_off_are_the_words_not_booleans(tmp_path):
    """YAML 1.1 reads ``on`` / ``off`` as true / false; ``search.overlap`` and ``search.screen`` take them as written."""
    base = "name: x\nmodel: {source: builtin, name: det-s}\ndata: {source: builtin, name: shapes}\n"
    cfg = load_sweep_config(write(tmp_path, base + "search: {overlap: on, screen: off}\n"))
    assert (cfg.search.overlap, cfg.search.screen) == ("on", "off")
    with pytest.raises(ConfigError, match=r"`search.screen`"):
        load_sweep_config(write(tmp_path, base + "search: {screen: sometimes}\n"))
