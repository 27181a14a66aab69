"""Plain data passed between stages: subnetwork specs, selections, probe reports, latency tables.

Torch- and numpy-free (reading a spec costs no heavy imports; a test checks it). Every record
serializes with its ``type`` and a ``version``; ``from_dict`` accepts the same dict back, or an older
one written without them, and refuses a record of another type or a newer version with one line.
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from probscale_edge.errors import ProbscaleError


class Record:
    """A dataclass that serializes with its type name and format version."""

    VERSION = 1

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "version": self.VERSION, **asdict(self)}

    @classmethod
    def _fields_of(cls, d) -> dict:
        if not isinstance(d, dict):
            raise ProbscaleError(f"a {cls.__name__} must be a JSON object, not {type(d).__name__}",
                                 f"pass the {cls.__name__} JSON that probscale-edge wrote")
        if d.get("type", cls.__name__) != cls.__name__:
            raise ProbscaleError(f"expected a {cls.__name__}, got a {d['type']}", f"pass a {cls.__name__} JSON")
        if not isinstance(d.get("version", 1), int) or d.get("version", 1) > cls.VERSION:
            raise ProbscaleError(f"this {cls.__name__} is version {d.get('version')}, newer than this probscale-edge "
                                 f"reads ({cls.VERSION})", "upgrade probscale-edge")
        return {f.name: d[f.name] for f in fields(cls) if f.name in d}


def _index_list(v, what: str) -> list:
    try:
        if not isinstance(v, (list, tuple)) or any(isinstance(i, bool) for i in v):
            raise TypeError
        v = [operator.index(i) for i in v]
    except TypeError:
        v = None
    if v is None or any(i < 0 for i in v):
        raise ProbscaleError(f"{what} must be a list of non-negative integers", "write indices as JSON integers, e.g. [0, 2, 3]")
    if len(set(v)) != len(v):
        raise ProbscaleError(f"{what} lists an index twice: {v}", "list each index once")
    return list(v)


@dataclass
class SubnetworkSpec(Record):
    """What to keep. Indices refer to the source model.

    keep_layers: source layer indices kept, in order.
    heads: for a kept layer (key: source index as str), the head indices kept; absent = all.
    ffn: for a kept layer, the FFN neuron indices kept; absent = all.
    """

    keep_layers: list
    heads: dict = field(default_factory=dict)
    ffn: dict = field(default_factory=dict)

    def to_dict(self) -> dict:  # the plain shape: it is written into manifests and read by other tools
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SubnetworkSpec":
        f = cls._fields_of(d)
        if "keep_layers" not in f:
            raise ProbscaleError("the subnetwork spec has no keep_layers", 'write {"keep_layers": [...]}')
        keep = _index_list(f["keep_layers"], "keep_layers")
        if not keep:
            raise ProbscaleError("keep_layers is empty", "keep at least one layer")
        units = {}
        for part in ("heads", "ffn"):
            m = f.get(part) or {}
            if not isinstance(m, dict):
                raise ProbscaleError(f"spec {part} must be an object {{layer: [indices]}}", 'e.g. "heads": {"0": [0, 1]}')
            units[part] = {}
            for k, v in m.items():
                if not str(k).isdigit() or int(k) not in keep:
                    raise ProbscaleError(f"spec {part} names layer {k!r}, which keep_layers does not keep",
                                         "key heads/ffn by kept source layer indices")
                units[part][str(k)] = _index_list(v, f"{part}[{k}]")
                if not units[part][str(k)]:
                    raise ProbscaleError(f"spec {part}[{k}] keeps nothing", "keep at least one unit, or drop the layer")
        return cls(keep, units["heads"], units["ffn"])

    def check_shape(self, num_layers: int, heads: list[int], ffn: list[int]) -> None:
        """Refuse indices the source model does not have (``heads``/``ffn``: per source layer)."""
        bad = [i for i in self.keep_layers if i >= num_layers]
        if bad:
            raise ProbscaleError(f"the spec keeps layer {bad[0]}, but the model has {num_layers} layers",
                                 f"use layer indices 0..{num_layers - 1}")
        for part, sizes in (("heads", heads), ("ffn", ffn)):
            for k, idx in getattr(self, part).items():
                if idx and max(idx) >= sizes[int(k)]:
                    raise ProbscaleError(f"the spec keeps {part[:-1] if part == 'heads' else 'ffn neuron'} "
                                         f"{max(idx)} of layer {k}, which has {sizes[int(k)]}",
                                         f"use indices 0..{sizes[int(k)] - 1}")


@dataclass
class Selection(Record):
    spec: SubnetworkSpec
    kept_fraction: float
    kept_non_embedding: int
    candidates: list = field(default_factory=list)  # [{"layers", "additive", "composed"}]
    strategy: str = "probscale"
    budget: float = 0.0
    predicted_latency_ms: float | None = None  # with a latency budget: the latency table's prediction

    def to_dict(self):
        d = super().to_dict()
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Selection":
        f = cls._fields_of(d)
        return cls(SubnetworkSpec.from_dict(f["spec"]), f["kept_fraction"], f["kept_non_embedding"],
                   f.get("candidates", []), f.get("strategy", "probscale"), f.get("budget", 0.0),
                   f.get("predicted_latency_ms"))


@dataclass
class ProbeReport(Record):
    tasks: list  # [{"name", "weight", "layer_accuracy": [acc per hidden state]}]
    weighted: list  # task-weighted accuracy per hidden state
    config: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeReport":
        f = cls._fields_of(d)
        if not isinstance(f.get("weighted"), list) or not f["weighted"]:
            raise ProbscaleError("the probe report has no weighted accuracies", "pass the JSON `probscale-edge probe` wrote")
        return cls(f.get("tasks", []), f["weighted"], f.get("config", {}))


@dataclass
class LatencyTable(Record):
    """Per-unit latencies of one model on one device (see probscale_edge.latency for how it is measured):
    ms = base + layer_ms * layers + head_ms * heads kept + neuron_ms * FFN neurons kept."""

    seq: int
    threads: int
    precision: str
    target: str
    base_ms: float
    layer_ms: float
    head_ms: float
    neuron_ms: float
    full: dict  # the unpruned shape: {"layers", "heads", "ffn"}
    points: list = field(default_factory=list)  # [{"layers", "heads", "ffn", "p50_ms", "predicted_ms"}]
    max_relative_error: float = 0.0
    device: dict = field(default_factory=dict)
    model: str = ""
    format_version: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyTable":
        f = cls._fields_of(d)
        need = ("seq", "threads", "base_ms", "layer_ms", "head_ms", "neuron_ms", "full")
        missing = [k for k in need if k not in f]
        if missing:
            raise ProbscaleError(f"latency table lacks {', '.join(missing)}",
                                 "write it with `probscale-edge latency-table -o FILE`")
        if f.get("format_version", 1) > cls.VERSION:
            raise ProbscaleError("latency table is from a newer probscale-edge", "upgrade probscale-edge")
        f.setdefault("precision", "int8")
        f.setdefault("target", "")
        return cls(**f)

    @classmethod
    def load(cls, path) -> "LatencyTable":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except FileNotFoundError:
            raise ProbscaleError(f"latency table {p} does not exist", "write it with `probscale-edge latency-table -o FILE`")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, IsADirectoryError) as e:
            raise ProbscaleError(f"latency table {p} is not valid JSON ({type(e).__name__})",
                                 "write it again with `probscale-edge latency-table`")

    def is_local(self) -> bool:
        """Measured on this machine (so the build can time its choice against it)."""
        return (self.device or {}).get("transport") == "local"

    def cost_model(self) -> dict:
        return {"layer": self.layer_ms, "head": self.head_ms, "neuron": self.neuron_ms}

    def predict(self, layer_shapes) -> float:
        """Predicted ms for a list of {"heads", "ffn"} (one per kept layer)."""
        return float(self.base_ms + sum(self.layer_ms + self.head_ms * s["heads"] + self.neuron_ms * s["ffn"]
                                        for s in layer_shapes))

    def fastest(self, min_heads: int = 1, min_neurons: int = 16) -> float:
        return self.predict([{"heads": min_heads, "ffn": min_neurons}])

    def uniform_fraction(self, max_ms: float) -> float:
        """The fraction of every layer's heads and neurons that meets ``max_ms`` with every layer kept
        (the parameter budget the layer search starts from)."""
        L, H, F = self.full["layers"], self.full["heads"], self.full["ffn"]
        width = L * (self.head_ms * H + self.neuron_ms * F)
        left = max_ms - self.base_ms - L * self.layer_ms
        return float(min(1.0, max(0.0, left / width))) if width > 0 else 1.0
