"""What ``vilmo serve`` checks before any worker starts, beyond the file's own validation: the
places the config names (the policy folder, its default policy and the client keys' policies,
the audit file, the store's file and spool folder). A config a worker could not start with, or
would serve with every request failing, is then one ``config error: file:line: field: message``
per problem and exit 2, not a traceback in each worker. Cheap: policy files are read, no model
is loaded; files and folders are created as the workers would create them."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import yaml

from proxy.audit_file import open_private
from proxy.settings import GatewayConfig
from proxy.store.spool import private_file
from vilmo.policy_store import PolicyStore, UnknownPolicy
from vilmo.yamlfile import FileIssue, line_of


def start_up_issues(config: GatewayConfig, source: str) -> list[FileIssue]:
    """Every problem found in the places ``config`` names (none: the workers can start)."""
    found = _policy_issues(config)
    audit = config.audit.path
    if audit is not None and (problem := _appendable(audit, private=False)):
        found.append(("audit.path", problem))
    store = config.store
    if not store.url and (problem := _appendable(store.state_path(), private=True)):
        found.append(("store.path", problem))
    if problem := _folder(store.spool_path()):
        found.append(("store.spool_dir" if store.spool_dir else "store.path", problem))
    return [FileIssue(source, None, field, message) for field, message in found]


def _policy_issues(config: GatewayConfig) -> list[tuple[str, str]]:
    """The policy folder, its default policy and each client key's policy, as the workers'
    policy store loads them (without the generator's check, which loads models)."""
    directory = config.policy_dir
    if not directory.is_dir():
        return [("policy_dir", f"{directory} is not a folder of policy files")]
    try:
        names = PolicyStore(directory, config.default_policy).names()
    except UnknownPolicy as error:
        return [("default_policy", str(error.args[0]))]
    return [(f"auth.keys.{i}.policy", (f"unknown policy {binding.policy!r} (the policies in "
                                      f"{directory}: {', '.join(names)})"))
            for i, binding in enumerate(config.auth.keys)
            if binding.policy is not None and binding.policy not in names]


def _appendable(path: Path, private: bool) -> str | None:
    """Why records cannot be appended to the file at ``path``, or None; made (with its
    folder) as its writer makes it: the store's private to this user (``private_file``), the
    audit file private too, as ``proxy.audit_file`` makes it. A path that is neither a file
    nor a folder (a character device such as /dev/stdout) is taken as it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        return f"cannot write {path}: {error.strerror or error}"
    if mode is not None and stat.S_ISDIR(mode):
        example = path / ("state.db" if private else "audit.jsonl")
        return f"{path} is a folder: name a file in it (e.g. {example})"
    if mode is not None and not stat.S_ISREG(mode):
        return None
    try:
        if private:
            private_file(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(open_private(path))
    except OSError as error:
        return f"cannot write {path}: {error.strerror or error}"
    return None


def _folder(path: Path) -> str | None:
    """Why the folder at ``path`` cannot be made or used (as the audit spool makes it)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot make the folder {path}: {error.strerror or error}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"cannot write in the folder {path}"
    return None


def located(issues: list[FileIssue], path: Path) -> list[FileIssue]:
    """``issues`` with the line of the field each names in the file at ``path``, for those
    found after validation (which carry no line)."""
    if all(issue.line is not None for issue in issues):
        return issues
    try:
        root = yaml.compose(path.read_text("utf-8"), Loader=yaml.SafeLoader)
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return issues
    return [dataclasses.replace(issue, line=line_of(root, _location(issue.field)))
            if issue.line is None and issue.file == str(path) else issue for issue in issues]


def _location(field: str) -> tuple[int | str, ...]:
    return tuple(int(part) if part.isdigit() else part for part in field.split("."))
