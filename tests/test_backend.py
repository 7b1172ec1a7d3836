"""Backend resolution: names, the environment override, the CUDA error and the one-time fallback notice."""

import warnings

import pytest

from bioreps import backend


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(backend, "cuda_status", lambda: (False, "no CUDA-capable GPU or driver was found"))
    monkeypatch.setattr(backend, "_fallback_announced", False)
    monkeypatch.delenv("BIOREPS_BACKEND", raising=False)


@pytest.fixture
def with_cuda(monkeypatch):
    monkeypatch.setattr(backend, "cuda_status", lambda: (True, "GPU: test"))
    monkeypatch.delenv("BIOREPS_BACKEND", raising=False)


def test_cpu_always_resolves(no_cuda):
    assert backend.resolve("cpu") == "cpu"
    assert backend.resolve("CPU") == "cpu"


def test_unknown_backend_is_named(no_cuda):
    with pytest.raises(backend.BackendError, match="'tpu'"):
        backend.resolve("tpu")
    with pytest.raises(backend.BackendError, match="unknown backend 3"):
        backend.resolve(3)


def test_explicit_cuda_without_gpu_raises_with_reason(no_cuda):
    with pytest.raises(backend.BackendError, match="no CUDA-capable GPU"):
        backend.resolve("cuda")


def test_auto_falls_back_and_says_so_once(no_cuda):
    with pytest.warns(backend.BackendWarning, match="using the CPU"):
        assert backend.resolve("auto") == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.resolve(None) == "cpu"  # second time: silent


def test_auto_prefers_cuda_when_usable(with_cuda):
    assert backend.resolve("auto") == "cuda"
    assert backend.resolve("cuda") == "cuda"


def test_environment_overrides_auto_only(no_cuda, monkeypatch):
    monkeypatch.setenv("BIOREPS_BACKEND", "cpu")
    assert backend.resolve("auto") == "cpu"
    monkeypatch.setenv("BIOREPS_BACKEND", "cuda")
    with pytest.raises(backend.BackendError, match=r"\$BIOREPS_BACKEND"):
        backend.resolve("auto")
    assert backend.resolve("cpu") == "cpu"  # an explicit argument wins
    monkeypatch.setenv("BIOREPS_BACKEND", "gpu")
    with pytest.raises(backend.BackendError, match="'gpu' is not a backend"):
        backend.resolve("auto")


def test_real_cuda_status_answers_without_raising():
    backend.cuda_status.cache_clear()
    usable, reason = backend.cuda_status()
    assert isinstance(usable, bool) and reason
