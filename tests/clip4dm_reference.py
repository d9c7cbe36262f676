"""An independent re-implementation of the original CLIP4DM code path (naver-ai/clip4dm @ cb9e52d,
src/clip4dm.py, src/utils.py, main.py), written from its source and sharing no code with
workflow_scripts/clip4dm: the tests and bench/clip4dm_attributions.py compare our batched path with it.

- `one_pair(model, tokenizer, image_emb, caption)`: CLIP4DM.__call__ for one pair: tokenise the full prompt
  (template + caption, the tokenizer's context length), one forward through the open_clip text tower whose
  last |start_layer| blocks compute their attention explicitly, torch.autograd.grad of the cosine with
  respect to each kept attention tensor (last block first, retain_graph, as the original's loop), cam =
  mean over heads of grad * A, R = sum / number of kept blocks, r = R[eot, 1:eot]; then the original's word
  aggregation (space_tokenize, tokenizer2space walk, mean per word, a word without tokens dropped, the first
  len(template.split()) words dropped). The image side is a precomputed embedding (the original encodes the
  image on every call; left out, as it does not change the attributions).
- `threshold_result`, `most_negative_result`, `hat_span`, `reference_term`: the original's selection of
  misaligned words, main.py's HAT span rule (utils.word_seq_to_tokens_with_score) and get_reference_term
  (with its return inside the loop).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TEMPLATE = "A photo depicts "


# ----------------------------------------------------------------------------- utils.py
def space_tokenize(text: str) -> list[str]:
    tokens = []
    token = ""
    for char in text:
        if char == " ":
            if token:
                tokens.append(token)
                token = ""
        elif char in [".", ","]:
            if token:
                tokens.append(token)
                token = ""
            tokens.append(char)
        else:
            token += char
    if token:
        tokens.append(token)
    return tokens


def tokenizer2space(tokenizer, text: str) -> dict[int, list[int]]:
    space_tokens = space_tokenize(text)
    encoded = tokenizer.encode(text)
    result = {}
    encoded_idx = 0
    for idx, token in enumerate(space_tokens):
        token_encoded = tokenizer.encode(token)
        result[idx] = encoded[encoded_idx: encoded_idx + len(token_encoded)]
        encoded_idx += len(token_encoded)
    return result


def word_attributions(tokenizer, text: str, text_scores: list[float], template: str = TEMPLATE):
    """CLIP4DM.__call__'s aggregation of token scores (r = R[eot, 1:eot]) into (word, score) pairs."""
    text_tokens = tokenizer.encode(text)
    negative_word = [(t, s) for t, s in zip(text_tokens, text_scores)]
    space_token = space_tokenize(text)
    space2token = tokenizer2space(tokenizer, text)
    bpe_token_idx = 0
    aggr_token = []
    for space_token_idx, bpe_token in space2token.items():
        bpe_token_score = [_score for _, _score in negative_word[bpe_token_idx: bpe_token_idx + len(bpe_token)]]
        bpe_token_idx += len(bpe_token)
        try:
            aggr_token.append((space_token[space_token_idx], sum(bpe_token_score) / len(bpe_token_score)))
        except ZeroDivisionError:
            pass
    return aggr_token[len(template.split()):]


