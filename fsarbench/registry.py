"""Method registry: ``register_method``, ``create_method``, ``list_methods``.

Methods come from two places: ``@register_method`` in code that has been imported, and the
``fsarbench.methods`` entry point group of any installed distribution (how ``baselines``,
``sgtm`` and third-party packages register). An entry point names either a FewShotMethod
subclass (registered under the entry point's name) or a module whose import registers its
own methods.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import torch

from fsarbench.config import build_config, nearest
from fsarbench.io import stable_hash
from fsarbench.methods import FewShotMethod

__all__ = [
    "register_method",
    "create_method",
    "list_methods",
    "method_info",
    "UnknownMethodError",
    "PluginContractError",
]

ENTRY_POINT_GROUP = "fsarbench.methods"
#: Top-level packages whose methods are fsarbench's own (a plugin cannot take their names).
BUILTIN_PACKAGES = ("fsarbench", "fsarbench_baselines", "fsarbench_sgtm")
log = logging.getLogger(__name__)


class UnknownMethodError(KeyError):
    """Raised for a method name nobody registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class PluginContractError(ValueError):
    """An installed plugin method breaks a property every evaluation relies on (its numbers
    would depend on query order, batching or chance, or its logits have the wrong shape)."""


#: Contract checks run once per process on an installed plugin before its first use: what a
#: leaderboard number needs (``check-method`` runs every check).
PLUGIN_CHECKS = (
    "shapes",
    "inputs_untouched",
    "eval_determinism",
    "query_order_equivariance",
    "queries_scored_alone",
    "batch_equals_singles",
    # the evaluator computes through these claims instead of match (pair tables from 4,000
    # episodes on, class means, pool products, episodes from pool positions): a stale claim
    # changes the printed number
    "pairwise_logits",
    "support_means",
    "pool_products",
    "indexed_match",
)
_PLUGINS_CHECKED: set[str] = set()


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: its class and the hyper-parameter presets of this name."""

    name: str
    cls: type[FewShotMethod]
    presets: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = "code"
    variant_of: str | None = None


_REGISTRY: dict[str, MethodEntry] = {}
_ENTRY_POINTS_LOADED = False
_ENTRY_POINT_ERRORS: dict[str, str] = {}
_REFUSED_NAMES: set[str] = set()  # names two outside plugins registered: neither is used


def register_method(
    name: str, *, description: str = "", variant_of: str | None = None, **presets: Any
) -> Callable[[type[FewShotMethod]], type[FewShotMethod]]:
    """Class decorator registering a method under ``name``.

    ``presets`` are hyper-parameter values this name fixes; callers of :func:`create_method`
    may still override them. ``variant_of`` marks an ablation variant of another registered
    name: variants run in the experiment grids that ask for them, not in every leaderboard run.
    """

    def decorate(cls: type[FewShotMethod]) -> type[FewShotMethod]:
        # the built-ins first: a user's 'protonet' (or 'ProtoNet') registered before any
        # registry call was let through, then pushed the built-ins out of the process; and
        # the built-in class itself under its own name with other presets took the name
        # (its numbers filed and ranked as the reference method's). A built-in module that
        # registers while the entry points load finds them loading (a no-op).
        _load_entry_points()
        _add(name, cls, presets, description, source="code", variant_of=variant_of)
        return cls

    return decorate


_INIT_KEYWORDS = ("feature_dim", "seq_len", "num_train_classes", "config")


def check_signatures(name: str, cls: type) -> None:
    """A method class's ``__init__`` and ``match`` must take what the harness passes; a
    mismatch fails at registration with the signature to write, never later mid-run."""
    from fsarbench.methods import match_keywords

    if not (inspect.isclass(cls.Config) and dataclasses.is_dataclass(cls.Config)):
        raise TypeError(
            f"method {name!r}: {cls.__name__}.Config must be a dataclass class of its "
            f"hyper-parameters (got {cls.Config!r}): decorate it with @dataclasses.dataclass, "
            "give every field a default, or leave Config out when there are none"
        )
    if cls.uses_class_names and "class_names" not in match_keywords(cls):
        raise TypeError(
            f"method {name!r}: {cls.__name__} sets uses_class_names but its match does not "
            "take the keyword class_names=None (B lists of way names)"
        )
    init = inspect.signature(cls.__init__)
    params = init.parameters.values()
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    missing = [k for k in _INIT_KEYWORDS if k not in init.parameters and not takes_kwargs]
    if missing:
        raise TypeError(
            f"method {name!r}: {cls.__name__}.__init__ must accept the keywords "
            f"{', '.join(_INIT_KEYWORDS)} (missing {', '.join(missing)}); write "
            "'def __init__(self, **kwargs): super().__init__(**kwargs)' and read your "
            "hyper-parameters from self.config (a dataclass named Config on the class)"
        )
    match = inspect.signature(cls.match)
    positional = [
        p
        for p in match.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in match.parameters.values())
    if len(positional) < 5 and not varargs:  # self + 4
        raise TypeError(
            f"method {name!r}: {cls.__name__}.match{match} must take (self, support, "
            "support_labels, query, way) and may add the keywords support_classes=None, "
            "query_classes=None"
        )


#: What a method name may hold: a record's file name is the name as written, so ``x/y`` and
#: ``x-y`` (one file) or ``../x`` (a model folder outside ``models/``) cannot be told apart.
METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _check_name(name: str) -> None:
    """Refuse a method name that is not a file name of its own (:data:`METHOD_NAME`), or
    that differs only in case from a registered one (one file on a case-insensitive disk)."""
    if not isinstance(name, str) or not METHOD_NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"method name {name!r} is not allowed: use letters, digits and _ . + - (starting "
            "with a letter or digit, no '..'), e.g. 'my-head': records and models are filed "
            "under the name"
        )
    twin = next((n for n in _REGISTRY if n != name and n.lower() == name.lower()), None)
    if twin is not None:
        raise ValueError(
            f"method name {name!r} differs only in case from the registered {twin!r}: their "
            "record files would be one file on a case-insensitive disk; rename it"
        )


def _check_json_values(name: str, config: Any) -> None:
    """Refuse hyper-parameters (``config``'s fields) that are not JSON values: records hash
    and store them, and a function or enum default passed registration and every check, then
    stopped ``run`` after its feature extraction with a raw traceback."""
    for key, value in dataclasses.asdict(config).items():  # as FewShotMethod.hparams
        try:
            stable_hash(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"method {name!r}: hyper-parameter {key}={value!r} is not a JSON value "
                "(numbers, strings, booleans, None, lists and dicts of them): records store and "
                "hash every hyper-parameter. Store a name (e.g. 'tanh') and look it up in the "
                "method"
            ) from None


def _add(
    name: str, cls: Any, presets: dict, description: str, source: str, variant_of: str | None = None
) -> None:
    if not (inspect.isclass(cls) and issubclass(cls, FewShotMethod)):
        raise TypeError(f"method {name!r} must be a FewShotMethod subclass, got {cls!r}")
    _check_name(name)
    check_signatures(name, cls)
    _check_json_values(name, build_config(cls.Config, presets, where=f"presets of {name!r}"))
    for dataset, values in cls.dataset_presets.items():
        build_config(cls.Config, dict(values), where=f"{cls.__name__}.dataset_presets[{dataset!r}]")
    build_config(cls.Config, dict(cls.legacy_hparams), where=f"{cls.__name__}.legacy_hparams")
    old = _REGISTRY.get(name)
    if old is not None and _redefined(old.cls, cls):
        # a notebook cell or importlib.reload defining the class again: the new one serves
        log.info("method %r: %s.%s defined again; the new definition replaces the old", name,
                 cls.__module__, cls.__qualname__)  # fmt: skip
        # the contract checks passed by the old definition say nothing of the new one
        _PLUGINS_CHECKED.difference_update(
            {key for key in _PLUGINS_CHECKED if json.loads(key)[0] == name}
        )
    elif old is not None and (old.cls is not cls or old.presets != presets):
        if not (is_builtin(cls) and not is_builtin(old.cls)):
            raise ValueError(
                f"method name {name!r} is already registered by {old.cls.__module__}"
                + ("" if not is_builtin(old.cls) else ": it is a built-in method; rename yours")
            )
        # a plugin imported before fsarbench's own methods: the built-in keeps its name
        _ENTRY_POINT_ERRORS[name] = (
            f"{old.cls.__module__}.{old.cls.__qualname__} ({old.source}) registered the "
            "built-in name; it is not used, rename it"
        )
        log.warning("fsarbench method plugin is not used: %s", _ENTRY_POINT_ERRORS[name])
    own = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # not the base class's
    doc = description or " ".join(own.split("\n\n")[0].split()) or "(no class docstring)"
    _REGISTRY[name] = MethodEntry(name, cls, dict(presets), doc, source, variant_of)


def _redefined(old: type, new: type) -> bool:
    """``new`` is ``old``'s class statement run again (same module and qualified name, a
    user's class): re-running a notebook cell raised 'already registered' until a restart."""
    same = (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__)
    return same and old is not new and not is_builtin(old) and not is_builtin(new)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    # fsarbench's own methods first: a plugin module registering a built-in name then fails
    # to load (named in the log and in 'unknown method' errors) instead of taking the name
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: not _is_builtin_value(ep))
    for ep in eps:
        before = set(_REGISTRY)
        try:
            obj = ep.load()
        except (Exception, SystemExit) as err:  # a broken plugin must not hide the others
            # SystemExit: a script-style module parsing sys.argv at import ended every command
            _ENTRY_POINT_ERRORS[ep.name] = f"{type(err).__name__}: {err}"
            log.warning(
                "could not load fsarbench method plugin %r (%s): %s", ep.name, ep.value, err
            )
            continue
        if inspect.ismodule(obj):  # importing the module registered its methods
            _mark_plugin_source(set(_REGISTRY) - before, f"entry point {ep.value}")
            continue
        try:
            _register_entry_point(ep, obj)
        except (TypeError, ValueError) as err:  # refused at registration: this plugin alone
            _ENTRY_POINT_ERRORS[ep.name] = f"{type(err).__name__}: {err}"
            log.warning("fsarbench method plugin %r (%s) is not used: %s", ep.name, ep.value, err)


