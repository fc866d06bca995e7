"""Compare decode paths at batch 1 on one model: transformers generate vs medchat's FastDecoder
variants (bf16 / int4, eager / CUDA graphs / torch.compile), with a random LoRA adapter merged, and
check that each variant keeps the adapter's greedy tokens. One RESULT line per measurement.

variants (default: hf fast-bf16 fast-int4):
  hf         transformers generate, bf16, no adapter (and whether the adapter changes its tokens)
  fast-bf16  medchat's loop, bf16 weights: eager, then with CUDA graphs (CUDA)
  fast-int4  medchat's loop, int4 weights and CUDA graphs (CUDA only); also detokenised and sampled
  compile    also each fast variant with torch.compile of the per-layer pieces of the decode step
             (an experiment kept here, not in medchat: with torch 2.11 it failed inside the CUDA graph
             capture, benchmarks/RESULTS.md)
  unsloth    Unsloth FastLanguageModel 4-bit + for_inference, generate, alone (CUDA)
The transformers + unmerged LoRA reference (64 tokens at most) always runs. On a CPU this is a dry run.

usage: python benchmarks/decode_probe.py MODEL_DIR NEW_TOKENS [variants...]
       python benchmarks/decode_probe.py MODEL_DIR NEW_TOKENS unsloth   (Unsloth for_inference only)
"""

from __future__ import annotations

import threading
import traceback

import harness

VARIANTS = ("hf", "fast-bf16", "fast-int4", "compile", "unsloth")


def unsloth_only(rec: harness.Recorder, model_dir: str, n: int) -> None:
    import torch
    import unsloth  # noqa: F401  (first: it patches transformers)
    from unsloth import FastLanguageModel

    with harness.clock() as load:
        model, tok = FastLanguageModel.from_pretrained(model_dir, max_seq_length=4096, dtype=torch.bfloat16,
                                                       load_in_4bit=True)
        FastLanguageModel.for_inference(model)
    ids = torch.tensor([harness.chat_prompt_ids(tok)], device="cuda")

    def gen() -> None:
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, use_cache=True)

    dt = harness.timings(gen, runs=1, warmup=1)[-1]
    rec.emit(variant="unsloth-for_inference-4bit", tok_s=harness.per_second(n, dt), load_s=round(load.seconds, 1),
             mem_gib=harness.gpu_memory_gib(peak=True))


def compile_decode_step() -> None:
    """torch.compile the per-layer pieces of medchat's decode step (one token at a time); prefill stays eager."""
    import torch

    import medchat.models.fastdecode as fastdecode

    for name in ("_pre_attention", "_post_attention"):
        eager = getattr(fastdecode, "_eager" + name, None) or getattr(fastdecode, name)
        compiled = torch.compile(eager, fullgraph=True, dynamic=False)

        def step(x, *rest, _eager=eager, _compiled=compiled):
            return (_compiled if x.shape[0] == 1 else _eager)(x, *rest)

        setattr(fastdecode, "_eager" + name, eager)
        setattr(fastdecode, name, step)


