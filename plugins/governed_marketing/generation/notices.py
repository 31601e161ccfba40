"""The texts we add to every message ourselves, per language: the greeting and the objection notice.

One table for every language a recipient can have (`LANGUAGES`): the greeting with the recipient's
first name, the greeting without one, and the right-to-object notice (Art. 21(4) GDPR, ePrivacy
Art. 13(2)). They are composed locally after the vendor answers, so the vendor never sees a name,
never writes template syntax, and can never drop or rewrite the notice. A language outside the
table falls back to English.

Names are data, never markup: `first_name_for_greeting` keeps a first name only if it reads as a
name (letters, marks, spaces, hyphens, apostrophes, dots); anything else costs that recipient the
name in the greeting, never the message or the cohort's draft.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageTexts:
    """Our own texts in one language. `greeting` holds `{name}`; `objection_notice` `{controller}` and `{url}`."""

    greeting: str
    greeting_without_name: str
    objection_notice: str


LANGUAGES: dict[str, LanguageTexts] = {
    "en": LanguageTexts(
        greeting="Hi {name},",
        greeting_without_name="Hi there,",
        objection_notice="You receive this email because you agreed to hear from {controller}. You can object to "
        "marketing at any time, free of charge, and unsubscribe here: {url}",
    ),
    "de": LanguageTexts(
        greeting="Hallo {name},",
        greeting_without_name="Hallo zusammen,",
        objection_notice="Sie erhalten diese E-Mail, weil Sie zugestimmt haben, von {controller} zu hören. Sie "
        "können der Werbung jederzeit kostenlos widersprechen und sich hier abmelden: {url}",
    ),
    "fr": LanguageTexts(
        greeting="Bonjour {name},",
        greeting_without_name="Bonjour,",
        objection_notice="Vous recevez cet e-mail car vous avez accepté d'être contacté par {controller}. Vous "
        "pouvez vous opposer à tout moment et gratuitement à la prospection et vous désinscrire ici : {url}",
    ),
    "es": LanguageTexts(
        greeting="Hola {name}:",
        greeting_without_name="Hola:",
        objection_notice="Recibe este correo porque aceptó recibir noticias de {controller}. Puede oponerse al "
        "marketing en cualquier momento, de forma gratuita, y darse de baja aquí: {url}",
    ),
    "it": LanguageTexts(
        greeting="Ciao {name},",
        greeting_without_name="Ciao a tutti,",
        objection_notice="Ricevi questa email perché hai accettato di ricevere comunicazioni da {controller}. "
        "Puoi opporti al marketing in qualsiasi momento, gratuitamente, e annullare l'iscrizione qui: {url}",
    ),
    "nl": LanguageTexts(
        greeting="Hoi {name},",
        greeting_without_name="Hoi allemaal,",
        objection_notice="U ontvangt deze e-mail omdat u toestemming gaf om berichten van {controller} te "
        "ontvangen. U kunt op elk moment kosteloos bezwaar maken tegen marketing en u hier afmelden: {url}",
    ),
    "pl": LanguageTexts(
        greeting="Cześć {name},",
        greeting_without_name="Dzień dobry,",
        objection_notice="Otrzymujesz tę wiadomość, ponieważ zgodziłeś się na kontakt od {controller}. Możesz w "
        "każdej chwili bezpłatnie sprzeciwić się marketingowi i wypisać się tutaj: {url}",
    ),
    "pt": LanguageTexts(
        greeting="Olá {name},",
        greeting_without_name="Olá,",
        objection_notice="Recebe este e-mail porque aceitou receber comunicações de {controller}. Pode opor-se ao "
        "marketing a qualquer momento, gratuitamente, e cancelar a subscrição aqui: {url}",
    ),
    "sv": LanguageTexts(
        greeting="Hej {name},",
        greeting_without_name="Hej,",
        objection_notice="Du får detta e-postmeddelande eftersom du har samtyckt till att höra från {controller}. "
        "Du kan när som helst och kostnadsfritt invända mot marknadsföring och avregistrera dig här: {url}",
    ),
    "da": LanguageTexts(
        greeting="Hej {name},",
        greeting_without_name="Hej,",
        objection_notice="Du modtager denne e-mail, fordi du har givet samtykke til at høre fra {controller}. Du "
        "kan til enhver tid gratis gøre indsigelse mod markedsføring og afmelde dig her: {url}",
    ),
}
FALLBACK_LANGUAGE = "en"

#: The longest first name used in a greeting; a longer value is not a name we address anyone by.
MAX_NAME_CHARS = 50
#: What may join the parts of a name ("Jean-Luc", "O'Brien", "J. R.", "Ó Briain").
_JOINERS = frozenset(" '\u2019.-")
_SEPARATOR_RUN = re.compile(r"[ '\u2019.-]{2,}")


def _reads_as_name(text: str) -> bool:
    """Letters and combining marks, joined by single spaces, hyphens or apostrophes; dots end initials."""
    if not unicodedata.category(text[0]).startswith("L"):
        return False
    if any(not (unicodedata.category(ch)[0] in "LM" or ch in _JOINERS) for ch in text):
        return False
    if any(ch == "." and text[i + 1 : i + 2] not in ("", " ") for i, ch in enumerate(text)):
        return False  # an initial ("J. R.") ends with its dot; "www.example.com" is no name
    return all(run == ". " for run in _SEPARATOR_RUN.findall(text))


def texts_for(language: str | None) -> LanguageTexts:
    """The language's texts, or English for a language outside the table."""
    return LANGUAGES.get((language or "").strip().lower(), LANGUAGES[FALLBACK_LANGUAGE])


def first_name_for_greeting(value: object) -> str | None:
    """The first name as it may appear in a plain-text greeting, or None when it does not read as a name.

    Control and format characters (NUL, zero-width, bidi overrides) are removed and whitespace is
    collapsed; what is left must be letters joined by spaces, hyphens, apostrophes or dots, at most
    MAX_NAME_CHARS long. Markup (`<script>`), template syntax, digits, URLs and emails never pass, so
    they never reach a message; the recipient is greeted without a name instead.
    """
    if not isinstance(value, str):
        return None
    text = "".join(ch for ch in unicodedata.normalize("NFC", value) if unicodedata.category(ch) not in ("Cc", "Cf"))
    text = " ".join(text.split())
    if not text or len(text) > MAX_NAME_CHARS or not _reads_as_name(text):
        return None
    return text


def greeting(language: str | None, first_name: object) -> str:
    """The greeting line: with the first name when it reads as a name, otherwise the nameless greeting."""
    texts = texts_for(language)
    name = first_name_for_greeting(first_name)
    return texts.greeting.format(name=name) if name else texts.greeting_without_name


def objection_notice(language: str | None, *, controller: str, url: str) -> str:
    return texts_for(language).objection_notice.format(controller=controller, url=url)


#: The notices by language (kept for callers that scan our own wording).
OBJECTION_NOTICE = {code: texts.objection_notice for code, texts in LANGUAGES.items()}
