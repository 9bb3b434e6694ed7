"""A1111 hypernetworks: the `.pt` file layout, the residual MLP, and the k/v context transform.

Facts kept from A1111 v1.10 (`modules/hypernetworks/hypernetwork.py`):

- Files are `<--hypernetwork-dir>/**/*.pt` (default `<models>/hypernetworks`), listed by stem,
  sorted by lower-cased path; a file named `None.pt` is never listed. A1111 reads no `.safetensors`
  hypernetworks, so neither does Serena.
- A file is a dict: integer keys (a context width such as 768, or 320/640/1280 for self-attention)
  each map to a pair of module state dicts (the k and the v network), beside metadata keys
  `layer_structure` (default [1, 2, 1]), `activation_func`, `is_layer_norm`, `weight_initialization`,
  `use_dropout`, `dropout_structure`, `last_layer_dropout`, `activate_output` (default True),
  `optional_info`, `name`, `step`, `sd_checkpoint`, `sd_checkpoint_name`.
- `HypernetworkModule(dim)` is `torch.nn.Sequential` named `linear`: for each step of
  `layer_structure`, a Linear `dim*ls[i] -> dim*ls[i+1]`, then the activation (not after the last
  Linear unless `activate_output`; never for "linear"/None), then LayerNorm when `is_layer_norm`, then
  Dropout where `dropout_structure[i+1] > 0`. Its output is `x + linear(x) * multiplier`.
- Applied in every UNet attention layer (self- and cross-attention alike: A1111 transforms
  `context = default(context, x)`): when a loaded hypernetwork has an entry for the context's width,
  k is computed from `hyper_k(context)` and v from `hyper_v(context)`; several hypernetworks chain
  in order (`k = h2_k(h1_k(context))`).

Pickled files are read through `modules.safe_load` only: a file that names anything but tensors and
plain containers is refused before any of it runs.
"""
from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Iterable

import torch

log = logging.getLogger(__name__)

EXTENSIONS = (".pt",)
DEFAULT_LAYER_STRUCTURE = (1, 2, 1)
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
METADATA_KEYS = ("step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
                 "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
                 "last_layer_dropout", "optional_info")


def _activation_table() -> dict[str, type]:
    """A1111's names: seven fixed ones, then every class of `torch.nn.modules.activation`, lower-cased."""
    table: dict[str, type] = {
        "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
        "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
    }
    for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass):
        if cls.__module__ == "torch.nn.modules.activation":
            table[name.lower()] = cls
    return table


