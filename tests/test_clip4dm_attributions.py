"""CLIP4DM attributions: the explicit attention is the one open_clip's block multiplies with V, the tower
equals encode_text, and batched attributions equal a plain one-pair-at-a-time autograd reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

TEMPLATE = "A photo depicts "
CAPTIONS = ["a red circle in the top left", "two big, green crosses.", "photo of a cobalt star",
            "stock image: emerald rhombi", "untitled image", "a small diamond, white",
            "close up of three boxes on a striped background", "red-ish hoop"]


@pytest.fixture(scope="module")
def model():
    from workflow_scripts.models.clip import build_model

    torch.manual_seed(0)
    m = build_model("fp-tiny-vit")          # 2 text blocks, 2 heads, context 24 (the embedded arch)
    with torch.no_grad():                     # break the init symmetry of the attention (zero biases)
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope="module")
def tokenizer():
    from workflow_scripts.models.clip import get_tokenizer

    return get_tokenizer("fp-tiny-vit")


def test_tower_equals_open_clip_encode_text(model, tokenizer):
    from workflow_scripts.clip4dm.tower import TextTower

    tokens = tokenizer([TEMPLATE + c for c in CAPTIONS])
    with torch.no_grad():
        ours = TextTower.from_model(model).encode(tokens)
        ref = model.encode_text(tokens)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_tower_round_trips_through_arrays(model, tokenizer):
    from workflow_scripts.clip4dm.tower import TextTower

    tower = TextTower.from_model(model)
    again = TextTower.from_arrays(tower.to_arrays(), "test")
    tokens = tokenizer(CAPTIONS)
    with torch.no_grad():
        assert torch.equal(tower.encode(tokens), again.encode(tokens))


def test_probability_hook_is_what_the_block_multiplies_with_v(model):
    """Unperturbed, the explicit block equals open_clip's block; replacing the probabilities by
    'attend to key 0 only' equals open_clip's block under a mask that allows key 0 only; and a random
    perturbation of the probabilities changes the output."""
    from workflow_scripts.clip4dm.tower import TextTower

    tower = TextTower.from_model(model)
    block = model.transformer.resblocks[1]
    torch.manual_seed(1)
    x = torch.randn(3, 24, model.transformer.width)
    mask = model.attn_mask
    with torch.no_grad():
        assert torch.allclose(tower.block(1, x, mask), block(x, attn_mask=mask), atol=1e-5)
        seen = []
        tower.block(1, x, mask, on_probs=seen.append)
        assert seen[0].shape == (3, 2, 24, 24)
        assert torch.allclose(seen[0].sum(-1), torch.ones(3, 2, 24), atol=1e-5)
        assert float(seen[0].triu(1).abs().max()) == 0.0          # causal

        def key0(probs):
            one = torch.zeros_like(probs)
            one[..., 0] = 1.0
            return one

        only0 = torch.full((24, 24), float("-inf"))
        only0[:, 0] = 0.0
        assert torch.allclose(tower.block(1, x, mask, on_probs=key0), block(x, attn_mask=only0), atol=1e-5)
        bumped = tower.block(1, x, mask, on_probs=lambda p: p + 0.05 * torch.rand_like(p))
        assert (bumped - block(x, attn_mask=mask)).abs().max() > 1e-3


def reference_attribution(model, tokens: torch.Tensor, image: torch.Tensor, layers: int) -> tuple[float, np.ndarray]:
    """One pair, plain autograd over open_clip's own modules: attention of the last `layers` blocks by
    einsum with retain_grad, the cosine's backward, grad * A averaged over heads and layers, EOT row."""
    blocks = model.transformer.resblocks
    keep = min(layers, len(blocks))
    x = model.token_embedding(tokens) + model.positional_embedding
    probs = []
    for i, blk in enumerate(blocks):
        if i < len(blocks) - keep:
            x = blk(x, attn_mask=model.attn_mask)
            continue
        y = blk.ln_1(x)
        w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        h = blk.attn.num_heads
        d = y.shape[-1] // h
        q, k, v = (torch.einsum("btw,ow->bto", y, w[j * y.shape[-1]:(j + 1) * y.shape[-1]])
                   + b[j * y.shape[-1]:(j + 1) * y.shape[-1]] for j in range(3))
        q, k, v = (z.view(1, -1, h, d).permute(0, 2, 1, 3) for z in (q, k, v))
        a = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", q, k) / d ** 0.5 + model.attn_mask, dim=-1)
        a.retain_grad()
        probs.append(a)
        o = torch.einsum("bhqk,bhkd->bhqd", a, v).permute(0, 2, 1, 3).reshape(1, -1, h * d)
        x = x + blk.attn.out_proj(o)
        x = x + blk.mlp(blk.ln_2(x))
    x = model.ln_final(x)
    eot = int(tokens.argmax())
    text = x[0, eot] @ model.text_projection
    cos = F.cosine_similarity(text, image, dim=0)
    cos.backward()
    cam = sum((a.grad * a).mean(dim=1)[0] for a in probs) / keep
    return float(cos.detach()), cam[eot].detach().numpy()


