"""Checks that the SpinKube material agrees with spin.toml and with itself, and that the
SpinApp schema rejects what the operator rejects (so its check can fail). Run by
infra/deploy/check, inside the venv that has PyYAML and jsonschema."""

import copy
import ipaddress
import json
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
KUBE = DEPLOY / "spinkube"
failures = []


def fail(message):
    failures.append(message)


def docs(name):
    """The documents of a file in spinkube/, or of one beside it (the example Secret)."""
    path = KUBE / name if (KUBE / name).exists() else DEPLOY / name
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


manifest = tomllib.loads((ROOT / "spin.toml").read_text())
declared = manifest["variables"]
required = {n for n, v in declared.items() if v.get("required")}
secret = {n for n, v in declared.items() if v.get("secret")}
components = set(manifest["component"])
routes = {}  # route -> component
for trigger in manifest["trigger"]["http"]:
    if isinstance(trigger["route"], str):
        routes[trigger["route"]] = trigger["component"]

apps = {}
for path in sorted(KUBE.glob("spinapp-*.yaml")):
    (app,) = docs(path.name)
    apps[app["metadata"]["name"]] = app
    spec = app["spec"]
    name = app["metadata"]["name"]
    for c in spec.get("components", []):
        if c not in components:
            fail(f"{name}: component {c} is not in spin.toml")
    if "health" not in spec.get("components", []):
        fail(f"{name}: every group serves health (its probes use it)")
    names = [v["name"] for v in spec.get("variables", [])]
    for v in spec.get("variables", []):
        if v["name"] not in declared:
            fail(f"{name}: variable {v['name']} is not declared in spin.toml")
    for r in sorted(required - set(names)):
        fail(f"{name}: required variable {r} is not set")

# Every secret variable a group's components read is mapped from the Secret: one left
# out silently keeps its empty default (a key rotation's next token or previous key, the
# address tag key, a REST or user-service token), and the feature it serves breaks.
import re

reads = {}  # component -> top-level variables its templates name
for cname, comp in manifest["component"].items():
    names = set()
    # Its own variables' templates, and its allowed hosts' (a group that leaves out
    # redis_allowed_host keeps the default, 127.0.0.1, and its pods never get ready).
    templates = list((comp.get("variables") or {}).values()) + comp.get("allowed_outbound_hosts", [])
    for value in templates:
        names |= set(re.findall(r"\{\{\s*([a-z0-9_]+)\s*\}\}", str(value)))
    reads[cname] = names
def secret_problems(groups):
    """Each group maps from the Secret every secret variable its components read, and no
    other: a secret a group's pods hold but never read only widens what a breach of that
    group gives away. A required one (Spin starts no app without it) is set to a
    placeholder value instead, too short for the app to accept."""
    problems = []
    for name, app in groups.items():
        given = {v["name"]: v for v in app["spec"].get("variables", [])}
        needed = set()
        for c in app["spec"].get("components", []):
            needed |= reads.get(c, set()) & secret
        for v in sorted(needed - set(given)):
            problems.append(f"{name}: its components read the secret variable {v}, which it does not map")
        for v in sorted(set(given) & secret):
            if v in needed:
                if "valueFrom" not in given[v]:
                    problems.append(f"{name}: secret variable {v} must come from a Secret, not a value")
            elif v not in required:
                problems.append(f"{name}: it maps the secret variable {v}, which none of its components reads")
            elif "valueFrom" in given[v] or len(str(given[v].get("value", ""))) >= 16:
                problems.append(f"{name}: it reads no {v}: set it to a short placeholder value, not the secret")
    return problems


failures.extend(secret_problems(apps))


def changed(group, change):
    """The groups with `change` made to the variables of `group`."""
    groups = copy.deepcopy(apps)
    change(groups[group]["spec"]["variables"])
    return groups


def with_variable(group, name, entry):
    """The groups with `group`'s variable `name` replaced by `entry`."""

    def replace(variables):
        variables[:] = [v for v in variables if v["name"] != name] + [{"name": name, **entry}]

    return changed(group, replace)


