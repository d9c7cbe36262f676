"""Load and validate the workflow config with the same JSON Schema Snakemake uses."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from .errors import InputError

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


def _validator():
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        # Fill defaults first so nested objects with `default: {}` get their own defaults too.
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of `config` with schema defaults filled in.

    Raises InputError naming the offending key path (e.g. `finetune.epochs`).
    """
    config = copy.deepcopy(config) if config is not None else {}
    validator = _validator()(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"{key}: {_short(err.message)}")
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise InputError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines) + more)
    check_config(config, source)
    arms = orthogonality_arms(config, source)
    config["models"].update(arms)
    config["finetune"]["models"] = list(dict.fromkeys(config["finetune"]["models"] + list(arms)))
    return config


ARM_SUFFIX = "-ortho"


def orthogonality_arms_of(config: dict[str, Any]) -> dict[str, str]:
    """{<model>-ortho: <model>} for every fine-tuned model when finetune.orthogonality.arm is on."""
    ft = config["finetune"]
    if not ft["orthogonality"]["arm"]:
        return {}
    return {f"{m}{ARM_SUFFIX}": m for m in ft["models"] if "finetune_of" not in config["models"][m]}


def orthogonality_arms(config: dict[str, Any], source: str = "config") -> dict[str, dict[str, Any]]:
    """The Exp 3 orthogonality arm's pseudo-models: <model>-ortho = the model's spec (its checkpoint as
    `checkpoint`), fine-tuned from its checkpoint and feature cache with the penalty
    λo = finetune.orthogonality.lambda (`finetune_of`, `finetune_orthogonality`). The rules give an arm its
    base model's towers, feature cache and evaluation features (rules/common.smk towers_of). Idempotent."""
    out = {}
    for arm, base in orthogonality_arms_of(config).items():
        existing = config["models"].get(arm)
        if existing is not None and existing.get("finetune_of") != base:
            raise InputError(f"{source}: key 'models.{arm}': clashes with the orthogonality arm that "
                             "finetune.orthogonality.arm adds")
        spec = {k: v for k, v in config["models"][base].items() if k not in ("url", "sha256", "pretrain_seed")}
        out[arm] = {**spec, "source": "checkpoint",
                    "checkpoint": f"{run_paths(config)['results']}/pretrain/{base}/checkpoint.pt",
                    "finetune_of": base,
                    "finetune_orthogonality": float(config["finetune"]["orthogonality"]["lambda"])}
    return out


def finetune_source(config: dict[str, Any], model: str) -> str:
    """The model a fine-tune starts from: itself, or for an orthogonality arm <model>-ortho its base model."""
    return config["models"][model].get("finetune_of", model)