def test_batched_attributions_equal_one_pair_reference(model, tokenizer):
    from workflow_scripts.clip4dm.attributions import token_attributions
    from workflow_scripts.clip4dm.tower import TextTower

    tower = TextTower.from_model(model)
    tokens = tokenizer([TEMPLATE + c for c in CAPTIONS])
    torch.manual_seed(2)
    images = torch.randn(len(CAPTIONS), model.text_projection.shape[1])
    cos, attr = token_attributions(tower, tokens, images, layers=3)
    assert cos.shape == (len(CAPTIONS),) and attr.shape == tokens.shape
    eot = tokens.argmax(dim=-1)
    for b in range(len(CAPTIONS)):
        m = model.requires_grad_(True)
        ref_cos, ref = reference_attribution(m, tokens[b:b + 1], images[b], layers=3)
        assert abs(float(cos[b]) - ref_cos) <= 1e-5
        assert np.abs(attr[b].numpy() - ref).max() <= 1e-5          # EOT row, every position
        assert np.abs(attr[b, eot[b] + 1:].numpy()).max(initial=0.0) == 0.0   # after EOT: nothing
    assert float(np.abs(attr.numpy()).max()) > 0


def test_attributor_word_level_and_order(model, tokenizer):
    """Attributor sorts pairs by length into batches and gives results back in input order."""
    from workflow_scripts.clip4dm.attributions import Attributor
    from workflow_scripts.clip4dm.tower import TextTower

    tower = TextTower.from_model(model)
    torch.manual_seed(3)
    images = torch.randn(len(CAPTIONS), 64)
    att = Attributor(tower, tokenizer, TEMPLATE, layers=3, batch_size=3)
    items = att.tokenize(CAPTIONS)
    cos, words = att.attribute(items, images)
    single = Attributor(tower, tokenizer, TEMPLATE, layers=3, batch_size=1)
    cos1, words1 = single.attribute(items, images)
    assert np.abs(cos - cos1).max() <= 1e-6
    for w, w1, item in zip(words, words1, items):
        assert len(w) == len(item.words)
        np.testing.assert_allclose(w, w1, atol=1e-6)


def test_tower_of_a_laclip_style_model(tokenizer):
    """fp-tiny-laclip: QuickGELU text tower and a timm image tower with a Linear head (the converted-LaCLIP
    layout): the tower still equals encode_text, and the head projects as encode_image does."""
    from workflow_scripts.clip4dm.pipeline import embed_images
    from workflow_scripts.clip4dm.tower import TextTower
    from workflow_scripts.models.clip import Head, build_model, image_features

    torch.manual_seed(4)
    m = build_model("fp-tiny-laclip")
    tower = TextTower.from_model(m)
    assert tower.activation == "quick_gelu"
    tokens = tokenizer([TEMPLATE + c for c in CAPTIONS], context_length=16)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(tower.encode(tokens), m.encode_text(tokens), atol=1e-5)
        emb = embed_images(Head.from_model(m), image_features(m, x).numpy())
        assert np.allclose(emb, F.normalize(m.encode_image(x), dim=-1).numpy(), atol=1e-5)


