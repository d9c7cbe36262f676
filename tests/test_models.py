"""Model layer: LaCLIP conversion against a reference implementation, split towers, projection
orientation, loading formats and errors."""

from __future__ import annotations

import argparse
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models import clip as M
from workflow_scripts.models.checkpoints import save_checkpoint
from workflow_scripts.common.errors import InputError

torch.set_num_threads(1)

# fp-tiny-laclip: the LaCLIP CLIP_VITB16 structure at tiny widths (see its JSON).
TINY = dict(image_size=32, patch=8, vision_width=48, vision_layers=2, vision_heads=3, embed_dim=32,
            context_length=16, vocab_size=49408, text_width=32, text_heads=2, text_layers=2)


# ----------------------------------------------------------------------------- reference (LaCLIP models.py)


class RefAttention(nn.Module):
    """LaCLIP's qk-norm Attention: per-head LayerNorm (eps 1e-6) on q and k before the dot product."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = self.q_norm(q), self.k_norm(k)
        attn = ((q * self.head_dim ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact GELU, as timm


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class RefVisual(nn.Module):
    """timm VisionTransformer as LaCLIP uses it: CLS token, learned pos_embed, final norm, CLS output."""

    def __init__(self, image_size, patch, dim, layers, heads):
        super().__init__()
        n = (image_size // patch) ** 2
        self.patch_embed = RefPatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.Sequential(*[RefBlock(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class RefResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x, mask):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class RefTransformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList([RefResidualAttentionBlock(width, heads) for _ in range(layers)])


class RefLaCLIP(nn.Module):
    """LaCLIP's CLIP class: x @ image_projection, x @ text_projection, EOT (argmax) pooling, LND text."""

    def __init__(self, c: dict):
        super().__init__()
        self.context_length = c["context_length"]
        self.visual = RefVisual(c["image_size"], c["patch"], c["vision_width"], c["vision_layers"], c["vision_heads"])
        self.transformer = RefTransformer(c["text_width"], c["text_layers"], c["text_heads"])
        self.token_embedding = nn.Embedding(c["vocab_size"], c["text_width"])
        self.positional_embedding = nn.Parameter(torch.empty(c["context_length"], c["text_width"]))
        self.ln_final = nn.LayerNorm(c["text_width"])
        self.image_projection = nn.Parameter(torch.empty(c["vision_width"], c["embed_dim"]))
        self.text_projection = nn.Parameter(torch.empty(c["text_width"], c["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.ones([]) * 2.6593)

    def encode_image(self, image):
        return self.visual(image) @ self.image_projection

    def encode_text(self, text):
        mask = torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)
        x = self.token_embedding(text) + self.positional_embedding
        x = x.permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def randomised_reference(seed: int = 0) -> RefLaCLIP:
    """Reference model with every parameter random, LayerNorm gains/biases perturbed away from 1/0."""
    torch.manual_seed(seed)
    ref = RefLaCLIP(TINY)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 0:  # logit_scale keeps its init
                continue
            if "norm" in name or "ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p) / max(1.0, p.shape[-1] ** 0.5))
    return ref.eval()


def random_tokens(n: int, context: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, context, dtype=torch.long)
    for i in range(n):
        length = int(torch.randint(3, context + 1, (1,), generator=g))
        tokens[i, 0] = 49406
        tokens[i, 1:length - 1] = torch.randint(1, 49000, (length - 2,), generator=g)
        tokens[i, length - 1] = 49407
    return tokens


# ----------------------------------------------------------------------------- conversion


@pytest.fixture(scope="module")
def laclip_file(tmp_path_factory):
    """A LaCLIP train.py-style file: DDP-prefixed state dict plus a pickled argparse.Namespace."""
    ref = randomised_reference()
    path = tmp_path_factory.mktemp("laclip") / "cc3m_laclip.pt"
    torch.save({"epoch": 35, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()},
                "args": argparse.Namespace(model="CLIP_VITB16")}, path)
    return ref, path


LACLIP_SPEC = {"source": "laclip", "arch": "fp-tiny-laclip", "trust_legacy_pickle": True}


def test_converted_laclip_equals_reference(laclip_file):
    ref, path = laclip_file
    model = M.load_model(LACLIP_SPEC, str(path), name="laclip")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = random_tokens(5, TINY["context_length"])
    with torch.no_grad():
        assert (model.encode_image(x) - ref.encode_image(x)).abs().max() < 1e-5
        assert (model.encode_text(tokens) - ref.encode_text(tokens)).abs().max() < 1e-5
        # and the projections really carry weight: the outputs are not trivially small
        assert ref.encode_image(x).abs().max() > 0.1 and ref.encode_text(tokens).abs().max() > 0.1
    assert model.logit_scale.item() == pytest.approx(2.6593)


def test_conversion_is_a_transpose_of_image_projection_only(laclip_file):
    ref, _ = laclip_file
    sd = M.convert_laclip_state_dict({f"module.{k}": v for k, v in ref.state_dict().items()})
    assert torch.equal(sd["visual.head.proj.weight"], ref.image_projection.detach().t())
    assert torch.equal(sd["text_projection"], ref.text_projection.detach())
    assert torch.equal(sd["visual.trunk.blocks.1.attn.q_norm.weight"], ref.visual.blocks[1].attn.q_norm.weight.detach())
    image_p, text_p = M.projection_matrices(M.load_model(LACLIP_SPEC, str(_)))
    assert torch.equal(image_p, ref.image_projection.detach().t())  # rows = output neurons
    assert torch.equal(text_p, ref.text_projection.detach().t())


def test_laclip_needs_opt_in_and_source(laclip_file):
    _, path = laclip_file
    with pytest.raises(InputError, match="models.laclip.trust_legacy_pickle"):
        M.load_model({**LACLIP_SPEC, "trust_legacy_pickle": False}, str(path), name="laclip")
    with pytest.raises(InputError, match="set models.x.source: laclip"):
        M.load_model({**LACLIP_SPEC, "source": "checkpoint"}, str(path), name="x")
    with pytest.raises(InputError, match="needs a timm-trunk architecture"):
        M.load_model({**LACLIP_SPEC, "arch": "fp-tiny-vit"}, str(path))


def test_import_cli_writes_a_safe_checkpoint(laclip_file, tmp_path):
    ref, path = laclip_file
    config = tmp_path / "c.yaml"
    config.write_text(f"models:\n  laclip: {{source: laclip, arch: fp-tiny-laclip, checkpoint: {path}, "
                      "trust_legacy_pickle: true}\nfinetune: {models: [laclip]}\n"
                      "evaluate: {pruning: {models: [laclip]}}\n")
    out = tmp_path / "pretrain" / "checkpoint.pt"
    assert M.main(["--config", str(config), "--model", "laclip", "--checkpoint", str(path), "--out", str(out)]) == 0
    raw = torch.load(out, weights_only=True)
    assert raw["meta"]["arch"] == "fp-tiny-laclip" and "visual.head.proj.weight" in raw["state_dict"]
    # downstream loads it without any pickle trust
    model = M.load_model({"source": "laclip", "arch": "fp-tiny-laclip"}, str(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model.encode_image(x) - ref.encode_image(x)).abs().max() < 1e-5


def test_vit_b16_laclip_config_matches_laclip_keys():
    """The real ViT-B-16-laclip config converts back to exactly LaCLIP CLIP_VITB16's 349 tensors."""
    torch.manual_seed(0)
    sd = M.build_model("ViT-B-16-laclip").state_dict()
    back = {}
    for k, v in sd.items():
        if k == "visual.head.proj.weight":
            back["image_projection"] = tuple(v.t().shape)
        elif k.startswith("visual.trunk."):
            back["visual." + k[len("visual.trunk."):]] = tuple(v.shape)
        else:
            back[k] = tuple(v.shape)
    expected = {"positional_embedding": (77, 512), "image_projection": (768, 512), "text_projection": (512, 512),
                "logit_scale": (), "visual.cls_token": (1, 1, 768), "visual.pos_embed": (1, 197, 768),
                "visual.patch_embed.proj.weight": (768, 3, 16, 16), "visual.patch_embed.proj.bias": (768,),
                "visual.norm.weight": (768,), "visual.norm.bias": (768,), "token_embedding.weight": (49408, 512),
                "ln_final.weight": (512,), "ln_final.bias": (512,)}
    for n in range(12):
        b = f"visual.blocks.{n}."
        expected.update({b + "norm1.weight": (768,), b + "norm1.bias": (768,), b + "attn.q_norm.weight": (64,),
                         b + "attn.q_norm.bias": (64,), b + "attn.k_norm.weight": (64,), b + "attn.k_norm.bias": (64,),
                         b + "attn.qkv.weight": (2304, 768), b + "attn.qkv.bias": (2304,),
                         b + "attn.proj.weight": (768, 768), b + "attn.proj.bias": (768,),
                         b + "norm2.weight": (768,), b + "norm2.bias": (768,), b + "mlp.fc1.weight": (3072, 768),
                         b + "mlp.fc1.bias": (3072,), b + "mlp.fc2.weight": (768, 3072), b + "mlp.fc2.bias": (768,)})
        t = f"transformer.resblocks.{n}."
        expected.update({t + "attn.in_proj_weight": (1536, 512), t + "attn.in_proj_bias": (1536,),
                         t + "attn.out_proj.weight": (512, 512), t + "attn.out_proj.bias": (512,),
                         t + "ln_1.weight": (512,), t + "ln_1.bias": (512,), t + "mlp.c_fc.weight": (2048, 512),
                         t + "mlp.c_fc.bias": (2048,), t + "mlp.c_proj.weight": (512, 2048),
                         t + "mlp.c_proj.bias": (512,), t + "ln_2.weight": (512,), t + "ln_2.bias": (512,)})
    assert len(expected) == 349
    assert back == expected


# ----------------------------------------------------------------------------- split towers and projections


@pytest.fixture(scope="module", params=["fp-tiny-vit", "fp-tiny-laclip"])
def model(request):
    torch.manual_seed(0)
    m = M.build_model(request.param)
    with torch.no_grad():  # make the logit scale and LN params non-trivial too
        for n, p in m.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def test_split_towers_equal_encode(model):
    x = torch.randn(3, 3, 32, 32)
    tokens = random_tokens(4, model.positional_embedding.shape[0])
    with torch.no_grad():
        assert torch.allclose(M.project_image(model, M.image_features(model, x)), model.encode_image(x), atol=1e-6)
        assert torch.allclose(M.project_text(model, M.text_features(model, tokens)), model.encode_text(tokens), atol=1e-6)


def test_projection_matrices_rows_are_output_neurons(model):
    x = torch.randn(3, 3, 32, 32)
    tokens = random_tokens(4, model.positional_embedding.shape[0])
    image_p, text_p = M.projection_matrices(model)
    with torch.no_grad():
        fi, ft = M.image_features(model, x), M.text_features(model, tokens)
        out = model.encode_image(x)
        assert image_p.shape == (out.shape[1], fi.shape[1]) and text_p.shape == (out.shape[1], ft.shape[1])
        assert torch.allclose(fi @ image_p.T, model.encode_image(x), atol=1e-5)
        assert torch.allclose(ft @ text_p.T, model.encode_text(tokens), atol=1e-5)
    assert not image_p.requires_grad and not text_p.requires_grad


def test_projection_parameters_are_the_models_own(model):
    params = M.projection_parameters(model)
    own = dict(model.named_parameters())
    assert all(params[k] is own[k] for k in params)
    assert "logit_scale" not in params
    image_name = "visual.proj" if "visual.proj" in own else "visual.head.proj.weight"
    assert set(params) == {image_name, "text_projection"}
    # gradients of a loss on the split towers reach exactly these parameters' tensors
    model.zero_grad()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fi = M.image_features(model, x)
    M.project_image(model, fi).sum().backward()
    assert params[image_name].grad is not None and params[image_name].grad.abs().sum() > 0
    assert own["logit_scale"].grad is None
    model.zero_grad()


def test_linear_projections_and_the_detached_head_apply_like_the_model(model):
    """Projection(x) == project_image/project_text over the model's own parameters (built-in ViT: x @ P;
    timm / LaCLIP layout: nn.Linear, weight transposed); the Head copied from the model, carried as plain
    arrays and rebuilt, applies the same maps under the same state-dict names, with the model's logit scale,
    and its rows() are projection_matrices()."""
    image, text = M.linear_projections(model)
    own = {id(p) for p in M.projection_parameters(model).values()}
    assert {id(p) for p in image.parameters + text.parameters} == own
    head = M.Head.from_arrays(M.Head.from_model(model).to_arrays(), "test")
    assert set(head.names) == set(M.projection_parameters(model))
    assert head.logit_scale == pytest.approx(float(model.logit_scale.exp()))
    g = torch.Generator().manual_seed(0)
    for proj, copy, apply in ((image, head.image, M.project_image), (text, head.text, M.project_text)):
        x = torch.randn(5, proj.in_features, generator=g)
        torch.testing.assert_close(proj(x), apply(model, x))
        torch.testing.assert_close(copy(x), apply(model, x))
    for rows, want in zip(head.matrices(), M.projection_matrices(model)):
        torch.testing.assert_close(rows, want, rtol=0, atol=0)
    with pytest.raises(M.InputError, match="no usable projection head"):
        M.Head.from_arrays({}, "cache.npz")


def test_projection_with_bias_and_non_linear_heads():
    g = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(4, 3)
    proj = M._linear(lin, "test")
    x = torch.randn(6, 4, generator=g)
    torch.testing.assert_close(proj(x), lin(x))
    torch.testing.assert_close(proj.rows(), lin.weight.detach(), rtol=0, atol=0)
    with pytest.raises(M.InputError, match="needs a linear projection"):
        M._linear(torch.nn.Sequential(lin, torch.nn.GELU()), "text tower")


def test_builtin_vit_projection_matches_open_clip_layout():
    """Built-in ViT and CLIP text store [in, out] and use x @ P: rows of our matrices are its columns."""
    torch.manual_seed(0)
    m = M.build_model("fp-tiny-vit")
    image_p, text_p = M.projection_matrices(m)
    assert torch.equal(image_p, m.visual.proj.detach().t()) and torch.equal(text_p, m.text_projection.detach().t())


# ----------------------------------------------------------------------------- loading


def test_load_our_format_raw_and_prefixed(tmp_path):
    torch.manual_seed(0)
    model = M.build_model("fp-tiny-vit")
    spec = {"source": "pretrain", "arch": "fp-tiny-vit"}
    ours = save_checkpoint(tmp_path / "ours.pt", model.state_dict(), epoch=1, meta={"arch": "fp-tiny-vit"})
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pt")
    for path in (ours, tmp_path / "raw.pt", tmp_path / "ddp.pt"):
        loaded = M.load_model(spec, str(path))
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
        assert not loaded.training
    with pytest.raises(InputError, match="holds a 'fp-tiny-vit' model but models.<name>.arch is 'fp-test-vit'"):
        M.load_model({**spec, "arch": "fp-test-vit"}, str(ours))
    with pytest.raises(InputError, match=r"raw.pt \(arch fp-test-vit\): checkpoint does not fit"):
        M.load_model({**spec, "arch": "fp-test-vit"}, str(tmp_path / "raw.pt"))


def test_unknown_arch_lists_known_names():
    with pytest.raises(InputError) as err:
        M.build_model("no-such-arch")
    assert "fp-tiny-vit" in str(err.value) and "ViT-B-32" in str(err.value)


def test_registration_is_idempotent_and_tokenizer_context():
    from open_clip import factory

    M.register_model_configs()
    M.register_model_configs()
    assert sum(1 for p in factory._MODEL_CONFIG_PATHS if str(p) == str(M.CONFIG_DIR)) == 1
    tokens = M.get_tokenizer("fp-tiny-vit")(["a red circle"])
    assert tokens.shape == (1, 24) and tokens[0, 0] == 49406


def test_preprocess_config():
    torch.manual_seed(0)
    m = M.build_model("fp-tiny-vit")
    pre = M.preprocess_config(m, {})
    assert pre["image_size"] == 32 and pre["mean"] == M.OPENAI_MEAN and pre["std"] == M.OPENAI_STD
    imagenet = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    assert M.preprocess_config(m, imagenet)["mean"] == (0.485, 0.456, 0.406)
