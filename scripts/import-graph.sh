#!/bin/sh
# The import graph of src/ between top-level modules: for each module, the modules its code names
# through `crate::` paths (comments left out), with how many times. The layering the unit test in
# src/layering.rs enforces is crate::LAYERS (src/lib.rs); this prints what is there.
set -eu
cd "$(dirname "$0")/.."
python3 - <<'PY'
import collections, os, re
root = "src"
mods = sorted({(m[:-3] if m.endswith(".rs") else m) for m in os.listdir(root)} - {"lib", "main", "layering"})
edges = collections.defaultdict(collections.Counter)
for dirpath, _, files in os.walk(root):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        top = os.path.relpath(path, root).split("/")[0]
        top = top[:-3] if top.endswith(".rs") else top
        if top not in mods:
            continue
        for line in open(path):
            code = line.split("//")[0]
            for used in re.findall(r"crate::(\w+)", code):
                if used != top and used in mods:
                    edges[top][used] += 1
for module in mods:
    uses = ", ".join(f"{m}({n})" for m, n in sorted(edges[module].items()))
    print(f"{module} -> {uses or '(nothing)'}")
PY
