"""One model layer over open_clip: build, load, convert and take apart every model the workflow uses.

- `build_model(arch)`: any open_clip architecture, including the embedded configs shipped in
  `workflow_scripts/models/model_configs/` (registered in every process that imports this module). A config may
  carry `vision_cfg.timm_model_kwargs` (the key newer open_clip releases read); open_clip 3.3.0 cannot pass
  them to timm, so the timm trunk is rebuilt with them after construction (docs/original_code.md, "LaCLIP checkpoints").
- `load_model(spec, checkpoint)`: our checkpoint format, raw open_clip state dicts, and LaCLIP/SLIP
  `CLIP_VITB16` checkpoints (`{"state_dict": {"module.…"}}`), the latter converted key by key.
- Split towers for projection-only fine-tuning: pre-projection pooled features and the projections
  applied separately, with `project_image(m, image_features(m, x)) == m.encode_image(x)`.
- `projection_matrices(model)`: both projections as [embed_out, in] (rows = output neurons) whatever the
  tower stores (built-in ViT and CLIP text use `x @ P`, timm heads and RN attention pools use Linear).

    python -m workflow_scripts.models.clip --config config.yaml --model laclip \\
        --checkpoint resources/checkpoints/laclip.pt --out results/pretrain/laclip/checkpoint.pt
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..common.errors import InputError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("model_configs")
# OpenAI CLIP normalisation: what the original evaluations used (docs/original_code.md, "Exp 1").
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet normalisation: what LaCLIP's train.py (the original fine-tune) and LaCLIP's own evaluation used.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TIMM_KWARGS_KEY = "timm_model_kwargs"


# ----------------------------------------------------------------------------- registry


def import_open_clip():
    """open_clip, imported without transformers unless something in this process already imported it.

    Why: open_clip's package import also imports transformers (for HF text towers and CoCa's generation),
    which costs ~1.8 s of CPU per process on the 2-core machine (bench/open_clip_import.py), in every job
    that touches a model, while the workflow's own towers are open_clip's. transformers is hidden during
    that import only (open_clip then records it as absent); `build_model` gives it back to open_clip's HF
    module before it builds an HF text tower (`enable_hf_text_towers`).
    """
    if "open_clip" in sys.modules or "transformers" in sys.modules:
        import open_clip

        return open_clip
    sys.modules["transformers"] = None          # makes `import transformers` raise ImportError
    try:
        import open_clip
    finally:
        del sys.modules["transformers"]
    return open_clip


def enable_hf_text_towers() -> None:
    """Re-import open_clip's HF text-tower module with transformers, if `import_open_clip` hid it."""
    from open_clip import hf_model

    if hf_model.transformers is None:
        import transformers  # noqa: F401  (not installed: its own ImportError says so)

        importlib.reload(hf_model)   # same module object: HFTextEncoder's globals now see transformers


def register_model_configs() -> list[str]:
    """Register the embedded configs with open_clip (idempotent; registration is per process)."""
    open_clip = import_open_clip()
    from open_clip import factory

    if CONFIG_DIR not in [Path(p) for p in factory._MODEL_CONFIG_PATHS]:
        open_clip.add_model_config(CONFIG_DIR)
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def known_archs() -> list[str]:
    """Every architecture name build_model accepts."""
    open_clip = import_open_clip()

    register_model_configs()
    return open_clip.list_models()


def model_config(arch: str) -> dict[str, Any]:
    """A copy of the open_clip config of `arch`; unknown names raise InputError listing the known ones."""
    open_clip = import_open_clip()

    register_model_configs()
    cfg = open_clip.get_model_config(arch) if arch in open_clip.list_models() else None
    if cfg is None:
        embedded = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise InputError(f"unknown model arch {arch!r}; embedded: {embedded}; open_clip: {open_clip.list_models()}")
    return copy.deepcopy(cfg)


# ----------------------------------------------------------------------------- building