class HypernetworkModule(torch.nn.Module):
    """One k or v network for one context width: `x + linear(x) * multiplier` (A1111's class)."""

    activation_dict = _activation_table()

    def __init__(self, dim: int, state_dict: dict | None = None, layer_structure: Iterable[float] | None = None,
                 activation_func: str | None = None, weight_init: str | None = "Normal", add_layer_norm: bool = False,
                 activate_output: bool = False, dropout_structure: Iterable[float] | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.multiplier = 1.0
        structure = list(layer_structure) if layer_structure is not None else list(DEFAULT_LAYER_STRUCTURE)
        if len(structure) < 2 or structure[0] != 1 or structure[-1] != 1:
            raise ValueError(f"layer_structure must start and end with 1, got {structure}")
        dropout = list(dropout_structure) if dropout_structure is not None else [0] * len(structure)
        if len(dropout) != len(structure):
            raise ValueError(f"dropout_structure {dropout} must be as long as layer_structure {structure}")
        self.linear = torch.nn.Sequential(*build_layers(dim, structure, activation_func, add_layer_norm,
                                                        activate_output, dropout))
        if state_dict is not None:
            self.load_state_dict(fix_old_state_dict(dict(state_dict)))
        else:
            init_weights(self.linear, weight_init or "Normal", activation_func, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x) * (self.multiplier if not self.training else 1)

    def trainables(self) -> list[torch.nn.Parameter]:
        """Weights and biases of the Linear and LayerNorm layers (A1111's training list)."""
        out: list[torch.nn.Parameter] = []
        for layer in self.linear:
            if type(layer) in (torch.nn.Linear, torch.nn.LayerNorm):
                out += [layer.weight, layer.bias]
        return out


def build_layers(dim: int, structure: list[float], activation_func: str | None, add_layer_norm: bool,
                 activate_output: bool, dropout: list[float]) -> list[torch.nn.Module]:
    """The `linear` Sequential's layers in A1111's order (indices are the state dict's keys)."""
    layers: list[torch.nn.Module] = []
    last = len(structure) - 2
    for i in range(len(structure) - 1):
        width_out = int(dim * structure[i + 1])
        layers.append(torch.nn.Linear(int(dim * structure[i]), width_out))
        if activation_func not in (None, "linear") and (i < last or activate_output):
            cls = HypernetworkModule.activation_dict.get(activation_func)
            if cls is None:
                raise ValueError(f"hypernetwork uses an unsupported activation function: {activation_func!r}")
            layers.append(cls())
        if add_layer_norm:
            layers.append(torch.nn.LayerNorm(width_out))
        if dropout[i + 1] > 0:
            if not 0 < dropout[i + 1] < 1:
                raise ValueError(f"dropout probabilities must lie in [0, 1), got {dropout}")
            layers.append(torch.nn.Dropout(p=float(dropout[i + 1])))
    return layers


def init_weights(layers: torch.nn.Sequential, weight_init: str, activation_func: str | None,
                 generator: torch.Generator | None = None) -> None:
    """A new network's weights (A1111: Normal std 0.01 and LayerNorms always so; biases zero)."""
    if weight_init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight initialization {weight_init!r}; expected one of {WEIGHT_INITS}")
    nonlinearity = "leaky_relu" if activation_func == "leakyrelu" else "relu"
    init = torch.nn.init
    with torch.no_grad():
        for layer in layers:
            if type(layer) not in (torch.nn.Linear, torch.nn.LayerNorm):
                continue
            layer.bias.zero_()
            if weight_init == "Normal" or type(layer) is torch.nn.LayerNorm:
                init.normal_(layer.weight, 0.0, 0.01, generator=generator)
            elif weight_init == "XavierUniform":
                init.xavier_uniform_(layer.weight, generator=generator)
            elif weight_init == "XavierNormal":
                init.xavier_normal_(layer.weight, generator=generator)
            elif weight_init == "KaimingUniform":
                init.kaiming_uniform_(layer.weight, nonlinearity=nonlinearity, generator=generator)
            else:
                init.kaiming_normal_(layer.weight, nonlinearity=nonlinearity, generator=generator)


def fix_old_state_dict(state_dict: dict) -> dict:
    """Early files' `linear1.*`/`linear2.*` keys renamed to `linear.0.*`/`linear.1.*` (A1111)."""
    renames = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
               "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}
    return {renames.get(key, key): value for key, value in state_dict.items()}


def parse_dropout_structure(layer_structure: Iterable[float] | None, use_dropout: bool,
                            last_layer_dropout: bool) -> list[float]:
    """A1111's dropout per layer when a file has none: 0.3 after hidden layers, the last one optional."""
    structure = list(layer_structure) if layer_structure is not None else list(DEFAULT_LAYER_STRUCTURE)
    if not use_dropout:
        return [0] * len(structure)
    return [0] + [0.3] * (len(structure) - 3) + [0.3 if last_layer_dropout else 0] + [0]


class Hypernetwork:
    """A set of (k, v) `HypernetworkModule` pairs keyed by context width, and the file's metadata."""

    filename: str | None = None
    name: str | None = None

    def __init__(self, name: str | None = None, enable_sizes: Iterable[int] | None = None,
                 layer_structure: Iterable[float] | None = None, activation_func: str | None = None,
                 weight_init: str | None = None, add_layer_norm: bool = False, use_dropout: bool = False,
                 activate_output: bool = False, **kwargs: Any):
        self.filename = None
        self.name = name
        self.layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
        self.step = 0
        self.sd_checkpoint: str | None = None
        self.sd_checkpoint_name: str | None = None
        self.layer_structure = list(layer_structure) if layer_structure is not None else None
        self.activation_func = activation_func
        self.weight_init = weight_init
        self.add_layer_norm = add_layer_norm
        self.use_dropout = use_dropout
        self.activate_output = activate_output
        self.last_layer_dropout = kwargs.get("last_layer_dropout", True)
        self.dropout_structure = kwargs.get("dropout_structure") or parse_dropout_structure(
            self.layer_structure, use_dropout, self.last_layer_dropout)
        self.optional_info = kwargs.get("optional_info")
        self.optimizer_name: str | None = None
        self.optimizer_state_dict: dict | None = None
        generator = kwargs.get("generator")
        for size in enable_sizes or ():
            size = int(size)
            self.layers[size] = (self._module(size, None, generator), self._module(size, None, generator))
        self.eval()

    def _module(self, size: int, state_dict: dict | None,
                generator: torch.Generator | None = None) -> HypernetworkModule:
        return HypernetworkModule(size, state_dict, self.layer_structure, self.activation_func, self.weight_init,
                                  self.add_layer_norm, self.activate_output, self.dropout_structure, generator)

    def weights(self) -> list[torch.nn.Parameter]:
        return [param for pair in self.layers.values() for module in pair for param in module.parameters()]

    def train(self, mode: bool = True) -> None:
        for pair in self.layers.values():
            for module in pair:
                module.train(mode=mode)
                for param in module.parameters():
                    param.requires_grad = mode

    def eval(self) -> None:
        """Inference mode: dropout off, no gradients."""
        self.train(False)

    def to(self, device: Any) -> "Hypernetwork":
        for pair in self.layers.values():
            for module in pair:
                module.to(device)
        return self

    def set_multiplier(self, multiplier: float) -> "Hypernetwork":
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self

    def state_dict(self) -> dict:
        """The file's content in A1111's layout (what `save` writes)."""
        data: dict[Any, Any] = {size: (k.state_dict(), v.state_dict()) for size, (k, v) in self.layers.items()}
        data.update(step=self.step, name=self.name, layer_structure=self.layer_structure,
                    activation_func=self.activation_func, is_layer_norm=self.add_layer_norm,
                    weight_initialization=self.weight_init, sd_checkpoint=self.sd_checkpoint,
                    sd_checkpoint_name=self.sd_checkpoint_name, activate_output=self.activate_output,
                    use_dropout=self.use_dropout, dropout_structure=self.dropout_structure,
                    last_layer_dropout=(self.dropout_structure[-2] != 0) if self.dropout_structure
                    else self.last_layer_dropout,
                    optional_info=self.optional_info or None)
        return data

    def save(self, filename: str) -> None:
        torch.save(self.state_dict(), filename)

    def load(self, filename: str) -> None:
        """Read `filename` (through the safe loader) into this object.

        Raises:
            errors.CheckpointLoadError: unreadable, truncated, or holding pickled code.
            ValueError: not a hypernetwork in A1111's layout.
        """
        from modules import safe_load
        self.filename = filename
        if self.name is None:
            self.name = os.path.splitext(os.path.basename(filename))[0]
        self.load_state_dict(safe_load._load_pickle(filename, "cpu"), filename)

    def load_state_dict(self, data: Any, filename: str = "<data>") -> None:
        """Fill this object from a file's dict (A1111's defaults for missing metadata)."""
        if not isinstance(data, dict):
            raise ValueError(f"{filename!r} is not a hypernetwork: it holds {type(data).__name__}, not a dict")
        self.layer_structure = _numbers(data.get("layer_structure"), filename, "layer_structure") \
            or list(DEFAULT_LAYER_STRUCTURE)
        self.optional_info = data.get("optional_info")
        self.activation_func = data.get("activation_func")
        self.weight_init = data.get("weight_initialization", "Normal")
        self.add_layer_norm = bool(data.get("is_layer_norm", False))
        self.dropout_structure = _numbers(data.get("dropout_structure"), filename, "dropout_structure")
        self.use_dropout = bool(any(self.dropout_structure)) if self.dropout_structure \
            else bool(data.get("use_dropout", False))
        self.activate_output = bool(data.get("activate_output", True))
        self.last_layer_dropout = bool(data.get("last_layer_dropout", False))
        if not self.dropout_structure:
            self.dropout_structure = parse_dropout_structure(self.layer_structure, self.use_dropout,
                                                             self.last_layer_dropout)
        self.layers = {}
        for size, pair in data.items():
            if isinstance(size, int) and not isinstance(size, bool):
                self.layers[size] = self._pair(size, pair, filename)
        if not self.layers:
            raise ValueError(f"{filename!r} is not a hypernetwork: no integer width keys with k/v networks")
        name = data.get("name")
        self.name = name if isinstance(name, str) and name else self.name
        self.step = data.get("step") or 0
        self.sd_checkpoint = data.get("sd_checkpoint")
        self.sd_checkpoint_name = data.get("sd_checkpoint_name")
        self.eval()

    def _pair(self, size: int, pair: Any, filename: str) -> tuple[HypernetworkModule, HypernetworkModule]:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, dict) for x in pair):
            raise ValueError(f"{filename!r}: width {size} must hold two state dicts (k, v)")
        try:
            return self._module(size, pair[0]), self._module(size, pair[1])
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"{filename!r}: width {size}: {e}") from e

    def shorthash(self) -> str | None:
        """First 10 hex digits of the file's sha256 (A1111), cached under `hypernet/<name>`."""
        from modules import hashes
        sha = hashes.sha256(self.filename, f"hypernet/{self.name}") if self.filename else None
        return sha[0:10] if sha else None