def _register_entry_point(ep: Any, obj: Any) -> None:
    """Register the class entry point ``ep`` loaded as ``obj`` (a clash is resolved; a name
    two plugins were refused for stays refused, whatever registers it next)."""
    if ep.name in _REFUSED_NAMES:
        raise ValueError(f"{ep.name!r} is refused: {_ENTRY_POINT_ERRORS[ep.name]}")
    entry = _REGISTRY.get(ep.name)
    if entry is None:
        _add(ep.name, obj, {}, "", source=f"entry point {ep.value}")
    elif entry.cls is not obj:
        _resolve_clash(ep.name, entry, obj, ep.value)


def is_builtin(cls: Any) -> bool:
    """Whether ``cls`` is one of fsarbench's own methods (or wrappers), not a user's."""
    return cls.__module__.split(".")[0] in BUILTIN_PACKAGES


def _is_builtin_value(ep: Any) -> bool:
    """Whether entry point ``ep`` (``module[:attr]``) names one of fsarbench's packages."""
    return ep.value.split(":")[0].split(".")[0] in BUILTIN_PACKAGES


def _mark_plugin_source(names: set[str], source: str) -> None:
    """Mark the outside methods a plugin module registered as coming from ``source``: the
    checks of :func:`_check_plugin` run on them and ``list`` says where they came from."""
    for name in names:
        entry = _REGISTRY[name]
        if not is_builtin(entry.cls):
            _REGISTRY[name] = dataclasses.replace(entry, source=source)


