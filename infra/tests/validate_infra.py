#!/usr/bin/env python3
"""Validates infra/ without a Bicep compiler (none can be installed here).

Parses every .bicep file with pycep-parser and checks, against Microsoft's published ARM JSON
schemas vendored in fixtures/schemas/<apiVersion>/ (Azure/azure-resource-manager-schemas):
- each resource's type exists at that api-version, and the api-version is a published one;
- each resource is declared at a scope the schema allows (resource group, subscription, or as an
  extension resource with `scope:` for types every scope accepts, e.g. role assignments);
- property names, recursively wherever the schema lists them (case-insensitive, as ARM);
- modules: the file exists, its targetScope matches the `scope:` given, every param passed is
  declared and every required param is passed; .bicepparam files name declared params only and
  set every required one;
- roles: infra/roles.json equals the published built-in role IDs (fixtures/built-in-roles.json),
  no .bicep file hard-codes a built-in role GUID, and the custom Key Vault backup role's
  dataActions equal the code's (shared/src/arm/authorization.rs).

Usage: validate_infra.py            check infra/ (exit 1 on any finding)
       validate_infra.py --self-test  also prove the checks fail on broken copies
"""
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FIXTURES = INFRA / "tests" / "fixtures"
SECTIONS = {
    "resourceGroup": "resourceDefinitions",
    "subscription": "subscription_resourceDefinitions",
    "managementGroup": "managementGroup_resourceDefinitions",
    "tenant": "tenant_resourceDefinitions",
    "extension": "extension_resourceDefinitions",
    "unknown": "unknown_resourceDefinitions",
}
BICEP_KEYWORDS = {"parent", "scope", "dependsOn", "name"}
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def enum_one(node):
    if isinstance(node, dict) and isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    return None


@dataclass
class Resource:
    file: Path
    symbol: str
    type: str
    api_version: str
    existing: bool
    body: dict


_PARSED = {}


def parse(path):
    """pycep's tree of a Bicep file (memoised by content: the self-test reparses only what it changed)."""
    from pycep import BicepParser

    text = Path(path).read_text()
    if text not in _PARSED:
        _PARSED[text] = BicepParser().parse(text=text)
    return _PARSED[text]


def unwrap(config):
    """A resource/module body without its loop or condition wrapper."""
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config if isinstance(config, dict) else {}


def resources(tree, path=None):
    for sym, r in (tree.get("resources") or {}).items():
        yield Resource(path, sym, r["type"], r["api_version"], bool(r.get("existing")), unwrap(r.get("config")))


def target_scope(tree):
    return ((tree.get("globals") or {}).get("scope") or {}).get("value", "resourceGroup")


def bicep_files(root=INFRA):
    return sorted(p for p in root.rglob("*.bicep") if "tests" not in p.relative_to(root).parts)


class Schemas:
    def __init__(self, fixtures=FIXTURES):
        self.by_key = {}  # (type lower, api) -> (schema file dict, {section: definition})
        for f in sorted((fixtures / "schemas").rglob("*.json")):
            schema = json.loads(f.read_text())
            api = f.parent.name
            for scope, section in SECTIONS.items():
                for d in schema.get(section, {}).values():
                    t = enum_one(d.get("properties", {}).get("type"))
                    if t:
                        entry = self.by_key.setdefault((t.lower(), api), (schema, {}))
                        entry[1][scope] = d
        self.published = json.loads((fixtures / "api-versions.json").read_text())

    def lookup(self, rtype, api):
        return self.by_key.get((rtype.lower(), api))

    def published_versions(self, rtype):
        provider = rtype.split("/")[0]
        for p, vs in self.published.items():
            if p.lower() == provider.lower():
                return vs
        return []


def is_expression(value):
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("function", "operator")


def key_name(key):
    k = key.strip()
    if len(k) >= 2 and k[0] == k[-1] == "'":
        k = k[1:-1]
    return None if "${" in k else k