from_secret = {"valueFrom": {"secretKeyRef": {"name": "edge-auth-secrets", "key": "internal-api-token"}}}
for what, groups in {
    "the real internal_api_token in a group that reads none": with_variable(
        "edge-auth-commands", "internal_api_token", from_secret
    ),
    "internal_api_token as a value where it is read": with_variable(
        "edge-auth-internal", "internal_api_token", {"value": "unused"}
    ),
    "a long placeholder": with_variable(
        "edge-auth-push", "internal_api_token", {"value": "x" * 40}
    ),
}.items():
    if not secret_problems(groups):
        fail(f"the secrets check accepts {what}")

# A setting that components of several groups read (the command gate's budgets, which
# subscribe-events shares with execute-command; the proxy settings every public group
# reads) has one value everywhere: one group tuned alone would give the same Redis budget
# different limits.
def runs_with(app, variable):
    """The value a group runs with: ("value", text), its own or spin.toml's default, or
    ("from", source) for one from a Secret or ConfigMap."""
    for entry in app["spec"].get("variables", []):
        if entry["name"] == variable:
            if "value" in entry:
                return ("value", entry["value"])
            return ("from", json.dumps(entry.get("valueFrom"), sort_keys=True))
    return ("value", declared[variable].get("default"))


def setting_problems(groups):
    """Each variable that components of several groups read runs with one value in all."""
    settings = {}  # variable -> {group: the value it runs with}
    for name, app in groups.items():
        for c in app["spec"].get("components", []):
            # Secrets too, by the Secret key they come from: address_tag_key from
            # different keys in the public and internal groups would tag one address two
            # ways, and a block would never meet the logins it is meant for.
            for v in reads.get(c, set()):
                settings.setdefault(v, {})[name] = runs_with(app, v)
    return [
        f"{v} differs between the groups that read it: {values}"
        for v, values in sorted(settings.items())
        if len(set(values.values())) > 1
    ]


failures.extend(setting_problems(apps))


def drop(name):
    return lambda variables: variables.remove(next(v for v in variables if v["name"] == name))


def rekey(name, key):
    return lambda variables: next(v for v in variables if v["name"] == name)["valueFrom"][
        "secretKeyRef"
    ].update(key=key)


# The check can fail: a group without its Redis allowed host, a secret from another key.
for what, groups in {
    "a group left on the default redis_allowed_host": changed("edge-auth-push", drop("redis_allowed_host")),
    "redis_url from another Secret key in one group": changed(
        "edge-auth-internal", rekey("redis_url", "redis-url-old")
    ),
}.items():
    if not setting_problems(groups):
        fail(f"the settings check accepts {what}")

# The default backend is the example backend, reached by service chaining, which stays
# inside one app: a group running execute-command without its own backend_url runs the
# example backend beside it (Spin cannot tell at start-up: the allowed host is a template,
# and every command would trap).
for name, app in apps.items():
    comps = app["spec"].get("components", [])
    kind, backend = runs_with(app, "backend_url")
    chained_to_example = kind == "value" and str(backend).lower().startswith(
        "http://example-backend.spin.internal"
    )
    if "execute-command" in comps and chained_to_example and "example-backend" not in comps:
        fail(f"{name}: execute-command's backend_url is the example backend, which it does not run")

# Every routed component runs in exactly one group (health in all of them).
for component in sorted(set(routes.values()) - {"health"}):
    owners = [n for n, a in apps.items() if component in a["spec"].get("components", [])]
    if len(owners) != 1:
        fail(f"component {component} runs in {owners or 'no group'}: expected exactly one")

# Each file holds the kinds it is meant to, at the API versions Kubernetes serves today:
# kubernetes-validate only warns (and passes) on a kind or version it has no schema for,
# such as autoscaling/v2beta2 or networking.k8s.io/v1beta1, which `kubectl apply` refuses.
KINDS = {
    "ingress.yaml": ("networking.k8s.io/v1", "Ingress"),
    "hpa.yaml": ("autoscaling/v2", "HorizontalPodAutoscaler"),
    "secret.example.yaml": ("v1", "Secret"),
}


