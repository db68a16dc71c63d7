#!/bin/sh
# Functions in src/ longer than N lines (default 100), longest first: `lines path:line name`.
set -eu
cd "$(dirname "$0")/.."
python3 - "${1:-100}" <<'PY'
import os, re, sys
limit = int(sys.argv[1])
found = []
for dirpath, _, files in os.walk("src"):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        lines = open(path).read().split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)", line)
            if not m or line.rstrip().endswith(";"):
                continue
            indent, j = m.group(1), i + 1
            while j < len(lines) and lines[j].rstrip() != indent + "}":
                j += 1
            if j - i + 1 > limit:
                found.append((j - i + 1, f"{path}:{i + 1}", m.group(7)))
for size, where, fn in sorted(found, reverse=True):
    print(size, where, fn)
print(f"{len(found)} function(s) over {limit} lines")
PY
