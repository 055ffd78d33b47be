"""The house rules, checked on the code itself: no import cycle in dataforge/ or flows/, no module
importing another's private name, and every registered stage complete (config section, standalone
command, doc page, tests) with the warehouse, export and docs agreeing with the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dataforge.stages.registry import all_stages, final_among, final_stage, stage_order

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dataforge", "flows")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(*folders: str) -> dict[str, Path]:
    return {_module_name(p): p for f in folders for p in sorted((ROOT / f).rglob("*.py"))
            if ".venv" not in p.parts and ".data" not in p.parts}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (imports there never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(path: Path, name: str, modules: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import statement of the file,
    at any depth (a function-level import is an edge too), except under TYPE_CHECKING. A
    relative import is resolved against the module's package."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    sources = _sources(*PACKAGES)
    modules = set(sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in sources.items():
        for base, names, _ in _imports(path, name, modules):
            targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]  # from pkg import submodule
            if base in modules and (not names or len(targets) < len(names)):
                targets.append(base)
            graph[name].update(t for t in targets if t != name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.hidden\n"
                 "def f():\n    from x.y import z\n    from . import sibling\n")
    got = [(b, n) for b, n, _ in _imports(f, "x.m", set())]
    assert got == [("typing", ["TYPE_CHECKING"]), ("x.y", ["z"]), ("x", ["sibling"])]


def test_no_import_cycle_in_dataforge_or_flows():
    graph = _graph()
    assert "dataforge.cli.main" in graph and "dataforge.config" in graph["dataforge.cli.common"]
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _internal(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def test_no_module_imports_a_private_name_from_another():
    """``from dataforge.x import _y`` and ``x._y`` (x an imported dataforge module) are errors, in
    the package, flows/, tests/ and benchmarks/: what crosses a module boundary is public."""
    bad = []
    for folder in (*PACKAGES, "tests", "benchmarks", "scripts"):
        for name, path in _sources(folder).items():
            tree = ast.parse(path.read_text(), str(path))
            aliases: set[str] = set()
            for base, names, line in _imports(path, name, set()):
                if not _internal(base) or base == name:
                    continue
                bad += [f"{path.relative_to(ROOT)}:{line}: from {base} import {n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    aliases.update((a.asname or a.name).split(".")[0] for a in node.names if _internal(a.name))
                elif isinstance(node, ast.ImportFrom) and node.module and _internal(node.module):
                    aliases.update(a.asname or a.name for a in node.names if not a.name[0].isupper())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                        and node.attr.startswith("_") and not node.attr.startswith("__")):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


# --- the registry ------------------------------------------------------------------------------

STAGES = all_stages()


def test_the_registry_holds_every_stage_once_in_a_chain():
    names = [s.name for s in STAGES]
    assert len(names) == len(set(names)) and {"textbooks", "cot", "heuristics", "quality", "dedup"} <= set(names)
    assert [s.order for s in STAGES] == sorted(s.order for s in STAGES)
    assert stage_order() == [*names, "export"]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_registered_stage_is_complete(stage):
    from dataforge.cli.main import command_names
    from dataforge.config import PipelineConfig

    assert stage.name in PipelineConfig.model_fields, f"{stage.name}: no config section"
    assert PipelineConfig.model_fields[stage.name].annotation is stage.config_model
    assert stage.command_name in command_names(), f"{stage.name}: no standalone command {stage.command_name!r}"
    assert (ROOT / stage.doc_page).is_file(), f"{stage.name}: no doc page {stage.doc_page}"
    assert (ROOT / "tests" / f"test_{stage.name}.py").is_file(), f"{stage.name}: no tests/test_{stage.name}.py"
    assert stage.summary and stage.drop_reasons, f"{stage.name}: say what it does and why it drops"
    assert (stage.apply if stage.kind == "curation" else stage.run) is not None


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_stage_page_starts_with_its_registry_facts(stage):
    """The docs' stage table is the registry's: each page carries its stage's row, generated
    (``dataforge stages --facts NAME``), so adding a stage touches only its own page."""
    from dataforge.stages.registry import facts_markdown

    page = (ROOT / stage.doc_page).read_text()
    assert facts_markdown(stage) in page, f"{stage.doc_page}: paste `dataforge stages --facts {stage.name}` at the top"


def test_final_stage_export_and_warehouse_agree(tmp_path):
    """The stage export takes, the warehouse's is_final and `dataforge export`'s choice are one rule."""
    from dataforge import warehouse
    from dataforge.config import parse_config
    from dataforge.runner import open_run

    for sections in ({"heuristics": {"enabled": True}, "dedup": {"enabled": True}},
                     {"heuristics": {"enabled": False}, "dedup": {"enabled": False}, "textbooks": {"enabled": False}},
                     {"textbooks": {"enabled": False}, "dedup": {"enabled": False}, "heuristics": {"enabled": False}},
                     {"diversity": {"enabled": True}}):
        cfg = parse_config({"data_root": str(tmp_path), "name": "x", **sections})
        run = open_run(cfg)
        con = warehouse.connect(run)
        try:
            marked = [r[0] for r in con.execute("SELECT stage FROM stages WHERE is_final").fetchall()]
        finally:
            con.close()
        assert marked == [final_stage(cfg)] == [final_among(list(run.load_record().stages))]


def test_a_stage_section_is_validated_with_its_field_named():
    from dataforge.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"dedup\.threshold"):
        parse_config({"dedup": {"threshold": 7}})
    with pytest.raises(ConfigError, match=r"nosuchstage: unknown field"):
        parse_config({"nosuchstage": {"enabled": True}})


def _runs_with_defaults(stage) -> bool:
    """A curation stage whose section validates with only ``enabled: true`` (no model, target or
    benchmark to name) and asks no teacher: the pipeline test below runs each of them."""
    try:
        stage.config_model.model_validate({"enabled": True})
    except ValueError:
        return False
    return stage.kind == "curation" and not stage.teacher


# diversity walks down a score (judge_, color_ or quality_score by default): any numeric column will do here
SETTINGS = {"diversity": {"quality_column": "completion_tokens"}}


@pytest.mark.parametrize("stage", [s for s in STAGES if _runs_with_defaults(s)], ids=lambda s: s.name)
def test_every_stage_runs_in_a_pipeline_from_its_registration_alone(tmp_path, stage):
    """Enabling a stage in the YAML is all it takes: it runs in chain order on the rows of the
    stage before it, commits, is the final stage when last, and its rows are what export ships."""
    from fake_openai import FakeOpenAI
    from responders import teacher_responder
    from run_helpers import run_pipeline, write_add_seeds, write_config

    from dataforge import warehouse

    seeds = write_add_seeds(tmp_path / "seeds.jsonl", 4)
    with FakeOpenAI(responder=teacher_responder) as srv:
        sections = {"textbooks": {"topics": ["maps"], "max_samples": 2},
                    "cot": {"seeds": str(seeds), "samples_per_question": 1},
                    "dedup": {"enabled": False}, stage.name: {"enabled": True, **SETTINGS.get(stage.name, {})}}
        config = write_config(tmp_path / "p.yaml", srv.base_url, tmp_path / "data", **sections)
        run = run_pipeline(config, "r1")
    record = run.load_record()
    assert record.status == "completed" and record.stages[stage.name].status == "completed"
    st = record.stages[stage.name]
    assert st.rows_in == st.rows_kept + st.rows_dropped > 0
    con = warehouse.connect(run)
    try:
        final = con.execute("SELECT stage FROM stages WHERE is_final").fetchall()
        kept_cols = [r[0] for r in con.execute("DESCRIBE final").fetchall()]
        exported = con.execute("SELECT count(*) FROM final").fetchone()[0]
    finally:
        con.close()
    assert final == [(stage.name,)] and exported == st.rows_kept
    assert set(stage.columns) <= set(kept_cols)
    assert run.committed(stage.name)["rows"] == st.rows_kept
