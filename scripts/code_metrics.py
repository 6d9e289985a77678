"""The size report issue 33 tracks, from the ast of `ftlab/`: long functions, public functions with many parameters, long modules.

    python scripts/code_metrics.py [--max-lines 40] [--max-params 20] [--max-module 500] [--pkg ftlab]

(a) every function or method (nested ones too) longer than `--max-lines` lines, `def` line to last line, decorators excluded;
(b) every public function or method (no leading underscore on it or its class) with more than `--max-params` parameters,
    counting positional, keyword-only, `*args` and `**kwargs` (`self`/`cls` excluded);
(c) every module longer than `--max-module` lines. `_modidx.py` (nbdev's generated index, one dict literal) is left out.
Exit status 0 always: it reports, it does not judge (the issue's thresholds are "about" 40/20/500).
"""
import argparse, ast, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"_modidx.py"}


def n_params(f: ast.FunctionDef, method: bool) -> int:
    a = f.args
    ps = [*a.posonlyargs, *a.args]
    if method and ps and ps[0].arg in ("self", "cls"): ps = ps[1:]
    return len(ps) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)


def functions(tree: ast.Module):
    "(qualified name, node, is_method, is_public) for every function in `tree`, nested ones included."
    out = []
    def walk(node, prefix, in_class, public):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)):
                q = f"{prefix}{ch.name}"
                # a `@patch`ed function `def f(self: Cls, ...)` is a method of Cls
                patched = any(getattr(d, "id", None) == "patch" for d in ch.decorator_list)
                pub = public and not ch.name.startswith("_") and not (patched and _patched_class_private(ch))
                out.append((q, ch, in_class or patched, pub))
                walk(ch, q + ".", False, False)   # nested functions are never public API
            elif isinstance(ch, ast.ClassDef):
                walk(ch, f"{prefix}{ch.name}.", True, public and not ch.name.startswith("_"))
            else:
                walk(ch, prefix, in_class, public)
    walk(tree, "", False, True)
    return out


def _patched_class_private(f) -> bool:
    a = (f.args.posonlyargs + f.args.args)
    ann = a[0].annotation if a else None
    name = getattr(ann, "id", None) or (ann.value if isinstance(ann, ast.Constant) else None) or ""
    return str(name).startswith("_")


def report(pkg: Path, max_lines: int, max_params: int, max_module: int) -> str:
    long_f, many_p, long_m = [], [], []
    for py in sorted(pkg.glob("*.py")):
        if py.name in GENERATED: continue
        src = py.read_text(); n = len(src.splitlines())
        if n > max_module: long_m.append((n, py.name))
        for q, f, method, pub in functions(ast.parse(src)):
            ln = f.end_lineno - f.lineno + 1
            if ln > max_lines: long_f.append((ln, f"{py.stem}.{q}", f.lineno))
            if pub and (k := n_params(f, method)) > max_params: many_p.append((k, f"{py.stem}.{q}", f.lineno))
    out = [f"(a) functions longer than {max_lines} lines: {len(long_f)}"]
    out += [f"    {ln:4d}  {q}  (line {l})" for ln, q, l in sorted(long_f, reverse=True)]
    out += [f"(b) public functions with more than {max_params} parameters: {len(many_p)}"]
    out += [f"    {k:4d}  {q}  (line {l})" for k, q, l in sorted(many_p, reverse=True)]
    out += [f"(c) modules longer than {max_module} lines: {len(long_m)}"]
    out += [f"    {n:4d}  {m}" for n, m in sorted(long_m, reverse=True)]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pkg", default=str(ROOT / "ftlab"))
    ap.add_argument("--max-lines", type=int, default=40)
    ap.add_argument("--max-params", type=int, default=20)
    ap.add_argument("--max-module", type=int, default=500)
    a = ap.parse_args(argv)
    print(report(Path(a.pkg), a.max_lines, a.max_params, a.max_module))
    return 0


if __name__ == "__main__":
    sys.exit(main())