def build_model(arch: str) -> nn.Module:
    """A randomly initialised open_clip model of architecture `arch`, fp32, on CPU, in eval mode.

    Initialisation draws from torch's global RNG: seed it first for reproducible weights.
    """
    open_clip = import_open_clip()

    cfg = model_config(arch)
    timm_kwargs = cfg["vision_cfg"].pop(TIMM_KWARGS_KEY, None)
    if timm_kwargs and not cfg["vision_cfg"].get("timm_model_name"):
        raise InputError(f"model config {arch!r}: '{TIMM_KWARGS_KEY}' needs a timm tower (vision_cfg.timm_model_name)")
    if cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"] or "multimodal_cfg" in cfg:
        # HF text towers and CoCa go through open_clip's own factory (no timm kwargs there).
        if timm_kwargs:
            raise InputError(f"model config {arch!r}: '{TIMM_KWARGS_KEY}' is supported for CLIP models only")
        if "hf_model_name" in cfg["text_cfg"]:
            enable_hf_text_towers()
        model = open_clip.create_model(arch, pretrained=None, pretrained_text=False)
    else:
        cfg["vision_cfg"]["timm_model_pretrained"] = False
        model = open_clip.CLIP(**cfg)
        if timm_kwargs:
            _rebuild_timm_trunk(model.visual, cfg["vision_cfg"], cfg["embed_dim"], timm_kwargs, arch)
    return model.eval()


def _rebuild_timm_trunk(visual: nn.Module, vision_cfg: dict, embed_dim: int, kwargs: dict, arch: str) -> None:
    """Replace the timm trunk of an open_clip TimmModel by one built with `kwargs` (e.g. qk_norm=True).

    Mirrors TimmModel's linear-projection branch: trunk without classifier, pool from the config (''
    keeps the network default), and a head projection resized to the trunk's width if that changed.
    """
    import timm

    if vision_cfg.get("timm_proj", "linear") != "linear" or vision_cfg.get("timm_pool") in ("abs_attn", "rot_attn"):
        raise InputError(f"model config {arch!r}: '{TIMM_KWARGS_KEY}' needs timm_proj 'linear' and a trunk pool")
    trunk = timm.create_model(vision_cfg["timm_model_name"], pretrained=False, **kwargs)
    pool = vision_cfg.get("timm_pool", "avg")
    trunk.reset_classifier(0, **({"global_pool": pool} if pool else {}))
    visual.trunk = trunk
    if visual.head.proj.in_features != trunk.num_features:
        visual.head.proj = nn.Linear(trunk.num_features, embed_dim, bias=vision_cfg.get("timm_proj_bias", False))
    size = getattr(getattr(trunk, "patch_embed", None), "img_size", None)
    if size is not None:
        visual.image_size = tuple(size)


def get_tokenizer(arch: str):
    """open_clip's tokenizer for `arch` (SimpleTokenizer with the config's context length)."""
    open_clip = import_open_clip()

    model_config(arch)  # registers and validates the name
    return open_clip.get_tokenizer(arch)


PREPROCESS_STAGES = ("finetune", "evaluate")


