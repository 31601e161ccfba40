"""Our own words, per language: the greeting, the objection notice and the offline templates' phrases.

One table for every language a recipient can have (`LANGUAGES`): the greeting with the recipient's
first name, the greeting without one, the right-to-object notice (Art. 21(4) GDPR, ePrivacy
Art. 13(2)) and the phrases the offline templates draft with (reader words included). Greeting and
notice are composed locally after the vendor answers, so the vendor never sees a name, never writes
template syntax, and can never drop or rewrite the notice. A language outside the table falls back
to English; one entry holds every text, so no language can have a greeting but no notice.

Names are data, never markup: `first_name_for_greeting` keeps a first name only if it reads as a
name (letters, marks, spaces, hyphens, apostrophes, dots); anything else costs that recipient the
name in the greeting, never the message or the cohort's draft.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class OfflinePhrases:
    """The offline templates' source in one language (generation/transports/offline.py).

    `subject` and `intro` are keyed by lifecycle stage (and "default"); `preheader`, `interests`,
    `purchase` and `country` are sandboxed Jinja templates whose only variables are cleaned attribute
    values, so a value is never evaluated as a template. `conjunction` joins the last two interests.
    """

    conjunction: str
    subject: dict[str, str]
    preheader: str
    preheader_default: str
    intro: dict[str, str]
    interests: str
    purchase: str
    country: str
    closing: str


@dataclass(frozen=True)
class LanguageTexts:
    """Our own texts in one language. `greeting` holds `{name}`; `objection_notice` `{controller}` and `{url}`."""

    greeting: str
    greeting_without_name: str
    objection_notice: str
    offline: OfflinePhrases


LANGUAGES: dict[str, LanguageTexts] = {
    "en": LanguageTexts(
        greeting="Hi {name},",
        greeting_without_name="Hi there,",
        objection_notice="You receive this email because you agreed to hear from {controller}. You can object to "
        "marketing at any time, free of charge, and unsubscribe here: {url}",
        offline=OfflinePhrases(
            conjunction="and",
            subject={
                "subscriber": "Fresh ideas for the new season",
                "lead": "A few ideas picked for you",
                "customer": "New arrivals we think you will like",
                "churned": "It has been a while - see what is new",
                "default": "Our spring selection is here",
            },
            preheader="Ideas around {{ interests }}",
            preheader_default="A short round-up of what is new this season",
            intro={
                "subscriber": "Thank you for reading our newsletter. Here is what is new this season.",
                "lead": "Thank you for your interest in our shop. Here is a short look at what is new.",
                "customer": "Thank you for shopping with us. We have put together a few new arrivals.",
                "churned": "We have missed you. A lot has changed since your last visit.",
                "default": "Here is a short look at what is new this season.",
            },
            interests="Since you enjoy {{ interests }}, we picked a few ideas in that direction.",
            purchase="If you liked {{ category }}, have a look at what is new in that range.",
            country="This selection was put together for our readers in {{ country }}.",
            closing="Best wishes,\nYour shop team",
        ),
    ),
    "de": LanguageTexts(
        greeting="Hallo {name},",
        greeting_without_name="Hallo zusammen,",
        objection_notice="Sie erhalten diese E-Mail, weil Sie zugestimmt haben, von {controller} zu hören. Sie "
        "können der Werbung jederzeit kostenlos widersprechen und sich hier abmelden: {url}",
        offline=OfflinePhrases(
            conjunction="und",
            subject={
                "subscriber": "Neue Ideen für die neue Saison",
                "lead": "Ein paar Ideen, für Sie ausgewählt",
                "customer": "Neuheiten, die Ihnen gefallen könnten",
                "churned": "Lange nicht gesehen - das ist neu",
                "default": "Unsere Frühjahrsauswahl ist da",
            },
            preheader="Ideen rund um {{ interests }}",
            preheader_default="Ein kurzer Überblick über die Neuheiten der Saison",
            intro={
                "subscriber": "danke, dass Sie unseren Newsletter lesen. Das ist neu in dieser Saison.",
                "lead": "danke für Ihr Interesse an unserem Shop. Hier ein kurzer Blick auf die Neuheiten.",
                "customer": "danke für Ihren Einkauf bei uns. Wir haben einige Neuheiten zusammengestellt.",
                "churned": "wir haben Sie vermisst. Seit Ihrem letzten Besuch hat sich viel getan.",
                "default": "hier ein kurzer Blick auf die Neuheiten dieser Saison.",
            },
            interests="Weil Sie sich für {{ interests }} interessieren, haben wir passende Ideen ausgewählt.",
            purchase="Wenn Ihnen {{ category }} gefallen hat, entdecken Sie die Neuheiten in diesem Bereich.",
            country="Diese Auswahl haben wir für unsere Leser in {{ country }} zusammengestellt.",
            closing="Viele Grüße\nIhr Shop-Team",
        ),
    ),
    "fr": LanguageTexts(
        greeting="Bonjour {name},",
        greeting_without_name="Bonjour,",
        objection_notice="Vous recevez cet e-mail car vous avez accepté d'être contacté par {controller}. Vous "
        "pouvez vous opposer à tout moment et gratuitement à la prospection et vous désinscrire ici : {url}",
        offline=OfflinePhrases(
            conjunction="et",
            subject={
                "subscriber": "De nouvelles idées pour la saison",
                "lead": "Quelques idées choisies pour vous",
                "customer": "Des nouveautés qui pourraient vous plaire",
                "churned": "Cela fait longtemps - voici les nouveautés",
                "default": "Notre sélection de printemps est arrivée",
            },
            preheader="Des idées autour de {{ interests }}",
            preheader_default="Un bref aperçu des nouveautés de la saison",
            intro={
                "subscriber": "Merci de lire notre newsletter. Voici les nouveautés de la saison.",
                "lead": "Merci de l'intérêt que vous portez à notre boutique. Voici un aperçu des nouveautés.",
                "customer": "Merci pour vos achats. Nous avons réuni quelques nouveautés pour vous.",
                "churned": "Vous nous avez manqué. Beaucoup de choses ont changé depuis votre dernière visite.",
                "default": "Voici un bref aperçu des nouveautés de la saison.",
            },
            interests="Comme vous aimez {{ interests }}, nous avons choisi quelques idées dans ce sens.",
            purchase="Si vous avez aimé {{ category }}, découvrez les nouveautés de cette gamme.",
            country="Cette sélection a été préparée pour nos lecteurs en {{ country }}.",
            closing="Bien à vous,\nL'équipe de la boutique",
        ),
    ),
    "es": LanguageTexts(
        greeting="Hola {name}:",
        greeting_without_name="Hola:",
        objection_notice="Recibe este correo porque aceptó recibir noticias de {controller}. Puede oponerse al "
        "marketing en cualquier momento, de forma gratuita, y darse de baja aquí: {url}",
        offline=OfflinePhrases(
            conjunction="y",
            subject={
                "subscriber": "Nuevas ideas para la temporada",
                "lead": "Algunas ideas elegidas para ti",
                "customer": "Novedades que creemos que te gustarán",
                "churned": "Ha pasado un tiempo - descubre las novedades",
                "default": "Ya llegó nuestra selección de primavera",
            },
            preheader="Ideas en torno a {{ interests }}",
            preheader_default="Un breve resumen de las novedades de la temporada",
            intro={
                "subscriber": "Gracias por leer nuestro boletín. Esto es lo nuevo de la temporada.",
                "lead": "Gracias por tu interés en nuestra tienda. Aquí tienes un vistazo a las novedades.",
                "customer": "Gracias por comprar con nosotros. Hemos reunido algunas novedades.",
                "churned": "Te hemos echado de menos. Han cambiado muchas cosas desde tu última visita.",
                "default": "Aquí tienes un breve vistazo a las novedades de la temporada.",
            },
            interests="Como te gusta {{ interests }}, hemos elegido algunas ideas en esa línea.",
            purchase="Si te gustó {{ category }}, descubre las novedades de esa gama.",
            country="Esta selección se ha preparado para nuestros lectores en {{ country }}.",
            closing="Un saludo,\nEl equipo de la tienda",
        ),
    ),
    "it": LanguageTexts(
        greeting="Ciao {name},",
        greeting_without_name="Ciao a tutti,",
        objection_notice="Ricevi questa email perché hai accettato di ricevere comunicazioni da {controller}. "
        "Puoi opporti al marketing in qualsiasi momento, gratuitamente, e annullare l'iscrizione qui: {url}",
        offline=OfflinePhrases(
            conjunction="e",
            subject={
                "subscriber": "Nuove idee per la stagione",
                "lead": "Qualche idea scelta per te",
                "customer": "Novità che potrebbero piacerti",
                "churned": "È passato un po' di tempo - ecco le novità",
                "default": "È arrivata la nostra selezione di primavera",
            },
            preheader="Idee intorno a {{ interests }}",
            preheader_default="Una breve panoramica delle novità di stagione",
            intro={
                "subscriber": "Grazie per leggere la nostra newsletter. Ecco le novità della stagione.",
                "lead": "Grazie per l'interesse per il nostro negozio. Ecco uno sguardo alle novità.",
                "customer": "Grazie per i tuoi acquisti. Abbiamo raccolto alcune novità per te.",
                "churned": "Ci sei mancato. Sono cambiate molte cose dalla tua ultima visita.",
                "default": "Ecco uno sguardo veloce alle novità della stagione.",
            },
            interests="Visto che ami {{ interests }}, abbiamo scelto alcune idee in questa direzione.",
            purchase="Se ti è piaciuto {{ category }}, scopri le novità di questa linea.",
            country="Questa selezione è stata preparata per i nostri lettori in {{ country }}.",
            closing="A presto,\nIl team del negozio",
        ),
    ),
    "nl": LanguageTexts(
        greeting="Hoi {name},",
        greeting_without_name="Hoi allemaal,",
        objection_notice="U ontvangt deze e-mail omdat u toestemming gaf om berichten van {controller} te "
        "ontvangen. U kunt op elk moment kosteloos bezwaar maken tegen marketing en u hier afmelden: {url}",
        offline=OfflinePhrases(
            conjunction="en",
            subject={
                "subscriber": "Nieuwe ideeën voor het seizoen",
                "lead": "Een paar ideeën, voor jou gekozen",
                "customer": "Nieuwe artikelen die je misschien mooi vindt",
                "churned": "Het is een tijdje geleden - dit is nieuw",
                "default": "Onze voorjaarsselectie is er",
            },
            preheader="Ideeën rond {{ interests }}",
            preheader_default="Een kort overzicht van wat nieuw is dit seizoen",
            intro={
                "subscriber": "Bedankt voor het lezen van onze nieuwsbrief. Dit is nieuw dit seizoen.",
                "lead": "Bedankt voor je interesse in onze winkel. Hier een korte blik op het nieuws.",
                "customer": "Bedankt voor je aankopen. We hebben een paar nieuwe artikelen voor je verzameld.",
                "churned": "We hebben je gemist. Er is veel veranderd sinds je laatste bezoek.",
                "default": "Hier een korte blik op wat nieuw is dit seizoen.",
            },
            interests="Omdat je van {{ interests }} houdt, hebben we een paar ideeën in die richting gekozen.",
            purchase="Vond je {{ category }} leuk? Bekijk dan wat er nieuw is in dat assortiment.",
            country="Deze selectie is samengesteld voor onze lezers in {{ country }}.",
            closing="Hartelijke groet,\nHet winkelteam",
        ),
    ),
    "pl": LanguageTexts(
        greeting="Cześć {name},",
        greeting_without_name="Dzień dobry,",
        objection_notice="Otrzymujesz tę wiadomość, ponieważ zgodziłeś się na kontakt od {controller}. Możesz w "
        "każdej chwili bezpłatnie sprzeciwić się marketingowi i wypisać się tutaj: {url}",
        offline=OfflinePhrases(
            conjunction="i",
            subject={
                "subscriber": "Nowe pomysły na ten sezon",
                "lead": "Kilka pomysłów wybranych dla Ciebie",
                "customer": "Nowości, które mogą Ci się spodobać",
                "churned": "Dawno się nie widzieliśmy - zobacz nowości",
                "default": "Nasza wiosenna kolekcja już jest",
            },
            preheader="Pomysły wokół tematu: {{ interests }}",
            preheader_default="Krótki przegląd nowości sezonu",
            intro={
                "subscriber": "dziękujemy, że czytasz nasz newsletter. Oto nowości tego sezonu.",
                "lead": "dziękujemy za zainteresowanie naszym sklepem. Oto krótki przegląd nowości.",
                "customer": "dziękujemy za zakupy. Zebraliśmy dla Ciebie kilka nowości.",
                "churned": "brakowało nam Ciebie. Od Twojej ostatniej wizyty wiele się zmieniło.",
                "default": "oto krótki przegląd nowości tego sezonu.",
            },
            interests="Ponieważ interesuje Cię temat: {{ interests }}, wybraliśmy kilka pasujących pomysłów.",
            purchase="Jeśli spodobała Ci się kategoria {{ category }}, zobacz nowości w tej ofercie.",
            country="Ten wybór przygotowaliśmy dla naszych czytelników w kraju {{ country }}.",
            closing="Pozdrawiamy serdecznie,\nZespół sklepu",
        ),
    ),
    "pt": LanguageTexts(
        greeting="Olá {name},",
        greeting_without_name="Olá,",
        objection_notice="Recebe este e-mail porque aceitou receber comunicações de {controller}. Pode opor-se ao "
        "marketing a qualquer momento, gratuitamente, e cancelar a subscrição aqui: {url}",
        offline=OfflinePhrases(
            conjunction="e",
            subject={
                "subscriber": "Novas ideias para a estação",
                "lead": "Algumas ideias escolhidas para si",
                "customer": "Novidades de que pode gostar",
                "churned": "Há quanto tempo - veja as novidades",
                "default": "A nossa seleção de primavera chegou",
            },
            preheader="Ideias à volta de {{ interests }}",
            preheader_default="Um breve resumo das novidades da estação",
            intro={
                "subscriber": "Obrigado por ler a nossa newsletter. Eis as novidades da estação.",
                "lead": "Obrigado pelo seu interesse na nossa loja. Eis um breve olhar sobre as novidades.",
                "customer": "Obrigado pelas suas compras. Reunimos algumas novidades para si.",
                "churned": "Sentimos a sua falta. Muita coisa mudou desde a sua última visita.",
                "default": "Eis um breve olhar sobre as novidades da estação.",
            },
            interests="Como gosta de {{ interests }}, escolhemos algumas ideias nessa linha.",
            purchase="Se gostou de {{ category }}, descubra as novidades dessa gama.",
            country="Esta seleção foi preparada para os nossos leitores em {{ country }}.",
            closing="Com os melhores cumprimentos,\nA equipa da loja",
        ),
    ),
    "sv": LanguageTexts(
        greeting="Hej {name},",
        greeting_without_name="Hej,",
        objection_notice="Du får detta e-postmeddelande eftersom du har samtyckt till att höra från {controller}. "
        "Du kan när som helst och kostnadsfritt invända mot marknadsföring och avregistrera dig här: {url}",
        offline=OfflinePhrases(
            conjunction="och",
            subject={
                "subscriber": "Nya idéer inför säsongen",
                "lead": "Några idéer utvalda för dig",
                "customer": "Nyheter som vi tror att du gillar",
                "churned": "Det var ett tag sedan - se vad som är nytt",
                "default": "Vårt vårurval är här",
            },
            preheader="Idéer kring {{ interests }}",
            preheader_default="En kort överblick över säsongens nyheter",
            intro={
                "subscriber": "Tack för att du läser vårt nyhetsbrev. Här är säsongens nyheter.",
                "lead": "Tack för ditt intresse för vår butik. Här är en kort titt på nyheterna.",
                "customer": "Tack för att du handlar hos oss. Vi har samlat några nyheter åt dig.",
                "churned": "Vi har saknat dig. Mycket har hänt sedan ditt senaste besök.",
                "default": "Här är en kort titt på säsongens nyheter.",
            },
            interests="Eftersom du gillar {{ interests }} har vi valt ut några idéer i den riktningen.",
            purchase="Om du gillade {{ category }}, ta en titt på nyheterna i det sortimentet.",
            country="Det här urvalet har vi satt ihop för våra läsare i {{ country }}.",
            closing="Vänliga hälsningar,\nButiksteamet",
        ),
    ),
    "da": LanguageTexts(
        greeting="Hej {name},",
        greeting_without_name="Hej,",
        objection_notice="Du modtager denne e-mail, fordi du har givet samtykke til at høre fra {controller}. Du "
        "kan til enhver tid gratis gøre indsigelse mod markedsføring og afmelde dig her: {url}",
        offline=OfflinePhrases(
            conjunction="og",
            subject={
                "subscriber": "Nye idéer til den nye sæson",
                "lead": "Et par idéer udvalgt til dig",
                "customer": "Nyheder, vi tror, du vil kunne lide",
                "churned": "Det er et stykke tid siden - se hvad der er nyt",
                "default": "Vores forårsudvalg er her",
            },
            preheader="Idéer omkring {{ interests }}",
            preheader_default="Et kort overblik over sæsonens nyheder",
            intro={
                "subscriber": "Tak, fordi du læser vores nyhedsbrev. Her er sæsonens nyheder.",
                "lead": "Tak for din interesse i vores butik. Her er et kort kig på nyhederne.",
                "customer": "Tak, fordi du handler hos os. Vi har samlet et par nyheder til dig.",
                "churned": "Vi har savnet dig. Meget er sket siden dit sidste besøg.",
                "default": "Her er et kort kig på sæsonens nyheder.",
            },
            interests="Fordi du holder af {{ interests }}, har vi valgt et par idéer i den retning.",
            purchase="Hvis du kunne lide {{ category }}, så tag et kig på nyhederne i det sortiment.",
            country="Dette udvalg er sat sammen til vores læsere i {{ country }}.",
            closing="Venlig hilsen\nButiksteamet",
        ),
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
