#!/usr/bin/env python3
"""Renders the herd chart without helm: python3 deploy/helm/render.py [-f values.yaml]...
[--set key.path=value]... [--release NAME] [CHART_DIR] > manifests.yaml

helm is not packaged by Debian, PyPI or npm, so the chart's test (crates/herd/tests/it/deploy.rs)
renders it with this script: the subset of Go templates the chart's templates use, nothing
more. Values: the chart's values.yaml, then each -f file merged over it, then --set. In
templates: {{ .Values.a.b }}, {{ .Release.Name }}, {{ .Release.Namespace }}, {{ .Release.Service }},
{{ .Chart.Name }}, {{ .Chart.Version }}, string literals; functions `toYaml X` and `eq A B`; pipes
`| quote`, `| indent N`, `| nindent N`, `| sha256sum`; {{ if }} / {{ else }} / {{ end }}; `{{-` and
`-}}` trim whitespace as in Go. Anything else is an error naming the template and the action, so
a template that helm would render differently is not silently mis-rendered. Needs PyYAML.
"""

import argparse
import hashlib
import os
import re
import shlex
import sys

import yaml

ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


class TemplateError(Exception):
    pass


def tokens(text):
    """Text and actions, with Go's trim markers applied."""
    out, pos = [], 0
    for m in ACTION.finditer(text):
        out.append(["text", text[pos:m.start()]])
        if m.group(1):
            out[-1][1] = out[-1][1].rstrip()
        out.append(["action", m.group(2), bool(m.group(3))])
        pos = m.end()
    out.append(["text", text[pos:]])
    for i, t in enumerate(out):
        if t[0] == "action" and t[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip()
    return [(t[0], t[1]) for t in out]


def parse(toks, i=0, stop=()):
    """A list of nodes up to one of `stop`; returns (nodes, index, the stop word)."""
    nodes = []
    while i < len(toks):
        kind, value = toks[i]
        i += 1
        if kind == "text":
            nodes.append(("text", value))
            continue
        if value.startswith("/*") or value.startswith("#"):
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in stop:
            return nodes, i, word
        if word == "if":
            then, i, word = parse(toks, i, ("else", "end"))
            other = []
            if word == "else":
                other, i, _ = parse(toks, i, ("end",))
            nodes.append(("if", value[2:].strip(), then, other))
        elif word in ("else", "end"):
            raise TemplateError(f"unexpected {{{{ {value} }}}}")
        else:
            nodes.append(("expr", value))
    if stop:
        raise TemplateError("an {{ if }} without {{ end }}")
    return nodes, i, None


def lookup(path, ctx):
    value = ctx
    for part in path.strip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def to_yaml(value):
    if value in (None, {}, []):
        return "{}" if value != [] else "[]"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def scalar(value):
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError("a map or list printed without toYaml")
    return str(value)


def term(word, ctx):
    if word.startswith('"'):
        return shlex.split(word)[0]
    if word.startswith("."):
        return lookup(word, ctx)
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    if word in ("true", "false"):
        return word == "true"
    raise TemplateError(f"unknown term {word}")


def command(words, ctx, piped):
    args = [term(w, ctx) for w in words[1:]] + ([piped] if piped is not _NONE else [])
    name = words[0]
    if name.startswith(".") or name.startswith('"') or re.fullmatch(r"-?\d+", name):
        if len(words) > 1 or piped is not _NONE:
            raise TemplateError(f"cannot call {name}")
        return term(name, ctx)
    if name == "toYaml" and len(args) == 1:
        return to_yaml(args[0])
    if name == "eq" and len(args) == 2:
        return args[0] == args[1]
    if name == "quote" and len(args) == 1:
        return '"' + scalar(args[0]).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if name == "sha256sum" and len(args) == 1:
        return hashlib.sha256(scalar(args[0]).encode()).hexdigest()
    if name in ("indent", "nindent") and len(args) == 2:
        pad = " " * int(args[0])
        text = "\n".join(pad + line if line else line for line in scalar(args[1]).split("\n"))
        return ("\n" if name == "nindent" else "") + text
    raise TemplateError(f"unsupported function {name} with {len(args)} argument(s)")


_NONE = object()


def evaluate(expr, ctx):
    value = _NONE
    for part in [p.strip() for p in re.split(r'\|(?=(?:[^"]*"[^"]*")*[^"]*$)', expr)]:
        value = command(shlex.split(part, posix=False), ctx, value)
    return value


def truthy(value):
    return value not in (None, False, 0, "", {}, [])


def render_nodes(nodes, ctx):
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(scalar(evaluate(node[1], ctx)))
        else:
            out.append(render_nodes(node[2] if truthy(evaluate(node[1], ctx)) else node[3], ctx))
    return "".join(out)


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("chart", nargs="?", default=os.path.join(os.path.dirname(__file__), "herd"))
    ap.add_argument("-f", "--values", action="append", default=[])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--release", default="herd")
    ap.add_argument("--namespace", default="default")
    a = ap.parse_args()
    with open(os.path.join(a.chart, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    with open(os.path.join(a.chart, "values.yaml")) as f:
        values = yaml.safe_load(f) or {}
    for path in a.values:
        with open(path) as f:
            merge(values, yaml.safe_load(f) or {})
    for item in a.set:
        key, _, raw = item.partition("=")
        node = values
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(raw)
    ctx = {
        "Values": values,
        "Release": {"Name": a.release, "Namespace": a.namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"]},
    }
    tdir = os.path.join(a.chart, "templates")
    docs = []
    for name in sorted(os.listdir(tdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(tdir, name)) as f:
            text = f.read()
        try:
            nodes, _, _ = parse(tokens(text))
            rendered = render_nodes(nodes, ctx)
        except TemplateError as e:
            sys.exit(f"render.py: templates/{name}: {e}")
        docs.append(f"# Source: {chart['name']}/templates/{name}\n{rendered.strip()}\n")
    sys.stdout.write("---\n".join(docs))


if __name__ == "__main__":
    main()
