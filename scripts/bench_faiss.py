#!/usr/bin/env python3
"""faiss IndexHNSWFlat on the vectors `echo-workbench bench hnsw --write-data DIR`
wrote, with the same M / efConstruction / efSearch values, so both sides are timed
on identical data in one run. Prints JSON like the Rust side.

Usage: bench_faiss.py DIR --dim 512 --m 16 --ef-construction 100 --ef-search 16,32,64
"""
import argparse
import json
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", default="16,32,64,128,256")
    args = ap.parse_args()
    base = np.fromfile(f"{args.dir}/base.f32", dtype="<f4").reshape(-1, args.dim)
    queries = np.fromfile(f"{args.dir}/queries.f32", dtype="<f4").reshape(-1, args.dim)

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(base)
    t = time.perf_counter()
    _, truth = flat.search(queries, 1)
    exact_qps = len(queries) / (time.perf_counter() - t)

    index = faiss.IndexHNSWFlat(args.dim, args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    t = time.perf_counter()
    index.add(base)
    build_s = time.perf_counter() - t
    rows = []
    for ef in [int(x) for x in args.ef_search.split(",")]:
        index.hnsw.efSearch = ef
        # One query at a time, as the Rust side measures (interactive retrieval).
        t = time.perf_counter()
        found = [index.search(queries[i : i + 1], 1)[1][0, 0] for i in range(len(queries))]
        secs = time.perf_counter() - t
        recall = float(np.mean(np.array(found) == truth[:, 0]))
        rows.append({"ef_search": ef, "queries_per_s": len(queries) / secs, "recall_at_1": recall})
    print(json.dumps({
        "n": len(base), "dim": args.dim, "queries": len(queries), "m": args.m,
        "ef_construction": args.ef_construction, "build_s": build_s,
        "exact_queries_per_s": exact_qps, "search": rows,
        "threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
