#!/usr/bin/env python3
"""One-way layers in src/: no module cycle, nothing below server/ imports it.

Reads every path that starts with `crate::`, `$crate::`, `super::` or
`self::` in the library's sources (use trees expanded, comments and string
literals ignored, inline `mod x { .. }` blocks such as tests followed) and
builds the graph of which module refers to which. It fails, naming the edges
and the lines that make them, when

  * two top-level modules (or two of server's submodules) are in a cycle, or
  * a module outside server/ refers to `server::`, except the few that start
    the whole product in one process (ABOVE_SERVER).

Run from anywhere: `python3 .ci/layers.py`. Standard library only.
"""

import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Whose children must not form a cycle: the crate root and server/.
CYCLE_FREE = [(), ("server",)]

# Modules that sit above server/ as main.rs does: they start it.
ABOVE_SERVER = {
    "demo": "runs the simulator, a demo app and the proxy in one process",
}


def strip(text):
    """The text with comments and string/char literals blanked, lines kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'").match(text, i)
            if m:
                out.append("' '")
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def modules():
    """Every module the library's files declare: path tuple -> file."""
    found = {}
    for root, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, SRC)[: -len(".rs")].split(os.sep)
            if rel == ["main"]:
                continue  # the binary: a separate crate that uses the library
            if rel[-1] in ("mod", "lib"):
                rel = rel[:-1]
            found[tuple(rel)] = path
    return found


def expand_use(tree):
    """`a::{b, c::{d, e as f}, self}` -> [[a, b], [a, c, d], [a, c, e], [a]]."""
    tokens = re.findall(r"\$?\w+|::|[{},*]", tree)
    pos = 0

    def parse(prefix):
        nonlocal pos
        paths = []
        path = list(prefix)
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == "{":
                pos += 1
                while pos < len(tokens) and tokens[pos] != "}":
                    paths += parse(path)
                    if pos < len(tokens) and tokens[pos] == ",":
                        pos += 1
                pos += 1
                return paths
            if tok in (",", "}"):
                break
            pos += 1
            if tok == "::" or tok == "*":
                continue
            if tok == "as":
                pos += 1  # the alias names nothing new
                continue
            if tok == "self" and prefix:
                continue  # `a::{self}` is `a`
            path.append(tok)
        paths.append(path)
        return paths

    return parse([])


PATH = re.compile(r"(?<![\w$])(\$crate|crate|super|self)((?:\s*::\s*\w+)+)")
USE = re.compile(r"\buse\s+([^;]*);")
MOD_BLOCK = re.compile(r"\bmod\s+(\w+)\s*\{")


def references(path, module):
    """(line, module it is written in, absolute path it names) for one file."""
    text = strip(open(path, encoding="utf-8").read())
    line_at = lambda pos: text.count("\n", 0, pos) + 1  # noqa: E731

    # Inline modules (`mod tests { .. }`): where each one opens and closes.
    blocks = []
    for m in MOD_BLOCK.finditer(text):
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        blocks.append((m.end(), j, m.group(1)))

    def scope(pos):
        inner = [name for start, end, name in blocks if start <= pos < end]
        return module + tuple(inner)

    found = []
    used = []
    for m in USE.finditer(text):
        used.append((m.start(), m.end()))
        for segs in expand_use(m.group(1)):
            found.append((m.start(), segs))
    for m in PATH.finditer(text):
        if any(s <= m.start() < e for s, e in used):
            continue
        segs = [m.group(1)] + re.findall(r"\w+", m.group(2))
        found.append((m.start(), segs))

    out = []
    for pos, segs in found:
        here = scope(pos)
        head, rest = segs[0], segs[1:]
        if head in ("crate", "$crate"):
            target = ()
        elif head == "self":
            target = here
        elif head == "super":
            target = here[:-1]
            while rest and rest[0] == "super":
                target, rest = target[:-1], rest[1:]
        else:
            continue  # another crate, or a name already in scope
        out.append((line_at(pos), here, target + tuple(rest)))
    return out


def owner(target, known):
    """The longest declared module that `target` lies in."""
    for cut in range(len(target), -1, -1):
        if target[:cut] in known:
            return target[:cut]
    return ()


def child(parent, module):
    """The child of `parent` that `module` lies in, or None."""
    if len(module) > len(parent) and module[: len(parent)] == parent:
        return parent + (module[len(parent)],)
    return None


def cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    nodes = sorted(set(edges) | {t for ts in edges.values() for t in ts})

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def name(module):
    return "::".join(module) or "crate"


def main():
    known = modules()
    evidence = defaultdict(list)  # (from, to) -> ["file:line"]
    problems = []
    count = 0
    for module, path in sorted(known.items()):
        rel = os.path.relpath(path, os.path.join(SRC, ".."))
        for line, here, target in references(path, module):
            to = owner(target, known)
            count += 1
            for parent in CYCLE_FREE:
                a, b = child(parent, here), child(parent, to)
                if a and b and a != b:
                    evidence[(a, b)].append(f"{rel}:{line}")
            if (
                to[:1] == ("server",)
                and here[:1] != ("server",)
                and here[:1] != ()
                and here[0] not in ABOVE_SERVER
            ):
                problems.append(
                    f"{name(here)} -> {name(target)} ({rel}:{line}):"
                    " only server/ and the modules that start it may use server::"
                )

    for parent in CYCLE_FREE:
        edges = defaultdict(set)
        for a, b in evidence:
            if a[:-1] == parent:
                edges[a].add(b)
        for comp in cycles(edges):
            members = set(comp)
            lines = [
                f"  {name(a)} -> {name(b)} ({', '.join(list(dict.fromkeys(evidence[(a, b)]))[:3])})"
                for a in comp
                for b in sorted(edges[a])
                if b in members
            ]
            problems.append(
                f"cycle between {', '.join(name(m) for m in comp)}:\n" + "\n".join(lines)
            )

    if problems:
        for p in problems:
            print(f"layers: {p}", file=sys.stderr)
        sys.exit(1)
    top = sum(1 for a, _ in evidence if len(a) == 1)
    print(
        f"layers: OK: {len(known)} modules, {count} crate paths, {top} top-level"
        " edges, no cycle, nothing below server/ uses it"
    )


if __name__ == "__main__":
    main()
