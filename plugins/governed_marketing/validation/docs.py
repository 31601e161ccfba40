"""Great Expectations Data Docs under `$GMP_HOME/reports/data_docs/`, rebuilt from the stored gate results.

The site is rebuilt from scratch every time from the scrubbed results in `ops.gate_results`, so it
shows the latest run and cannot keep a page from an older, differently configured one. The results
hold counts and rules only; GX renders what it is given, so the pages hold no personal data either.
After the build the pages are made to open offline and load nothing from a third-party host
(`docs_offline`).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from governed_marketing.validation.docs_offline import IndexEntry, make_offline
from governed_marketing.validation.gates import GateResult, _context

SITE_NAME = "gmp_data_docs"


def build_data_docs(results: list[tuple[str, GateResult]], out_dir: Path) -> dict[tuple[str, str], str]:
    """Write the Data Docs site for these (run_id, gate result) pairs into `out_dir`.

    Returns:
        The page of each (gate, subject), relative to `out_dir`'s parent (the reports directory).
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import expectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    context = _context()
    context.add_data_docs_site(
        SITE_NAME,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
        },
    )
    keys: dict[tuple[str, str], ValidationResultIdentifier] = {}
    documents: dict[tuple[str, str], tuple[str, GateResult]] = {}
    suites_added: set[str] = set()
    for run_id, result in results:
        if not result.validation:
            continue
        document = result.validation
        suite_name = document["suite_name"]
        if suite_name not in suites_added:
            configs = [ExpectationConfiguration(**_config(item["expectation_config"])) for item in document["results"]]
            context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=[c.to_domain_obj() for c in configs]))
            suites_added.add(suite_name)
        validation = expectationSuiteValidationResultSchema.load(document)
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
            run_id=RunIdentifier(run_name=run_id, run_time=datetime.fromisoformat(result.validated_at)),
            batch_identifier=result.subject,
        )
        context.validation_results_store.set(key, validation)
        keys[(result.gate, result.subject)] = key
        documents[(result.gate, result.subject)] = (run_id, result)
    context.build_data_docs(site_names=[SITE_NAME])
    pages: dict[tuple[str, str], str] = {}
    entries: list[IndexEntry] = []
    for gate_subject, key in keys.items():
        page = _site_page(context, key)
        pages[gate_subject] = page.relative_to(out_dir.parent).as_posix()
        run_id, result = documents[gate_subject]
        suite_page = _site_page(context, key.expectation_suite_identifier)
        statistics = result.validation.get("statistics") or {}
        entries.append(
            IndexEntry(
                gate=result.gate,
                subject=result.subject,
                suite=result.validation["suite_name"],
                run_name=run_id,
                run_time=result.validated_at,
                success=bool(result.validation.get("success", result.success)),
                evaluated=int(statistics.get("evaluated_expectations", len(result.outcomes))),
                failed=int(statistics.get("unsuccessful_expectations", len(result.failed))),
                page=page.relative_to(out_dir).as_posix(),
                suite_page=suite_page.relative_to(out_dir).as_posix() if suite_page.is_file() else None,
            )
        )
    make_offline(out_dir, entries)
    return pages


def _site_page(context, identifier) -> Path:
    (site,) = context.get_docs_sites_urls(resource_identifier=identifier, site_name=SITE_NAME, only_if_exists=False)
    return Path(unquote(site["site_url"].removeprefix("file://")))


def _config(config: dict) -> dict:
    kwargs = {k: v for k, v in config.get("kwargs", {}).items() if k != "batch_id"}
    return {"type": config["type"], "kwargs": kwargs, "meta": config.get("meta") or {}}
