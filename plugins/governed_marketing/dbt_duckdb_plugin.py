"""dbt-duckdb plugin: what every dbt connection to the warehouse needs, set up outside the SQL.

- `gmp_pseudonym(email)`: the keyed HMAC of pseudonym.py as a DuckDB function, so the key is read
  from the environment here and never appears in compiled SQL, `target/` or dbt logs.
- the governance tables, rewritten from governance.yml, so `dbt build` on its own sees the policy.
"""

from __future__ import annotations

from dbt.adapters.duckdb.plugins import BasePlugin

from governed_marketing.governance_tables import write_governance_tables
from governed_marketing.policy import load_policy
from governed_marketing.pseudonym import pseudonym
from governed_marketing.settings import get_settings


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict) -> None:
        self._key, _ = get_settings().resolve_pseudonym_key()
        self._policy = load_policy()

    def configure_connection(self, conn) -> None:
        key = self._key

        def gmp_pseudonym(normalized_email: str | None) -> str | None:
            return None if normalized_email is None else pseudonym(key, normalized_email)

        conn.create_function("gmp_pseudonym", gmp_pseudonym, ["VARCHAR"], "VARCHAR", null_handling="special")
        write_governance_tables(conn, self._policy)