def arm_finetune_settings(settings: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The fine-tune settings that change a run (a rule param): finetune.* without the arm's switch and λo,
    so that turning the arm on re-runs no existing fine-tune, plus λo for an arm's pseudo-model."""
    out = {k: v for k, v in settings.items() if k != "orthogonality"}
    if "finetune_of" in spec:
        out["orthogonality"] = spec["finetune_orthogonality"]
    return out


def check_model(config: dict[str, Any], name: str, source: str | os.PathLike | None = None) -> dict[str, Any]:
    """The spec of model `name` (a stage CLI's --model); InputError naming the config file otherwise."""
    if name not in config["models"]:
        where = f"{source}: " if source else ""
        raise InputError(f"{where}unknown model {name!r}; known: {sorted(config['models'])}")
    return config["models"][name]


def _short(message: str, limit: int = 300) -> str:
    """A schema error message cut to one readable line (an enum's or a long instance's text can run on)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def check_config(config: dict[str, Any], source: str) -> None:
    """Checks the schema cannot express: names that must refer to other keys."""
    models = config.get("models", {})
    sets = config.get("evaluate", {}).get("sets", {})
    pruning = config.get("evaluate", {}).get("pruning", {})
    c4 = config.get("clip4dm", {})
    # (key, the names it lists, what they must name, which)
    references = [("finetune.models", config.get("finetune", {}).get("models", []), models, "model"),
                  ("evaluate.pruning.models", pruning.get("models", []), models, "model"),
                  ("evaluate.pruning.sets", pruning.get("sets", []), sets, "set"),
                  ("clip4dm.detect.models", (c4.get("detect") or {}).get("models") or [], models, "model")]
    references += [(f"clip4dm.real_data.{k}.models", spec.get("models") or [], models, "model")
                   for k, spec in (c4.get("real_data") or {}).items()]
    references.append(("sparse.sets", config.get("sparse", {}).get("sets", []), sets, "set"))
    for key, names, known, what in references:
        for i, name in enumerate(names):
            if name not in known:
                raise InputError(f"{source}: key '{key}.{i}': unknown {what} {name!r}; known: {sorted(known)}")
    for name, spec in models.items():
        if spec["source"] in ("checkpoint", "laclip") and not (spec.get("checkpoint") or spec.get("url")):
            raise InputError(f"{source}: key 'models.{name}': source {spec['source']!r} needs "
                             "'checkpoint' (a local path) or 'url'")
        if spec.get("url") and not spec.get("sha256"):
            raise InputError(f"{source}: key 'models.{name}.sha256': required when 'url' is given")
        if spec["source"] == "pretrain" and spec.get("captions") == "augmented" \
                and not config.get("data", {}).get("rewrites"):
            raise InputError(f"{source}: key 'models.{name}.captions': 'augmented' needs data.rewrites")
    cs = config.get("misalign", {}).get("cs_values", [])
    if len(set(format_cs(c) for c in cs)) != len(cs):
        raise InputError(f"{source}: key 'misalign.cs_values': duplicate values {cs}")
    multilingual = config.get("multilingual", {})
    for name, spec in (multilingual.get("models") or {}).items():
        if spec.get("source") == "embedded" and multilingual.get("enabled") \
                and not config.get("world", {}).get("enabled", True):
            raise InputError(f"{source}: key 'multilingual.models.{name}.source': 'embedded' builds its captions "
                             "from the synthetic world (world.enabled: false here); use 'files' or "
                             "'sentence_transformers'")
        if spec.get("source") == "sentence_transformers" and not multilingual.get("captions"):
            raise InputError(f"{source}: key 'multilingual.captions': model {name!r} (source sentence_transformers) "
                             "encodes real captions: set multilingual.captions {train: CSV, heldout: CSV}")
    sparse = config.get("sparse", {})
    if sparse and not any(abs(sparse["example_lambda"] - lam) <= 1e-12 for lam in sparse["lambdas"]):
        raise InputError(f"{source}: key 'sparse.example_lambda': {sparse['example_lambda']} is not one of "
                         f"sparse.lambdas {sparse['lambdas']}")


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply shallow top-level overrides, validate and fill defaults."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: top level must be a mapping")
    if overrides:
        config.update(overrides)
    return validate_config(config, source=str(path))


# Strategy name of the Cs = 0 control in paths and tables: one run per (model, replicate) on the original
# captions, shared by every swap strategy.
CONTROL_STRATEGY = "none"


def is_replica(spec: dict[str, Any]) -> bool:
    """Whether a model spec is a pretraining replica <name>-p<seed> that pretrain.seeds added."""
    return "pretrain_seed" in spec


def replica_name(name: str, seed: int) -> str:
    """The name of model `name`'s pretraining with seed `seed`: <name>-p<seed>."""
    return f"{name}-p{seed}"


def _replicated(spec: dict[str, Any]) -> bool:
    """Whether pretrain.seeds replicates this model: pretrained here, and not itself a replica."""
    return spec["source"] == "pretrain" and not is_replica(spec)


def _replica_seeds(config: dict[str, Any]) -> list[int]:
    """pretrain.seeds without pretrain.seed (the model's own pretraining), in config order."""
    return [int(s) for s in config["pretrain"].get("seeds", []) if s != config["pretrain"]["seed"]]


def pretrain_replicas(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The models pretrain.seeds adds: <name>-p<seed> for every model with source pretrain, the same spec
    with `pretrain_seed` set (the further pretrainings of Exp 1 and of Exp 3's replicates)."""
    out = {replica_name(name, seed): {**spec, "pretrain_seed": seed}
           for name, spec in config["models"].items() if _replicated(spec)
           for seed in _replica_seeds(config)}
    clash = sorted(set(out) & set(config["models"]))
    if clash:
        raise InputError(f"models: {clash} clash with the pretraining replicas that pretrain.seeds adds")
    return out


def pretrainings(config: dict[str, Any], model: str) -> list[str]:
    """The independent pretrainings of the model `model` fine-tunes from (finetune_source): that model
    first, then its pretrain.seeds replicas <name>-p<seed> in config order. One entry for an imported
    model (a checkpoint has one pretraining) or a replica itself."""
    base = finetune_source(config, model)
    if not _replicated(config["models"][base]):
        return [base]
    return [base] + [replica_name(base, s) for s in _replica_seeds(config)]


def replicate_towers(config: dict[str, Any], model: str, seed: int | str) -> str:
    """The model whose checkpoint and frozen towers replicate `seed` of `model`'s fine-tunes start from.

    finetune.pretraining `matched` (the default): replicate r starts from pretraining r mod P of the model
    (`pretrainings`), so replicates differ in their pretraining as well as their swaps and batch order;
    `first`: every replicate starts from the first pretraining (the model's own checkpoint)."""
    options = pretrainings(config, model)
    if config["finetune"].get("pretraining", "matched") != "matched":
        options = options[:1]
    return options[int(seed) % len(options)]


def replicates_from(config: dict[str, Any], model: str, seeds, towers: str) -> list:
    """The replicates among `seeds` of `model`'s fine-tunes that start from the checkpoint of `towers`
    (the seed systems read only the fine-tunes of the first pretraining)."""
    return [r for r in seeds if replicate_towers(config, model, r) == towers]


def base_model(name: str, spec: dict[str, Any]) -> str:
    """The model a pretraining replica <name>-p<seed> replicates (the name itself otherwise)."""
    suffix = replica_name("", spec["pretrain_seed"]) if is_replica(spec) else ""
    return name[: -len(suffix)] if suffix and name.endswith(suffix) else name


def format_cs(cs: float) -> str:
    """Canonical text of a Cs value used in paths: 0.1 -> '0.1', 0 -> '0.0', 0.25 -> '0.25'."""
    text = repr(float(cs))
    return text


# The run name of the embedded default; its results tree is results/ (any other run: results/runs/<run>/).
DEFAULT_RUN = "embedded"


def run_paths(config: dict[str, Any]) -> dict[str, str]:
    """Where a run writes: results, logs, benchmarks and downloaded checkpoints. The embedded default keeps
    the top-level results/, logs/, benchmarks/ and resources/; every other run gets results/runs/<run>/ for
    all four, so two configs with different run names never write the same path."""
    run = config.get("run", DEFAULT_RUN)
    if run == DEFAULT_RUN:
        return {"results": "results", "logs": "logs", "benchmarks": "benchmarks", "resources": "resources"}
    root = f"results/runs/{run}"
    return {"results": root, "logs": f"{root}/logs", "benchmarks": f"{root}/benchmarks",
            "resources": f"{root}/resources"}


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two configs the same study: the data they read and where each named model comes from
    (not the sweep sizes or training settings, which a study may change between runs; pretraining replicas
    are derived from their base model and left out)."""
    models = {
        name: {k: spec.get(k) for k in ("source", "arch", "checkpoint", "url", "sha256", "captions")}
        for name, spec in config.get("models", {}).items()
        if "pretrain_seed" not in spec
    }
    return {"run": config.get("run", DEFAULT_RUN), "world": bool(config.get("world", {}).get("enabled")),
            "data": config.get("data", {}), "models": models}


def canonical(obj: Any) -> Any:
    """`obj` with every mapping's keys in sorted order: params taken from the config then compare equal
    whatever order the config files list the keys in (Snakemake compares params as text)."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def claim_run(config: dict[str, Any], results: str | os.PathLike, source: str = "config") -> Path:
    """Record in <results>/run.json which data and models this run name stands for. Refuse a real-data config
    (world disabled) without its own run name, and a config that uses a run name for other data or for
    another model under a name already used (it would overwrite that run's results). New model names are
    added to the record."""
    import json

    from .io import write_json

    if not config.get("world", {}).get("enabled", True) and config.get("run", DEFAULT_RUN) == DEFAULT_RUN:
        raise InputError(f"{source}: key 'run': a config with world.enabled: false must name its own run "
                         f"(e.g. run: cc3m); {DEFAULT_RUN!r} is the embedded default's results tree")
    path = Path(results) / "run.json"
    identity = json.loads(json.dumps(run_identity(config)))
    if not path.exists():
        write_json(path, identity)
        return path
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); delete it if that results tree is disposable") from None
    differs = _differing_keys(recorded, identity, ("run", "world", "data"))
    old_models = recorded.get("models", {})
    differs += [f"models.{name}" for name, spec in identity["models"].items()
                if name in old_models and old_models[name] != spec]
    if differs and not made_anything(Path(results)):
        # claimed by a dry run (or a run that stopped before its first output): nothing to protect
        write_json(path, identity)
        return path
    if differs:
        raise InputError(
            f"{source}: key 'run': {identity['run']!r} names the results tree {results}/, which was made with "
            f"other {', '.join(differs)} (recorded in {path}); give this config its own `run:` name, or delete "
            f"{results}/ to start that study afresh"
        )
    if set(identity["models"]) - set(old_models):
        write_json(path, {**recorded, "models": {**old_models, **identity["models"]}})
    return path


def _differing_keys(recorded: dict[str, Any], identity: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """The keys (one level down, as `data.train_csv`) whose recorded value differs from the config's."""
    out = []
    for key in keys:
        old, new = recorded.get(key), identity.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out += [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        else:
            out.append(key)
    return out


def made_anything(results: Path) -> bool:
    """Whether a results tree holds any output: a file other than what every Snakemake start, dry runs
    included, writes (run.json, settings/, and the image validation's `*.changed` stamps)."""
    for p in results.rglob("*"):
        rel = p.relative_to(results).parts
        if p.is_file() and rel != ("run.json",) and rel[0] != "settings" and p.suffix != ".changed":
            return True
    return False


def write_settings(config: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Write the validated config (files + command-line overrides) for the stage CLIs to read, to a file
    named by the hash of its content: <directory>/<sha256[:16]>.yaml.

    A file is written once (atomically) and never changed, so a job reads exactly the settings of the
    Snakemake process that started it, whatever other Snakemake processes (a dry run with another config,
    a report) do meanwhile; cluster job steps re-parse the workflow with the same config, hence the same file.
    """
    import hashlib

    from .io import write_text

    text = yaml.safe_dump(config, sort_keys=True)
    path = Path(directory) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        write_text(path, text)
    return path
