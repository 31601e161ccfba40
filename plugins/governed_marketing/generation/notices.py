"""The right-to-object notice every message carries (Art. 21(4) GDPR, ePrivacy Art. 13(2)).

Appended locally after the vendor answers, so it is always present and never rewritten by a model.
"""

from __future__ import annotations

OBJECTION_NOTICE = {
    "en": "You receive this email because you agreed to hear from {controller}. You can object to "
    "marketing at any time, free of charge, and unsubscribe here: {url}",
    "de": "Sie erhalten diese E-Mail, weil Sie zugestimmt haben, von {controller} zu hören. Sie können "
    "der Werbung jederzeit kostenlos widersprechen und sich hier abmelden: {url}",
    "fr": "Vous recevez cet e-mail car vous avez accepté d'être contacté par {controller}. Vous pouvez "
    "vous opposer à tout moment et gratuitement à la prospection et vous désinscrire ici : {url}",
    "es": "Recibe este correo porque aceptó recibir noticias de {controller}. Puede oponerse al "
    "marketing en cualquier momento, de forma gratuita, y darse de baja aquí: {url}",
    "it": "Ricevi questa email perché hai accettato di ricevere comunicazioni da {controller}. Puoi "
    "opporti al marketing in qualsiasi momento, gratuitamente, e annullare l'iscrizione qui: {url}",
    "nl": "U ontvangt deze e-mail omdat u toestemming gaf om berichten van {controller} te ontvangen. "
    "U kunt op elk moment kosteloos bezwaar maken tegen marketing en u hier afmelden: {url}",
    "pl": "Otrzymujesz tę wiadomość, ponieważ zgodziłeś się na kontakt od {controller}. Możesz w każdej "
    "chwili bezpłatnie sprzeciwić się marketingowi i wypisać się tutaj: {url}",
    "pt": "Recebe este e-mail porque aceitou receber comunicações de {controller}. Pode opor-se ao "
    "marketing a qualquer momento, gratuitamente, e cancelar a subscrição aqui: {url}",
    "sv": "Du får detta e-postmeddelande eftersom du har samtyckt till att höra från {controller}. Du "
    "kan när som helst och kostnadsfritt invända mot marknadsföring och avregistrera dig här: {url}",
    "da": "Du modtager denne e-mail, fordi du har givet samtykke til at høre fra {controller}. Du kan "
    "til enhver tid gratis gøre indsigelse mod markedsføring og afmelde dig her: {url}",
}


def objection_notice(language: str, *, controller: str, url: str) -> str:
    template = OBJECTION_NOTICE.get(language, OBJECTION_NOTICE["en"])
    return template.format(controller=controller, url=url)
