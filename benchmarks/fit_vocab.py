"""Make a random-init benchmark model (../shared/gpu/mkmodel.py) emit decodable tokens.

mkmodel's tokenizer has 2,000 tokens, but the 8B shape has a 128,256-row output layer, so greedy
decoding mostly picks ids the tokenizer cannot decode and no text would reach the chat engine's
consumer. Zeroing the output rows beyond the tokenizer (and those of special tokens such as EOS,
so that every run decodes the full length) keeps every matrix the same size (same
speed and memory) while the argmax lands inside the tokenizer.

usage: python benchmarks/fit_vocab.py MODEL_DIR
"""

import json
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

folder = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(folder)
n_tok = len(tok)
index = folder / "model.safetensors.index.json"
shard = json.loads(index.read_text())["weight_map"]["lm_head.weight"] if index.exists() else "model.safetensors"
tensors = load_file(folder / shard)
tensors["lm_head.weight"][n_tok:] = 0
# never EOS (every run decodes the same length) nor another special token (skipped when decoded)
special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
# and never a lone byte that is not a whole character (random picks would never form valid UTF-8)
special |= {i for i in range(n_tok) if "\ufffd" in tok.decode([i])}
tensors["lm_head.weight"][sorted(special)] = 0
save_file(tensors, folder / shard, metadata={"format": "pt"})
print(json.dumps({"zeroed_rows_from": n_tok, "rows_zeroed_below_vocab": len(special), "of": tensors["lm_head.weight"].shape[0], "shard": shard}))