def _numbers(value: Any, filename: str, key: str) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, (int, float)) for x in value):
        raise ValueError(f"{filename!r}: {key} must be a list of numbers, got {value!r}")
    return list(value)


# ---- the folder --------------------------------------------------------------------------------

hypernetworks: dict[str, str] = {}
"""Name → path of every listed file (A1111: `shared.hypernetworks`)."""

loaded_hypernetworks: list[Hypernetwork] = []
"""The hypernetworks the current job applies, in order (A1111: `shared.loaded_hypernetworks`)."""

_loaded_cache: dict[str, tuple[tuple, Hypernetwork]] = {}


def hypernetwork_dir() -> str:
    """`--hypernetwork-dir`, or `<models>/hypernetworks`."""
    from modules import shared
    configured = getattr(shared.cmd_opts, "hypernetwork_dir", None)
    return os.path.abspath(configured) if configured else os.path.join(shared.data_paths.models_path, "hypernetworks")


def list_hypernetworks(path: str) -> dict[str, str]:
    """Name (file stem) → path for every `.pt` under `path`, sorted by lower-cased path; never `None`."""
    found = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs.sort()
        for name in names:
            if os.path.splitext(name)[1].lower() in EXTENSIONS:
                found.append(os.path.join(root, name))
    res: dict[str, str] = {}
    for filename in sorted(found, key=str.lower):
        name = os.path.splitext(os.path.basename(filename))[0]
        if name != "None":
            res[name] = filename
    return res