def _resolve_clash(name: str, entry: MethodEntry, cls: Any, value: str) -> None:
    """Two plugins register ``name`` for different classes. fsarbench's own method keeps the
    name and the plugin is refused (its results would be filed as the built-in's); between
    two outside plugins neither is used. Either way the refusal is logged and named."""
    if not is_builtin(entry.cls) and is_builtin(cls):
        loser, winner = entry.source, value
        del _REGISTRY[name]
        _add(name, cls, {}, "", source=f"entry point {value}")
    elif is_builtin(entry.cls) and not is_builtin(cls):
        loser, winner = f"entry point {value}", entry.source
    else:
        del _REGISTRY[name]
        _REFUSED_NAMES.add(name)
        _ENTRY_POINT_ERRORS[name] = (
            f"two plugins register {name!r} ({entry.source} and entry point {value}); "
            "uninstall one or rename its entry point"
        )
        log.warning("method name %r refused: %s", name, _ENTRY_POINT_ERRORS[name])
        return
    log.warning(
        "fsarbench method plugin %s is not used: %r is a built-in method's name (%s); "
        "rename the plugin's entry point",
        loser,
        name,
        winner,
    )


def list_methods(pattern: str | None = None, *, variants: bool = True) -> list[str]:
    """Names of every registered method, sorted; ``pattern`` is an fnmatch filter;
    ``variants=False`` leaves out ablation variants (``register_method(variant_of=...)``)."""
    import fnmatch

    _load_entry_points()
    names = sorted(n for n, e in _REGISTRY.items() if variants or e.variant_of is None)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def method_info(name: str) -> MethodEntry:
    """The registry entry of ``name`` (raises :class:`UnknownMethodError`)."""
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(_REGISTRY)
        close = nearest(name, known, n=len(known))
        ordered = close + [k for k in known if k not in close]
        msg = f"unknown method {name!r}. Known methods (closest first): {', '.join(ordered)}"
        if name in _ENTRY_POINT_ERRORS:
            msg += f". Its plugin failed to load: {_ENTRY_POINT_ERRORS[name]}"
        raise UnknownMethodError(msg) from None