TRICKY = ["a red\tcircle and a dog\tand cat", "three... stars!! wow!. ok?!", "naïve café &amp; İstanbul",
          "a big, red-ish circle.", "(a) * # - & / ' —", "x_y t-shirt, 3.5 km", "\ttabbed start",
          "two   green    crosses,emerald rhombi", "A Circle,Square.Triangle",
          "a red-ish circle in the top left on a striped background with two small blue stars and a tiny moon"]   # cut


def test_batched_path_equals_the_original_one_pair_loop_on_tricky_captions(model, tokenizer):
    """Our batched path (Attributor, words by the original rule) against an independent re-implementation of
    the original's per-pair computation and word aggregation (clip4dm_reference.one_pair: own forward, grad
    of each kept attention, its space_tokenize / tokenizer2space walk): same words, word scores and cosines
    within 1e-5, on tabs, punctuation runs, multi-token and non-ASCII words and a caption cut at the context."""
    from clip4dm_reference import one_pair

    from workflow_scripts.clip4dm.attributions import Attributor
    from workflow_scripts.clip4dm.tower import TextTower

    torch.manual_seed(5)
    images = torch.randn(len(TRICKY), model.text_projection.shape[1])
    att = Attributor(TextTower.from_model(model), tokenizer, TEMPLATE, layers=3, batch_size=4, truncate=True)
    items = att.tokenize(TRICKY)
    assert items[-1].truncated and not any(t.truncated for t in items[:-1])
    cos, words = att.attribute(items, images)
    for i, caption in enumerate(TRICKY):
        ref_cos, ref = one_pair(model.requires_grad_(True), tokenizer, images[i], caption, TEMPLATE)
        assert items[i].words == [w for w, _ in ref], caption
        assert np.abs(words[i] - np.asarray([s for _, s in ref])).max() <= 1e-5, caption
        assert abs(cos[i] - ref_cos) <= 1e-5
    assert max(np.abs(w).max() for w in words) > 1e-4        # not all zero


@pytest.mark.parametrize("mode", ["most_negative", "threshold"])
def test_localisation_scores_foils_as_the_original_loop(model, tokenizer, mode):
    """The FOIL-style localisation job's scoring (localise.score_foils, clip4dm.fclipscore.world_foils) equals
    the original's per-pair loop followed by its selection rule (most negative word, or threshold sum)."""
    import pandas as pd
    from clip4dm_reference import most_negative_result, one_pair, threshold_result

    from workflow_scripts.clip4dm.localise import score_foils
    from workflow_scripts.clip4dm.pipeline import Pack
    from workflow_scripts.clip4dm.token_table import TokenTable
    from workflow_scripts.clip4dm.tower import TextTower

    foils = pd.DataFrame({"image": [0, 0, 1, 1], "kind": ["original", "foil", "original", "foil"],
                          "attribute": ["", "colour", "", "shape"],
                          "caption": ["a red circle, top left", "a blue circle, top left", "two green stars",
                                      "two green boxes"], "foil_word": ["", "blue", "", "boxes"],
                          "foil_index": [-1, 1, -1, 2]})
    tower = TextTower.from_model(model)
    table = TokenTable(TEMPLATE, tower.context_length, "fp-tiny-vit", tokenizer=tokenizer)
    pack = Pack({**{f"foils.{c}": foils[c].to_numpy() for c in foils}}, "pack.npz")
    torch.manual_seed(6)
    image_emb = torch.randn(2, model.text_projection.shape[1]).numpy()
    settings = {"layers": 3, "batch_size": 8, "fclipscore": {"world_foils": mode}, "punctuation": "original"}
    rows = score_foils(tower, table, settings, pack, image_emb, -0.005)
    for i, r in rows.iterrows():
        cos, ws = one_pair(model.requires_grad_(True), tokenizer, torch.from_numpy(image_emb[r["image"]]),
                           r["caption"], TEMPLATE)
        term = most_negative_result(ws)[1] if mode == "most_negative" else threshold_result(ws, -0.005)[0]
        assert r["fclipscore"] == pytest.approx(term * (1 - max(cos, 0.0)), abs=1e-6)
        assert r["worst_word"] == most_negative_result(ws)[0]
