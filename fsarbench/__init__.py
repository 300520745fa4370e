"""fsarbench: a benchmark and reproduction suite for few-shot action recognition.

Public API (stable names)::

    import fsarbench as fb
    fb.list_methods(); fb.create_method(name, feature_dim=..., seq_len=...)
    fb.EpisodeBatch, fb.MethodOutput, fb.FewShotMethod, fb.register_method
    fb.make_manifest(...), fb.evaluate(method, features, manifest)
"""

from fsarbench import _env  # noqa: F401  (first: before torch allocates)
from fsarbench.config import ConfigError, build_config, load_config
from fsarbench.episodes import EpisodeSpec, Manifest, ManifestError, make_manifest
from fsarbench.evaluate import EvalResult, evaluate
from fsarbench.features.store import FeatureStore, InMemoryFeatureStore, as_feature_store
from fsarbench.methods import EpisodeBatch, FewShotMethod, MethodOutput, NoConfig, TrainingStage
from fsarbench.registry import (
    UnknownMethodError,
    create_method,
    list_methods,
    method_info,
    register_method,
)
from fsarbench.results import ResultRecord, load_records, make_record, save_result, write_summary
from fsarbench.state import State, state_gather, state_map
from fsarbench.version import __version__, code_version

__all__ = [
    "ConfigError",
    "build_config",
    "load_config",
    "EpisodeSpec",
    "Manifest",
    "ManifestError",
    "make_manifest",
    "EvalResult",
    "evaluate",
    "FeatureStore",
    "InMemoryFeatureStore",
    "as_feature_store",
    "EpisodeBatch",
    "FewShotMethod",
    "MethodOutput",
    "NoConfig",
    "TrainingStage",
    "UnknownMethodError",
    "create_method",
    "list_methods",
    "method_info",
    "register_method",
    "ResultRecord",
    "load_records",
    "make_record",
    "save_result",
    "write_summary",
    "State",
    "state_gather",
    "state_map",
    "__version__",
    "code_version",
]