def create_method(
    name: str,
    *,
    feature_dim: int,
    seq_len: int,
    num_train_classes: int | None = None,
    dataset: str | None = None,
    **hparams: Any,
) -> FewShotMethod:
    """Build method ``name`` for ``[T=seq_len, D=feature_dim]`` features.

    Hyper-parameters, later winning: the ``Config`` defaults; the class's
    ``dataset_presets[dataset]`` (the reference's per-dataset settings, e.g. HyRSM's Kinetics
    positional encoder); the presets of this registered name; ``hparams``. Unknown
    hyper-parameters raise :class:`~fsarbench.config.ConfigError` naming the nearest valid one.
    A method outside fsarbench's packages must first pass :data:`PLUGIN_CHECKS` (raises
    :class:`PluginContractError`).
    """
    method = create_method_unchecked(
        name,
        feature_dim=feature_dim,
        seq_len=seq_len,
        num_train_classes=num_train_classes,
        dataset=dataset,
        **hparams,
    )
    if not is_builtin(type(method)):  # a plugin, whether found by entry point or imported
        _check_plugin(name, hparams, PluginSetting(feature_dim, seq_len, dataset))
    mark_checked(method)
    return method


#: Attribute of a method instance holding the versions of its parameters when the contract
#: checks passed on it: an optimiser step changes a version, so a trained instance is checked
#: again (kept on the instance: an id could be reused by another object once it is freed).
_CHECKED_AT = "_fsarbench_checked_versions"


def _versions(method: FewShotMethod) -> tuple[int, ...]:
    return tuple(p._version for p in method.parameters())


def mark_checked(method: FewShotMethod) -> None:
    """Record that ``method``, with its weights as they are now, passed the checks."""
    method.__dict__[_CHECKED_AT] = _versions(method)


#: Suffix of the name a method class that is not registered is checked under.
_UNREGISTERED = " (not registered)"


