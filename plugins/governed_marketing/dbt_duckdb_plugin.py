"""dbt-duckdb plugin: what every dbt connection to the warehouse needs, set up outside the SQL.

- `gmp_pseudonym(email)`: the keyed HMAC of pseudonym.py as a DuckDB function, so the key is read
  from the environment here and never appears in compiled SQL, `target/` or dbt logs;
- the governance tables, rewritten from governance.yml when it changed, so `dbt build` on its own
  sees the policy.
"""

from __future__ import annotations

from dbt.adapters.duckdb.plugins import BasePlugin

from governed_marketing.policy import load_policy
from governed_marketing.settings import get_settings
from governed_marketing.warehouse.duckdb_file import DuckDBWarehouse
from governed_marketing.warehouse.governance import prepare_for_dbt


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict) -> None:
        self._key, _ = get_settings().resolve_pseudonym_key()
        self._policy = load_policy()

    def configure_connection(self, conn) -> None:
        prepare_for_dbt(DuckDBWarehouse(conn, owned=False), self._policy, self._key)