def kind_problems(file, documents):
    want = KINDS[file]
    return [
        f"{file}: {d.get('metadata', {}).get('name')} is {d.get('apiVersion')} {d.get('kind')}, "
        f"expected {want[0]} {want[1]}"
        for d in documents
        if (d.get("apiVersion"), d.get("kind")) != want
    ]


def covers(path, kind, route):
    """Whether an Ingress path of `kind` routes `route`, as Kubernetes matches: Exact, the
    whole path; Prefix, element by element, a trailing `/` ignored and `/` matching
    everything. (ImplementationSpecific, a character prefix or a regex to ingress-nginx,
    is refused where it is found, as is `use-regex`.)"""
    if kind == "Exact":
        return route == path
    base = path.rstrip("/")
    return base == "" or route == base or route.startswith(base + "/")


RANGE = "nginx.ingress.kubernetes.io/whitelist-source-range"


def restricted(ingress):
    """Whether an Ingress admits listed source networks only: a whitelist-source-range
    of networks, none wider than a /8 (IPv4) or a /16 (IPv6), so that no few of them add
    up to every address (`0.0.0.0/1, 128.0.0.0/1`)."""
    listed = (ingress["metadata"].get("annotations") or {}).get(RANGE)
    if listed is None:
        return False
    try:
        nets = [ipaddress.ip_network(n.strip(), strict=False) for n in listed.split(",") if n.strip()]
    except ValueError:
        return False
    return bool(nets) and all(n.prefixlen >= (8 if n.version == 4 else 16) for n in nets)


def ingress_problems(ingresses):
    """The Ingress paths reach the group that runs their routes: each route matches
    exactly one path of all the Ingresses (whatever their host), and internal routes, and
    only they, match one on a source-restricted Ingress. No Ingress has a default
    backend: it would take every path no rule matches, past these checks."""
    problems = []
    paths = []  # (path, pathType, service, restricted), one per rule path, hosts apart
    for ingress in ingresses:
        name = ingress["metadata"]["name"]
        if "defaultBackend" in ingress["spec"]:
            problems.append(f"{name}: a defaultBackend routes every path its rules do not")
        notes = ingress["metadata"].get("annotations") or {}
        listed = notes.get(RANGE)
        limited = restricted(ingress)
        if listed is not None and not limited:
            problems.append(
                f"{name}: {RANGE} {listed!r} is no list of networks each a /8 (IPv6: /16) or narrower"
            )
        if notes.get("nginx.ingress.kubernetes.io/use-regex", "false").lower() != "false":
            problems.append(f"{name}: use-regex makes its paths regexes, which this check cannot follow")
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                service = p["backend"]["service"]["name"]
                if p["pathType"] not in ("Exact", "Prefix"):
                    problems.append(
                        f"{name}: {p['path']} is {p['pathType']}, which ingress-nginx reads as a "
                        "character prefix or a regex: use Exact or Prefix"
                    )
                if service == "edge-auth-internal" and not limited:
                    problems.append(f"{name}: {p['path']} reaches the internal group from anywhere")
                paths.append((p["path"], p["pathType"], service, limited))
    for route, component in sorted(routes.items()):
        matches = [
            (path, service, limited)
            for path, kind, service, limited in paths
            if covers(path, kind, route)
        ]
        if len(matches) != 1:
            problems.append(f"{route}: {len(matches)} Ingress paths match it, expected 1")
            continue
        path, service, limited = matches[0]
        if route.startswith("/api/v1/internal") != limited:
            problems.append(
                f"{route}: internal routes, and only they, go through the source-restricted Ingress"
            )
        if service not in apps or component not in apps[service]["spec"].get("components", []):
            problems.append(f"{route}: its Ingress path goes to {service}, which does not run {component}")
    return problems


for file in KINDS:
    failures.extend(kind_problems(file, docs(file)))
failures.extend(ingress_problems(docs("ingress.yaml")))



def route_timeouts(ingresses, component, which):
    """(Ingress name, seconds) of nginx's `which` timeout (60 s unless annotated) on each
    Ingress path that routes `component`'s route."""
    (route,) = [r for r, c in routes.items() if c == component]
    for ingress in ingresses:
        notes = ingress["metadata"].get("annotations") or {}
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                if covers(p["path"], p["pathType"], route):
                    seconds = int(notes.get(f"nginx.ingress.kubernetes.io/{which}", "60"))
                    yield ingress["metadata"]["name"], seconds