class SchemaWalker:
    def __init__(self, schema, errors, where):
        self.defs = schema.get("definitions", {})
        self.errors = errors
        self.where = where

    def candidates(self, node, seen=()):
        """The object schemas a node may be (through $ref / oneOf / anyOf / allOf)."""
        if not isinstance(node, dict):
            return []
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref.startswith("#/definitions/"):
                name = ref[len("#/definitions/"):]
                if name in seen or name not in self.defs:
                    return [{"additionalProperties": True}]
                return self.candidates(self.defs[name], seen + (name,))
            return []  # external (common definitions: an ARM expression string): no object to check
        out = []
        for k in ("oneOf", "anyOf", "allOf"):
            for n in node.get(k, []):
                out += self.candidates(n, seen)
        if "properties" in node or "additionalProperties" in node or "items" in node or not out:
            out.append(node)
        return out

    def check(self, value, node, path):
        if is_expression(value) or value is None:
            return
        cands = self.candidates(node)
        if isinstance(value, list):
            items = [c["items"] for c in cands if isinstance(c.get("items"), dict)]
            for i, v in enumerate(value):
                for it in items[:1]:
                    self.check(v, it, f"{path}[{i}]")
            return
        if not isinstance(value, dict):
            return
        objs = [c for c in cands if "properties" in c or "additionalProperties" in c]
        if not objs:
            return
        props = {}
        for c in objs:
            for k, v in c.get("properties", {}).items():
                props.setdefault(k.lower(), v)
        open_schema = [c.get("additionalProperties") for c in objs if c.get("additionalProperties") not in (None, False)]
        for raw, v in value.items():
            k = key_name(raw)
            if k is None:
                continue
            sub = props.get(k.lower())
            if sub is not None:
                self.check(v, sub, f"{path}.{k}")
            elif open_schema:
                if isinstance(open_schema[0], dict):
                    self.check(v, open_schema[0], f"{path}.{k}")
            else:
                known = ", ".join(sorted(props)) or "(none)"
                self.errors.append(f"{self.where}: property {path}.{k} is not in the schema (known: {known})")


def scope_of(resource, file_scope, symbols):
    """'extension' when the resource is placed on another with `scope:`; else the root's scope."""
    seen = set()
    r = resource
    while isinstance(r.body.get("parent"), str) and r.body["parent"] in symbols and r.symbol not in seen:
        seen.add(r.symbol)
        r = symbols[r.body["parent"]]
    scope = r.body.get("scope")
    if scope is None:
        return file_scope
    if isinstance(scope, dict):
        fn = scope.get("function", {}).get("type")
        return {"resource_group": "resourceGroup", "subscription": "subscription", "tenant": "tenant",
                "management_group": "managementGroup"}.get(fn, "extension")
    if isinstance(scope, str) and scope in symbols and symbols[scope].type.lower() == "microsoft.resources/resourcegroups":
        return "resourceGroup"
    return "extension"


def check_resource(r, file_scope, symbols, schemas, errors):
    where = f"{r.file.relative_to(ROOT)}: {r.symbol} ({r.type}@{r.api_version})"
    found = schemas.lookup(r.type, r.api_version)
    if found is None:
        published = schemas.published_versions(r.type)
        if r.api_version not in published:
            errors.append(f"{where}: {r.api_version} is not a published api-version of {r.type.split('/')[0]} (published: {', '.join(published[-6:]) or 'none'})")
        else:
            errors.append(f"{where}: no schema fixture for this type and api-version (run infra/tests/vendor_schemas.py)")
        return
    schema, by_scope = found
    scope = scope_of(r, file_scope, symbols)
    if scope == "extension":
        ok = ("extension" in by_scope or "unknown" in by_scope or len(by_scope) >= 3)
        if not ok:
            errors.append(f"{where}: placed on another resource with `scope:`, but the schema declares it only at {', '.join(sorted(by_scope))} scope")
            return
        definition = by_scope.get("extension") or by_scope.get("unknown") or next(iter(by_scope.values()))
    elif scope in by_scope or (r.existing and by_scope):
        definition = by_scope.get(scope) or next(iter(by_scope.values()))
    else:
        errors.append(f"{where}: declared at {scope} scope, but the schema has it only at {', '.join(sorted(by_scope))} scope")
        return
    if r.existing:
        return
    allowed = {k.lower() for k in definition.get("properties", {})} | {k.lower() for k in BICEP_KEYWORDS}
    walker = SchemaWalker(schema, errors, where)
    for raw, v in r.body.items():
        k = key_name(raw)
        if k is None:
            continue
        if k.lower() not in allowed:
            errors.append(f"{where}: top-level property {k} is not in the schema (known: {', '.join(sorted(definition.get('properties', {})))})")
        elif k.lower() not in {b.lower() for b in BICEP_KEYWORDS}:
            props = {p.lower(): s for p, s in definition["properties"].items()}
            walker.check(v, props[k.lower()], k)