def eager_decode_step() -> None:
    import medchat.models.fastdecode as fastdecode

    for name in ("_pre_attention", "_post_attention"):
        eager = getattr(fastdecode, "_eager" + name, None)
        if eager is not None:
            setattr(fastdecode, name, eager)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("new_tokens", metavar="NEW_TOKENS", type=int)
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help=f"any of {', '.join(VARIANTS)} (default: hf fast-bf16 fast-int4)")
    args = p.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variant {', '.join(sorted(unknown))}: choose from {', '.join(VARIANTS)}")
    rec = harness.recorder("decode_probe", args)
    n, want = args.new_tokens, set(args.variants) or {"hf", "fast-bf16", "fast-int4"}
    if "unsloth" in want:
        unsloth_only(rec, args.model, n)
        return 0

    import torch
    from transformers import AutoTokenizer

    from medchat.config import GenerationSettings
    from medchat.models.fastdecode import FastDecoder, stream_text

    tok = AutoTokenizer.from_pretrained(args.model)
    ids = harness.chat_prompt_ids(tok)
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=n)
    cuda = torch.cuda.is_available()  # CPU: a syntax/correctness dry run only

    def load(with_adapter: bool):
        with harness.clock() as c:
            model = harness.load_model(args.model)
            if with_adapter:  # the same random adapter every time, large enough to change greedy tokens
                model = harness.random_lora(model, seed=1234, b_std=0.05).eval()
        return model, c.seconds

    def hf_generate(model, count: int, trials: int = 2):
        x = torch.tensor([ids], device=model.device)
        out = None

        def gen() -> None:
            nonlocal out
            with torch.no_grad():
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=count,
                                     min_new_tokens=count, do_sample=False)

        dt = harness.timings(gen, runs=1, warmup=trials - 1)[-1]
        return out[0, len(ids):].tolist(), count / dt

    def fast_run(fd: FastDecoder, settings=greedy, trials: int = 2):
        """(tokens, overall tok/s, decode tok/s, TTFT) of the last trial; the first warms up graphs."""
        for _ in range(trials):
            fd._cached_ids = []  # time a full prefill each time
            first, got = None, []
            with harness.clock() as c:
                for t in fd.generate(ids, settings, threading.Event(), eos_ids=()):
                    if first is None:
                        first = c.elapsed()
                    got.append(t)
        dt = c.seconds
        return got, len(got) / dt, (len(got) - 1) / (dt - first) if dt > first else 0.0, first

    def text_run(fd: FastDecoder, trials: int = 2):
        for _ in range(trials):
            fd._cached_ids = []
            first, ntok = None, 0
            with harness.clock(synchronise=False) as c:
                for text, count in stream_text(fd, tok, ids, greedy, threading.Event(), eos_ids=()):
                    if first is None and text:
                        first = c.elapsed()
                    ntok += count
        if first is None:  # no decodable text (a random model without fit_vocab.py)
            return ntok, 0.0, None
        return ntok, (ntok - 1) / (c.seconds - first), first

    plain = None
    if "hf" in want:
        model, load_s = load(False)
        plain, tps = hf_generate(model, n)
        rec.emit(variant="hf-generate-bf16", tok_s=round(tps, 1), load_s=round(load_s, 1))
        del model
        harness.empty_cache()
    model, _ = load(True)
    ref_lora, tps = hf_generate(model, min(n, 64), trials=1)
    rec.emit(variant="hf-generate-bf16+lora(unmerged)", tok_s=round(tps, 1), tokens=len(ref_lora))
    if plain is not None:
        rec.emit(check="adapter changes greedy tokens", agree_with_plain=harness.agree(ref_lora, plain),
                 of=len(ref_lora))

    if "fast-bf16" in want:
        with harness.clock() as build:
            fd = FastDecoder(harness.merge_adapter(model), quantize="none", cuda_graphs=False)
        del model
        combos = ((False, False), (True, False)) if cuda else ((False, False),)
        if "compile" in want:
            combos += ((cuda, True),)
        for graphs, comp in combos:
            try:
                fd.cuda_graphs = graphs
                fd._graphs.clear()
                compile_decode_step() if comp else eager_decode_step()
                with harness.clock() as c:
                    got, tps, dec, ttft = fast_run(fd)
                rec.emit(variant="fast-bf16" + ("+graphs" if graphs else "") + ("+compile" if comp else ""),
                         tok_s=round(tps, 1), decode_tok_s=round(dec, 1), ttft_s=round(ttft, 4),
                         agree_with_hf_lora=harness.agree(got, ref_lora), of=len(ref_lora),
                         build_s=round(build.seconds, 1), warm_and_run_s=round(c.seconds, 1),
                         mem_gib=harness.gpu_memory_gib())
            except Exception as exc:  # noqa: BLE001
                rec.emit(variant=f"fast-bf16 graphs={graphs} compile={comp}", error=f"{type(exc).__name__}: {exc}"[:500])
        eager_decode_step()
        del fd
    else:
        del model
    harness.empty_cache()

    if "fast-int4" in want and cuda:
        model, _ = load(True)
        torch.cuda.reset_peak_memory_stats()
        with harness.clock() as build:
            fd = FastDecoder(harness.merge_adapter(model), quantize="int4")
            del model
            harness.empty_cache()
        for comp in (False, True) if "compile" in want else (False,):
            name = "fast-int4+graphs" + ("+compile" if comp else "")
            try:
                if comp:
                    compile_decode_step()
                    fd._graphs.clear()
                with harness.clock() as c:
                    got, tps, dec, ttft = fast_run(fd)
                rec.emit(variant=name, tok_s=round(tps, 1), decode_tok_s=round(dec, 1), ttft_s=round(ttft, 4),
                         agree_with_hf_lora_bf16=harness.agree(got, ref_lora), of=len(ref_lora),
                         build_s=round(build.seconds, 1), warm_and_run_s=round(c.seconds, 1),
                         mem_gib=harness.gpu_memory_gib(), peak_gib=harness.gpu_memory_gib(peak=True))
                ntok, dec_text, ttft_text = text_run(fd)
                rec.emit(variant=name + " text (detokenised)", tokens=ntok, decode_tok_s=round(dec_text, 1),
                         ttft_s=round(ttft_text, 4) if ttft_text is not None else None)
                sampled = GenerationSettings(temperature=0.6, top_p=0.95, max_new_tokens=n, seed=1)
                got, tps, dec, ttft = fast_run(fd, sampled)
                rec.emit(variant=name + " sampling t=0.6 p=0.95", tok_s=round(tps, 1), decode_tok_s=round(dec, 1))
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                rec.emit(variant=f"fast-int4 compile={comp}", error=f"{type(exc).__name__}: {exc}"[:500])
        eager_decode_step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