# ----------------------------------------------------------------------------- clip4dm.py
def one_pair(model, tokenizer, image_emb: torch.Tensor, caption: str, template: str = TEMPLATE,
             start_layer: int = -3) -> tuple[float, list[tuple[str, float]]]:
    """(cosine, [(word, score)]) of one (image embedding, caption) pair, the original's way."""
    text = template + caption
    tokens = tokenizer([text], context_length=model.positional_embedding.shape[0])
    blocks = list(model.transformer.resblocks)
    kept = list(range(len(blocks)))[start_layer:]
    mask = model.attn_mask
    x = model.token_embedding(tokens) + model.positional_embedding
    attentions = []
    for i, blk in enumerate(blocks):
        if i not in kept:
            x = blk(x, attn_mask=mask)
            continue
        y = blk.ln_1(x)
        width, heads = y.shape[-1], blk.attn.num_heads
        d = width // heads
        w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        q = y @ w[:width].T + b[:width]
        k = y @ w[width:2 * width].T + b[width:2 * width]
        v = y @ w[2 * width:].T + b[2 * width:]
        q, k, v = (z.reshape(1, -1, heads, d).transpose(1, 2) for z in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + mask, dim=-1)      # [1, heads, L, L]
        attentions.append(attn)
        o = (attn @ v).transpose(1, 2).reshape(1, -1, width)
        x = x + blk.ls_1(blk.attn.out_proj(o))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    x = model.ln_final(x)
    eot = int(tokens[0].argmax(dim=-1))
    text_emb = x[0, eot] @ model.text_projection
    logit = (F.normalize(text_emb, dim=-1) * F.normalize(image_emb.float(), dim=-1)).sum()
    num_tokens = attentions[0].shape[-1]
    r_text = torch.zeros(1, num_tokens, num_tokens)
    for attn in attentions[::-1]:
        grad = torch.autograd.grad(logit, [attn], retain_graph=True)[0].detach()
        cam = attn.detach().reshape(-1, num_tokens, num_tokens)
        cam = (grad * cam).mean(dim=1)
        r_text = r_text + cam
    r_text = r_text / len(attentions)
    r_i = r_text[0][eot, 1:eot].flatten()
    return float(logit.detach()), word_attributions(tokenizer, text, [float(s) for s in r_i], template)


# ----------------------------------------------------------------------------- selection and main.py
ORIGINAL_PUNCTUATION = '.,!"?;:" '


def threshold_result(word_scores: list[tuple[str, float]], threshold: float) -> tuple[float, list[str], list[float]]:
    """(sum_negative_attribution, ["idx_word", ...] most negative first, their scores): sorted_by threshold."""
    text_scores = [(w, s) for w, s in word_scores if w not in ORIGINAL_PUNCTUATION]
    text_scores = [(w, s) for w, s in text_scores if w.strip()]
    flagged = [(f"{i}_{w}", s) for i, (w, s) in enumerate(text_scores) if s < threshold]
    flagged = sorted(flagged, key=lambda e: e[1])
    scores = [s for _, s in flagged]
    return (sum(scores) if flagged else 0), [w for w, _ in flagged], scores


def most_negative_result(word_scores: list[tuple[str, float]]) -> tuple[str, float]:
    return sorted(word_scores, key=lambda e: e[1])[0]


def hat_span(word_scores: list[tuple[str, float]], threshold: float) -> tuple[str, float]:
    """main.py's HAT rule: the most negative run of consecutive flagged words and its mean ("", 0 if none)."""
    _, parts, scores = threshold_result(word_scores, threshold)
    if not parts:
        return "", 0
    pairs = sorted(zip(parts, scores), key=lambda e: int(e[0].split("_")[0]))
    result, current_word, current_scores, last_index = [], [], [], -1
    for part, score in pairs:
        index, word = part.split("_", 1)
        index = int(index)
        if index == last_index + 1:
            current_word.append(word)
            current_scores.append(score)
        else:
            if current_word:
                result.append((" ".join(current_word), sum(current_scores) / len(current_scores)))
            current_word, current_scores = [word], [score]
        last_index = index
    if current_word:
        result.append((" ".join(current_word), sum(current_scores) / len(current_scores)))
    return sorted(result, key=lambda e: e[1])[0]


def reference_term(caption_emb: np.ndarray, reference_embs: list[np.ndarray]) -> float:
    """utils.get_reference_term as written: it returns inside its loop, after the first reference."""
    caption = caption_emb / np.linalg.norm(caption_emb)
    r_c_score = 0
    for ref in reference_embs:
        ref = ref / np.linalg.norm(ref)
        _r_c_score = float(caption @ ref)
        if _r_c_score > r_c_score:
            r_c_score = _r_c_score
        return r_c_score * 2.5