def preprocess_config(model: nn.Module, spec: dict, stage: str = "evaluate") -> dict:
    """How one stage feeds images to a model: image size (the model's), normalisation mean/std,
    interpolation and resize policy from the config's `models.<name>.preprocess.<stage>`.

    Stages: `finetune` = training images (feature cache, end-to-end fine-tuning, pretraining of source
    pretrain models); `evaluate` = the evaluation sets and evaluation pairs. Keys the spec does not give (a
    spec built in code rather than validated) take the schema defaults: OpenAI CLIP mean/std, bicubic,
    shorter side resized + centre crop. A spec's older model-wide `image_mean`/`image_std` still apply to
    both stages when the stage gives no mean/std.
    """
    from ..common.data import RESIZE_POLICIES, INTERPOLATIONS

    if stage not in PREPROCESS_STAGES:
        raise InputError(f"unknown preprocessing stage {stage!r}; known: {list(PREPROCESS_STAGES)}")
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    given = (spec.get("preprocess") or {}).get(stage) or {}
    pre = {"image_size": size,
           "mean": tuple(float(v) for v in given.get("mean") or spec.get("image_mean") or OPENAI_MEAN),
           "std": tuple(float(v) for v in given.get("std") or spec.get("image_std") or OPENAI_STD),
           "interpolation": given.get("interpolation", "bicubic"),
           "resize": given.get("resize", "shorter_side_center_crop")}
    if pre["interpolation"] not in INTERPOLATIONS:
        raise InputError(f"preprocess.{stage}.interpolation: {pre['interpolation']!r} is not one of {list(INTERPOLATIONS)}")
    if pre["resize"] not in RESIZE_POLICIES:
        raise InputError(f"preprocess.{stage}.resize: {pre['resize']!r} is not one of {list(RESIZE_POLICIES)}")
    if len(pre["mean"]) != 3 or len(pre["std"]) != 3 or min(pre["std"]) <= 0:
        raise InputError(f"preprocess.{stage}: mean and std need 3 values each, std > 0 (got {pre['mean']}, {pre['std']})")
    return pre


