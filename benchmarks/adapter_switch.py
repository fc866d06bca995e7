"""The fast decode path with a LoRA adapter, through the chat engine: load with the adapter, stream,
switch to the bare base model and back (each switch rebuilds the decoder), and check that the
adapter's greedy text comes back. One RESULT line per step.

The adapter is a random LoRA r16 on every linear layer, saved to --adapter-dir first.

usage: python benchmarks/adapter_switch.py MODEL_DIR [NEW_TOKENS]
"""

from __future__ import annotations

import sys

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("new_tokens", metavar="NEW_TOKENS", type=int, nargs="?", default=64)
    p.add_argument("--adapter-dir", default="/tmp/medchat-random-adapter", help="where the random adapter goes")
    args = p.parse_args(argv)
    rec = harness.recorder("adapter_switch", args)

    import peft  # noqa: F401  (imported before the clock starts)

    from medchat.chatformat.messages import Message
    from medchat.config import load_settings
    from medchat.engine.backends import open_local
    from medchat.engine.session import stream_events

    with harness.clock() as c:
        peft_model = harness.random_lora(harness.load_model(args.model, device="cpu"), seed=0)
        peft_model.save_pretrained(args.adapter_dir)
        del peft_model
    rec.emit(step="random LoRA r16 saved", s=round(c.seconds, 1))

    settings = load_settings({"model": args.model, "adapter": args.adapter_dir, "generation.temperature": "0",
                              "generation.max_new_tokens": str(args.new_tokens)})
    messages = [Message("user", harness.QUESTION)]

    def reply(backend):
        list(stream_events(backend, messages, settings.generation))  # warm-up (graph capture)
        done = list(stream_events(backend, messages, settings.generation))[-1]
        return done.reasoning + done.answer, done.stats

    with harness.clock() as c:
        backend = open_local(settings, lambda m: print(m, file=sys.stderr))
    rec.emit(step="open with adapter", s=round(c.seconds, 1), decoder=backend.info.decoder, adapter=backend.info.adapter)
    with_adapter, stats = reply(backend)
    rec.emit(step="stream with adapter", tokens=stats.completion_tokens, tok_s=round(stats.tok_per_s, 1))
    with harness.clock() as c:
        backend.set_adapter(None)
    rec.emit(step="switch to base", s=round(c.seconds, 1))
    plain, stats = reply(backend)
    rec.emit(step="stream base", tokens=stats.completion_tokens, tok_s=round(stats.tok_per_s, 1),
             differs_from_adapter=plain != with_adapter)
    with harness.clock() as c:
        backend.set_adapter(args.adapter_dir)
    rec.emit(step="switch back to adapter", s=round(c.seconds, 1))
    again, stats = reply(backend)
    rec.emit(step="stream adapter again", same_text_as_first=again == with_adapter, gpu_mem_gib=harness.gpu_memory_gib())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
