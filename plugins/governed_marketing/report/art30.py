"""The record of processing activities (Art. 30(1) (a)-(g)), generated from governance.yml and dbt metadata."""

from __future__ import annotations

from typing import Any

from governed_marketing.crm.contract import LIFECYCLE_STAGES
from governed_marketing.policy import Policy

LAWFUL_BASIS_ARTICLE = {
    "consent": "Art. 6(1)(a) consent",
    "contract": "Art. 6(1)(b) contract",
    "legal_obligation": "Art. 6(1)(c) legal obligation",
    "vital_interests": "Art. 6(1)(d) vital interests",
    "public_task": "Art. 6(1)(e) public task",
    "legitimate_interests": "Art. 6(1)(f) legitimate interests",
}
#: The dbt sources that hold what we keep about people, and who they are about.
SUBJECT_SOURCES = {
    "crm.crm_contacts": "CRM contacts",
    "crm.crm_consent_events": "CRM contacts (consent history)",
    "crm.crm_activity": "CRM contacts (activity)",
    "crm.crm_dsr_requests": "people who sent a data-subject request",
}
EEA_REGIONS = {"EU", "EEA"}


def records_of_processing(policy: Policy, classes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Art. 30(1) (a)-(g) as data; `classes` is meta.pii per column of every dbt model and source."""
    vendors_by_purpose = {pid: list(p.vendors) for pid, p in policy.purposes.items()}
    data_categories = []
    for source, subjects in SUBJECT_SOURCES.items():
        columns = classes.get(source, {})
        data_categories.append(
            {
                "held_in": source,
                "about": subjects,
                "direct_identifiers": sorted(c for c, k in columns.items() if k == "direct"),
                "quasi_identifiers": sorted(c for c, k in columns.items() if k == "quasi"),
            }
        )
    personal_models = sorted(
        name
        for name, columns in classes.items()
        if "." not in name and any(k in ("direct", "quasi") for k in columns.values())
    )
    security = [
        "Keyed HMAC-SHA256 pseudonyms instead of identity in the audience marts (key from GMP_PSEUDONYM_KEY, "
        "never in compiled SQL or logs)",
        "Data minimization by allow-list: only purposes.*.fields reach the audience, enforced by a dbt contract "
        "and the campaign-audience gate",
        f"Cohort prompting by default: the vendor receives attributes shared by at least k = {policy.cohorts.k} "
        "people, never a name, email, phone or note",
        "Great Expectations gates that fail closed at every boundary: raw CRM, campaign audience, vendor payload, "
        "generated content",
        "Validation results and Data Docs keep counts only for columns classified direct or quasi",
        "Consent and suppression re-checked immediately before content goes to the vendor and before the outbox",
        "No personal data in logs, Airflow XCom or this report: steps exchange ids, paths and counts",
        "Secrets from the environment or Airflow connections only",
    ]
    return {
        "a_controller": policy.controller.model_dump(),
        "b_purposes": [
            {
                "purpose": pid,
                "description": p.description,
                "lawful_basis": LAWFUL_BASIS_ARTICLE[p.lawful_basis],
                "consents_required": list(p.requires_consent),
                "consent_max_age_days": p.consent_max_age_days,
                "fields": list(p.fields),
                "campaigns": sorted(cid for cid, c in policy.campaigns.items() if c.purpose == pid),
                "dpia": p.dpia.reference if p.dpia.required else "not required",
            }
            for pid, p in policy.purposes.items()
        ],
        "c_categories": {
            "data_subjects": [
                f"CRM contacts of the controller ({', '.join(LIFECYCLE_STAGES)})",
                "people who sent a data-subject request",
            ],
            "personal_data": data_categories,
            "models_with_personal_data": personal_models,
            "minimum_age": dict(policy.minimum_age),
        },
        "d_recipients": [
            {
                "recipient": name,
                "role": vendor.role,
                "dpa_signed": vendor.dpa_signed.isoformat() if vendor.dpa_signed else None,
                "purposes": sorted(pid for pid, names in vendors_by_purpose.items() if name in names),
                "stores_data": vendor.store,
            }
            for name, vendor in policy.vendors.items()
        ],
        "e_transfers": [
            {
                "recipient": name,
                "region": vendor.region,
                "outside_eea": vendor.region.upper() not in EEA_REGIONS,
                "mechanism": vendor.transfer_mechanism,
            }
            for name, vendor in policy.vendors.items()
        ],
        "f_time_limits": {
            "retention": dict(policy.retention),
            "dsr_deadline": policy.dsr.deadline,
            "dsr_extension": policy.dsr.extension,
        },
        "g_security_measures": security,
    }
