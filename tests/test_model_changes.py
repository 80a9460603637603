"""The explainer follows the model it was compiled from: after any change of the weights, buffers, device or
dtype its answer equals a fresh ``lrpc.compile``'s; a model in training mode and inputs of another dtype are
refused with an LrpcError; one explainer called from several threads gives the serial answers."""
import threading

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import lrpc
from lrpc import LrpcError
from lrpc.fingerprint import Fingerprint

from conftest import randomize_batchnorm


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(SmallResNet()).eval()


X = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
TARGET = torch.tensor([0, 3, 5])


def _assert_fresh(explainer, model, preset, x=X):
    """The explainer's answer equals that of a compile of the model as it is now."""
    got = explainer(x, TARGET)
    want = lrpc.compile(model, preset, example_input=x[:1])(x, TARGET)
    assert_close(got.logits, want.logits)
    assert_close(got.relevance, want.relevance)
    assert_close(got.layer_sum_matrix, want.layer_sum_matrix)
    return got


def _differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) > 1e-3 * float(b.abs().max())


def _add_in_place(model):
    with torch.no_grad():
        model.conv1.weight.add_(0.2 * torch.randn_like(model.conv1.weight))


def _load_state_dict(model):
    model.load_state_dict(_model(seed=7).state_dict())


def _optimizer_step(model):
    """One ordinary fine-tuning step (train mode, so BatchNorm's running statistics move too), then eval()."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    nn.functional.cross_entropy(model(X), TARGET).backward()
    optimizer.step()
    model.eval()


def _replace_parameter(model):
    model.fc.weight = nn.Parameter(torch.randn_like(model.fc.weight))


CHANGES = {"add_": _add_in_place, "load_state_dict": _load_state_dict, "optimizer step": _optimizer_step,
           "new Parameter": _replace_parameter}


@pytest.mark.parametrize("preset", ["default", "epsilon-plus"])   # epsilon-plus folds BatchNorm into constants
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_model_is_explained_as_a_fresh_compile_would(change, preset):
    model = _model()
    explainer = lrpc.compile(model, preset, example_input=X[:1])
    before = explainer(X, TARGET).relevance
    CHANGES[change](model)
    after = _assert_fresh(explainer, model, preset)
    assert _differs(after.relevance, before)   # the change matters, so a stale answer would have failed
    assert explainer.rebuilds == 1
    _assert_fresh(explainer, model, preset)
    assert explainer.rebuilds == 1             # unchanged since: no second rebuild


def test_calls_alone_never_rebuild():
    """The generated module's own calls (under inference_mode) bump no version counter."""
    model = _model()
    explainer = lrpc.compile(model, "default", example_input=X[:1])
    state = Fingerprint.of(model)
    for target in (None, 2, TARGET):
        explainer(X, target)
    explainer.explain_targets(X, [0, 1])
    assert explainer.rebuilds == 0 and Fingerprint.of(model) == state


def test_explain_targets_follows_the_model_too():
    model = _model()
    explainer = lrpc.compile(model, "default", example_input=X[:1])
    explainer.explain_targets(X, [1, 2])
    _add_in_place(model)
    got = explainer.explain_targets(X, [1, 2])
    want = lrpc.compile(model, "default", example_input=X[:1]).explain_targets(X, [1, 2])
    assert_close(got.relevance, want.relevance)


def test_training_mode_after_compile_is_refused_naming_the_modules():
    model = _model()
    explainer = lrpc.compile(model, "default", example_input=X[:1])
    model.bn1.train()
    with pytest.raises(LrpcError, match=r"^bn1 in training mode.*model\.eval\(\)"):
        explainer(X)
    model.train()
    with pytest.raises(LrpcError, match=r"SmallResNet, stem, bn0, conv1, bn1 \.\.\. in training mode"):
        explainer.explain_targets(X, [0])
    model.eval()
    _assert_fresh(explainer, model, "default")


def test_a_model_cast_to_another_dtype_is_followed():
    model = _model()
    explainer = lrpc.compile(model, "default", example_input=X[:1])
    model.double()
    x = X.double()
    _assert_fresh(explainer, model, "default", x)
    assert explainer.dtype == torch.float64
    with pytest.raises(LrpcError, match="input is torch.float32, the explainer was compiled for torch.float64"):
        explainer(X)
    explainer.to(torch.float32)   # through the explainer: the model is cast, and the explainer follows
    assert model.fc.weight.dtype == torch.float32 and explainer.dtype == torch.float32
    _assert_fresh(explainer, model, "default")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_an_input_of_another_dtype_is_refused(dtype):
    explainer = lrpc.compile(_model(), "default", example_input=X[:1])
    with pytest.raises(LrpcError, match=f"input is {dtype}, the explainer was compiled for torch.float32"):
        explainer(X.to(dtype))
    with pytest.raises(LrpcError, match=f"input is {dtype}"):
        explainer.explain_targets(X.to(dtype), [0])


def test_a_torch_compiled_explainer_compiles_its_rebuilt_module_with_the_same_arguments():
    model = _model()
    explainer = lrpc.compile(model, "otsuki2024", example_input=X[:1]).compile(backend="eager", dynamic=False)
    explainer(X, TARGET)
    _replace_parameter(model)
    _assert_fresh(explainer, model, "otsuki2024")
    run = explainer._build.run
    assert run is not explainer.module and run._orig_mod is explainer.module   # torch.compile's wrapper of it
    assert explainer._compile_kwargs == {"backend": "eager", "dynamic": False}


def test_writes_through_data_need_refresh():
    """``p.data`` has a version counter of its own: such writes are invisible until ``refresh()``."""
    model = _model()
    explainer = lrpc.compile(model, "default", example_input=X[:1])
    model.conv1.weight.data.mul_(-1.0)
    explainer(X)
    assert explainer.rebuilds == 0
    explainer.refresh()
    _assert_fresh(explainer, model, "default")


def test_fingerprint_of_inference_tensors():
    """Parameters made under inference_mode have no version counter; the fingerprint still sees new ones."""
    with torch.inference_mode():
        model = nn.Linear(3, 2)
    state = Fingerprint.of(model)
    assert state == Fingerprint.of(model)
    with torch.inference_mode():
        model.weight = nn.Parameter(torch.zeros(2, 3))
    assert state != Fingerprint.of(model)


def test_one_explainer_in_several_threads_gives_the_serial_answers():
    model = _model()
    explainer = lrpc.compile(model, "default", example_input=X[:1])
    inputs = [torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    _add_in_place(model)   # the first calls find a changed model: the threads race to rebuild
    fresh = lrpc.compile(model, "default", example_input=X[:1])
    serial = [fresh(x).relevance for x in inputs]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(k):
        try:
            for _ in range(2):
                results[k] = explainer(inputs[k]).relevance
        except BaseException as exc:   # reported below: an exception in a thread would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert explainer.rebuilds == 1
    for k, want in enumerate(serial):
        assert_close(results[k], want)
