"""The `medchat bench` result as a table (what the command prints without ``--json``)."""

from __future__ import annotations


def print_table(result: dict) -> None:
    fig = result["figures"]
    dev = result["device"]
    print(f"device: {dev.get('name', '?')}   model: {result['settings']['model']}"
          f"   decoder: {result.get('backend_info', {}).get('decoder', '?')}")
    print(f"{'measurement':<34}{'TTFT s':>10}{'decode tok/s':>15}{'tokens':>8}")
    names = {"engine": "medchat engine (stream_events)", "generate": "plain model.generate",
             "unsloth": "Unsloth for_inference"}
    for key, label in names.items():
        r = fig.get(key)
        if not r:
            continue
        if "error" in r:
            print(f"{label:<34}  failed: {r['error']}")
            continue
        print(f"{label:<34}{r.get('ttft_s', 0):>10.3f}{r.get('decode_tok_s', 0):>15.1f}"
              f"{r.get('completion_tokens', 0):>8}")
    print(f"{'medchat --help start-up':<34}{fig['startup_help_s']:>10.3f} s")
    train = fig.get("train")
    if train:
        if "error" in train:
            print(f"training: failed: {train['error']}")
        else:
            print(f"training: {train.get('tokens_per_second')} tok/s non-padding "
                  f"({train.get('steady_tokens_per_second')} after warm-up), peak GPU "
                  f"{train.get('peak_gpu_gib')} GiB, {train.get('steps')} steps, backend {train.get('backend')}")
    for k, v in result["ratios"].items():
        print(f"ratio {k}: {v}x")
