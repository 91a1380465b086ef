#!/usr/bin/env python3
"""Refreshes infra/tests/fixtures/ from a clone of Azure/azure-resource-manager-schemas.

For every (resource type, api-version) the Bicep files use, copies schemas/<apiVersion>/<file>.json
trimmed to the resource definitions of the types used and the definitions they reach ($ref
closure): the content kept is Microsoft's, unchanged. Also records, per provider, the api-versions
the repository publishes (fixtures/api-versions.json) so the validator can tell a wrong api-version
from a missing fixture.

Usage: python3 infra/tests/vendor_schemas.py /path/to/azure-resource-manager-schemas (a git dir or
work tree; files are read with `git show HEAD:`).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import validate_infra as v  # noqa: E402

SECTIONS = v.SECTIONS


def git_show(repo, path):
    return subprocess.check_output(["git", "--git-dir", repo, "show", f"HEAD:{path}"])


def refs(node, out):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/definitions/"):
            out.add(r[len("#/definitions/"):])
        for x in node.values():
            refs(x, out)
    elif isinstance(node, list):
        for x in node:
            refs(x, out)


def trim(schema, types):
    keep_defs, todo = set(), set()
    out = {k: schema[k] for k in ("id", "$schema", "title", "description") if k in schema}
    for section in SECTIONS.values():
        kept = {}
        for name, d in schema.get(section, {}).items():
            t = v.enum_one(d.get("properties", {}).get("type"))
            if t and t.lower() in types:
                kept[name] = d
                refs(d, todo)
        if kept:
            out[section] = kept
    defs = schema.get("definitions", {})
    while todo:
        n = todo.pop()
        if n in keep_defs or n not in defs:
            continue
        keep_defs.add(n)
        refs(defs[n], todo)
    out["definitions"] = {k: defs[k] for k in sorted(keep_defs)}
    return out


def main(repo):
    if Path(repo, ".git").exists():
        repo = str(Path(repo, ".git"))
    used = {}
    for f in v.bicep_files():
        for r in v.resources(v.parse(f)):
            used.setdefault(r.api_version, set()).add(r.type.lower())
    listing = subprocess.check_output(["git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "HEAD", "schemas"]).decode().split()
    versions = {}
    for p in listing:
        m = re.match(r"schemas/([^/]+)/(Microsoft\.[A-Za-z]+)(\.[A-Za-z.]+)?\.json$", p)
        if m:
            versions.setdefault(m.group(2), set()).add(m.group(1))
    providers = {t.split("/")[0] for ts in used.values() for t in ts}
    index = {p: sorted(vs) for p, vs in versions.items() if p.lower() in providers}
    v.FIXTURES.joinpath("api-versions.json").write_text(json.dumps(index, indent=1) + "\n")
    for api, types in sorted(used.items()):
        for p in listing:
            if not p.startswith(f"schemas/{api}/") or not p.endswith(".json"):
                continue
            provider = p.split("/")[2].split(".")[1]
            if not any(t.startswith(f"microsoft.{provider.lower()}/") for t in types):
                continue
            schema = json.loads(git_show(repo, p))
            trimmed = trim(schema, types)
            if not any(s in trimmed for s in SECTIONS.values()):
                continue
            dest = v.FIXTURES / "schemas" / api / Path(p).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
            print(f"{dest.relative_to(v.ROOT)}: {len(trimmed['definitions'])} definitions")


if __name__ == "__main__":
    main(sys.argv[1])