def stream_timeout_problems(ingresses, max_duration):
    """The Ingress path of the push stream lets a stream run its whole length: nginx's
    read and send timeouts at least 5 s past push_max_duration_seconds (README: a stream
    cut short ends without its terminal event, and the client counts a failure)."""
    return [
        f"{name}: {which} {seconds} s cuts push streams of {max_duration} s "
        f"(give it at least {max_duration + 5})"
        for which in ("proxy-read-timeout", "proxy-send-timeout")
        for name, seconds in route_timeouts(ingresses, "subscribe-events", which)
        if seconds < max_duration + 5
    ]


(push_group,) = [a for a in apps.values() if "subscribe-events" in a["spec"].get("components", [])]
kind, duration = runs_with(push_group, "push_max_duration_seconds")
if kind != "value":
    fail("push_max_duration_seconds: set it as a value in the push group (the Ingress timeout follows it)")
else:
    failures.extend(stream_timeout_problems(docs("ingress.yaml"), int(duration)))
    if not stream_timeout_problems(docs("ingress.yaml"), int(duration) + 60):
        fail("the stream timeout check accepts streams longer than the Ingress lets run")

def command_timeout_problems(ingresses, worst_s):
    """The Ingress path of execute-command waits for the slowest answer the backend
    timeouts allow: the gateway writes nothing until it has signed its answer, which may
    take the connect timeout, then the first-byte one to the headers and again for the
    body; nginx's read timeout must outlast that, or a command that ran is answered with
    nginx's 504, unsigned."""
    return [
        f"{name}: proxy-read-timeout {seconds} s cuts commands the backend timeouts let "
        f"take {worst_s} s (give it at least {worst_s + 5})"
        for name, seconds in route_timeouts(ingresses, "execute-command", "proxy-read-timeout")
        if seconds < worst_s + 5
    ]


(command_group,) = [a for a in apps.values() if "execute-command" in a["spec"].get("components", [])]
backend_ms = []
for variable in ("backend_connect_timeout_ms", "backend_first_byte_timeout_ms"):
    kind, value = runs_with(command_group, variable)
    if kind != "value":
        fail(f"{variable}: set it as a value in the commands group (the Ingress timeout follows it)")
    else:
        backend_ms.append(int(value))
