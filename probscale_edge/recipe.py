"""The recipe: how a build cuts and recovers, resolved from the model, its tokenizer and the search mode.

Fields left at ``None`` ("the recipe's") are filled here, once, before any stage reads them. A ladder build
(the default) gets the best-known recipe: trimmed vocabulary where the tokenizer allows it, a factorized
word embedding, width pruning re-scored in steps at every rung, hidden-state and augmented distillation
(measured in benchmarks/compression and benchmarks/ladder). A build with a fixed ``--budget``,
``--compression`` or ``--spec`` gets the plain values those flags always had. Every value a user gives wins.

A recipe is a flat table of config field names (the CLI's flags with ``_`` for ``-``): ``--recipe FILE``
replays one (TOML or YAML), ``probscale-edge recipe BUNDLE`` prints the one a bundle was built with.
"""

from __future__ import annotations

import json
from pathlib import Path

from probscale_edge.errors import ProbscaleError

# the fields the recipe decides when the user leaves them out, and their values outside a ladder build
PLAIN = {"trim_vocab": False, "embedding_rank": 0, "distill_hidden": 0.0, "augment": 0, "prune_iterations": 1}
# what a replayed recipe may set: how the model is cut and recovered (not the data, the output or the target)
RECIPE_FIELDS = ("trim_vocab", "vocab_min_count", "embedding_rank", "embedding_dense_rows", "distill_hidden", "augment",
                 "prune_iterations", "layer_factor", "student_epochs", "student_lr", "temperature", "alpha", "dev_fraction",
                 "epochs", "lr", "batch_size", "pooling", "max_length", "min_retention", "max_size_mb", "max_latency_ms",
                 "ladder", "rung_epochs", "layer_floor", "layer_share", "search", "budget", "compression",
                 "compression_basis", "strategy", "granularity", "precision", "max_accuracy_drop", "quant_mode",
                 "time_budget")


def _model_facts(src) -> dict:
    """Hidden size and tokenizer model of a model folder (cheap: two JSON files; {} for a hub id)."""
    if not isinstance(src, Path):
        return {}
    facts = {}
    try:
        conf = json.loads((src / "config.json").read_text(encoding="utf-8"))
        facts["hidden"] = int(conf.get("hidden_size") or conf.get("d_model") or conf.get("dim") or 0)
    except (OSError, ValueError, TypeError):
        pass
    try:
        tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
        facts["tokenizer"] = (tj.get("model") or {}).get("type")
    except (OSError, ValueError):
        pass
    return facts


def ladder_recipe(facts: dict) -> dict:
    """The best-known recipe for a ladder build of this model."""
    hidden = facts.get("hidden") or 0
    rank = 0
    if hidden >= 256:  # a third of the width, in steps of 16 (128 for MiniLM's 384, 256 for mpnet's 768); the
        rank = max(32, int(round(hidden / 3 / 16)) * 16)  # ladder factorizes only at the rung that needs it
        # (benchmarks/ladder: rotten_tomatoes at 0.99, token-weighted: rank 128 kept 100.7% dev at 3x and 99.0%
        # at 5x, rank 96 100.4% and 98.8%: the layers' lost parameters cost less than the embedding's)
    return {"trim_vocab": facts.get("tokenizer") == "WordPiece", "embedding_rank": rank, "distill_hidden": 1.0,
            "augment": 1, "prune_iterations": 2}


def resolve(cfg, src):
    """-> (the config with every recipe field concrete, {"values": {...}, "decided_by": {field: recipe|user}})."""
    flat = cfg.flat()
    chosen = ladder_recipe(_model_facts(src)) if cfg.walks_ladder else dict(PLAIN)
    fill = {k: v for k, v in chosen.items() if flat[k] is None}
    if not cfg.walks_ladder and flat["budget"] is None and flat["compression"] is None:
        fill["budget"] = 1 / 3
    out = cfg.__class__.create(**{**flat, **fill})
    values = {k: out.flat()[k] for k in RECIPE_FIELDS}
    decided = {k: ("recipe" if k in fill else "user") for k in chosen}
    return out, {"search": "ladder" if cfg.walks_ladder else "single", "values": values, "decided_by": decided}


def load(path) -> dict:
    """A recipe file (TOML or YAML) -> {field: value}; unknown or non-recipe fields are one line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProbscaleError(f"cannot read the recipe {path} ({type(e).__name__})", "pass a TOML or YAML file")
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ProbscaleError(f"{path} is not valid YAML ({str(e).splitlines()[0]})", "fix the file")
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ProbscaleError(f"{path}: reading TOML needs Python 3.11 or later",
                                 "write the recipe as YAML (recipe.yaml), or use Python 3.11+") from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ProbscaleError(f"{path} is not valid TOML ({e})", "fix the file, or name it .yaml for YAML")
    if isinstance(d, dict) and isinstance(d.get("recipe"), dict):
        d = d["recipe"]
    if not isinstance(d, dict):
        raise ProbscaleError(f"{path} is not a table of fields", "write one `field = value` line per setting")
    bad = sorted(set(d) - set(RECIPE_FIELDS))
    if bad:
        raise ProbscaleError(f"{path}: {', '.join(bad)} cannot be set by a recipe",
                             f"use only recipe fields ({', '.join(RECIPE_FIELDS[:6])}, ...)")
    if "ladder" in d and isinstance(d["ladder"], list):
        d["ladder"] = tuple(d["ladder"])
    return d


def to_toml(values: dict) -> str:
    """A recipe as TOML (fields left unset are omitted: TOML has no null)."""
    lines = ["# probscale-edge recipe: replay with `probscale-edge build --recipe THIS_FILE`", "[recipe]"]
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            lines.append(f"{k} = [{', '.join(repr(float(x)) for x in v)}]")
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f"{k} = {json.dumps(v)}")
        else:
            lines.append(f"{k} = {v!r}")
    return "\n".join(lines) + "\n"


def of_bundle(bundle) -> dict:
    """The recipe a bundle was built with (its manifest's ``recipe``)."""
    from probscale_edge.runtime.bundle import load_manifest

    m = load_manifest(Path(bundle))
    rec = m.get("recipe")
    if not isinstance(rec, dict) or not isinstance(rec.get("values"), dict):
        raise ProbscaleError(f"{bundle} records no recipe (built before recipes were recorded)",
                             "rebuild it, or read its manifest's build_config")
    return rec["values"]
