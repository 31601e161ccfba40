"""One outbox row as a MIME message, built with the standard library's `email` package.

Plain text and HTML alternatives from the published draft (the HTML is the plain text escaped, so
nothing in a draft can become markup), RFC 2369 `List-Unsubscribe` with an HTTPS URL and a mailto,
RFC 8058 `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and a Message-ID that is the same on
every rerun (campaign, recipient, content version) so a duplicate could always be recognized.
"""

from __future__ import annotations

import html
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from urllib.parse import quote

from governed_marketing.policy import Delivery, DeliveryCampaign

ONE_CLICK = "List-Unsubscribe=One-Click"


def sender_domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2].lower()


def unsubscribe_links(delivery: Delivery, token: str) -> tuple[str, str]:
    """The HTTPS one-click URL and the mailto URL of a token (neither names the recipient)."""
    url = f"{delivery.unsubscribe_url.rstrip('/')}/{token}"
    mailto = f"mailto:{delivery.unsubscribe_mailto}?subject={quote('unsubscribe ' + token)}"
    return url, mailto


def _html(text: str, url: str, language: str) -> str:
    paragraphs = "".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in block.splitlines()) + "</p>\n"
        for block in text.split("\n\n")
        if block.strip()
    )
    link = f'<p><a href="{html.escape(url, quote=True)}">Unsubscribe with one click</a></p>\n'
    return (
        f'<!doctype html>\n<html lang="{html.escape(language, quote=True)}"><body>\n{paragraphs}{link}</body></html>\n'
    )


def build_message(
    row: dict,
    *,
    campaign: DeliveryCampaign,
    delivery: Delivery,
    message_key: str,
    token: str,
    date: str | None = None,
) -> EmailMessage:
    """The message for one outbox row (`email`, `subject`, `body`, `language`)."""
    url, mailto = unsubscribe_links(delivery, token)
    message = EmailMessage(policy=SMTP)
    message["From"] = campaign.sender
    message["To"] = Address(addr_spec=row["email"])
    if campaign.reply_to:
        message["Reply-To"] = campaign.reply_to
    message["Subject"] = row["subject"]
    message["Date"] = date or formatdate(usegmt=True)
    message["Message-ID"] = f"<{message_key}@{sender_domain(campaign.sender)}>"
    message["Content-Language"] = row.get("language") or "en"
    message["List-Unsubscribe"] = f"<{url}>, <{mailto}>"
    message["List-Unsubscribe-Post"] = ONE_CLICK
    message["Auto-Submitted"] = "no"
    body = row["body"].rstrip() + f"\n\nUnsubscribe with one click: {url}\n"
    message.set_content(body, subtype="plain", charset="utf-8")
    message.add_alternative(_html(row["body"], url, row.get("language") or "en"), subtype="html", charset="utf-8")
    return message
