"""Make a random-init benchmark model (make_model.py, ../shared/gpu/mkmodel.py) emit decodable tokens.

The models' tokenizer has 2,000 tokens, but the 8B shape has a 128,256-row output layer, so greedy
decoding mostly picks ids the tokenizer cannot decode and no text would reach the chat engine's
consumer. Zeroing the output rows beyond the tokenizer (and those of special tokens such as EOS,
so that every run decodes the full length) keeps every matrix the same size (same
speed and memory) while the argmax lands inside the tokenizer. The folder is changed in place.

usage: python benchmarks/fit_vocab.py MODEL_DIR
"""

from __future__ import annotations

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR", help="a model folder (safetensors), changed in place")
    args = p.parse_args(argv)
    harness.recorder("fit_vocab", args).emit(**harness.fit_vocab(args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