def declared_params(tree):
    return {name: ("default" in p) for name, p in (tree.get("parameters") or {}).items()}


def check_module(path, sym, module, file_scope, symbols, errors):
    where = f"{path.relative_to(ROOT)}: module {sym}"
    body = unwrap(module.get("config"))
    target = (path.parent / module["detail"]["path"]).resolve()
    if not target.exists():
        errors.append(f"{where}: {module['detail']['path']} does not exist")
        return
    tree = parse(target)
    scope = body.get("scope")
    fake = Resource(path, sym, "module", "", False, {"scope": scope} if scope is not None else {})
    expect = scope_of(fake, file_scope, symbols)
    if expect == "extension":
        errors.append(f"{where}: scope must be a resource group, subscription or tenant")
    elif target_scope(tree) != expect:
        errors.append(f"{where}: deployed at {expect} scope, but {target.relative_to(ROOT)} has targetScope '{target_scope(tree)}'")
    params = declared_params(tree)
    given = {key_name(k) for k in (body.get("params") or {})}
    for g in sorted(given - set(params)):
        errors.append(f"{where}: param {g} is not declared in {target.relative_to(ROOT)}")
    for p, has_default in sorted(params.items()):
        if not has_default and p not in given:
            errors.append(f"{where}: required param {p} of {target.relative_to(ROOT)} is not given")


def check_bicepparam(path, errors):
    text = path.read_text()
    m = re.search(r"^using\s+'([^']+)'", text, re.M)
    if not m:
        errors.append(f"{path.relative_to(ROOT)}: no `using '<template>.bicep'` line")
        return
    target = (path.parent / m.group(1)).resolve()
    if not target.exists():
        errors.append(f"{path.relative_to(ROOT)}: {m.group(1)} does not exist")
        return
    params = declared_params(parse(target))
    given = set(re.findall(r"^param\s+(\w+)\s*=", text, re.M))
    for g in sorted(given - set(params)):
        errors.append(f"{path.relative_to(ROOT)}: param {g} is not declared in {m.group(1)}")
    for p, has_default in sorted(params.items()):
        if not has_default and p not in given:
            errors.append(f"{path.relative_to(ROOT)}: required param {p} of {m.group(1)} is not set")


def check_roles(root, errors):
    shared = json.loads((root / "infra" / "roles.json").read_text())["builtInRoles"]
    published = json.loads((FIXTURES / "built-in-roles.json").read_text())
    for key, guid in shared.items():
        name = published["names"].get(key)
        if name is None:
            errors.append(f"infra/roles.json: {key} has no published name in fixtures/built-in-roles.json")
        elif published["roles"][name].lower() != guid.lower():
            errors.append(f"infra/roles.json: {key} is {guid}, but the built-in role {name!r} is {published['roles'][name]}")
    builtin = {g.lower() for g in published["roles"].values()}
    for f in bicep_files(root / "infra"):
        for g in GUID.findall(f.read_text()):
            if g.lower() in builtin:
                errors.append(f"{f.relative_to(root)}: hard-codes built-in role {g}; use loadJsonContent('roles.json')")
    rust = (root / "shared" / "src" / "arm" / "authorization.rs").read_text()
    m = re.search(r"BACKUP_KEY_VAULT_DATA_ACTIONS: &\[&str\] = &\[(.*?)\];", rust, re.S)
    code_actions = re.findall(r'"([^"]+)"', m.group(1)) if m else []
    tree = parse(root / "infra" / "protected-subscription.bicep")
    role = unwrap(tree["resources"]["keyVaultBackupRole"]["config"])
    bicep_actions = role["properties"]["permissions"][0]["dataActions"]
    if not code_actions or sorted(code_actions) != sorted(bicep_actions):
        errors.append(f"infra/protected-subscription.bicep: keyVaultBackupRole dataActions {bicep_actions} differ from the code's {code_actions}")


def validate(root=ROOT):
    global ROOT
    saved, ROOT = ROOT, root
    try:
        schemas = Schemas()
        errors = []
        for f in bicep_files(root / "infra"):
            tree = parse(f)
            scope = target_scope(tree)
            symbols = {r.symbol: r for r in resources(tree, f)}
            for r in symbols.values():
                check_resource(r, scope, symbols, schemas, errors)
            for sym, m in (tree.get("modules") or {}).items():
                check_module(f, sym, m, scope, symbols, errors)
        for f in sorted((root / "infra").glob("*.bicepparam")):
            check_bicepparam(f, errors)
        check_roles(root, errors)
        return errors
    finally:
        ROOT = saved


