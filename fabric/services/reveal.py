"""Turn a token or a format-preserving ciphertext back into the value it stands for.

Only a role whose ``detokenize`` is true in fabric.yaml may: an analyst joins on tokens, and a
fraud investigator's role turns the one token that matters back into an email. A token names
its key id and opens in its domain only; an FPE value opens with the operator of the column
it came from (alphabet, kept characters, tweak), as the policy that masked it declares.
"""

from __future__ import annotations

from fabric.errors import ConfigError, FabricError, RevealError
from fabric.project import Project
from fabric.rules.operators import FpeOp, MaskingKeys, TokenizeOp, fpe_reveal
from fabric.rules.tokens import Tokenizer

__all__ = ["RevealError", "reveal"]


def _column(project: Project, policy_name: str | None, column: str) -> tuple[str, object]:
    """The column's name and its operator in the policy (``TYPE.TABLE.COLUMN``)."""
    parts = column.split(".")
    if len(parts) != 3:
        raise RevealError(f"name the column as TYPE.TABLE.COLUMN (got {column!r})")
    entity_type, table, name = parts
    policy = project.policies.for_policy(policy_name)
    spec = policy.specs.get((entity_type, table), {}).get(name)
    if spec is None:
        raise RevealError(f"policy '{policy.name}' has no operator for {column}: nothing to reveal")
    return name, spec


def reveal(
    project: Project,
    value: str,
    *,
    role: str | None,
    column: str | None = None,
    domain: str | None = None,
    policy: str | None = None,
) -> str:
    """The clear value behind ``value``, for a role allowed to see it.

    Args:
        value: a token (``tok_...``) or an FPE ciphertext.
        role: the caller's role (None: the default role).
        column: ``TYPE.TABLE.COLUMN`` the value was masked in: names the token domain or the
            FPE parameters, as ``policy`` (default: the default policy) declares them.
        domain: the token domain, instead of ``column``.

    Raises:
        RevealError: the role may not detokenize, or the value does not open.
    """
    name = role or project.config.default_role
    role_config = project.config.roles.get(name) if name else None
    if role_config is None or not role_config.detokenize:
        raise RevealError(
            f"role '{name}' may not detokenize (fabric.yaml roles.{name}.detokenize)"
            if name
            else "no role given and no default role: nobody may detokenize"
        )
    master = project.secrets.master_key
    if master is None:
        raise ConfigError("revealing values needs the master key")
    spec: object = None
    column_name = ""
    if column is not None:
        column_name, spec = _column(project, policy, column)
    if value.startswith("tok_"):
        if domain is None:
            if not isinstance(spec, TokenizeOp):
                raise RevealError("name the token's domain (--domain) or its column (--column)")
            domain = spec.domain or column_name
        try:
            return Tokenizer(master, domain).detokenize(value)
        except FabricError as exc:
            raise RevealError(str(exc)) from exc
    if not isinstance(spec, FpeOp):
        raise RevealError(
            "not a token; for a format-preserving value name its column (--column), which "
            "the policy must mask with fpe"
        )
    try:
        return fpe_reveal(spec, MaskingKeys(master), column_name)(value)
    except ValueError as exc:
        raise RevealError(f"the value does not open: {exc}") from exc
