"""Warm starts: a second process that compiles the same model under the same rules finds torch's on-disk caches
(inductor's FX graph cache, the AOT autograd cache) in the directory ``explainer.compile()`` chose, and a model
with other weights still gets its own answer from them (the key holds the graph, not the weight values)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lrpc
from lrpc.compile_cache import CACHE_DIR_VARIABLE, default_cache_dir, use_cache_dir

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None,
                                    reason="inductor on CPU needs a C++ compiler")

# one process: a small CNN with the given weight seed, compiled with inductor (freezing, as speed.py does),
# explained once; prints the cache counters and how far the compiled relevance is from the eager one
CHILD = """
import json, sys, torch
from torch import nn
import lrpc
from lrpc.compile_cache import cache_hits
torch.set_num_threads(1)
torch.manual_seed(int(sys.argv[1]))
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
eager = lrpc.compile(model, "otsuki2024", example_input=x[:1])(x).relevance
compiled = lrpc.compile(model, "otsuki2024", example_input=x[:1]).compile(options={"freezing": True})(x).relevance
print(json.dumps({**cache_hits(), "difference": float((compiled - eager).abs().max() / eager.abs().max())}))
"""


def _run(seed: int, cache: Path) -> dict:
    env = {**os.environ, CACHE_DIR_VARIABLE: str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(lrpc.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", CHILD, str(seed)], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_compiler
@pytest.mark.slow
def test_second_process_hits_the_cache_and_other_weights_get_their_own_answer(tmp_path):
    cold = _run(0, tmp_path)
    assert cold["fx_graph_misses"] >= 1 and cold["fx_graph_hits"] == 0 and cold["autograd_hits"] == 0
    assert cold["difference"] < 1e-5
    warm = _run(1, tmp_path)   # other weights, same graph
    assert warm["fx_graph_hits"] + warm["autograd_hits"] >= 1 and warm["fx_graph_misses"] == 0
    assert warm["difference"] < 1e-5


def test_cache_dir_honours_the_variable_else_defaults_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "mine"))
    assert use_cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv(CACHE_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert use_cache_dir() == str(tmp_path / "xdg" / "lrpc" / "torch-compile") == str(default_cache_dir())
    assert (tmp_path / "xdg" / "lrpc" / "torch-compile").is_dir()
    assert os.environ[CACHE_DIR_VARIABLE] == str(default_cache_dir())   # torch reads it at its first compile


def test_dataset_ranks_on_one_machine_compile_in_turn():
    """explain-dataset --compile: each machine's first rank compiles (filling the cache) before the others start."""
    from lrpc.dataset_jobs.engine import _compile_in_turn
    events = []

    class Ranks:
        world_size = 2

        def __init__(self, local_rank):
            self.local_rank = local_rank

        def barrier(self):
            events.append(("barrier", self.local_rank))

    class Unit:
        def __init__(self, local_rank):
            self.local_rank = local_rank

        def warm_up(self):
            events.append(("compile", self.local_rank))

    for local_rank in (1, 0):   # the order the processes run in does not matter: the barrier orders them
        _compile_in_turn(Unit(local_rank), Ranks(local_rank))
    assert events.index(("compile", 0)) < events.index(("barrier", 0))
    assert events.index(("barrier", 1)) < events.index(("compile", 1))
