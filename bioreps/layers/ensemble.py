"""Many Diehl & Cook networks at once: :class:`SpikingEnsemble` trains M independent
:class:`~bioreps.layers.SpikingWTA` networks (seeds and/or parameter sets) on the same images,
in parallel on the CPU cores.

Member i is exactly ``SpikingWTA(n_neurons, params=params[i], random_state=seeds[i],
**options)`` fitted alone on the same images: the ensemble builds those layers and runs their own
``fit``/``transform`` on a pool of threads. The spiking kernels release the GIL (Numba
``nogil``) and keep all their state per network, so M networks use min(M, cores) cores and
nothing is shared but the read-only images; results do not depend on the number of threads.
Each member saves, exports and analyses like any other layer (``members_[i]``).

Files: :meth:`SpikingEnsemble.export` writes one ordinary bioreps HDF5 file per member into a
folder (``member_000.h5``, ...) plus ``ensemble.json`` naming each file's seed and parameters:
every tool that reads one network's file (h5py, ``bioreps analyze``, studies) reads a member
unchanged. :meth:`SpikingEnsemble.fit` with ``checkpoint=FOLDER`` checkpoints each member to
its own file there, and ``resume=True`` continues each from it.

On the GPU (``backend="cuda"``) the members train together: each step of their training is one
launch of the many-network kernel with one block per member
(:func:`bioreps.kernels.cuda.lif.fit_samples_many`), so M networks use M of the GPU's
multiprocessors where one network uses one. Each block runs the very device code of the solo
network's kernel, so member i is still exactly the network trained alone on that backend. The
members' training loops (:meth:`SpikingWTA._fit_plan`) run in lockstep in one thread; members
resumed from checkpoints of different progress catch up one group at a time (the ones furthest
behind first) until they are aligned.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._validation import check_int
from .spiking import DiehlCookParams, SpikingWTA, _present_many

__all__ = ["SpikingEnsemble", "param_grid"]


def param_grid(base=None, **values) -> list:
    """Every combination of ``values`` (field name -> list of values) over ``base`` (a
    :class:`DiehlCookParams`, default the paper's), as a list of parameter sets in row-major
    order (the last field varies fastest)."""
    base = DiehlCookParams() if base is None else base
    if not isinstance(base, DiehlCookParams):
        raise TypeError(f"base must be a DiehlCookParams, got {type(base).__name__}")
    names = {f.name for f in dataclasses.fields(DiehlCookParams)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown DiehlCookParams fields: {unknown}")
    for k, v in values.items():
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or len(list(v)) == 0:
            raise ValueError(f"{k} must be a non-empty list of values, got {v!r}")
    keys = list(values)
    return [dataclasses.replace(base, **dict(zip(keys, combo))) for combo in itertools.product(*values.values())]


class SpikingEnsemble:
    """M independent Diehl & Cook networks trained on the same images.

    Parameters
    ----------
    n_neurons : int
        Excitatory neurons of every member (one N for the whole ensemble).
    seeds : sequence of int
        One seed per member (``random_state`` of each). With a list of ``params`` of length M and
        a single seed, every member gets that seed.
    params : DiehlCookParams or sequence of DiehlCookParams
        One set for all members, or one per member (see :func:`param_grid`).
    n_jobs : int or None
        Threads that train members at once (None: the number of cores).
    **options
        Any other :class:`SpikingWTA` argument (``dt_ms``, ``encoding``, ``backend``, ...), the
        same for every member. ``progress`` shows one bar per member.

    Attributes
    ----------
    members_ : list of SpikingWTA
    """

    def __init__(self, n_neurons=100, seeds=(0,), params=None, n_jobs=None, **options):
        if "random_state" in options:
            raise TypeError("SpikingEnsemble takes seeds=(...), one per member, not random_state")
        self.n_neurons = n_neurons
        self.seeds = seeds
        self.params = DiehlCookParams() if params is None else params
        self.n_jobs = n_jobs
        self.options = dict(options)

    @classmethod
    def of(cls, layers, n_jobs=None):
        """The ensemble of unfitted :class:`SpikingWTA` layers that differ only by
        ``random_state`` and ``params`` (every other argument the same): member i trains as
        ``layers[i]`` would alone. ``layers`` themselves are not modified."""
        layers = list(layers)
        if not layers:
            raise ValueError("an ensemble needs at least one member: give at least one layer")
        for i, layer in enumerate(layers):
            if type(layer) is not SpikingWTA:
                raise TypeError(f"layers[{i}] is a {type(layer).__name__}, not a SpikingWTA")
        options = [{k: v for k, v in layer.get_params().items() if k not in ("random_state", "params")}
                   for layer in layers]
        for i, o in enumerate(options[1:], 1):
            diff = sorted(k for k in o if o[k] != options[0][k])
            if diff:
                raise ValueError(f"layers[{i}] differs from layers[0] in {diff}: members may differ only by "
                                 "random_state and params")
        if any(layer.random_state is None for layer in layers):
            raise ValueError("every layer of an ensemble needs an int random_state (its seed)")
        opts = dict(options[0])
        n_neurons = opts.pop("n_neurons")
        return cls(n_neurons=n_neurons, seeds=[layer.random_state for layer in layers],
                   params=[layer.params for layer in layers], n_jobs=n_jobs, **opts)

    # ------------------------------------------------------------------ members
    def _plan(self):
        seeds = list(self.seeds) if not isinstance(self.seeds, (int, np.integer)) else [int(self.seeds)]
        params = [self.params] if isinstance(self.params, DiehlCookParams) else list(self.params)
        if not seeds or not params:
            raise ValueError("an ensemble needs at least one member: give seeds=(...) and/or params=[...]")
        for p in params:
            if not isinstance(p, DiehlCookParams):
                raise TypeError(f"params must be DiehlCookParams (or a list of them), got {type(p).__name__}")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
                raise ValueError(f"seeds must be non-negative ints, got {s!r}")
        if len(seeds) == 1 and len(params) > 1:
            seeds = seeds * len(params)
        if len(params) == 1 and len(seeds) > 1:
            params = params * len(seeds)
        if len(seeds) != len(params):
            raise ValueError(f"{len(seeds)} seeds and {len(params)} parameter sets: give one of each per member, "
                             "or a single one of either")
        check_int(self.n_neurons, "n_neurons", 1)
        return [SpikingWTA(n_neurons=self.n_neurons, params=p, random_state=int(s), **self.options)
                for s, p in zip(seeds, params)]

    @property
    def n_members(self):
        return len(self.members_) if hasattr(self, "members_") else len(self._plan())

    def _check_fitted(self):
        if not getattr(self, "members_", None) or not all(m._is_fitted() for m in self.members_):
            raise RuntimeError("this SpikingEnsemble is not fitted yet; call fit(X) first")

    def _map(self, fn, items):
        jobs = self.n_jobs if self.n_jobs is not None else (os.cpu_count() or 1)
        jobs = max(1, min(check_int(jobs, "n_jobs", 1), len(items)))
        if jobs == 1:
            return [fn(i, it) for i, it in enumerate(items)]
        with ThreadPoolExecutor(jobs, thread_name_prefix="bioreps-ensemble") as pool:
            return list(pool.map(lambda a: fn(*a), enumerate(items)))

    # ------------------------------------------------------------------ learning and inference
    def fit(self, X, epochs=1, *, checkpoint=None, checkpoint_every=None, resume=False):
        """Train every member on ``X`` (the same rows, in order, ``epochs`` times), members in
        parallel. ``checkpoint``: a folder; member i checkpoints to ``member_{i:03d}.h5`` there
        (``checkpoint_every`` samples, default every epoch). ``resume=True`` continues each member
        from its checkpoint file when it exists (else it starts afresh)."""
        members = self._plan()
        X = np.asarray(X)
        folder = None if checkpoint is None else Path(checkpoint)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        if resume and folder is not None:
            for i in range(len(members)):
                path = folder / f"member_{i:03d}.h5"
                if path.exists():
                    members[i] = SpikingWTA.load(path, backend=self.options.get("backend"))

        def kwargs(i, m):
            kw = dict(resume=bool(resume) and m._is_fitted())
            if folder is not None:
                kw.update(checkpoint=folder / f"member_{i:03d}.h5", checkpoint_every=checkpoint_every)
            return kw

        if self._on_gpu(members):
            self._lockstep(members, [m._fit_plan(X, epochs, **kwargs(i, m)) for i, m in enumerate(members)])
            self.members_ = members
            return self
        self.members_ = self._map(lambda i, m: m.fit(X, epochs=epochs, **kwargs(i, m)), members)
        return self

    def partial_fit(self, X):
        """Present the rows of ``X`` once to every member, continuing each one's learning
        (:meth:`SpikingWTA.partial_fit`); the first call builds the members."""
        members = self.members_ if getattr(self, "members_", None) else self._plan()
        X = np.asarray(X)
        if self._on_gpu(members):
            self._lockstep(members, [m._partial_plan(X) for m in members])
        else:
            self._map(lambda i, m: m.partial_fit(X), members)
        self.members_ = members
        return self

    def _on_gpu(self, members):
        return members[0]._validate_params()[0] == "cuda"

    def _lockstep(self, members, plans):
        """Drive the members' plans together: each round presents, in one launch, the requests of
        every member at the lowest sample index (all of them once the members are aligned)."""
        for m in members:  # every member's checks, before anything trains
            m._validate_params()
        pending = {}
        for i, plan in enumerate(plans):
            try:
                pending[i] = next(plan)
            except StopIteration:
                pass
        while pending:
            first = min(r["first"] for r in pending.values())
            group = [i for i, r in pending.items() if r["first"] == first]
            sizes = {pending[i]["X"].shape[0] for i in group}
            if len(sizes) > 1:  # different checkpoint boundaries: the shortest block first
                size = min(sizes)
                group = [i for i in group if pending[i]["X"].shape[0] == size]
            retries = _present_many([members[i] for i in group], [pending[i] for i in group],
                                    progress=self.options.get("progress"))
            for i, r in zip(group, retries):
                try:
                    pending[i] = plans[i].send(r)
                except StopIteration:
                    del pending[i]

    def transform(self, X, **kwargs):
        """Spike counts of every member, float32 (M, n, n_neurons) (``kwargs`` as
        :meth:`SpikingWTA.transform`). On the CPU members run in parallel threads; on the GPU one
        after another, each launch with one block per row (up to the grid limit), which fills
        the GPU once a call has more rows than it has multiprocessors."""
        self._check_fitted()
        X = np.asarray(X)
        if self._on_gpu(self.members_):  # each member's launch already spreads its rows over the GPU
            return np.stack([m.transform(X, **kwargs) for m in self.members_])
        return np.stack(self._map(lambda i, m: m.transform(X, **kwargs), self.members_))

    def fit_transform(self, X, epochs=1):
        return self.fit(X, epochs=epochs).transform(X)

    # ------------------------------------------------------------------ files
    def export(self, folder, splits, *, dataset=None, provenance=None):
        """One bioreps HDF5 file per member (``member_{i:03d}.h5``, :meth:`SpikingWTA.export`) in
        ``folder`` and ``ensemble.json`` listing each file with its seed and parameters."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        from .. import _files

        index = []
        for i, m in enumerate(self.members_):
            name = f"member_{i:03d}.h5"
            m.export(folder / name, splits, dataset=dataset,
                     provenance={**(provenance or {}), "ensemble_member": i})
            index.append({"file": name, "seed": int(m.random_state), "params": m.params.to_dict()})
        _files.write_json_atomic(folder / "ensemble.json", {"format": "bioreps-spiking-ensemble", "version": 1,
                                                            "n_neurons": int(self.n_neurons), "members": index})
        return folder

    def save(self, folder):
        """Each member's learned state (:meth:`SpikingWTA.save`) as ``member_{i:03d}.h5``."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.members_):
            m.save(folder / f"member_{i:03d}.h5")
        return folder

    @classmethod
    def load(cls, folder, backend=None):
        """The ensemble saved or checkpointed in ``folder`` (its ``member_*.h5`` files, in order)."""
        files = sorted(Path(folder).glob("member_*.h5"))
        if not files:
            raise FileNotFoundError(f"{folder} holds no member_*.h5 files of a SpikingEnsemble")
        members = [SpikingWTA.load(f, backend=backend) for f in files]
        ens = cls(n_neurons=members[0].n_neurons, seeds=[m.random_state for m in members],
                  params=[m.params for m in members])
        ens.members_ = members
        return ens

    def __repr__(self):
        n = len(self.members_) if hasattr(self, "members_") else "?"
        return f"SpikingEnsemble(n_neurons={self.n_neurons}, members={n})"