def check_built_method(method: FewShotMethod) -> None:
    """:data:`PLUGIN_CHECKS` on the method instance ``evaluate`` is given and on every
    few-shot method inside it (a recipe adapter's head, SGTM's matcher) that is not built in:
    on copies of each (its weights, its constructor's own arguments), at its sizes, once per
    instance and state of its weights (:func:`mark_checked`; ``create_method`` checks a new
    instance). A head scoring queries by their position printed 100.00 ± 0.00 on noise
    through ``evaluate`` when built directly, and one whose eval-mode noise was scaled by a
    weight that is zero at initialisation passed the checks made at its creation and gave
    three numbers for one trained model (behind ``run``'s default adapter, the built-in
    wrapper, it was never checked again).

    Raises:
        PluginContractError: a check fails.
    """
    for part in method.modules():
        if isinstance(part, FewShotMethod) and not is_builtin(type(part)):
            _check_instance(part)


def _check_instance(method: FewShotMethod) -> None:
    """:func:`check_built_method` of one plugin instance (not the methods inside it)."""
    if method.__dict__.get(_CHECKED_AT) == _versions(method):
        return
    cls = type(method)
    name = next((n for n, e in _REGISTRY.items() if e.cls is cls), None)
    name = name or f"{cls.__module__}.{cls.__qualname__}{_UNREGISTERED}"
    try:
        copy.deepcopy(method)
    except Exception as err:  # noqa: BLE001 - whatever a custom __deepcopy__ raises
        # the checks of this (trained) instance run on copies: skipped with a warning, noise
        # behind a weight trained away from 0 printed a number a copyable twin was refused for
        raise PluginContractError(
            f"{name} cannot be copied ({type(err).__name__}: {err}), and the contract checks "
            "every evaluation relies on run on copies of the model being evaluated: keep "
            "locks, open files and clients out of the module's attributes (create them where "
            "they are used), or give the class a __deepcopy__"
        ) from None
    _check_plugin(name, None, PluginSetting(method.feature_dim, method.seq_len), method)
    mark_checked(method)


def create_method_unchecked(
    name: str,
    *,
    feature_dim: int,
    seq_len: int,
    num_train_classes: int | None = None,
    dataset: str | None = None,
    **hparams: Any,
) -> FewShotMethod:
    """:func:`create_method` without the plugin checks: for the contract checks themselves
    (``check-method`` reports each check's own failure)."""
    entry = method_info(name)
    config = method_config(name, dataset, **hparams)
    method = entry.cls(
        feature_dim=feature_dim, seq_len=seq_len, num_train_classes=num_train_classes, config=config
    )
    method.method_name = name
    return method


def method_config(name: str, dataset: str | None = None, **hparams: Any) -> Any:
    """The ``Config`` method ``name`` would be built with: its defaults, the class's presets
    for ``dataset``, the registered name's presets, then ``hparams`` (unknown keys and
    values of the wrong type raise :class:`~fsarbench.config.ConfigError`)."""
    entry = method_info(name)
    values = {**_dataset_presets(entry.cls, dataset), **entry.presets, **hparams}
    return build_config(entry.cls.Config, values, where=f"method {name!r}")


def check_class_names(
    name: str, dataset: str | None, hparams: Mapping[str, Any], names: Iterable[str]
) -> None:
    """Method ``name``'s :meth:`~fsarbench.methods.FewShotMethod.check_class_names` of the
    class ``names`` a run meets, for methods that use class names (before any work)."""
    cls = method_info(name).cls
    if cls.uses_class_names:
        cls.check_class_names(method_config(name, dataset, **hparams), sorted(set(names)))


def stored_hparams(name: str, saved: Mapping[str, Any]) -> dict[str, Any]:
    """The hyper-parameters a checkpoint of method ``name`` stores (``saved``), with the
    class's ``legacy_hparams`` for those it predates (a CLIP-FSAR model saved before
    ``merge_before`` existed was trained without it, though the default is now on)."""
    if not saved:
        return {}
    return {**method_info(name).cls.legacy_hparams, **saved}


