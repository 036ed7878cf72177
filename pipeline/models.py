"""Models by name: our own LeNet, and timm for ResNet-34/50 and every other timm architecture.

Every model ends in one logit (the log-odds that the photo is a dog).
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from pipeline.errors import ConfigError

_logger = logging.getLogger(__name__)
HUB_HOST = "huggingface.co"


class LeNet(nn.Module):
    """LeNet-5 (LeCun et al., 1998) adapted to RGB input of any size and a one-logit head.

    Layers as in the paper: C1 6@5x5, S2 2x2 pool, C3 16@5x5, S4 2x2 pool, C5 120@5x5,
    F6 84, output. Modern choices: ReLU instead of scaled tanh, max instead of average
    pooling, dropout before F6; the flattened C5 size follows from ``img_size``.
    """

    def __init__(self, img_size: int = 32, num_classes: int = 1, dropout: float = 0.25):
        super().__init__()
        if img_size < 32:
            raise ConfigError(f"LeNet needs --img-size of at least 32, got {img_size}.")
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 120, 5), nn.ReLU(inplace=True),
        )
        side = ((img_size - 4) // 2 - 4) // 2 - 4
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(120 * side * side, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


OWN_MODELS = {"lenet": LeNet}


def check_arch(name: str) -> str:
    """Return ``name`` if it is ``lenet`` or a timm model; otherwise a ConfigError with close matches."""
    import timm

    if name in OWN_MODELS or timm.is_model(name):
        return name
    close = difflib.get_close_matches(name, list(OWN_MODELS) + timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `timm.list_models()` for names."
    raise ConfigError(f"Unknown architecture {name!r}.{hint}")


def default_img_size(arch: str) -> int:
    """64 px for LeNet; the pretrained input size timm records for anything else (usually 224)."""
    if arch in OWN_MODELS:
        return 64
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


def normalization(model: nn.Module) -> tuple[tuple, tuple]:
    """Mean and std the model expects (timm's pretrained config; ImageNet's for our own)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg and cfg.get("mean") and cfg.get("std"):
        return tuple(cfg["mean"]), tuple(cfg["std"])
    return IMAGENET_MEAN, IMAGENET_STD


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0, port: int = 443) -> bool:
    """True when ``host`` resolves and a TCP connection to ``port`` opens, all within ``timeout`` seconds.

    The name lookup runs in a thread of its own: ``socket.create_connection``'s timeout does not cover it, and
    a resolver without a network may take minutes to give up.
    """
    def connect() -> bool:
        with socket.create_connection((host, port), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout)
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)


