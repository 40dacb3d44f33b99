"""One table of `trainer benchmark` and `bench/timm_bench.py` JSON lines, with ratios.

    python bench/gpu_table.py runs/gpu_check/bench.jsonl > runs/gpu_check/table.md

Rows are matched on (model, mode, precision, batch); timm eager and timm torch.compile get a
column each. Lines that are not JSON objects are ignored, so whole logs can be fed in.
"""
import json
import sys


def rows(paths):
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        pass


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def main():
    ours, timm_eager, timm_compiled = {}, {}, {}
    for r in rows(sys.argv[1:]):
        if "img_per_s" not in r:
            continue
        key = (r["model"], r["mode"], r.get("precision", "f32"), r["batch"])
        if r.get("impl") == "maxxvit-rs":
            ours[key] = r
        elif r.get("compiled"):
            timm_compiled[key] = r
        else:
            timm_eager[key] = r
    print("| model | mode | precision | batch | ours img/s | timm eager img/s | ours / eager | timm compile img/s "
          "| ours / compile | ours fwd / bwd ms | timm fwd / bwd ms | ours / timm memory GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(set(ours) | set(timm_eager) | set(timm_compiled)):
        o, e, c = ours.get(key), timm_eager.get(key), timm_compiled.get(key)
        oi = o and o["img_per_s"]
        ei = e and e["img_per_s"]
        ci = c and c["img_per_s"]

        def split(r):
            if not r or r.get("forward_s") is None:
                return "–"
            return f"{r['forward_s'] * 1e3:.1f} / {r['backward_s'] * 1e3:.1f}"

        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {fmt(oi, '.1f')} | {fmt(ei, '.1f')} | "
              f"{fmt(oi / ei if oi and ei else None, '.2f')}× | {fmt(ci, '.1f')} | "
              f"{fmt(oi / ci if oi and ci else None, '.2f')}× | {split(o)} | {split(e)} | "
              f"{fmt(o and o.get('device_memory_gib'), '.1f')} / {fmt(e and e.get('device_memory_gib'), '.1f')} |")


if __name__ == "__main__":
    main()