if len(backend_ms) == 2:
    connect_ms, first_byte_ms = backend_ms
    worst = -(-(connect_ms + 2 * first_byte_ms) // 1000)
    failures.extend(command_timeout_problems(docs("ingress.yaml"), worst))
    if not command_timeout_problems(docs("ingress.yaml"), 86400):
        fail("the command timeout check accepts backend timeouts longer than the Ingress waits")

# The two checks above can fail: an internal path added to the public Ingress (where only
# the token would guard the internal API), however Kubernetes would match it, and an
# Ingress at a retired API version.
def public_with(change):
    """The Ingresses with `change` made to the public one (the first not restricted)."""
    ingresses = copy.deepcopy(docs("ingress.yaml"))
    change(next(i for i in ingresses if not restricted(i)))
    return ingresses


def internal_path(path, kind):
    return lambda ingress: ingress["spec"]["rules"][0]["http"]["paths"].append(
        {"path": path, "pathType": kind,
         "backend": {"service": {"name": "edge-auth-internal", "port": {"number": 80}}}}
    )


to_internal = {"service": {"name": "edge-auth-internal", "port": {"number": 80}}}
opened = {
    "an internal Prefix path": internal_path("/api/v1/internal", "Prefix"),
    "a Prefix path with a trailing /": internal_path("/api/v1/internal/", "Prefix"),
    "a Prefix path of /": internal_path("/", "Prefix"),
    "an ImplementationSpecific path": internal_path("/api/v1/int", "ImplementationSpecific"),
    "a path no route of ours matches": internal_path("/admin", "Prefix"),
    "a defaultBackend": lambda ingress: ingress["spec"].update(defaultBackend=to_internal),
    "use-regex": lambda ingress: ingress["metadata"]["annotations"].update(
        {"nginx.ingress.kubernetes.io/use-regex": "true"}
    ),
}
for what, change in opened.items():
    if not ingress_problems(public_with(change)):
        fail(f"the Ingress check accepts {what} to the internal group on the public Ingress")
for everyone in ("0.0.0.0/0", "10.0.0.0/8, ::/0", "0.0.0.0/1, 128.0.0.0/1", "not a network"):
    ingresses = copy.deepcopy(docs("ingress.yaml"))
    for ingress in ingresses:
        if RANGE in (ingress["metadata"].get("annotations") or {}):
            ingress["metadata"]["annotations"][RANGE] = everyone
    if not ingress_problems(ingresses):
        fail(f"the Ingress check takes {RANGE} {everyone!r} for a restriction")
retired = copy.deepcopy(docs("ingress.yaml"))
retired[0]["apiVersion"] = "networking.k8s.io/v1beta1"
if not kind_problems("ingress.yaml", retired):
    fail("the kind check accepts an Ingress at networking.k8s.io/v1beta1")

# Autoscalers target the Deployments the operator makes (named after each SpinApp).
scaled = {h["spec"]["scaleTargetRef"]["name"] for h in docs("hpa.yaml")}
for name, app in apps.items():
    if app["spec"].get("enableAutoscaling") and name not in scaled:
        fail(f"{name}: autoscaling is on but no HorizontalPodAutoscaler targets it")
for target in scaled - set(apps):
    fail(f"hpa.yaml targets {target}, which is no SpinApp")

# Secret keys referenced exist in the example Secret.
(example,) = docs("secret.example.yaml")
secret_text = (DEPLOY / "secret.example.yaml").read_text()
for name, app in apps.items():
    for v in app["spec"].get("variables", []):
        ref = v.get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            continue
        if ref["name"] != example["metadata"]["name"]:
            fail(f"{name}: {v['name']} refers to the Secret {ref['name']}")
        # An optional key (a rotation's, or a feature's that is off by default) is named
        # in the example's comments, not set: a placeholder would switch it on.
        elif ref.get("optional"):
            if ref["key"] in example["stringData"] or f"# {ref['key']}:" not in secret_text:
                fail(f"{name}: optional {ref['key']} must be a comment in secret.example.yaml")
        elif ref["key"] not in example["stringData"]:
            fail(f"{name}: {v['name']} refers to {ref['name']}/{ref['key']}, not in secret.example.yaml")

# The schema rejects what the operator would: each of these must fail validation.
schema = json.loads((DEPLOY / "spinapp.schema.json").read_text())
base = apps["edge-auth-public"]
broken = {
    "replicas with autoscaling on": lambda a: a["spec"].update(replicas=2),
    "no executor": lambda a: a["spec"].pop("executor"),
    "a field the CRD lacks": lambda a: a["spec"].update(replica=2),
    "an empty component list": lambda a: a["spec"].update(components=[]),
    "a variable with value and valueFrom": lambda a: a["spec"]["variables"][0].update(value="x"),
    "a probe without a path": lambda a: a["spec"]["checks"]["liveness"]["httpGet"].pop("path"),
    "no replicas without autoscaling": lambda a: a["spec"].update(enableAutoscaling=False, replicas=0),
    "autoscaling off and replicas absent": lambda a: (
        a["spec"].update(enableAutoscaling=False),
        a["spec"].pop("replicas", None),
    ),
}
jsonschema.validate(base, schema)
for what, change in broken.items():
    bad = copy.deepcopy(base)
    change(bad)
    try:
        jsonschema.validate(bad, schema)
        fail(f"the SpinApp schema accepts {what}")
    except jsonschema.ValidationError:
        pass

if failures:
    print("deployment material: " + str(len(failures)) + " problem(s)", file=sys.stderr)
    for f in failures:
        print("  - " + f, file=sys.stderr)
    sys.exit(1)
print(f"deployment material agrees with spin.toml: {len(apps)} route groups, "
      f"{len(routes)} routes, {len(broken)} broken SpinApps rejected by the schema")