def pretrained_problem(arch: str) -> str | None:
    """Why timm cannot load ``arch``'s pretrained weights here, as the end of a sentence; None when it can (the
    file is in the Hugging Face hub cache, or its host answers)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return f"timm has no pretrained weights for {arch}"
    if cfg.hf_hub_id and _in_hub_cache(cfg.hf_hub_id):
        return None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "HF_HUB_OFFLINE=1 is set and the weights are not in the hub cache"
    host = urlparse(cfg.url).hostname if cfg.url and not cfg.hf_hub_id else HUB_HOST
    if hub_reachable(host):
        return None
    return f"cannot reach {host} (no network?) and the weights are not in the hub cache"


def _in_hub_cache(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo = hub_id.split("@")[0]
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


def build_model(arch: str, img_size: int, *, pretrained: bool = False, weights: str | Path | None = None,
                drop_rate: float = 0.0, num_classes: int = 1, weights_partial: bool = False) -> nn.Module:
    """Create ``arch`` with a head of ``num_classes`` outputs (one logit for two classes).

    Args:
        arch: ``lenet`` or any timm model name.
        img_size: input side (LeNet sizes its classifier from it).
        num_classes: the head's outputs: 1 (the log-odds of the positive class) or K.
        pretrained: load timm's hub weights (ImageNet); needs the network or a filled hub cache.
        weights: a local file to start from: one of our checkpoints, a state dict, or a timm
            ``.safetensors``/``.pth`` ImageNet file (its classifier is dropped and re-initialised).
        drop_rate: dropout before the classifier of timm models.
        weights_partial: load only the tensors of ``weights`` that fit (another variant's), not refuse the rest.
    """
    check_arch(arch)  # pretrained and weights together: refused by the recipe (train.recipe.Recipe.resolved)
    if arch in OWN_MODELS:
        if pretrained:
            raise ConfigError(f"{arch} has no pretrained weights; drop --pretrained (or pass --weights FILE).")
        model = OWN_MODELS[arch](img_size=img_size, num_classes=num_classes)
    else:
        import timm

        model = _create_pretrained(arch, drop_rate, num_classes) if pretrained else \
            timm.create_model(arch, pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
        zero_head(model)
    if weights:
        load_weights(model, weights, weights_partial)
    return model


def zero_head(model: nn.Module) -> None:
    """Start a timm model's new classifier at zero, whatever the family's own init.

    timm sizes some heads for 1,000 classes (EfficientNet's: std 0.56 with fan-out 1), so a fresh
    one-logit head put out logits of about +-20 on ImageNet features: near-certain, wrong
    probabilities and a first-epoch loss of 2.7. At zero every first logit is 0 (P = 0.5) and the
    head grows from the features' gradient; a head loaded from a file later replaces it.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, (nn.Linear, nn.Conv2d)):
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def _create_pretrained(arch: str, drop_rate: float, num_classes: int = 1) -> nn.Module:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    url = (cfg.url or "") if cfg is not None else ""
    host = urlparse(url).hostname if url and not (cfg and cfg.hf_hub_id) else HUB_HOST
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable(host)
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    if offline:
        # timm has no offline switch of its own; huggingface_hub reads this flag at call time,
        # so a filled hub cache still works and an empty one fails at once instead of retrying.
        hub_constants.HF_HUB_OFFLINE = True
    try:
        return timm.create_model(arch, pretrained=True, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure gets the same advice
        why = f"cannot reach {host} (no network?)" if offline else f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"Could not load pretrained weights for {arch}: {why}; download the weights "
                          "file elsewhere and pass it with --weights FILE.") from None
    finally:
        hub_constants.HF_HUB_OFFLINE = previous  # for this call only: later hub use in the process is unchanged


def load_weights(model: nn.Module, path: str | Path, partial: bool = False) -> None:
    """Load a checkpoint, a state dict or a timm weights file into ``model``.

    Classifier tensors whose shape does not fit (an ImageNet classifier against our one-logit head) are
    skipped and stay freshly initialised; any other tensor that is missing, unexpected or shaped otherwise
    (weights of another variant) is an error, unless ``partial``: then only the tensors that fit are loaded
    and a warning says how many.
    """
    fitting = fit_weights(model, read_weights(path), path, partial)
    model.load_state_dict(fitting, strict=False)


def check_weights(arch: str, img_size: int, num_classes: int, path: str | Path, partial: bool = False) -> None:
    """Refuse at once (on a model without memory) what :func:`load_weights` would refuse when the fold starts."""
    with torch.device("meta"):
        model = build_model(arch, img_size, num_classes=num_classes)
    fit_weights(model, read_weights(path), path, partial, say=False)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file by name (a checkpoint's model weights, a state dict, a .safetensors file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load and safetensors raise many kinds
        raise ConfigError(f"Cannot read --weights file {path} ({type(exc).__name__}: {exc}).") from None
    for key in CHECKPOINT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--weights file {path} holds no state dict (tensors by name); give the weights of a "
                          "model, as torch.save(model.state_dict()) or a timm/hub .safetensors file writes them.")
    return {strip_wrappers(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, partial: bool,
                say: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` to load into ``model`` (see :func:`load_weights`); ConfigError when they do not fit."""
    own = model.state_dict()
    state = _own_names(state, own)
    head = _classifier_names(model)
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    unfit = [k for k in own if k not in fitting and k not in head] + [k for k in state if k not in own]
    if not fitting:
        raise ConfigError(f"--weights file {path} does not fit this architecture: not one of its {len(state)} "
                          f"tensors fits the model (e.g. {', '.join(list(state)[:3])}).")
    if unfit and not partial:
        raise ConfigError(f"--weights file {path} does not fit this architecture: {len(unfit)} tensors beyond the "
                          f"classifier are missing, unexpected or shaped otherwise (e.g. {', '.join(unfit[:3])}); "
                          "give the weights of the same architecture, or add --weights-partial to load only the "
                          f"{len(fitting)} of {len(own)} that fit.")
    if say and unfit:
        _logger.warning("--weights-partial: loaded %d of the model's %d tensors from %s; the other %d start fresh",
                        len(fitting), len(own), path, len(own) - len(fitting))
    elif say and len(fitting) < len(own):
        _logger.info("weights %s: re-initialised %s (shape differs)", path,
                     ", ".join(sorted(k for k in head if k not in fitting)))
    return fitting


def _classifier_names(model: nn.Module) -> set[str]:
    """The state-dict names of the model's classifier (timm's ``get_classifier()``; LeNet's last Linear)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else \
        next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    name = next((n for n, m in model.named_modules() if m is head), None)
    if head is None or name is None:
        return set()
    return {f"{name}.{k}" if name else k for k in head.state_dict()}


WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel's and torch.compile's
# where checkpoints keep the weights: ours and torchvision's references ("model"), timm's train.py and
# Lightning ("state_dict"), many tutorials ("model_state_dict")
CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")


def _own_names(state: dict, own: dict) -> dict:
    """``state`` with a prefix every key shares removed when that makes its names the model's (Lightning saves
    ``model.conv1.weight`` for a module it holds as ``self.model``)."""
    if set(state) & set(own):
        return state
    first = {k.split(".", 1)[0] for k in state}
    if len(first) == 1 and all("." in k for k in state):
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if set(stripped) & set(own):
            return stripped
    return state


def strip_wrappers(key: str) -> str:
    """A state-dict key without the prefixes wrappers add, in any order and number: ``_orig_mod.module.x``
    (``torch.compile(DDP(model))``, this project's order), ``module._orig_mod.x`` and ``module.x`` give ``x``."""
    while prefix := next((p for p in WRAPPER_PREFIXES if key.startswith(p)), None):
        key = key[len(prefix):]
    return key


@dataclass
class MemoryEstimate:
    """Bytes one process needs for ``arch`` at one image size and batch (see :func:`memory_estimate`).

    Args:
        params: the weights' element count.
        step: one training step: weights, their gradient and two AdamW moments (16 bytes a weight) and the
            activations.
        activations: what the forward pass keeps for the backward one: the input and every new tensor a layer
            computes (timm's BatchNormAct2d pre-activations included).
        evaluation: one evaluation batch (twice the training batch, no gradient): the input and the largest
            layer output held at once, twice over (a layer's input and output).
        ema: the moving average of the weights (4 bytes a weight) when the recipe keeps one.
    """

    params: int
    step: int
    evaluation: int
    ema: int
    activations: int = 0

    @property
    def peak(self) -> int:
        """The most the process holds at once: the larger of a step and an evaluation, and the EMA copy."""
        return max(self.step, self.evaluation + 16 * self.params) + self.ema


def memory_estimate(arch: str, img_size: int, batch_size: int, *, half: bool = False,
                    ema: bool = False) -> MemoryEstimate:
    """A rough estimate of the memory one training process of ``arch`` takes, without allocating it.

    The model is built and run on PyTorch's meta device (shapes only); the activations are the tensors autograd
    saves for the backward pass, each storage once (on the CPU a real forward pass saves the same bytes:
    tests/test_gpu_review.py).

    Args:
        arch: the architecture.
        img_size: input side in pixels.
        batch_size: images per step in one process.
        half: activations in 16 bits (autocast on a GPU).
        ema: the recipe keeps a moving average of the weights.
    """
    largest, saved = 0, {}

    def count(_module, _inputs, out):
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel())

    def keep(t: torch.Tensor) -> torch.Tensor:
        # each storage once (a view, an in-place activation and its input share one); the weights are counted apart
        storage = t.untyped_storage()
        if storage._cdata not in weights:
            saved[storage._cdata] = (storage.nbytes(), t.is_floating_point())
        return t

    with torch.device("meta"):
        model = build_model(arch, img_size).train()
        weights = {p.untyped_storage()._cdata for p in model.parameters()}
        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        x = torch.empty(batch_size, 3, img_size, img_size)
        # what autograd keeps for the backward pass, whichever module computes it (timm's BatchNormAct2d keeps its
        # pre-activation, an SE block its product: neither is a leaf module's output)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            model(x)
        for h in hooks:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    act = 2 if half else 4
    floats = sum(n for n, floating in saved.values() if floating)
    # fp32 on the meta device; autocast keeps 16-bit copies, beside the fp32 input
    activations = floats * act // 4 + sum(n for n, floating in saved.values() if not floating) + \
        (4 * x.numel() if half else 0)
    return MemoryEstimate(params=params, step=16 * params + activations, activations=activations,
                          evaluation=2 * (4 * x.numel() + 2 * act * largest), ema=4 * params if ema else 0)