def _dataset_presets(cls: type, dataset: str | None) -> Mapping[str, Any]:
    """``cls.dataset_presets`` of ``dataset``, else of the dataset whose settings it shares
    (``register_dataset(..., settings_of=...)``): a Kinetics variant of one's own took
    HyRSM's defaults instead of its Kinetics settings."""
    if not dataset:
        return {}
    if dataset in cls.dataset_presets:
        return cls.dataset_presets[dataset]
    from fsarbench.data.datasets import settings_dataset

    return cls.dataset_presets.get(settings_dataset(dataset), {})


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    """Restore torch's CPU, NumPy's and Python's global random states on exit: the plugin
    checks seed and draw, and run in the middle of building a caller's model (SGTM builds
    its matcher, possibly a plugin, between its own layers)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@dataclass(frozen=True)
class PluginSetting:
    """The sizes and dataset a plugin is built for: its checks run there."""

    feature_dim: int
    seq_len: int
    dataset: str | None = None

    def flags(self) -> str:
        """The same setting as ``check-method`` options."""
        text = f" --feature-dim {self.feature_dim} --seq-len {self.seq_len}"
        return text + (f" --dataset {self.dataset}" if self.dataset else "")


def _check_plugin(
    name: str,
    hparams: dict[str, Any] | None = None,
    setting: PluginSetting | None = None,
    instance: FewShotMethod | None = None,
) -> None:
    """Run :data:`PLUGIN_CHECKS` on plugin ``name`` built as the caller builds it (its
    ``hparams``, and the ``setting``'s feature size, frames and dataset presets; the
    contract's small size without one) once per process and setting (a method whose logits
    follow the queries' positions scored 100% on noise, since queries come in class order;
    one that does so only at some hyper-parameters passed checks made at its defaults; one
    with a hyper-parameter tied to the feature size failed spuriously at the contract's).
    ``instance``: the checks run on copies of it instead (:func:`check_built_method`)."""
    hparams = dict(hparams or {})
    sizes = dataclasses.asdict(setting) if setting else {}
    key = json.dumps([name, hparams, sizes], sort_keys=True, default=str)
    if instance is None:  # an instance's checks are kept track of on it (mark_checked)
        if key in _PLUGINS_CHECKED:
            return
        _PLUGINS_CHECKED.add(key)
    from fsarbench.testing.contract import CONTRACT_CHECKS, contract_hparams, contract_instance

    failed = []
    for check in PLUGIN_CHECKS:
        try:
            with _rng_untouched(), contract_hparams(hparams, **sizes), contract_instance(instance):
                CONTRACT_CHECKS[check](name)
        except Exception as err:  # each failure is reported, whatever it raised
            first_line = (str(err).splitlines() or [""])[0][:200]
            failed.append(f"{check}: {type(err).__name__}: {first_line}")
    if failed:
        _PLUGINS_CHECKED.discard(key)
        at = f" with hyper-parameters {hparams}" if hparams else ""
        source = "built directly" if name.endswith(_UNREGISTERED) else method_info(name).source
        raise PluginContractError(
            f"plugin method {name!r} ({source}){at} fails "
            f"{len(failed)} contract check(s) every evaluation relies on"
            + (" with the weights it holds now (trained)" if instance is not None else "")
            + ": "
            + "; ".join(failed)
            + (
                ". check-method builds the method afresh, where they may pass: look for "
                "behaviour a learned weight switches on (noise or dropout in eval mode, a "
                "term by query position)"
                if instance is not None
                else ""
            )
            + (
                f". Run 'python -m fsarbench check-method {name}"
                + (f" --hparams '{json.dumps(hparams, default=str)}'" if hparams else "")
                + (setting.flags() if setting else "")
                + "' for details"
                if not name.endswith(_UNREGISTERED)
                else ". Register it (fsarbench.register_method) and run 'python -m fsarbench "
                "check-method NAME' for details"
            )
        )
