"""Renamed names keep working for one release: each old name gives the new object and warns once, naming the new
name; the moved classes import from their old modules; the library itself uses no deprecated name."""
import importlib
import sys
import warnings

import pytest

import lrpc
from lrpc.rules import Epsilon, Zero, ZPlus


def _deprecations(action):
    """(action's result, the DeprecationWarnings it raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    return result, [w for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.parametrize("rule, mode", [(ZPlus, "add"), (Epsilon, "rms"), (Zero, "sign")])
def test_a_rule_takes_stabilizer_as_stabilizer_mode_and_warns_once(rule, mode):
    old, warned = _deprecations(lambda: rule(epsilon=1e-5, stabilizer=mode))
    assert old == rule(epsilon=1e-5, stabilizer_mode=mode) and old.stabilizer_mode == mode
    assert len(warned) == 1 and "stabilizer_mode" in str(warned[0].message)
    assert warned[0].filename == __file__   # points at the caller, not at lrpc


def test_reading_a_rules_stabilizer_gives_its_mode_and_warns_once():
    mode, warned = _deprecations(lambda: ZPlus(stabilizer_mode="add").stabilizer)
    assert mode == "add"
    assert len(warned) == 1 and "stabilizer_mode" in str(warned[0].message)


def test_a_rule_given_both_names_is_refused():
    with pytest.raises(TypeError, match="stabilizer_mode= only"):
        ZPlus(stabilizer="add", stabilizer_mode="none")


def test_the_presets_use_no_deprecated_name():
    for name in lrpc.presets():
        options = {"low": -1.0, "high": 1.0} if name == "epsilon-gamma-box" else {}
        _, warned = _deprecations(lambda: lrpc.preset(name, **options))
        assert not warned, (name, [str(w.message) for w in warned])


def test_import_lrpc_dataset_is_the_dataset_jobs_engine_and_warns_once(monkeypatch):
    for key in [k for k in sys.modules if k == "lrpc.dataset" or k.startswith("lrpc.dataset.")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.delattr(lrpc, "dataset", raising=False)
    old, warned = _deprecations(lambda: importlib.import_module("lrpc.dataset"))
    assert len(warned) == 1 and "lrpc.dataset_jobs" in str(warned[0].message)
    jobs = importlib.import_module("lrpc.dataset_jobs")
    assert old.explain_dataset is jobs.explain_dataset is lrpc.explain_dataset and old.decode is jobs.decode
    _, again = _deprecations(lambda: importlib.import_module("lrpc.dataset.store"))
    assert again == []
    from lrpc.dataset.engine import explain_dataset   # a submodule under its old path: the same module
    assert explain_dataset is jobs.explain_dataset
    assert sys.modules["lrpc.dataset.store"] is importlib.import_module("lrpc.dataset_jobs.store")


def test_moved_classes_import_from_their_old_modules():
    from lrpc.explanation import Explanation
    from lrpc.presets import LayerContext, Rules
    from lrpc.rule_set import LayerContext as MovedContext, Rules as MovedRules
    from lrpc.runtime import Explainer, Explanation as Reexported
    assert Rules is MovedRules is lrpc.Rules and LayerContext is MovedContext is lrpc.LayerContext
    assert Reexported is Explanation is lrpc.Explanation and Explainer is lrpc.Explainer