def reload_hypernetworks() -> dict[str, str]:
    """Rescan `hypernetwork_dir()` into `hypernetworks` (A1111: `shared.reload_hypernetworks`)."""
    listed = list_hypernetworks(hypernetwork_dir())
    hypernetworks.clear()
    hypernetworks.update(listed)
    return hypernetworks


def _file_state(path: str) -> tuple:
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def read_hypernetwork(path: str) -> Hypernetwork:
    """Load one file (cached while its size and mtime stay the same).

    Raises:
        errors.CheckpointLoadError, ValueError, OSError: as `Hypernetwork.load`.
    """
    state = _file_state(path)
    cached = _loaded_cache.get(path)
    if cached is not None and cached[0] == state:
        return cached[1]
    hypernetwork = Hypernetwork()
    hypernetwork.load(path)
    _loaded_cache[path] = (state, hypernetwork)
    return hypernetwork


def load_hypernetwork(name: str) -> Hypernetwork | None:
    """The listed hypernetwork `name`, or None when it is not listed or cannot be read (logged)."""
    path = hypernetworks.get(name)
    if path is None:
        return None
    try:
        return read_hypernetwork(path)
    except Exception as e:  # a bad file must not fail the job (A1111 reports and goes on)
        log.error("Error loading hypernetwork %s: %s", path, e)
        return None


def load_hypernetworks(names: list[str], multipliers: list[float] | None = None) -> None:
    """Make `loaded_hypernetworks` these names, in order, with their multipliers (A1111)."""
    loaded_hypernetworks.clear()
    for i, name in enumerate(names):
        hypernetwork = load_hypernetwork(name)
        if hypernetwork is None:
            continue
        hypernetwork.set_multiplier(multipliers[i] if multipliers else 1.0)
        loaded_hypernetworks.append(hypernetwork)


def find_closest_hypernetwork_name(search: str) -> str | None:
    """The shortest listed name containing `search` (case-insensitive)."""
    if not search:
        return None
    search = search.lower()
    applicable = sorted((name for name in hypernetworks if search in name.lower()), key=len)
    return applicable[0] if applicable else None


# ---- the math ----------------------------------------------------------------------------------

def apply_to_context(hypernetworks_list: Iterable[Hypernetwork], context: torch.Tensor, which: int) -> torch.Tensor:
    """`context` through the k (`which=0`) or v (`which=1`) network of each hypernetwork with an entry
    for its width, in order; computed in the networks' dtype, returned in the context's."""
    out = context
    for hypernetwork in hypernetworks_list:
        pair = hypernetwork.layers.get(out.shape[-1]) if hypernetwork is not None else None
        if pair is None:
            continue
        module = pair[which]
        param = next(module.parameters())
        out = module(out.to(device=param.device, dtype=param.dtype)).to(device=context.device, dtype=context.dtype)
    return out


def apply_single_hypernetwork(hypernetwork: Hypernetwork | None, context_k: torch.Tensor, context_v: torch.Tensor,
                              layer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(hyper_k(context_k), hyper_v(context_v)) when `hypernetwork` has the width, else unchanged."""
    pair = hypernetwork.layers.get(context_k.shape[-1]) if hypernetwork is not None else None
    if pair is None:
        return context_k, context_v
    if layer is not None:
        layer.hyper_k, layer.hyper_v = pair
    return apply_to_context([hypernetwork], context_k, 0), apply_to_context([hypernetwork], context_v, 1)


def apply_hypernetworks(hypernetworks_list: Iterable[Hypernetwork], context: torch.Tensor,
                        layer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(context_k, context_v) for one attention layer: every hypernetwork applied in order (A1111)."""
    context_k = context_v = context
    for hypernetwork in hypernetworks_list:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v, layer)
    return context_k, context_v
