#!/usr/bin/env python3
"""Turns the JSON files of scripts/bench.sh into the README's Markdown tables."""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def main():
    d = sys.argv[1]
    print(open(os.path.join(d, "machine.txt")).read().strip())
    for kind in ["random", "clustered"]:
        r, f = load(d, f"hnsw_{kind}.json"), load(d, f"faiss_{kind}.json")
        if not r or not f:
            continue
        print(f"\nHNSW, {r['n']:,} {kind} unit vectors, dim {r['dim']}, M={r['m']}, "
              f"efConstruction={r['ef_construction']}, {r['queries']} single queries")
        print(f"\n| | hnsw_rs (ours) | faiss {f.get('faiss', '')} | ratio |")
        print("|---|---|---|---|")
        print(f"| build (s) | {r['build_s']:.1f} | {f['build_s']:.1f} | {f['build_s'] / r['build_s']:.2f}x speed |")
        print(f"| exact search (queries/s) | {r['exact_queries_per_s']:.0f} | {f['exact_queries_per_s']:.0f} | "
              f"{r['exact_queries_per_s'] / f['exact_queries_per_s']:.2f} |")
        for a, b in zip(r["search"], f["search"]):
            print(f"| efSearch {a['ef_search']}: queries/s, recall@1 | {a['queries_per_s']:.0f}, "
                  f"{a['recall_at_1']:.3f} | {b['queries_per_s']:.0f}, {b['recall_at_1']:.3f} | "
                  f"{a['queries_per_s'] / b['queries_per_s']:.2f} |")
    m = load(d, "memory_build.json")
    if m:
        print(f"\nMemory build, {m['images']} images of 1024 x 1024 PNG, {m['embedder']}"
              f" (+ re-ranking thumbnails: {m['thumbs']}), {m['threads']} threads: "
              f"{m['images_per_s']:.1f} images/s ({m['seconds']:.1f} s)")
    a = load(d, "anomaly.json")
    if a:
        print(f"\nAnomaly map, weight-free patch features, {a['size']} x {a['size']} query against "
              f"{a['k']} references: {a['ms_per_image']:.1f} ms per image "
              f"({a['ms_per_image_full_map']:.1f} ms with the map stretched to the image)")
    c, t = load(d, "clip_candle.json"), load(d, "clip_torch.json")
    if c and t:
        print("\nCLIP ViT-B/16 image embeddings on CPU, random weights, images/s")
        print("\n| batch | candle (ours) | PyTorch | ratio |")
        print("|---|---|---|---|")
        by_batch = lambda d: {r["batch"]: r["images_per_s"] for r in d["results"]}
        cb, tb = by_batch(c), by_batch(t)
        for b in sorted(set(cb) & set(tb)):
            cv, tv = cb[b], tb[b]
            if cv and tv:
                print(f"| {b} | {cv:.2f} | {tv:.2f} | {cv / tv:.2f} |")
    if c:
        cpu = c.get("cpu") or {}
        feats = cpu.get("features") or {}
        gemm = cpu.get("gemm") or {}
        have = ", ".join(k for k, v in feats.items() if v) or "none of the listed"
        print(f"\nCPU: {cpu.get('model')} ({cpu.get('logical_cpus')} logical): {have}; "
              f"candle's matmul runs gemm's {gemm.get('f32')} kernel"
              f"{' (' + gemm['note'] + ')' if gemm.get('note') else ''}; "
              f"CLIP's dense layers run {cpu.get('clip_dense_f32', 'gemm')}; "
              f"PyTorch's CPU capability: {(t or {}).get('cpu_capability')}")
    ac, at = load(d, "anomaly_clip.json"), load(d, "anomaly_clip_torch.json")
    if ac and at:
        # Ours names regions after the score; PyTorch's reference stops at the score.
        # Median pass against median pass, mean against mean (older JSON: mean only).
        ours = ac.get("images_per_s_to_score_median", ac["images_per_s_to_score"])
        print(f"\nAnomaly map with CLIP patch tokens (layers {ac['layers']}), {ac['size']} x {ac['size']} "
              f"query against {ac['k']} cached references, {ac['threads']} / {at['threads']} threads")
        print("\n| | ours | PyTorch | ours / PyTorch |")
        print("|---|---|---|---|")
        print(f"| images/s (features, map, score), median pass | {ours:.2f} | {at['images_per_s']:.2f} | "
              f"{ours / at['images_per_s']:.2f} |")
        if "images_per_s_mean" in at:
            ours_mean = ac["images_per_s_to_score"]
            print(f"| images/s, mean of the passes | {ours_mean:.2f} | {at['images_per_s_mean']:.2f} | "
                  f"{ours_mean / at['images_per_s_mean']:.2f} |")
        print(f"| image score | {ac['score']:.6f} | {at['score']:.6f} | "
              f"abs. difference {abs(ac['score'] - at['score']):.1e} |")
    mc, mt = load(d, "memory_build_clip.json"), load(d, "memory_build_torch.json")
    if mc and mt:
        print(f"\nMemory build end to end (read, decode, preprocess, embed, index), {mc['images']:,} "
              f"images of 1024 x 1024 PNG, CLIP ViT-B/16 (random weights), HNSW M={mc['hnsw']['m']}, "
              f"efConstruction={mc['hnsw']['ef_construction']}; PyTorch side: PIL + "
              f"{mt['processor']} + transformers {mt['transformers']} (batch {mt['batch']}) + faiss "
              f"{mt['faiss']} IndexHNSWFlat, {mt['threads']} threads")
        print("\n| | ours | Python (Echo's pipeline) | ours / Python |")
        print("|---|---|---|---|")
        print(f"| images/s | {mc['images_per_s']:.2f} | {mt['images_per_s']:.2f} | "
              f"{mc['images_per_s'] / mt['images_per_s']:.2f} |")
        print(f"| seconds | {mc['seconds']:.0f} | {mt['seconds']:.0f} | |")
        print(f"| vectors indexed | {mc['index_vectors']:,} | {mt['index_vectors']:,} | |")
    q = load(d, "qwen_local.json")
    if q:
        print(f"\nLocal Qwen3-VL, random weights ({q['weights_mb']:,} MB), {q['prompt_tokens']}-token "
              f"two-image prompt, {q['threads']} threads")
        print("\n| | ours | PyTorch | ours / PyTorch |")
        print("|---|---|---|---|")
        o, t = q["ours"], q["torch"]
        print(f"| prefill tokens/s | {o['prefill_tok_s']:.1f} | {t['prefill_tok_s']:.1f} | {q['ratio']['prefill']:.2f} |")
        print(f"| decode tokens/s | {o['decode_tok_s']:.2f} | {t['decode_tok_s']:.2f} | {q['ratio']['decode']:.2f} |")
        print(f"| peak RSS | {o['peak_rss_mb']:,} MB ({o['peak_rss_mb'] / q['weights_mb']:.2f}x the weights) "
              f"| {t['peak_rss_mb']:,} MB | |")
    r = load(d, "runner.json")
    if r:
        img = r["image"]
        print(f"\nBatch runner against the mock server at {r['latency_ms']} ms, "
              f"{img['width']} x {img['height']} PNG (mean {img['mean_bytes'] / 1e6:.2f} MB), "
              f"{r['images_per_request']} images per request")
        print("\n| concurrency | runner questions/s | bound | runner / bound | reference questions/s "
              "| reference / bound | runner / reference | runner CPU ms/question | mock CPU ms/question |")
        print("|---|---|---|---|---|---|---|---|---|")
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        for lv in r["levels"]:
            cpu = lv["cpu_ms_per_question"]
            ref = lv["reference_client"]
            print(f"| {lv['concurrency']} | {lv['questions_per_s']:.1f} | "
                  f"{lv['bound_questions_per_s']:.0f} | {lv['ratio']:.2f} | "
                  f"{ref['questions_per_s']:.1f} | {ref['ratio_to_bound']:.2f} | "
                  f"{lv['runner_vs_reference_client']:.2f} | {fmt(cpu['runner'])} | "
                  f"{fmt(cpu['mock_server'])} |")
    j = load(d, "journal.json")
    if j:
        mb = lambda v: "-" if v is None else f"{v:.0f} MB"
        print(f"\nJournals: {j['questions']:,} questions, {j['journal_bytes'] / 1e6:.0f} MB journal "
              f"({j['bytes_per_record']:.0f} bytes a record)")
        print("\n| measurement | figure |")
        print("|---|---|")
        for key, label in (("resume", "resume"), ("resume_retry_errors", "resume --retry-errors")):
            r = j[key]
            print(f"| {label}: peak RSS | {mb(r['peak_rss_mb'])} |")
            print(f"| {label}: time | {r['seconds']:.2f} s |")
        rl = j["runs_list"]
        print(f"| Runs list, {rl['runs']} runs (summaries fresh) | {rl['seconds'] * 1000:.1f} ms |")
        print(f"| one summary rebuilt from its journal | {rl['summary_rebuild_s']:.2f} s |")
        print(f"| open the run (records without traces, line places) | {j['open_run']['seconds']:.2f} s |")
        oq = j["open_question"]
        print(f"| open one question's trace (mean / max of {oq['reads']}) | "
              f"{oq['mean_ms']:.2f} / {oq['max_ms']:.2f} ms |")
        print(f"| the same with no known place (index-only scan) | {oq['without_location_ms']:.0f} ms |")

if __name__ == "__main__":
    main()