# --- self-test: every check must catch its defect in a broken copy ------------------------------

def mutate(root, rel, old, new):
    p = root / rel
    text = p.read_text()
    assert old in text, f"self-test: {old!r} not in {rel}"
    p.write_text(text.replace(old, new, 1))


NEGATIVE_CASES = [
    ("misspelt property", lambda r: mutate(r, "infra/modules/app.bicep", "disableLocalAuth: true", "disableLocalAuht: true"),
     "property properties.disableLocalAuht is not in the schema"),
    ("misspelt nested property", lambda r: mutate(r, "infra/modules/app.bicep", "instanceMemoryMB: instanceMemoryMB", "instanceMemoryMb2: instanceMemoryMB"),
     "scaleAndConcurrency.instanceMemoryMb2 is not in the schema"),
    ("wrong api-version", lambda r: mutate(r, "infra/modules/app.bicep", "Microsoft.Web/sites@2024-04-01", "Microsoft.Web/sites@2024-13-01"),
     "2024-13-01 is not a published api-version"),
    ("system topic at subscription scope", lambda r: mutate(r, "infra/modules/event-topic.bicep", "targetScope = 'resourceGroup'", "targetScope = 'subscription'"),
     "systemTopics@2025-02-15): declared at subscription scope"),
    ("module scope mismatch", lambda r: mutate(r, "infra/main.bicep", "  scope: group\n  name: 'ade-backup-app'", "  name: 'ade-backup-app'"),
     "module app: deployed at subscription scope"),
    ("unknown module param", lambda r: mutate(r, "infra/main.bicep", "maxDeliveryCount: maxDeliveryCount", "maxDeliveryCounts: maxDeliveryCount"),
     "param maxDeliveryCounts is not declared"),
    ("bicepparam names an undeclared param", lambda r: mutate(r, "infra/main.bicepparam", "param prefix =", "param prefx ="),
     "param prefx is not declared in main.bicep"),
    ("wrong built-in role GUID", lambda r: mutate(r, "infra/roles.json", "00c29273-979b-4161-815c-10b084fb9324", "5e467623-bb1f-42f4-a55d-6e525e11384b"),
     "backupOperator is 5e467623"),
    ("hard-coded role GUID", lambda r: mutate(r, "infra/modules/app.bicep", "roles.storageBlobDataOwner)\n", "'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')\n"),
     "hard-codes built-in role b7e6dc6d"),
    ("custom role drifts from the code", lambda r: mutate(r, "infra/protected-subscription.bicep", "'Microsoft.KeyVault/vaults/keys/read'\n", "'Microsoft.KeyVault/vaults/keys/*'\n"),
     "keyVaultBackupRole dataActions"),
]


def self_test():
    passed = failed = 0
    base = validate()
    if base:
        print("FAIL clean tree: " + "; ".join(base))
        failed += 1
    else:
        print("ok   clean tree validates")
        passed += 1
    for name, broke, expect in NEGATIVE_CASES:
        with tempfile.TemporaryDirectory(prefix="infra-selftest-") as tmp:
            root = Path(tmp)
            shutil.copytree(ROOT / "infra", root / "infra", ignore=shutil.ignore_patterns("tests"))
            (root / "infra" / "tests").symlink_to(FIXTURES.parent)
            (root / "shared" / "src" / "arm").mkdir(parents=True)
            shutil.copy(ROOT / "shared/src/arm/authorization.rs", root / "shared/src/arm/authorization.rs")
            broke(root)
            errors = validate(root)
            if any(expect in e for e in errors):
                print(f"ok   {name} is caught")
                passed += 1
            else:
                print(f"FAIL {name}: expected a finding containing {expect!r}, got {errors}")
                failed += 1
    return passed, failed


def main(argv):
    errors = validate()
    for e in errors:
        print("error:", e)
    files = len(bicep_files())
    if errors:
        print(f"infra: {len(errors)} finding(s) in {files} Bicep files")
        return 1
    print(f"infra: {files} Bicep files valid against the vendored ARM schemas")
    if "--self-test" in argv:
        passed, failed = self_test()
        print(f"{passed} passed, {failed} failed")
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
