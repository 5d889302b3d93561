"""Resolving a study or organization named by an operator to keys, labels and file paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from clinvault.config import ScopeSettings
from clinvault.engine.pginspect import ScopeRoot, discover_scope
from clinvault.engine.scope import ForeignKey, ScopeModel, TableRef
from clinvault.errors import InvalidInputError, NotFoundError

KINDS = ("study", "organization")


@dataclass(frozen=True, slots=True)
class ResolvedScope:
    kind: str
    keys: tuple[str, ...]
    labels: tuple[str, ...]
    file_paths: tuple[str, ...]


def scope_roots(settings: ScopeSettings) -> dict[str, ScopeRoot]:
    schema = settings.schema_name
    return {
        "study": ScopeRoot(
            "study", TableRef.parse(settings.study_table, schema), settings.label_column
        ),
        "organization": ScopeRoot(
            "organization",
            TableRef.parse(settings.organization_table, schema),
            settings.label_column,
        ),
    }


def extra_links(settings: ScopeSettings) -> list[ForeignKey]:
    schema = settings.schema_name
    return [
        ForeignKey(
            f"config:{link.table}.{link.column}",
            TableRef.parse(link.table, schema),
            (link.column,),
            TableRef.parse(link.ref_table, schema),
            (link.ref_column,),
        )
        for link in settings.extra_links
    ]


def scope_models(db: psycopg.Connection[Any], settings: ScopeSettings) -> dict[str, ScopeModel]:
    """The scope models this database supports (none when it has no root tables)."""
    links = extra_links(settings)
    exclude = [TableRef.parse(t, settings.schema_name) for t in settings.exclude_tables]
    models: dict[str, ScopeModel] = {}
    for kind, root in scope_roots(settings).items():
        model = discover_scope(db, root, links, exclude)
        if model is not None:
            models[kind] = model
    return models


def _lookup(db: psycopg.Connection[Any], model: ScopeModel, ident: str) -> tuple[str, str]:
    """Key and label of the root row named by its key or its label."""
    rows = db.execute(model.labels_query()).fetchall()
    for key, label in rows:
        if ident in (key, label):
            return str(key), str(label if label is not None else key)
    raise NotFoundError(f"no {model.kind} {ident!r} in {model.root.qualified}")


def _dirs(templates: list[str], key: str, label: str) -> list[str]:
    paths = []
    for template in templates:
        path = template.format(key=key, label=label)
        if path.startswith("/") or ".." in path.split("/"):
            raise InvalidInputError(f"scope directory {path!r} escapes the files root")
        paths.append(path)
    return paths


def resolve_scope(
    db: psycopg.Connection[Any], settings: ScopeSettings, kind: str, idents: list[str]
) -> ResolvedScope:
    """Turn operator-given ids or codes into keys, labels and the scope's file directories."""
    if kind not in KINDS:
        raise InvalidInputError(f"unknown scope {kind!r}: use one of {', '.join(KINDS)}")
    if not idents:
        raise InvalidInputError(f"a {kind} scope needs at least one {kind} id")
    models = scope_models(db, settings)
    model = models.get(kind)
    if model is None:
        raise InvalidInputError(
            f"the platform database has no {kind} table usable as a scope root "
            f"(looked for {scope_roots(settings)[kind].table.qualified} "
            "with a one-column primary key)"
        )
    keys: list[str] = []
    labels: list[str] = []
    paths: list[str] = []
    for ident in idents:
        key, label = _lookup(db, model, ident)
        keys.append(key)
        labels.append(label)
        templates = settings.study_dirs if kind == "study" else settings.organization_dirs
        paths.extend(_dirs(templates, key, label))
        if kind == "organization" and "study" in models:
            paths.extend(_study_dirs_of(db, settings, model, models["study"], key))
    return ResolvedScope(kind, tuple(keys), tuple(labels), tuple(dict.fromkeys(paths)))


def _study_dirs_of(
    db: psycopg.Connection[Any],
    settings: ScopeSettings,
    org_model: ScopeModel,
    study_model: ScopeModel,
    org_key: str,
) -> list[str]:
    if study_model.root not in org_model.paths:
        return []
    columns = [study_model.key_column]
    if study_model.label_column:
        columns.append(study_model.label_column)
    rows = db.execute(org_model.select_query(study_model.root, columns), ([org_key],)).fetchall()
    paths: list[str] = []
    for row in sorted(rows, key=lambda r: str(r[0])):
        key = str(row[0])
        label = str(row[1]) if len(row) > 1 and row[1] is not None else key
        paths.extend(_dirs(settings.study_dirs, key, label))
    return paths