# ----------------------------------------------------------------------------- loading


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the DDP `module.` prefix from every key that has it."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def is_laclip_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """LaCLIP/SLIP CLIP_VITB16 keys: an `image_projection` parameter and a timm trunk under `visual.`."""
    return "image_projection" in state_dict


def convert_laclip_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LaCLIP CLIP_VITB16 state dict -> open_clip CLIP with a timm trunk (docs/original_code.md, "LaCLIP checkpoints").

    `visual.<rest>` -> `visual.trunk.<rest>`; `image_projection` (width, embed), used as `x @ P`, ->
    `visual.head.proj.weight` (embed, width), its transpose; everything else keeps its name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in strip_module_prefix(state_dict).items():
        if key == "image_projection":
            out["visual.head.proj.weight"] = value.t().contiguous()
        elif key.startswith("visual."):
            out["visual.trunk." + key[len("visual."):]] = value
        else:
            out[key] = value
    return out


def state_dict_of(checkpoint: Any, path: str) -> dict[str, torch.Tensor]:
    """The tensor state dict inside a loaded checkpoint (ours, LaCLIP's or a raw one), without `module.`."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint \
            or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise InputError(f"{path}: neither a state dict nor a dict with a 'state_dict' of tensors")
    return strip_module_prefix(checkpoint)


def load_model(spec: dict, checkpoint: str, name: str | None = None) -> nn.Module:
    """Build `spec['arch']` and load `checkpoint` into it strictly; returns the model in eval mode.

    `spec` is a config `models.<name>` entry. LaCLIP checkpoints need `source: laclip` and a timm-trunk
    arch (e.g. ViT-B-16-laclip); pickled legacy files need `trust_legacy_pickle: true`.
    """
    from .checkpoints import is_projection_only, load_checkpoint, materialize

    key = f"models.{name or '<name>'}"
    trust = bool(spec.get("trust_legacy_pickle", False))
    raw = load_checkpoint(checkpoint, trust_legacy_pickle=trust, config_key=f"{key}.trust_legacy_pickle")
    if is_projection_only(raw):          # a fine-tune's checkpoint: its projections on the pretrained model
        raw = materialize(raw, checkpoint, trust_legacy_pickle=trust)
    meta = raw.get("meta") if isinstance(raw, dict) else None
    if isinstance(meta, dict) and meta.get("arch") and meta["arch"] != spec["arch"]:
        raise InputError(f"{checkpoint}: holds a {meta['arch']!r} model but {key}.arch is {spec['arch']!r}")
    state_dict = state_dict_of(raw, checkpoint)
    if is_laclip_state_dict(state_dict):
        if spec.get("source") != "laclip":
            raise InputError(f"{checkpoint}: looks like a LaCLIP/SLIP checkpoint (has 'image_projection'); "
                             f"set {key}.source: laclip")
        state_dict = convert_laclip_state_dict(state_dict)
    model = build_model(spec["arch"])
    if spec.get("source") == "laclip" and not hasattr(model.visual, "trunk"):
        raise InputError(f"{key}.arch {spec['arch']!r}: source laclip needs a timm-trunk architecture "
                         "such as ViT-B-16-laclip")
    load_state_dict_strict(model, state_dict, f"{checkpoint} (arch {spec['arch']})")
    return model.eval()


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """model.load_state_dict(strict=True) with an InputError that lists missing/unexpected/mismatched keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(keys)}): {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)) if keys]
        raise InputError(f"{where}: checkpoint does not fit the architecture; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------- split towers


def _tower_kind(visual: nn.Module) -> str:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "vit"
    if isinstance(visual, TimmModel):
        return "timm"
    if isinstance(visual, ModifiedResNet):
        return "resnet"
    raise InputError(f"unsupported image tower {type(visual).__name__}")


def _text_tower(model: nn.Module) -> nn.Module:
    """The module holding the CLIP text tower attributes (CLIP keeps them on the model itself)."""
    if not hasattr(model, "token_embedding"):
        raise InputError(f"split text tower needs an open_clip CLIP text tower, not {type(model).__name__}")
    return model


def tower_precision(device: torch.device) -> str:
    """How the frozen towers run on `device` (tower_autocast); the feature cache records it, so that
    evaluation, which encodes in float32, reuses only float32 features."""
    return "float16-autocast" if device.type == "cuda" else "float32"


def tower_autocast(device: torch.device):
    """fp16 autocast for the frozen towers while training features are made on a GPU (the original's AMP
    recipe, where the towers are the cost); full precision on the CPU."""
    if tower_precision(device) == "float16-autocast":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def image_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled image features before the projection (B, width)."""
    visual = model.visual
    kind = _tower_kind(visual)
    if kind == "vit":
        if visual.attn_pool is not None:
            raise InputError("split image tower: attentional pooling is not supported")
        pooled, _ = visual._pool(visual.transformer(visual._embeds(images)))
        return pooled
    if kind == "timm":
        return visual.trunk(images)
    raise InputError("split image tower: ModifiedResNet projects inside its attention pool; not supported")


def project_image(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Apply the image projection (the model's own parameters) to pre-projection features."""
    visual = model.visual
    kind = _tower_kind(visual)
    if kind == "vit":
        return features @ visual.proj if visual.proj is not None else features
    if kind == "timm":
        return visual.head(features)
    raise InputError("split image tower: ModifiedResNet is not supported")


def text_features(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Pooled text features before the projection (B, width); the steps of CLIP.encode_text."""
    from open_clip.transformer import text_global_pool

    m = _text_tower(model)
    cast_dtype = m.transformer.get_cast_dtype()
    x = m.token_embedding(tokens).to(cast_dtype)
    x = x + m.positional_embedding.to(cast_dtype)
    x = m.transformer(x, attn_mask=m.attn_mask)
    x = m.ln_final(x)
    return text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))


def project_text(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Apply the text projection (the model's own parameters) to pre-projection features."""
    proj = _text_tower(model).text_projection
    if proj is None:
        return features
    return proj(features) if isinstance(proj, nn.Module) else features @ proj


def projection_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Exactly the image and text projection parameters, by their state-dict names (no logit_scale)."""
    visual = model.visual
    kind = _tower_kind(visual)
    if kind == "vit":
        image = {"visual.proj": visual.proj}
    elif kind == "timm":
        image = {f"visual.head.{n}": p for n, p in visual.head.named_parameters()}
    else:
        image = {f"visual.attnpool.c_proj.{n}": p for n, p in visual.attnpool.c_proj.named_parameters()}
    proj = _text_tower(model).text_projection
    text = ({f"text_projection.{n}": p for n, p in proj.named_parameters()} if isinstance(proj, nn.Module)
            else {"text_projection": proj})
    out = {k: p for k, p in {**image, **text}.items() if p is not None}
    if len(out) < 2:
        raise InputError("model has no image or no text projection")
    return out


@dataclass(frozen=True)
class Projection:
    """One of the model's linear projections, y = x @ W (+ b), over its own parameters.

    W is `weight` itself when the model multiplies `x @ weight` (open_clip ViT and text towers) and its
    transpose when weight belongs to an nn.Linear (timm heads, converted LaCLIP models). The fine-tune
    applies it to cached pre-projection features.
    """

    weight: nn.Parameter
    transposed: bool
    bias: nn.Parameter | None = None

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    @property
    def in_features(self) -> int:
        return self.weight.shape[1 if self.transposed else 0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.t() if self.transposed else self.weight
        return torch.addmm(self.bias, x, w) if self.bias is not None else torch.mm(x, w)

    def rows(self) -> torch.Tensor:
        """The weights as [out, in] (row i = output neuron i), detached."""
        w = self.weight.detach()
        return w if self.transposed else w.t()



def _linear(proj: torch.Tensor | nn.Module | None, where: str) -> Projection:
    if isinstance(proj, nn.Linear):
        return Projection(proj.weight, transposed=True, bias=proj.bias)
    if isinstance(proj, nn.Parameter) and proj.ndim == 2:
        return Projection(proj, transposed=False)
    raise InputError(f"{where}: the projection-only fine-tune needs a linear projection, not "
                     f"{type(proj).__name__}")


def linear_projections(model: nn.Module) -> tuple[Projection, Projection]:
    """(image, text) projections as `Projection`s over the model's own parameters (InputError if one is
    not a single linear map: an MLP head, ModifiedResNet's attention pool, or none at all)."""
    visual = model.visual
    kind = _tower_kind(visual)
    if kind == "vit":
        image = _linear(visual.proj, "image tower")
    elif kind == "timm":
        extra = [n for n, _ in visual.head.named_children() if n not in ("proj", "drop")]
        if extra or not hasattr(visual.head, "proj"):
            raise InputError(f"image tower: timm head with {extra or 'no proj'} is not a single linear projection")
        image = _linear(visual.head.proj, "image tower")
    else:
        raise InputError("image tower: ModifiedResNet projects inside its attention pool; not supported")
    return image, _linear(_text_tower(model).text_projection, "text tower")


@dataclass(frozen=True)
class Head:
    """The part of a model that a projection-only fine-tune trains, apart from the towers: both linear
    projections (over their own tensors), their state-dict names and the (exp'ed, frozen) logit scale.

    `to_arrays` / `from_arrays` carry it as plain arrays (stored beside the feature cache), so that a cached
    fine-tune loads neither open_clip nor the checkpoint and builds no model.
    """

    image: Projection
    text: Projection
    names: dict[str, torch.Tensor]       # state-dict name -> tensor, image then text, weight then bias
    logit_scale: float

    @classmethod
    def from_model(cls, model: nn.Module) -> "Head":
        """Copies of the model's projections (the model itself is left as it is)."""
        name_of = {id(p): k for k, p in model.named_parameters()}
        names: dict[str, torch.Tensor] = {}

        def copy_of(proj: Projection) -> Projection:
            for p in proj.parameters:
                names[name_of[id(p)]] = p.detach().clone()
            return Projection(names[name_of[id(proj.weight)]], proj.transposed,
                              names[name_of[id(proj.bias)]] if proj.bias is not None else None)

        image, text = linear_projections(model)
        return cls(copy_of(image), copy_of(text), names, float(model.logit_scale.detach().exp()))

    def to_arrays(self, prefix: str = "head.") -> dict[str, np.ndarray]:
        import json

        import numpy as np

        by_id = {id(t): k for k, t in self.names.items()}
        layout = {tower: {"weight": by_id[id(p.weight)], "transposed": p.transposed,
                          "bias": by_id[id(p.bias)] if p.bias is not None else None}
                  for tower, p in (("image", self.image), ("text", self.text))}
        arrays = {f"{prefix}param.{k}": t.detach().cpu().numpy() for k, t in self.names.items()}
        arrays[f"{prefix}layout"] = np.asarray(json.dumps(layout))
        arrays[f"{prefix}logit_scale"] = np.float64(self.logit_scale)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict, where: str, device: torch.device | str = "cpu",
                    prefix: str = "head.") -> "Head":
        import json

        try:
            layout = json.loads(str(arrays[f"{prefix}layout"]))
            names = {k[len(f"{prefix}param."):]: torch.from_numpy(arrays[k].copy()).to(device)
                     for k in arrays if k.startswith(f"{prefix}param.")}
            towers = {tower: Projection(names[spec["weight"]], bool(spec["transposed"]),
                                        names[spec["bias"]] if spec["bias"] else None)
                      for tower, spec in layout.items()}
            return cls(towers["image"], towers["text"], names, float(arrays[f"{prefix}logit_scale"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"{where}: no usable projection head ({type(exc).__name__}: {exc}); "
                             "rebuild the feature cache") from None

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self.image.parameters + self.text.parameters

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(image, text) as [embed_out, in]: row i is output neuron i's weights."""
        return self.image.rows(), self.text.rows()


def _as_rows(weight: torch.Tensor | nn.Module, used_as_matmul: bool) -> torch.Tensor:
    if isinstance(weight, nn.Linear):
        return weight.weight.detach()
    return weight.detach().t() if used_as_matmul else weight.detach()


def projection_matrices(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [embed_out, in], text [embed_out, in]), detached; row i is output neuron i's weights."""
    visual = model.visual
    kind = _tower_kind(visual)
    if kind == "vit":
        image = _as_rows(visual.proj, used_as_matmul=True)
    elif kind == "timm":
        if not hasattr(visual.head, "proj"):
            raise InputError("timm tower without a linear head.proj has no single projection matrix")
        image = _as_rows(visual.head.proj, used_as_matmul=False)
    else:
        image = _as_rows(visual.attnpool.c_proj, used_as_matmul=False)
    proj = _text_tower(model).text_projection
    text = _as_rows(proj, used_as_matmul=True)
    return image, text


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- CLI: import a checkpoint


def import_checkpoint(spec: dict, name: str, checkpoint: str, out: str) -> None:
    """Load (converting LaCLIP keys) and re-save a checkpoint in our format, so later stages load it
    with weights_only=True and one code path."""
    from .checkpoints import save_checkpoint
    from ..common.io import sha256_file

    model = load_model(spec, checkpoint, name=name)
    meta = {"model": name, "arch": spec["arch"], "source": spec["source"], "imported_from": str(checkpoint),
            "source_sha256": sha256_file(checkpoint)}
    save_checkpoint(out, model.state_dict(), epoch=0, meta=meta)
    log.info("imported %s (%s, %d parameters) -> %s", checkpoint, spec["arch"], num_parameters(model), out)


def main(argv: list[str] | None = None) -> int:
    from ..common.config import check_model, load_config
    from ..common.io import setup_logging

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="workflow config (YAML)")
    ap.add_argument("--model", required=True, help="model name (a key of models)")
    ap.add_argument("--checkpoint", required=True, help="checkpoint file to import")
    ap.add_argument("--out", required=True, help="output checkpoint (our format)")
    ap.add_argument("--log", help="log file")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    check_model(config, args.model, args.config)
    import_checkpoint(config["models"][args.model], args.model, args.checkpoint, args.out)
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
