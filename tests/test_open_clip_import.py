"""open_clip imported without transformers (workflow_scripts.models.clip.import_open_clip): the same models and
embeddings as with it, and HF text towers still build once transformers is given back. Each case runs in a
fresh interpreter, since the first import of open_clip in a process decides."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sentence_fixture import write_tiny_bert

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import numpy as np
import torch

order, config_dir, out = sys.argv[1:4]
if order == "transformers_first":
    import transformers  # noqa: F401  (what a process importing sentence_transformers first does)
from workflow_scripts.models import clip as M

found = {}
open_clip = M.import_open_clip()
found["transformers_after_import"] = "transformers" in sys.modules
torch.manual_seed(0)
model = M.build_model("fp-test-vit")
images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
tokens = M.get_tokenizer("fp-test-vit")(["a red circle", "two blue squares"])
arrays = {"image": model.encode_image(images).detach().numpy(), "text": model.encode_text(tokens).detach().numpy()}
found["transformers_after_clip"] = "transformers" in sys.modules
found["hf_module_had_transformers"] = open_clip.hf_model.transformers is not None
open_clip.add_model_config(config_dir)
torch.manual_seed(0)
hf = M.build_model("tiny-hf-text")
hf_tokens = M.get_tokenizer("tiny-hf-text")(["a red circle", "two blue squares"])
arrays["hf_text"] = hf.encode_text(hf_tokens).detach().numpy()
found["hf_tower"] = type(hf.text).__name__
np.savez(out, **arrays)
print(json.dumps(found))
"""


def _run(tmp_path: Path, order: str, config_dir: Path) -> tuple[dict, dict]:
    out = tmp_path / f"{order}.npz"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, order, str(config_dir), str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as z:
        return found, {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Both import orders in fresh interpreters, each building a CLIP and an HF-text-tower model; the HF
    tower is an open_clip config over a local tiny BERT (nothing downloaded)."""
    tmp = tmp_path_factory.mktemp("open-clip-import")
    bert = write_tiny_bert(tmp / "bert")
    configs = tmp / "configs"
    configs.mkdir()
    (configs / "tiny-hf-text.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_model_pretrained": False,
                     "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "context_length": 16},
    }))
    return {order: _run(tmp, order, configs) for order in ("workflow_first", "transformers_first")}


def test_clip_models_build_without_transformers_and_embed_identically(runs):
    found, arrays = runs["workflow_first"]
    assert found["transformers_after_import"] is False and found["transformers_after_clip"] is False
    assert found["hf_module_had_transformers"] is False      # open_clip saw no transformers
    ref_found, ref = runs["transformers_first"]
    assert ref_found["transformers_after_import"] is True and ref_found["hf_module_had_transformers"] is True
    for key in ("image", "text"):
        np.testing.assert_array_equal(arrays[key], ref[key])


def test_hf_text_towers_get_transformers_back(runs):
    (found, arrays), (ref_found, ref) = runs["workflow_first"], runs["transformers_first"]
    assert found["hf_tower"] == ref_found["hf_tower"] == "HFTextEncoder"
    for key in ("image", "text", "hf_text"):
        np.testing.assert_array_equal(arrays[key], ref[key])
